"""``bq2pg state``, ``bq2pg dlq`` and ``bq2pg verify``: bq2pg's own state in the target.

Each command calls one library function of ``engine.admin`` (the REST API calls the same).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.table import Table

from bq2pg import admin
from bq2pg.cli import configured
from bq2pg.cli.shared import (
    DatabaseOpt,
    EndpointOpt,
    ProjectOpt,
    StorageEndpointOpt,
    err,
    out,
    print_table,
)
from bq2pg.errors import EXIT_DEAD_LETTERS, ConfigError, VerificationError

dlq_app = typer.Typer(
    help="Rows PostgreSQL rejected (bq2pg.dead_letters).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
state_app = typer.Typer(
    help="Runs and their ledger (schema bq2pg).", no_args_is_help=True, rich_markup_mode=None
)


@dlq_app.command("list")
def dlq_list(
    database: DatabaseOpt = None,
    target: Annotated[str | None, typer.Option(help="SCHEMA.TABLE")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
) -> None:
    """List dead letters (without their rows)."""
    rows = admin.list_dead_letters(
        configured.adhoc_database_url(database), target=target, run_id=run
    )
    cols = ["id", "run_id", "target", "row_offset", "sqlstate", "error", "created_at"]
    print_table(rows, cols, f"{len(rows)} dead letter(s)")


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[int, typer.Argument(help="Dead letter id.")], database: DatabaseOpt = None
) -> None:
    """Show one dead letter, its error context and its raw row."""
    letter = admin.show_dead_letter(configured.adhoc_database_url(database), letter_id)
    for key, value in dataclasses.asdict(letter).items():
        out.print(f"{key}: {value}", markup=False, highlight=False, soft_wrap=True)


@dlq_app.command("replay")
def dlq_replay(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE whose dead letters to replay.")],
    database: DatabaseOpt = None,
    letter_ids: Annotated[
        list[int] | None, typer.Option("--id", help="Only this dead letter (repeatable).")
    ] = None,
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
) -> None:
    """Load dead-lettered rows again, once the target or the mapping is fixed."""
    done = admin.replay_dead_letters(
        configured.adhoc_database_url(database),
        target,
        lambda: configured.adhoc_source(project, bigquery_endpoint, bigquery_storage_endpoint),
        letter_ids or None,
    )
    out.print(f"{len(done.loaded):,} dead letter(s) replayed into {target}")
    for letter_id, error in sorted(done.failed.items()):
        err.print(f"[yellow]dead letter {letter_id} failed again: {error}", markup=True)
    if done.failed:
        raise typer.Exit(EXIT_DEAD_LETTERS)


@dlq_app.command("purge")
def dlq_purge(
    database: DatabaseOpt = None,
    target: Annotated[str | None, typer.Option(help="SCHEMA.TABLE")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do it (dead letters are deleted).")] = False,
) -> None:
    """Delete dead letters (of a target or a run, or all)."""
    if not yes:
        raise ConfigError("dlq purge deletes rows for good: add --yes")
    deleted = admin.purge_dead_letters(
        configured.adhoc_database_url(database), target=target, run_id=run
    )
    out.print(f"{deleted:,} dead letter(s) deleted")


@state_app.command("show")
def state_show(
    target: Annotated[str | None, typer.Argument(help="SCHEMA.TABLE (default: all).")] = None,
    database: DatabaseOpt = None,
) -> None:
    """The latest runs, their status and their ledger."""
    url = configured.adhoc_database_url(database)
    rows = admin.list_runs(url, target)
    cols = ["run_id", "target", "mode", "status", "started_at", "rows_read", "rows_loaded"]
    print_table(rows, [*cols, "dead_letters", "chunks", "error"], "runs")
    planned = [r for r in rows if r.plan]
    if planned:
        table = Table(title="estimated (plan) vs actual", title_justify="left")
        for name in ("run_id", "rows est.", "rows", "seconds est.", "seconds", "PG MB est.",
                     "PG MB", "read MB est.", "USD est."):  # fmt: skip
            table.add_column(name, justify="left" if name == "run_id" else "right")
        for r in planned:
            plan = r.plan or {}
            took = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
            table.add_row(
                str(r.run_id), _n(plan.get("rows")), _n(r.rows_read), _n(plan.get("seconds"), 1),
                _n(took, 1), _n(plan.get("pg_bytes"), mb=True), _n(r.pg_bytes, mb=True),
                _n(plan.get("bytes"), mb=True), _n(plan.get("usd"), 4),
            )  # fmt: skip
        out.print(table)
    if target:
        mark = admin.watermark(url, target)
        if mark:
            out.print(f"watermark: {mark[0]} >= {mark[1]}", markup=False, highlight=False)


def _n(value: float | None, digits: int = 0, *, mb: bool = False) -> str:
    if value is None:
        return "?"
    return f"{value / 1e6:,.1f}" if mb else f"{value:,.{digits}f}"


@state_app.command("progress")
def state_progress(
    run_id: Annotated[str, typer.Argument(help="Run id (see bq2pg state show).")],
    database: DatabaseOpt = None,
) -> None:
    """How far a run is: rows committed per table, dead letters, offsets per stream."""
    try:
        progress = admin.run_progress(configured.adhoc_database_url(database), run_id)
    except ValueError:
        raise ConfigError(f"{run_id!r} is not a run id (a UUID)", value=run_id) from None
    out.print(
        f"run {progress.run_id} of {progress.target}: {progress.status}, started "
        f"{progress.started_at:%Y-%m-%d %H:%M:%S}"
        + (f", finished {progress.finished_at:%Y-%m-%d %H:%M:%S}" if progress.finished_at else ""),
        markup=False,
        highlight=False,
    )
    for table, rows in sorted(progress.rows.items()):
        out.print(f"  {table}: {rows:,} rows committed", markup=False, highlight=False)
    out.print(
        f"  {progress.dead_letters:,} dead letter(s); {len(progress.offsets)} of "
        f"{progress.streams} stream(s) begun",
        markup=False,
        highlight=False,
    )
    if progress.error:
        out.print(f"  error: {progress.error}", markup=False, highlight=False)


def verify(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE loaded by bq2pg.")],
    database: DatabaseOpt = None,
) -> None:
    """Re-check a loaded table's row counts and content checksums against its runs' ledger."""
    report = admin.verify_target(configured.adhoc_database_url(database), target)
    print_table(report, ["table", "ledger", "rows", "status"], f"verify {target}")
    if any(not check.ok for check in report):
        raise VerificationError(f"{target} does not hold the rows its runs committed")


@state_app.command("reset")
def state_reset(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE")], database: DatabaseOpt = None
) -> None:
    """Forget a target's unfinished runs, so that the next run starts over."""
    count = admin.reset_target(configured.adhoc_database_url(database), target)
    out.print(f"{count} unfinished run(s) of {target} forgotten")
