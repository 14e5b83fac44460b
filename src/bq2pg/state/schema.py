"""bq2pg's own state tables in the target database (schema ``bq2pg``): their DDL and upgrades.

``runs`` holds one row per run, ``chunks`` is the ledger, ``watermarks`` the incremental
cursors, ``dead_letters`` the rows PostgreSQL rejected. A state schema made by an older bq2pg
is upgraded in place: every column added since the first release is added when missing.
"""

from __future__ import annotations

import psycopg

from bq2pg.postgres.connection import ensure_schema
from bq2pg.postgres.errors import translate

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
    arrow_schema bytea,
    plan         jsonb,
    pg_bytes     bigint,
    job          text
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
    ("runs", "plan", "jsonb"),
    ("runs", "pg_bytes", "bigint"),
    ("runs", "job", "text"),
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
