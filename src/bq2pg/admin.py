"""Library functions for what a user asks of a target's state: runs, progress, dead letters,
verification, reset. The CLI's ``state``, ``dlq`` and ``verify`` commands and the REST API
call these; each takes the target database's URL, returns typed results, and lets only bq2pg
errors out (psycopg's are translated at the boundary, ``postgres.connection.session``).

It sits above the engine and the patents profile, because replaying dead letters rebuilds the
tables of a run of either kind (:func:`plan_of`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from bq2pg.arrow import split as arrow_split
from bq2pg.bigquery.client import Source
from bq2pg.engine import copy as copy_job
from bq2pg.engine import replay
from bq2pg.engine.stream import Split
from bq2pg.errors import ConfigError
from bq2pg.patents import model, transform
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres.connection import session
from bq2pg.quality.verify import TableCheck
from bq2pg.quality.verify import verify_target as _verify_target
from bq2pg.state import audit, deadletters, ledger, runs, schema, watermarks
from bq2pg.state.deadletters import DeadLetter, DeadLetterDetail, Replayed
from bq2pg.state.runs import RunInfo

__all__ = [
    "DeadLetter",
    "DeadLetterDetail",
    "Replayed",
    "RunInfo",
    "RunProgress",
    "TableCheck",
    "list_dead_letters",
    "list_runs",
    "purge_dead_letters",
    "replay_dead_letters",
    "reset_target",
    "run_progress",
    "show_dead_letter",
    "verify_target",
    "watermark",
]


@dataclass(frozen=True)
class RunProgress:
    """How far a run is, as its ledger says (readable while it runs, from any process)."""

    run_id: uuid.UUID
    target: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    #: Rows committed per table so far.
    rows: dict[str, int]
    dead_letters: int
    #: Streams of the read session, and per stream the source offset committed so far.
    streams: int
    offsets: dict[str, int]
    error: str | None


def list_runs(database_url: str, target: str | None = None, limit: int = 20) -> list[RunInfo]:
    """The latest runs (of ``target``), newest first, with their ledger totals."""
    with session(database_url, "reading the runs") as conn:
        schema.ensure(conn)
        return runs.listing(conn, target, limit)


def run_progress(database_url: str, run_id: uuid.UUID | str) -> RunProgress:
    """The progress of one run (running or finished).

    Raises:
        ConfigError: no such run.
    """
    key = uuid.UUID(str(run_id))
    with session(database_url, f"reading run {key}") as conn:
        schema.ensure(conn)
        found = runs.listing_one(conn, key)
        if not found:
            raise ConfigError(f"no run {key}", value=str(key))
        info, streams = found[0]
        committed = ledger.committed(conn, key)
    return RunProgress(
        run_id=key, target=info.target, status=info.status, started_at=info.started_at,
        finished_at=info.finished_at, rows=committed.rows, dead_letters=committed.dead_letters,
        streams=streams, offsets=committed.offsets, error=info.error,
    )  # fmt: skip


def watermark(database_url: str, target: str) -> tuple[str, str] | None:
    """(column, value) of ``target``'s watermark, or None before its first incremental run."""
    with session(database_url, "reading the watermark") as conn:
        schema.ensure(conn)
        return watermarks.read(conn, target)


def reset_target(database_url: str, target: str) -> int:
    """Forget ``target``'s unfinished runs and watermark; the number of runs forgotten.

    Raises:
        ConcurrentRunError: a run is loading ``target`` right now.
    """
    with session(database_url, f"resetting {target}") as conn:
        schema.ensure(conn)
        mark = watermarks.read(conn, target)
        count = runs.reset(conn, target)
        audit.record(conn, audit.STATE_RESET, target=target, arguments={"runs": count})
        if mark is not None:
            audit.record(conn, audit.WATERMARK_RESET, target=target,
                         arguments={"column": mark[0], "value": mark[1]})  # fmt: skip
        return count


def verify_target(database_url: str, target: str) -> list[TableCheck]:
    """Row counts and content checksums of ``target``'s tables against its runs' ledger."""
    with session(database_url, f"verifying {target}") as conn:
        schema.ensure(conn)
        return _verify_target(conn, target)


def list_dead_letters(
    database_url: str, *, target: str | None = None, run_id: str | None = None
) -> list[DeadLetter]:
    """Dead letters (of ``target`` and/or ``run_id``), newest first, without their rows."""
    with session(database_url, "reading the dead letters") as conn:
        schema.ensure(conn)
        return deadletters.listing(conn, target=target, run_id=run_id)


def show_dead_letter(database_url: str, letter_id: int) -> DeadLetterDetail:
    """One dead letter with its error context and raw row.

    Raises:
        ConfigError: no such dead letter.
    """
    with session(database_url, f"reading dead letter {letter_id}") as conn:
        schema.ensure(conn)
        found = deadletters.show(conn, letter_id)
    if found is None:
        raise ConfigError(f"no dead letter {letter_id}", value=str(letter_id))
    return found


def purge_dead_letters(
    database_url: str, *, target: str | None = None, run_id: str | None = None
) -> int:
    """Delete dead letters (of ``target`` and/or ``run_id``, or all); the number deleted."""
    with session(database_url, "deleting dead letters") as conn:
        schema.ensure(conn)
        deleted = deadletters.purge(conn, target=target, run_id=run_id)
        audit.record(conn, audit.DLQ_PURGED, target=target,
                     arguments={"run_id": run_id, "deleted": deleted})  # fmt: skip
        return deleted


def replay_dead_letters(
    database_url: str,
    target: str,
    source: Callable[[], Source],
    ids: list[int] | None = None,
) -> Replayed:
    """Load ``target``'s dead-lettered rows again (or only ``ids``), once the cause is fixed;
    ``source`` makes the BigQuery clients (only ``copy`` runs need the table's schema)."""
    with session(database_url, f"replaying the dead letters of {target}") as conn:
        schema.ensure(conn)
        done = replay.replay(conn, target, partial(plan_of, source=source), ids)
        audit.record(
            conn, audit.DLQ_REPLAYED, target=target,
            arguments={"ids": ids, "loaded": len(done.loaded), "failed": len(done.failed)},
            outcome="ok" if not done.failed else f"{len(done.failed)} row(s) still failing",
        )  # fmt: skip
        return done


def plan_of(arguments: dict, source: Callable[[], Source]) -> tuple[TablePlan, Split]:
    """The plan and splitter of the run that had ``arguments`` (``source`` is called only for
    ``copy`` runs, whose plan comes from the table's schema).

    Raises:
        ConfigError: arguments written by a newer bq2pg.
    """
    try:
        kind, request = runs.unpack_arguments(arguments)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if kind == "patents":
        full_text = bool(request["full_text"])
        plan = model.model(str(request["schema"]), full_text=full_text)
        return plan, transform.Splitter(plan, full_text=full_text)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in request.items()}
    copy_request = copy_job.CopyRequest(**fields, database_url="")  # type: ignore[arg-type]
    plan, _, _ = copy_job.plan(source(), copy_request)
    return plan, partial(arrow_split.split, plan=plan)
