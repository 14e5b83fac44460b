"""The runs of each target (``bq2pg.runs``): what was asked, its read session, how it ended.

A run's arguments are stored versioned (:data:`ARGUMENTS_FORMAT`): ``{"format": 2, "kind":
"copy" | "patents", "request": {...}}``, so that ``dlq replay`` can rebuild the run's tables.
Format 1 (bq2pg 0.1: the request's fields alone) is read through :func:`unpack_arguments`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from bq2pg.postgres import lock
from bq2pg.state import watermarks

#: A Storage Read session lives about 6 hours (stream.proto, ReadSession.expire_time); resume
#: only within it, less a margin for the resumed run's own reads.
SESSION_LIFETIME_S = 5 * 3600
#: The form of ``runs.arguments`` this bq2pg writes.
ARGUMENTS_FORMAT = 2
#: What kind of job a run was.
Kind = Literal["copy", "patents"]
Status = Literal["running", "succeeded", "failed", "abandoned", "failed_quality", "cancelled"]


def pack_arguments(kind: Kind, request: dict[str, Any]) -> dict[str, Any]:
    """``runs.arguments`` of a run of ``kind`` asked with ``request`` (no secrets in it)."""
    return {"format": ARGUMENTS_FORMAT, "kind": kind, "request": request}


def unpack_arguments(stored: dict[str, Any]) -> tuple[Kind, dict[str, Any]]:
    """(kind, request) from ``runs.arguments`` of any format bq2pg wrote.

    Format 1 stored the request's fields alone; only a patents request had ``full_text``.
    """
    if "format" not in stored:
        return ("patents" if "full_text" in stored else "copy"), dict(stored)
    if stored["format"] != ARGUMENTS_FORMAT or stored.get("kind") not in ("copy", "patents"):
        raise ValueError(
            f"run arguments of format {stored['format']!r} ({stored.get('kind')!r}) were written "
            "by a newer bq2pg; upgrade bq2pg to read them"
        )
    return stored["kind"], dict(stored["request"])


@dataclass(frozen=True)
class Interrupted:
    """A run of the same job that stopped without finishing: where it can resume from."""

    run_id: uuid.UUID
    session: str
    streams: list[str]
    arrow_schema: bytes
    snapshot_time: dt.datetime | None


@dataclass(frozen=True)
class RunInfo:
    """One run as ``bq2pg state show`` lists it, with its ledger totals."""

    run_id: uuid.UUID
    target: str
    mode: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    rows_read: int | None
    rows_loaded: int | None
    dead_letters: int
    chunks: int
    error: str | None
    #: The run's plan (``bq2pg plan``'s estimates) when it recorded one.
    plan: dict[str, Any] | None = None
    #: Bytes sent by COPY, and the size of the target tables in PostgreSQL after publishing.
    bytes: int | None = None
    pg_bytes: int | None = None


def start(
    conn: psycopg.Connection,
    *,
    source: str,
    target: str,
    mode: str,
    arguments: dict[str, Any],
    fingerprint: str,
    plan: dict[str, Any] | None = None,
    job: str | None = None,
    run_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record a new run as ``running`` (with its plan's estimates and the name of its job)
    and return its id (``run_id`` when given: the REST API names a run before it starts)."""
    run_id = run_id or uuid.uuid4()
    conn.execute(
        "INSERT INTO bq2pg.runs (run_id, source, target, mode, arguments, status, started_at,"
        " fingerprint, plan, job) VALUES (%s, %s, %s, %s, %s, 'running', %s, %s, %s, %s)",
        [run_id, source, target, mode, Jsonb(arguments), dt.datetime.now(dt.UTC), fingerprint,
         Jsonb(plan) if plan is not None else None, job],
    )  # fmt: skip
    return run_id


def record_pg_bytes(conn: psycopg.Connection, run_id: uuid.UUID, pg_bytes: int) -> None:
    """Record the size of the run's target tables in PostgreSQL after it published."""
    conn.execute("UPDATE bq2pg.runs SET pg_bytes = %s WHERE run_id = %s", [pg_bytes, run_id])


@dataclass(frozen=True)
class History:
    """What ``target``'s earlier succeeded runs say about the next one (for estimates)."""

    runs: int
    rows: int
    seconds: float
    #: Rows and PostgreSQL bytes of the latest run that recorded its size (bytes per row).
    sized_rows: int
    sized_bytes: int


