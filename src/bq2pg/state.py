"""bq2pg's own state in the target database (schema ``bq2pg``).

``runs`` holds one row per run: what was asked, how it went, and how much moved. The state
lives next to the data so that a run's record commits with the data it describes.
"""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
from psycopg.types.json import Jsonb

from bq2pg.errors import TargetError
from bq2pg.load import translate

STATE_SCHEMA = "bq2pg"
#: Advisory-lock key serialising bq2pg's state DDL between concurrent runs ('bq2pg' in ASCII).
STATE_DDL_LOCK = 0x627132706700

_DDL = """
CREATE SCHEMA IF NOT EXISTS bq2pg;
CREATE TABLE IF NOT EXISTS bq2pg.runs (
    run_id       uuid PRIMARY KEY,
    source       text NOT NULL,
    target       text NOT NULL,
    mode         text NOT NULL,
    arguments    jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    rows_read    bigint,
    rows_loaded  bigint,
    bytes        bigint,
    error        text
);
"""


def ensure(conn: psycopg.Connection) -> None:
    """Create the state schema and tables if they are missing."""
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [STATE_DDL_LOCK])
            conn.execute(_DDL)
    except psycopg.Error as exc:
        raise translate(exc, "creating bq2pg's state tables") from exc


def start_run(
    conn: psycopg.Connection, *, source: str, target: str, mode: str, arguments: dict[str, object]
) -> uuid.UUID:
    """Record a new run as ``running`` and return its id."""
    run_id = uuid.uuid4()
    try:
        conn.execute(
            "INSERT INTO bq2pg.runs (run_id, source, target, mode, arguments, status, started_at)"
            " VALUES (%s, %s, %s, %s, %s, 'running', %s)",
            [run_id, source, target, mode, Jsonb(arguments), dt.datetime.now(dt.UTC)],
        )
    except psycopg.Error as exc:
        raise translate(exc, "recording the run") from exc
    return run_id


def finish_run(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    *,
    status: str,
    rows_read: int,
    rows_loaded: int,
    bytes_: int,
    error: str | None = None,
) -> None:
    """Record how a run ended."""
    try:
        conn.execute(
            "UPDATE bq2pg.runs SET status = %s, finished_at = %s, rows_read = %s, "
            "rows_loaded = %s, bytes = %s, error = %s WHERE run_id = %s",
            [status, dt.datetime.now(dt.UTC), rows_read, rows_loaded, bytes_, error, run_id],
        )
    except psycopg.Error as exc:
        raise TargetError(f"recording the end of run {run_id}: {exc}") from exc
