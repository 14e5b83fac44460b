"""bq2pg's own state in the target database (schema ``bq2pg``).

``runs`` holds one row per run: what was asked, its read session, how it went, how much moved.
``chunks`` is the ledger: one row per committed chunk (run, stream, source-row offsets, rows
per table), inserted in the same transaction as the chunk's COPY, so a chunk in the ledger is
loaded exactly once and a chunk not in it is loaded again. The state lives next to the data so
that it commits with the data it describes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bq2pg.errors import ConcurrentRunError, TargetError
from bq2pg.postgres.connection import translate
from bq2pg.quality import checksum

#: A Storage Read session lives about 6 hours (stream.proto, ReadSession.expire_time); resume
#: only within it, less a margin for the resumed run's own reads.
SESSION_LIFETIME_S = 5 * 3600
#: Advisory-lock key serialising bq2pg's state DDL between concurrent runs ('bq2pg' in ASCII).
STATE_DDL_LOCK = 0x627132706700

_DDL = """
CREATE TABLE IF NOT EXISTS bq2pg.runs (
    run_id       uuid PRIMARY KEY,
    source       text NOT NULL,
    target       text NOT NULL,
    mode         text NOT NULL,
    arguments    jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned')),
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    rows_read    bigint,
    rows_loaded  bigint,
    bytes        bigint,
    error        text,
    fingerprint  text,
    session      text,
    streams      jsonb,
    arrow_schema bytea
);
CREATE INDEX IF NOT EXISTS runs_target_idx ON bq2pg.runs (target, status);
CREATE TABLE IF NOT EXISTS bq2pg.chunks (
    run_id        uuid NOT NULL REFERENCES bq2pg.runs ON DELETE CASCADE,
    stream        text NOT NULL,
    start_offset  bigint NOT NULL,
    end_offset    bigint NOT NULL,
    rows          jsonb NOT NULL,
    bytes         bigint NOT NULL,
    dead_letters  integer NOT NULL DEFAULT 0,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, stream, start_offset),
    CHECK (end_offset >= start_offset)
);
CREATE TABLE IF NOT EXISTS bq2pg.watermarks (
    target        text PRIMARY KEY,
    column_name   text NOT NULL,
    value         text NOT NULL,
    run_id        uuid,
    updated_at    timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS bq2pg.dead_letters (
    id            bigserial PRIMARY KEY,
    run_id        uuid REFERENCES bq2pg.runs ON DELETE SET NULL,
    stream        text,
    row_offset    bigint,
    target        text NOT NULL,
    sqlstate      text,
    error         text NOT NULL,
    context       text,
    raw           text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
"""


#: Every column a state table may lack when an older bq2pg created it, with the type it is
#: added with (nullable or defaulted, so that it can be added to a table that has rows).
_UPGRADES = [
    ("runs", "fingerprint", "text"),
    ("runs", "session", "text"),
    ("runs", "streams", "jsonb"),
    ("runs", "arrow_schema", "bytea"),
    ("runs", "snapshot_time", "timestamptz"),
    ("runs", "checksum_columns", "jsonb"),
    ("runs", "checksum_form", "smallint"),
    ("chunks", "bytes", "bigint NOT NULL DEFAULT 0"),
    ("chunks", "dead_letters", "integer NOT NULL DEFAULT 0"),
    ("chunks", "checksums", "jsonb"),
    ("dead_letters", "context", "text"),
    ("dead_letters", "source_row", "bytea"),
]
_UPGRADE_DDL = "\n".join(
    f"ALTER TABLE bq2pg.{table} ADD COLUMN IF NOT EXISTS {column} {kind};"
    for table, column, kind in _UPGRADES
) + (  # the status 'abandoned' came after the first release
    "\nALTER TABLE bq2pg.runs DROP CONSTRAINT IF EXISTS runs_status_check;"
    "\nALTER TABLE bq2pg.runs ADD CONSTRAINT runs_status_check CHECK "
    "(status IN ('running', 'succeeded', 'failed', 'abandoned'));"
)


def ensure(conn: psycopg.Connection) -> None:
    """Create the state schema and tables if they are missing (or add newer columns).

    Nothing is created when everything exists: a DBA may create the ``bq2pg`` schema for a
    loader role that has no CREATE on the database.
    """
    try:
        found = conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE NOT attisdropped AND attnum > 0 AND "
            "(attrelid, attname) IN (SELECT to_regclass('bq2pg.' || t), c "
            "FROM unnest(%s::text[], %s::text[]) AS n(t, c)) "
            "UNION ALL SELECT count(*) FROM unnest(ARRAY['bq2pg.watermarks', "
            "'bq2pg.dead_letters']) AS t(name) WHERE to_regclass(name) IS NOT NULL "
            "UNION ALL SELECT count(*) FROM pg_constraint WHERE conname = 'runs_status_check' "
            "AND conrelid = to_regclass('bq2pg.runs') "
            "AND pg_get_constraintdef(oid) LIKE '%%abandoned%%'",
            [[t for t, _, _ in _UPGRADES], [c for _, c, _ in _UPGRADES]],
        ).fetchall()
        if [r[0] for r in found] == [len(_UPGRADES), 2, 1]:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [STATE_DDL_LOCK])
            ensure_schema(conn, "bq2pg")
            conn.execute(_DDL)
            conn.execute(_UPGRADE_DDL)  # columns added since a state schema was created
    except psycopg.Error as exc:
        raise translate(exc, "creating bq2pg's state tables") from exc


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    """``CREATE SCHEMA`` only when ``schema`` is missing: PostgreSQL checks the CREATE
    privilege on the database even for ``IF NOT EXISTS``."""
    row = conn.execute(
        "SELECT to_regnamespace(%s) IS NULL", [sql.Identifier(schema).as_string(conn)]
    ).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def lock_target(conn: psycopg.Connection, target: str) -> None:
    """Take the target's session-level advisory lock, or raise :class:`ConcurrentRunError`.

    The lock lives as long as the connection: a killed loader's lock goes with its connection.
    """
    row = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [f"bq2pg:{target}"]
    ).fetchone()
    if not row or not row[0]:
        raise ConcurrentRunError(
            f"another bq2pg run is already loading {target}; wait for it to finish "
            "(one writer per target)"
        )


def interrupted_run(
    conn: psycopg.Connection, target: str, fingerprint: str
) -> tuple[uuid.UUID, str, list[str], bytes, dt.datetime | None] | None:
    """The run of the same job on ``target`` that stopped without finishing, if any.

    Called with the target's lock held, so a run still marked ``running`` is a dead one; a
    ``failed`` one resumes too. Only runs younger than a read session's lifetime qualify: an
    older session has expired, and its offsets mean nothing in a new one.
    """
    row = conn.execute(
        "SELECT run_id, session, streams, arrow_schema, snapshot_time FROM bq2pg.runs "
        "WHERE target = %s AND "
        "status IN ('running', 'failed') AND fingerprint = %s AND session IS NOT NULL "
        "AND started_at > now() - make_interval(secs => %s) "
        "ORDER BY started_at DESC LIMIT 1",
        [target, fingerprint, SESSION_LIFETIME_S],
    ).fetchone()
    return (row[0], row[1], list(row[2]), bytes(row[3]), row[4]) if row else None


def abandon_runs(conn: psycopg.Connection, target: str) -> None:
    """Mark the target's dead or failed runs as abandoned: a new run starts over."""
    conn.execute(
        "UPDATE bq2pg.runs SET status = 'abandoned', finished_at = coalesce(finished_at, now()), "
        "error = coalesce(error, 'interrupted') WHERE target = %s AND status IN "
        "('running', 'failed')",
        [target],
    )


def start_run(
    conn: psycopg.Connection,
    *,
    source: str,
    target: str,
    mode: str,
    arguments: dict[str, object],
    fingerprint: str,
) -> uuid.UUID:
    """Record a new run as ``running`` and return its id."""
    run_id = uuid.uuid4()
    try:
        conn.execute(
            "INSERT INTO bq2pg.runs (run_id, source, target, mode, arguments, status, started_at,"
            " fingerprint) VALUES (%s, %s, %s, %s, %s, 'running', %s, %s)",
            [run_id, source, target, mode, Jsonb(arguments), dt.datetime.now(dt.UTC), fingerprint],
        )
    except psycopg.Error as exc:
        raise translate(exc, "recording the run") from exc
    return run_id


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


def forget_chunks(
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


def committed(conn: psycopg.Connection, run_id: uuid.UUID) -> tuple[dict[str, int], dict[str, int]]:
    """Per stream, the offset up to which the ledger holds the run's rows; per table, its rows."""
    offsets: dict[str, int] = dict(
        conn.execute(
            "SELECT stream, max(end_offset) FROM bq2pg.chunks WHERE run_id = %s GROUP BY stream",
            [run_id],
        ).fetchall()
    )
    tables: dict[str, int] = dict(
        conn.execute(
            "SELECT key, sum(value::bigint) FROM bq2pg.chunks, jsonb_each_text(rows) "
            "WHERE run_id = %s GROUP BY key UNION ALL SELECT 'bq2pg.dead_letters', "
            "sum(dead_letters) FROM bq2pg.chunks WHERE run_id = %s",
            [run_id, run_id],
        ).fetchall()
    )
    counts = {k: int(v) for k, v in tables.items() if v is not None}
    return {k: int(v) for k, v in offsets.items()}, counts


def ledger_checksums(conn: psycopg.Connection, run_ids: list[uuid.UUID]) -> dict[str, int]:
    """Per table, the sum of the content checksums the ledger holds for ``run_ids``; a table
    that some chunk has no checksum for (not computed, or unreadable rows) is left out."""
    rows = conn.execute(
        "WITH c AS (SELECT checksums FROM bq2pg.chunks WHERE run_id = ANY(%s)) "
        "SELECT key, sum(value::numeric)::text, count(*), (SELECT count(*) FROM c) "
        "FROM c, jsonb_each_text(c.checksums) GROUP BY key",
        [run_ids],
    ).fetchall()
    return {key: int(total) for key, total, n, chunks in rows if n == chunks}


def checksum_form(conn: psycopg.Connection, run_id: uuid.UUID) -> int | None:
    """The canonical form of the checksums ``run_id`` records (None: none recorded)."""
    row = conn.execute(
        "SELECT checksum_form FROM bq2pg.runs WHERE run_id = %s", [run_id]
    ).fetchone()
    return row[0] if row else None


def record_checksum_columns(
    conn: psycopg.Connection, run_id: uuid.UUID, columns: dict[str, list[tuple[str, str]]]
) -> None:
    """Remember which columns (name, type) the run's checksums cover, per table, and the
    checksums' canonical form."""
    conn.execute(
        "UPDATE bq2pg.runs SET checksum_columns = %s, checksum_form = %s WHERE run_id = %s",
        [Jsonb(columns), checksum.FORM, run_id],
    )


def finished_sql(
    run_id: uuid.UUID, *, status: str, rows_read: int, rows_loaded: int, bytes_: int
) -> sql.Composed:
    """The statement recording a run's end, to commit with its last data (publishing)."""
    return sql.SQL(
        "UPDATE bq2pg.runs SET status = {}, finished_at = now(), rows_read = {}, "
        "rows_loaded = {}, bytes = {} WHERE run_id = {}"
    ).format(
        sql.Literal(status),
        sql.Literal(rows_read),
        sql.Literal(rows_loaded),
        sql.Literal(bytes_),
        sql.Literal(str(run_id)),
    )


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


def runs(conn: psycopg.Connection, target: str | None = None, limit: int = 20) -> list[dict]:
    """The latest runs (of ``target``), newest first, with their ledger totals."""
    where = sql.SQL("WHERE r.target = {}").format(sql.Literal(target)) if target else sql.SQL("")
    query = sql.SQL(
        "SELECT r.run_id, r.target, r.mode, r.status, r.started_at, r.finished_at, r.rows_read, "
        "r.rows_loaded, coalesce(sum(c.dead_letters), 0) AS dead_letters, count(c.*) AS chunks, "
        "r.error FROM bq2pg.runs r LEFT JOIN bq2pg.chunks c USING (run_id) {} "
        "GROUP BY r.run_id ORDER BY r.started_at DESC LIMIT {}"
    ).format(where, sql.Literal(limit))
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(query).fetchall())


def watermark(conn: psycopg.Connection, target: str) -> tuple[str, str] | None:
    """(column, value) of ``target``'s watermark, or None before its first incremental run."""
    row = conn.execute(
        "SELECT column_name, value FROM bq2pg.watermarks WHERE target = %s", [target]
    ).fetchone()
    return (row[0], row[1]) if row else None


def reset(conn: psycopg.Connection, target: str) -> int:
    """Forget ``target``'s unfinished runs and its watermark (the next run starts over)."""
    with conn.transaction():
        lock_target(conn, target)
        conn.execute("DELETE FROM bq2pg.watermarks WHERE target = %s", [target])
        cur = conn.execute(
            "UPDATE bq2pg.runs SET status = 'abandoned', finished_at = coalesce(finished_at, "
            "now()), error = coalesce(error, 'reset by bq2pg state reset') WHERE target = %s "
            "AND status IN ('running', 'failed')",
            [target],
        )
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [f"bq2pg:{target}"])
    return cur.rowcount


def verify_target(conn: psycopg.Connection, target: str) -> list[dict]:
    """Row counts and content checksums of ``target``'s tables against the ledger of the runs
    that wrote them.

    A replaced table must hold exactly its last run's rows; an appended one the rows of every
    run since the last replace. Merged tables cannot be checked this way (upserts) and are
    reported as such. Checksums are compared when every one of those runs computed them over
    the same columns, in this bq2pg's canonical form.
    """
    history = conn.execute(
        "SELECT run_id, mode, checksum_columns, checksum_form FROM bq2pg.runs "
        "WHERE target = %s AND status = 'succeeded' ORDER BY started_at DESC",
        [target],
    ).fetchall()
    if not history:
        raise TargetError(f"no finished run has loaded {target}")
    runs_since: list[uuid.UUID] = []
    layouts = []
    for run_id, mode, columns, form in history:
        if mode == "merge":
            return [{"table": target, "status": "merged: counts cannot prove it"}]
        runs_since.append(run_id)
        layouts.append(columns if form == checksum.FORM else None)
        if mode == "replace":
            break
    ledger: dict[str, int] = dict(
        conn.execute(
            "SELECT key, sum(value::bigint) FROM bq2pg.chunks, jsonb_each_text(rows) "
            "WHERE run_id = ANY(%s) GROUP BY key",
            [runs_since],
        ).fetchall()
    )
    layout = layouts[0] if all(other == layouts[0] for other in layouts) else None
    sums = ledger_checksums(conn, runs_since) if layout is not None else {}
    if conn.info.server_version < checksum.MIN_SERVER_VERSION:
        sums = {}
    schema = target.split(".", 1)[0]
    report = []
    for table, wanted in sorted(ledger.items()):
        columns = [tuple(c) for c in layout.get(table, [])] if layout and table in sums else []
        row = conn.execute(checksum.server_query(schema, table, columns)).fetchone()
        found = int(row[0]) if row else 0
        if found != int(wanted):
            status = "MISMATCH"
        elif columns and row and int(row[1]) != sums[table]:
            status = "MISMATCH (checksum)"
        else:
            status = "ok (count, checksum)" if columns else "ok (count)"
        report.append(
            {"table": f"{schema}.{table}", "ledger": int(wanted), "rows": found, "status": status}
        )
    return report