def history(conn: psycopg.Connection, target: str, last: int = 5) -> History:
    """Totals of ``target``'s ``last`` succeeded runs that read rows."""
    row = conn.execute(
        "WITH r AS (SELECT started_at, rows_read, extract(epoch FROM finished_at - started_at) "
        "AS s, pg_bytes FROM bq2pg.runs "
        "WHERE target = %s AND status = 'succeeded' AND rows_read > 0 "
        "ORDER BY started_at DESC LIMIT %s) "
        "SELECT count(*), coalesce(sum(rows_read), 0), coalesce(sum(s), 0), "
        "(SELECT rows_read FROM r WHERE pg_bytes IS NOT NULL ORDER BY started_at DESC LIMIT 1), "
        "(SELECT pg_bytes FROM r WHERE pg_bytes IS NOT NULL ORDER BY started_at DESC LIMIT 1) "
        "FROM r",
        [target, last],
    ).fetchone()
    assert row is not None
    return History(int(row[0]), int(row[1]), float(row[2]), int(row[3] or 0), int(row[4] or 0))


def record_session(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    session: str,
    streams: list[str],
    schema: bytes,
    snapshot_time: dt.datetime | None,
) -> None:
    """Remember the run's read session, so that an interrupted run can resume in it."""
    conn.execute(
        "UPDATE bq2pg.runs SET session = %s, streams = %s, arrow_schema = %s, "
        "snapshot_time = %s WHERE run_id = %s",
        [session, Jsonb(streams), schema, snapshot_time, run_id],
    )


def record_checksums(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    columns: dict[str, list[tuple[str, str]]],
    form: int,
) -> None:
    """Remember which columns (name, type) the run's checksums cover, per table, and the
    checksums' canonical form."""
    conn.execute(
        "UPDATE bq2pg.runs SET checksum_columns = %s, checksum_form = %s WHERE run_id = %s",
        [Jsonb(columns), form, run_id],
    )


def checksum_form(conn: psycopg.Connection, run_id: uuid.UUID) -> int | None:
    """The canonical form of the checksums ``run_id`` records (None: none recorded)."""
    row = conn.execute(
        "SELECT checksum_form FROM bq2pg.runs WHERE run_id = %s", [run_id]
    ).fetchone()
    return row[0] if row else None


def status(conn: psycopg.Connection, run_id: uuid.UUID) -> str | None:
    """The status of ``run_id`` (None: no such run)."""
    row = conn.execute("SELECT status FROM bq2pg.runs WHERE run_id = %s", [run_id]).fetchone()
    return row[0] if row else None


def finish(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    *,
    status: Status,
    rows_read: int,
    rows_loaded: int,
    nbytes: int,
    error: str | None = None,
) -> None:
    """Record how a run ended (a success in the transaction that publishes its data)."""
    conn.execute(
        "UPDATE bq2pg.runs SET status = %s, finished_at = %s, rows_read = %s, "
        "rows_loaded = %s, bytes = %s, error = %s WHERE run_id = %s",
        [status, dt.datetime.now(dt.UTC), rows_read, rows_loaded, nbytes, error, run_id],
    )


def record_quality_failure(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    *,
    rows_read: int,
    rows_loaded: int,
    nbytes: int,
    error: str,
    side_tables: list[str],
) -> None:
    """Record that a run's quality gate failed: nothing was published; its side tables
    (``schema.table``) stay for diagnosis until the next run or ``bq2pg state reset``."""
    finish(conn, run_id, status="failed_quality", rows_read=rows_read, rows_loaded=rows_loaded,
           nbytes=nbytes, error=error)  # fmt: skip
    conn.execute(
        "UPDATE bq2pg.runs SET side_tables = %s WHERE run_id = %s", [Jsonb(side_tables), run_id]
    )


def record_skip_quality(conn: psycopg.Connection, run_id: uuid.UUID) -> None:
    """Record that the run publishes without evaluating its quality rules."""
    conn.execute("UPDATE bq2pg.runs SET skip_quality = true WHERE run_id = %s", [run_id])


def kept_side_tables(conn: psycopg.Connection, target: str) -> list[str]:
    """Side tables (``schema.table``) that runs of ``target`` stopped by their quality gate
    kept, and that still exist."""
    rows = conn.execute(
        "SELECT DISTINCT t FROM bq2pg.runs, jsonb_array_elements_text(side_tables) AS t "
        "WHERE target = %s AND status = 'failed_quality' AND to_regclass(t) IS NOT NULL",
        [target],
    ).fetchall()
    return [r[0] for r in rows]


