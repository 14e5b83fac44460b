"""``bq2pg run JOB``, ``bq2pg plan JOB``, ``bq2pg jobs`` and ``bq2pg config show|validate``:
the named jobs of ``bq2pg.yaml`` and the configuration itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bq2pg import admin
from bq2pg.cli import configured
from bq2pg.cli.configured import ConfigOpt, EnvOpt
from bq2pg.cli.execute import execute
from bq2pg.cli.shared import err, out
from bq2pg.config import jobs as config_jobs
from bq2pg.config.file import Resolved
from bq2pg.config.secrets import redact
from bq2pg.errors import Bq2pgError
from bq2pg.runner import target_table

app = typer.Typer(rich_markup_mode=None)
config_app = typer.Typer(
    help="Show or check the configuration (bq2pg.yaml, variables, flags).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
#: The options of copy and patents as the configuration names them.
RENAME = {"to": "target", "schema_name": "schema"}
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
JobArg = Annotated[str, typer.Argument(help="The name of a job under `jobs:` in bq2pg.yaml.")]


def overrides(ctx: typer.Context, kind: str, args: list[str]) -> dict[str, Any]:
    """The options of ``copy``/``patents`` given after the job's name, parsed by that command."""
    command = getattr(ctx.find_root().command, "commands", {})[kind]
    sub = command.make_context(f"{ctx.info_name} {kind} options", list(args), parent=ctx)
    return configured.given(sub, RENAME)


def _named(ctx: typer.Context, job: str, config: str | None, env: str | None) -> Resolved:
    cfg = configured.configuration(config, env)
    kind = cfg.job(job).kind
    return cfg.job(job, overrides(ctx, kind, ctx.args))


@app.command(context_settings=_EXTRA)
def run(ctx: typer.Context, job: JobArg, config: ConfigOpt = None, env: EnvOpt = None) -> None:
    """Run a named job of bq2pg.yaml; any option of copy or patents after its name overrides
    the file (e.g. bq2pg run items --env production --streams 8)."""
    execute(_named(ctx, job, config, env), configured.configuration(config, env))


@app.command(context_settings=_EXTRA)
def plan(ctx: typer.Context, job: JobArg, config: ConfigOpt = None, env: EnvOpt = None) -> None:
    """Print what a named job would do, read and cost, without loading anything (exit 9 when
    over budget)."""
    execute(_named(ctx, job, config, env), configured.configuration(config, env), plan_only=True)


@app.command("jobs")
def list_jobs(config: ConfigOpt = None, env: EnvOpt = None) -> None:
    """List the jobs of bq2pg.yaml with their source, target and last run."""
    cfg = configured.configuration(config, env)
    table = Table(title=f"jobs in {cfg.path or '(no configuration file)'}", title_justify="left")
    for name in ("job", "kind", "source", "target", "table", "last run"):
        table.add_column(name)
    for name in cfg.names("jobs"):
        job = cfg.job(name)
        values = job.values
        qualified = target_table(job)
        table.add_row(
            name, job.kind, str(values.get("source", "")), redact(str(values.get("target", ""))),
            qualified, _last_run(job, cfg, qualified),
        )  # fmt: skip
    out.print(table)


def _last_run(job: Resolved, cfg: config_jobs.Config, qualified: str) -> str:
    try:
        found = admin.list_runs(configured.database_url(job, cfg), qualified, limit=1)
    except Bq2pgError as exc:
        return f"unknown ({redact(str(exc)).splitlines()[0][:80]})"
    if not found:
        return "never"
    last = found[0]
    when = (last.finished_at or last.started_at).strftime("%Y-%m-%d %H:%M")
    rows = f", {last.rows_read:,} rows" if last.rows_read is not None else ""
    return f"{last.status} {when}{rows}"


@config_app.command("show")
def config_show(config: ConfigOpt = None, env: EnvOpt = None) -> None:
    """Print the resolved configuration and where each value came from (secrets redacted)."""
    cfg = configured.configuration(config, env)
    rows = cfg.show()
    width = max(len(k) + len(v) for k, v, _ in rows) + 3
    out.print(f"# {cfg.path or 'no configuration file'}", markup=False, highlight=False)
    for key, value, origin in rows:
        line = f"{key} = {value}"
        out.print(
            f"{line:<{width}}  # {origin}" if origin else line,
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip


@config_app.command("validate")
def config_validate(
    file: Annotated[
        Path | None,
        typer.Argument(help="The file [default: --config, BQ2PG_CONFIG, ./bq2pg.yaml]."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Check a configuration file and each of its environments, without running anything."""
    path = str(file) if file else config
    cfg = config_jobs.load(path)
    environments = list(cfg.base.get("environments") or {})
    for name in environments:
        config_jobs.load(path, name)
    if cfg.path is None:
        err.print("no configuration file found (bq2pg.yaml); nothing to check")
        raise typer.Exit(2)
    out.print(
        f"{cfg.path}: ok ({len(cfg.names('jobs'))} job(s), {len(cfg.names('targets'))} "
        f"target(s); environments: {', '.join(environments) or 'none'})",
        markup=False,
    )
