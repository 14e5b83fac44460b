"""The ``bq2pg`` commands on bq2pg's own state: ``dlq``, ``state`` and ``verify``."""

from __future__ import annotations

from typing import Annotated

import typer

from bq2pg.cli.shared import (
    DEAD_LETTER_EXIT_CODE,
    DatabaseOpt,
    EndpointOpt,
    ProjectOpt,
    StorageEndpointOpt,
    database_url,
    err,
    make_source,
    out,
    print_table,
)
from bq2pg.errors import ConfigError, VerificationError

dlq_app = typer.Typer(help="Rows PostgreSQL rejected (bq2pg.dead_letters).", no_args_is_help=True)
state_app = typer.Typer(help="Runs and their ledger (schema bq2pg).", no_args_is_help=True)


@dlq_app.command("list")
def dlq_list(
    database: DatabaseOpt = None,
    target: Annotated[str | None, typer.Option(help="SCHEMA.TABLE")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
) -> None:
    """List dead letters (without their rows)."""
    from bq2pg.postgres import connection as load
    from bq2pg.state import deadletters as deadletter

    with load.connect(database_url(database)) as conn:
        rows = deadletter.listing(conn, target=target, run_id=run)
    cols = ["id", "run_id", "target", "row_offset", "sqlstate", "error", "created_at"]
    print_table(rows, cols, f"{len(rows)} dead letter(s)")


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[int, typer.Argument(help="Dead letter id.")], database: DatabaseOpt = None
) -> None:
    """Show one dead letter, its error context and its raw row."""
    from bq2pg.postgres import connection as load
    from bq2pg.state import deadletters as deadletter

    with load.connect(database_url(database)) as conn:
        row = deadletter.show(conn, letter_id)
    if row is None:
        raise ConfigError(f"no dead letter {letter_id}")
    for key, value in row.items():
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
    from bq2pg.engine import replay
    from bq2pg.postgres import connection as load
    from bq2pg.state import runs as state

    with load.connect(database_url(database)) as conn:
        state.ensure(conn)
        done = replay.replay(
            conn,
            target,
            lambda: make_source(project, bigquery_endpoint, bigquery_storage_endpoint),
            letter_ids or None,
        )
    out.print(f"{len(done.loaded):,} dead letter(s) replayed into {target}")
    for letter_id, error in sorted(done.failed.items()):
        err.print(f"[yellow]dead letter {letter_id} failed again: {error}", markup=True)
    if done.failed:
        raise typer.Exit(DEAD_LETTER_EXIT_CODE)


@dlq_app.command("purge")
def dlq_purge(
    database: DatabaseOpt = None,
    target: Annotated[str | None, typer.Option(help="SCHEMA.TABLE")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do it (dead letters are deleted).")] = False,
) -> None:
    """Delete dead letters (of a target or a run, or all)."""
    from bq2pg.postgres import connection as load
    from bq2pg.state import deadletters as deadletter

    if not yes:
        raise ConfigError("dlq purge deletes rows for good: add --yes")
    with load.connect(database_url(database)) as conn:
        deleted = deadletter.purge(conn, target=target, run_id=run)
    out.print(f"{deleted:,} dead letter(s) deleted")


@state_app.command("show")
def state_show(
    target: Annotated[str | None, typer.Argument(help="SCHEMA.TABLE (default: all).")] = None,
    database: DatabaseOpt = None,
) -> None:
    """The latest runs, their status and their ledger."""
    from bq2pg.postgres import connection as load
    from bq2pg.state import runs as state

    with load.connect(database_url(database)) as conn:
        state.ensure(conn)
        rows = state.runs(conn, target)
    cols = ["run_id", "target", "mode", "status", "started_at", "rows_read", "rows_loaded"]
    print_table(rows, [*cols, "dead_letters", "chunks", "error"], "runs")
    if target:
        with load.connect(database_url(database)) as conn:
            mark = state.watermark(conn, target)
        if mark:
            out.print(f"watermark: {mark[0]} >= {mark[1]}", markup=False, highlight=False)


def verify(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE loaded by bq2pg.")],
    database: DatabaseOpt = None,
) -> None:
    """Re-check a loaded table's row counts and content checksums against its runs' ledger."""
    from bq2pg.postgres import connection as load
    from bq2pg.state import runs as state

    with load.connect(database_url(database)) as conn:
        state.ensure(conn)
        report = state.verify_target(conn, target)
    print_table(report, ["table", "ledger", "rows", "status"], f"verify {target}")
    if any(str(r["status"]).startswith("MISMATCH") for r in report):
        raise VerificationError(f"{target} does not hold the rows its runs committed")


@state_app.command("reset")
def state_reset(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE")], database: DatabaseOpt = None
) -> None:
    """Forget a target's unfinished runs, so that the next run starts over."""
    from bq2pg.postgres import connection as load
    from bq2pg.state import runs as state

    with load.connect(database_url(database)) as conn:
        state.ensure(conn)
        count = state.reset(conn, target)
    out.print(f"{count} unfinished run(s) of {target} forgotten")