def interrupted(conn: psycopg.Connection, target: str, fingerprint: str) -> Interrupted | None:
    """The run of the same job on ``target`` that stopped without finishing, if any.

    Called with the target's lock held, so a run still marked ``running`` is a dead one; a
    ``failed`` one resumes too. Only runs younger than a read session's lifetime qualify: an
    older session has expired, and its offsets mean nothing in a new one.
    """
    row = conn.execute(
        "SELECT run_id, session, streams, arrow_schema, snapshot_time FROM bq2pg.runs "
        "WHERE target = %s AND "
        "status IN ('running', 'failed', 'cancelled') AND fingerprint = %s "
        "AND session IS NOT NULL "
        "AND started_at > now() - make_interval(secs => %s) "
        "ORDER BY started_at DESC LIMIT 1",
        [target, fingerprint, SESSION_LIFETIME_S],
    ).fetchone()
    return Interrupted(row[0], row[1], list(row[2]), bytes(row[3]), row[4]) if row else None


def abandon(conn: psycopg.Connection, target: str, reason: str = "interrupted") -> int:
    """Mark the target's dead or failed runs as abandoned (the next run starts over)."""
    cur = conn.execute(
        "UPDATE bq2pg.runs SET status = 'abandoned', finished_at = coalesce(finished_at, now()), "
        "error = coalesce(error, %s) WHERE target = %s "
        "AND status IN ('running', 'failed', 'cancelled')",
        [reason, target],
    )
    return cur.rowcount


def listing(
    conn: psycopg.Connection,
    target: str | None = None,
    limit: int = 20,
    *,
    run_id: uuid.UUID | None = None,
) -> list[RunInfo]:
    """The latest runs (of ``target``, or the run ``run_id``), newest first, with their ledger
    totals."""
    where: sql.Composable = sql.SQL("")
    if target:
        where = sql.SQL("WHERE r.target = {}").format(sql.Literal(target))
    elif run_id:
        where = sql.SQL("WHERE r.run_id = {}").format(sql.Literal(run_id))
    query = sql.SQL(
        "SELECT r.run_id, r.target, r.mode, r.status, r.started_at, r.finished_at, r.rows_read, "
        "r.rows_loaded, coalesce(sum(c.dead_letters), 0)::bigint AS dead_letters, "
        "count(c.*) AS chunks, r.error, r.plan, r.bytes, r.pg_bytes "
        "FROM bq2pg.runs r LEFT JOIN bq2pg.chunks c "
        "USING (run_id) {} GROUP BY r.run_id ORDER BY r.started_at DESC LIMIT {}"
    ).format(where, sql.Literal(limit))
    with conn.cursor(row_factory=class_row(RunInfo)) as cur:
        return list(cur.execute(query).fetchall())


def listing_one(conn: psycopg.Connection, run_id: uuid.UUID) -> list[tuple[RunInfo, int]]:
    """[(the run, its read session's stream count)], or [] when there is no such run."""
    found = listing(conn, run_id=run_id, limit=1)
    if not found:
        return []
    streams = conn.execute(
        "SELECT coalesce(jsonb_array_length(streams), 0) FROM bq2pg.runs WHERE run_id = %s",
        [run_id],
    ).fetchone()
    return [(found[0], int(streams[0]) if streams else 0)]


def succeeded(conn: psycopg.Connection, target: str) -> list[tuple[uuid.UUID, str, Any, Any]]:
    """(run_id, mode, checksum columns, checksum form) of ``target``'s succeeded runs, newest
    first."""
    rows = conn.execute(
        "SELECT run_id, mode, checksum_columns, checksum_form FROM bq2pg.runs "
        "WHERE target = %s AND status = 'succeeded' ORDER BY started_at DESC",
        [target],
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def reset(conn: psycopg.Connection, target: str) -> int:
    """Forget ``target``'s unfinished runs and its watermark (the next run starts over), and
    drop the side tables a failed quality gate kept, under the target's lock. Returns the
    number of runs forgotten."""
    with conn.transaction():
        lock.lock(conn, target)
        watermarks.forget(conn, target)
        for side in kept_side_tables(conn, target):  # kept by a failed quality gate
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(side)))
        count = abandon(conn, target, "reset by bq2pg state reset")
        lock.unlock(conn, target)
    return count
