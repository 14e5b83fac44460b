"""The ledger: one row per committed chunk, in the same transaction as the chunk's rows.

A chunk in the ledger is never loaded again; a chunk not in it is loaded again. This is what
makes a run exactly-once through ``kill -9``, lost connections and server restarts: the data
and its checkpoint commit together (RELIABILITY.md invariant 2). Per stream, the ledger says
from which source row a resumed run reads on; per table, how many rows the run committed, which
is what verification and the run's summary count (locally and on Dask alike).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bq2pg.errors import RowRejectedError
from bq2pg.postgres import copy
from bq2pg.postgres.errors import is_row_error, translate

#: The name under which the ledger counts a run's dead-lettered source rows.
DEAD_LETTERS = "bq2pg.dead_letters"
#: Negative control of the fault-injection suite (RELIABILITY.md invariant 10): with this
#: variable set, the ledger row is committed in a transaction of its own after the data, the
#: bug the suite's oracle must catch as duplicated rows. Never set it in production.
SPLIT_LEDGER_ENV = "BQ2PG_FAULT_SPLIT_LEDGER"
#: Seconds between the two commits of the negative control, so that kills land in between.
SPLIT_LEDGER_GAP_S = 0.5


@dataclass(frozen=True)
class ChunkRecord:
    """The ledger row of one chunk: which source rows of which stream, and what they became.

    Attributes:
        run_id: the run.
        stream: the read stream.
        start: the chunk's first source-row offset in the stream.
        end: the offset after its last source row.
        rows: rows committed per table (parent and children).
        nbytes: encoded bytes sent by COPY.
        checksums: content checksum per table (empty: not computed, or not computable).
        dead_letters: source rows of the chunk that went to ``bq2pg.dead_letters``.
    """

    run_id: uuid.UUID
    stream: str
    start: int
    end: int
    rows: dict[str, int]
    nbytes: int
    checksums: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0


@dataclass(frozen=True)
class Committed:
    """What the ledger holds for a run: per stream the offset read up to, per table the rows,
    and the source rows dead-lettered."""

    offsets: dict[str, int]
    rows: dict[str, int]
    dead_letters: int


def record(cur: psycopg.Cursor | psycopg.Connection, chunk: ChunkRecord) -> None:
    """Insert a chunk's ledger row (inside the chunk's transaction)."""
    cur.execute(
        "INSERT INTO bq2pg.chunks (run_id, stream, start_offset, end_offset, rows, bytes, "
        "dead_letters, checksums) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [
            chunk.run_id,
            chunk.stream,
            chunk.start,
            chunk.end,
            Jsonb(chunk.rows),
            chunk.nbytes,
            chunk.dead_letters,
            Jsonb(chunk.checksums) if chunk.checksums else None,
        ],
    )


def split_ledger() -> bool:
    """Whether the fault suite's negative control is on (:data:`SPLIT_LEDGER_ENV`)."""
    return bool(os.environ.get(SPLIT_LEDGER_ENV))


def commit_chunk(
    conn: psycopg.Connection, parts: Sequence[copy.Part], chunk: ChunkRecord | None
) -> None:
    """COPY a chunk's parts (a parent's rows and their child rows) and record the chunk in the
    ledger, all in one transaction.

    Raises:
        RowRejectedError: PostgreSQL rejected a row's data (the caller isolates it).
        TargetError: any other failure (transient ones as TransientTargetError).
    """
    split = chunk is not None and split_ledger()
    try:
        with conn.transaction(), conn.cursor() as cur:
            copy.write_parts(cur, parts)
            if chunk is not None and not split:
                record(cur, chunk)
        if split and chunk is not None:
            time.sleep(SPLIT_LEDGER_GAP_S)
            with conn.transaction(), conn.cursor() as cur:
                record(cur, chunk)
    except psycopg.Error as exc:
        names = ", ".join(part.name for part in parts)
        if is_row_error(exc):
            raise RowRejectedError(
                f"COPY into {names}: a row was rejected", sqlstate=exc.sqlstate
            ) from exc
        raise translate(exc, f"COPY into {names}") from exc


def chunk(
    conn: psycopg.Connection, run_id: uuid.UUID, stream: str, start: int
) -> ChunkRecord | None:
    """The ledger row of the chunk of ``stream`` starting at row ``start``, if it committed."""
    row = conn.execute(
        "SELECT end_offset, rows, bytes, checksums, dead_letters FROM bq2pg.chunks "
        "WHERE run_id = %s AND stream = %s AND start_offset = %s",
        [run_id, stream, start],
    ).fetchone()
    if row is None:
        return None
    end, rows, nbytes, sums, dead = row
    return ChunkRecord(
        run_id, stream, start, int(end), {k: int(v) for k, v in rows.items()}, int(nbytes),
        {k: int(v) for k, v in (sums or {}).items()}, int(dead),
    )  # fmt: skip


