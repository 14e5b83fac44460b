"""``bq2pg doctor``: check the target and the source before a load, one line each, with advice."""

from __future__ import annotations

from typing import Annotated

import typer

from bq2pg import doctor as checks_module
from bq2pg.cli import configured
from bq2pg.cli.configured import ConfigOpt, EnvOpt
from bq2pg.cli.jobs import RENAME, target_table
from bq2pg.cli.shared import EmulatorOpt, EndpointOpt, ProjectOpt, StorageEndpointOpt, out
from bq2pg.config.file import Resolved
from bq2pg.config.secrets import redact
from bq2pg.engine import copy as copy_engine
from bq2pg.engine import estimate
from bq2pg.errors import Bq2pgError
from bq2pg.patents import pipeline as patents_pipeline
from bq2pg.runner import copy_request, patents_request

app = typer.Typer(rich_markup_mode=None)
#: Exit code when a check fails (a ``fail`` line blocks a load; ``warn`` is advice).
EXIT_BLOCKED = 1
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@app.command()
def doctor(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(help="A job of bq2pg.yaml to check (its target and source).")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Target PostgreSQL URL or target name [env: BQ2PG_DATABASE_URL]."
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="PROJECT.DATASET.TABLE to check a read session on.")
    ] = None,
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
    emulator: EmulatorOpt = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Check PostgreSQL (reachable, version, privileges, bulk-load settings, free space) and
    BigQuery (credentials, billing project, read permission, emulator endpoints), with advice.
    Exits 1 when a check fails."""
    cfg = configured.configuration(config, env)
    flags = configured.given(ctx, RENAME)
    flags.pop("job", None)
    resolved = cfg.job(job, flags) if job else cfg.adhoc("copy", flags)
    found: list[checks_module.Check] = []
    try:
        url: str | None = configured.database_url(resolved, cfg)
    except Bq2pgError as exc:
        url = None
        found.append(checks_module.Check("target", "fail", redact(str(exc))))
    table = resolved.values.get("source") if (job or source) else None
    factory = (lambda: configured.source(resolved)) if table else None
    schema = target_table(resolved).split(".")[0] if table else None
    needed = _needed_bytes(resolved, url) if table and url is not None else None
    if url is not None:
        found += checks_module.run_checks(
            url, source=factory, table=table, schema=schema, needed_bytes=needed
        )
    elif factory is not None:
        found += checks_module.check_bigquery(factory, table)
    for check in found:
        out.print(
            f"[{_STYLE[check.status]}]{check.status:<4}[/] {check.name}: {check.detail}",
            highlight=False,
        )
        if check.advice:
            out.print(f"      {check.advice}", markup=False, highlight=False)
    if checks_module.blocking(found):
        raise typer.Exit(EXIT_BLOCKED)


def _needed_bytes(resolved: Resolved, url: str) -> int | None:
    """The space the job's plan says it needs in PostgreSQL (None when it cannot be planned:
    the checks then say why)."""
    try:
        src = configured.source(resolved)
        if resolved.kind == "copy":
            job = copy_engine.build_job(src, copy_request(resolved.values, url))
        else:
            job = patents_pipeline.build_job(src, patents_request(resolved.values, url))
        return estimate.estimate(src, job).pg_bytes
    except Bq2pgError:
        return None