def committed(conn: psycopg.Connection, run_id: uuid.UUID) -> Committed:
    """Per stream, the offset up to which the ledger holds the run's rows; per table, its rows;
    and its dead-lettered source rows."""
    offsets = conn.execute(
        "SELECT stream, max(end_offset) FROM bq2pg.chunks WHERE run_id = %s GROUP BY stream",
        [run_id],
    ).fetchall()
    tables = conn.execute(
        "SELECT key, sum(value::bigint) FROM bq2pg.chunks, jsonb_each_text(rows) "
        "WHERE run_id = %s GROUP BY key",
        [run_id],
    ).fetchall()
    dead = conn.execute(
        "SELECT coalesce(sum(dead_letters), 0) FROM bq2pg.chunks WHERE run_id = %s", [run_id]
    ).fetchone()
    return Committed(
        offsets={k: int(v) for k, v in offsets},
        rows={k: int(v) for k, v in tables if v is not None},
        dead_letters=int(dead[0]) if dead else 0,
    )


def rows_of(conn: psycopg.Connection, run_ids: Sequence[uuid.UUID]) -> dict[str, int]:
    """Per table, the rows the ledger holds for ``run_ids`` together."""
    rows = conn.execute(
        "SELECT key, sum(value::bigint) FROM bq2pg.chunks, jsonb_each_text(rows) "
        "WHERE run_id = ANY(%s) GROUP BY key",
        [list(run_ids)],
    ).fetchall()
    return {k: int(v) for k, v in rows}


def checksums(conn: psycopg.Connection, run_ids: Sequence[uuid.UUID]) -> dict[str, int]:
    """Per table, the sum of the content checksums the ledger holds for ``run_ids``; a table
    that some chunk has no checksum for (not computed, or unreadable rows) is left out."""
    rows = conn.execute(
        "WITH c AS (SELECT checksums FROM bq2pg.chunks WHERE run_id = ANY(%s)) "
        "SELECT key, sum(value::numeric)::text, count(*), (SELECT count(*) FROM c) "
        "FROM c, jsonb_each_text(c.checksums) GROUP BY key",
        [list(run_ids)],
    ).fetchall()
    return {key: int(total) for key, total, n, chunks in rows if n == chunks}


def forget(
    conn: psycopg.Connection, run_id: uuid.UUID, side_tables: Sequence[sql.Composable]
) -> None:
    """Empty the run's side tables and forget its ledger and dead letters, in one transaction.

    For a run that must load again from the start (its read session expired: the offsets of
    its streams mean nothing in a new session).
    """
    with conn.transaction():
        for table in side_tables:
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
        conn.execute("DELETE FROM bq2pg.chunks WHERE run_id = %s", [run_id])
        conn.execute("DELETE FROM bq2pg.dead_letters WHERE run_id = %s", [run_id])


def stream_progress(conn: psycopg.Connection, run_id: uuid.UUID, target: str) -> list[dict]:
    """Per read stream of a run: source rows and COPY bytes committed, the offset reached,
    chunks, and the rate since the run started (from the ledger, readable from any process)."""
    parent = target.rsplit(".", 1)[-1]
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT c.stream, count(*) AS chunks, "
            "(coalesce(sum((c.rows ->> %s)::bigint), 0) + coalesce(sum(c.dead_letters), 0))"
            "::bigint AS rows, coalesce(sum(c.bytes), 0)::bigint AS bytes, "
            "max(c.end_offset) AS offset, "
            "max(c.committed_at) AS last_commit, "
            "round((coalesce(sum((c.rows ->> %s)::bigint), 0) / greatest(extract(epoch FROM "
            "max(c.committed_at) - r.started_at), 0.001))::numeric, 1)::float AS rows_per_s "
            "FROM bq2pg.chunks c JOIN bq2pg.runs r USING (run_id) WHERE c.run_id = %s "
            "GROUP BY c.stream, r.started_at ORDER BY c.stream",
            [parent, parent, run_id],
        ).fetchall()


def run_row(conn: psycopg.Connection, run_id: uuid.UUID) -> dict | None:
    """The engine's record of a run (``bq2pg.runs``), without its stored schema."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT run_id, source, target, mode, status, started_at, finished_at, rows_read, "
            "rows_loaded, bytes, error, job, skip_quality, retries, plan FROM bq2pg.runs "
            "WHERE run_id = %s",
            [run_id],
        ).fetchone()


def chunks(conn: psycopg.Connection, run_id: uuid.UUID, limit: int) -> list[dict]:
    """A run's committed chunks, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT stream, start_offset, end_offset, rows, bytes, dead_letters, committed_at "
            "FROM bq2pg.chunks WHERE run_id = %s ORDER BY committed_at, stream LIMIT %s",
            [run_id, limit],
        ).fetchall()
