"""bq2pg's own state tables in the target database (schema ``bq2pg``): their DDL and upgrades.

``runs`` holds one row per run, ``chunks`` is the ledger, ``watermarks`` the incremental
cursors, ``dead_letters`` the rows PostgreSQL rejected, ``quality_results`` the quality rules'
outcomes, ``profiles`` the columns' statistics, ``anomalies`` the unusual runs, ``lineage`` the
column-level edges from sources to targets, and ``audit`` one append-only row per action (a
trigger refuses UPDATE, DELETE and TRUNCATE). The service (``bq2pg serve``/``worker``) keeps
its queue of requested runs in ``queue`` (with their live events in ``queue_events``), its
workers' heartbeats in ``workers``, its schedules' state in ``schedules`` and its API keys
(hashed) in ``api_keys``. A state schema made by an older bq2pg is upgraded
in place: every column and table added since the first release is added when missing.
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
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned',
                                                 'failed_quality', 'cancelled')),
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
CREATE TABLE IF NOT EXISTS bq2pg.quality_results (
    id            bigserial PRIMARY KEY,
    run_id        uuid REFERENCES bq2pg.runs ON DELETE CASCADE,
    target        text NOT NULL,
    table_name    text NOT NULL,
    rule          text NOT NULL,
    name          text NOT NULL,
    severity      text NOT NULL CHECK (severity IN ('error', 'warn')),
    evaluated     bigint NOT NULL,
    failing       bigint NOT NULL,
    ratio         double precision,
    samples       jsonb NOT NULL DEFAULT '[]',
    passed        boolean NOT NULL,
    definition    jsonb NOT NULL DEFAULT '{}',
    checked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS quality_results_run_idx ON bq2pg.quality_results (run_id);
CREATE INDEX IF NOT EXISTS quality_results_table_idx
    ON bq2pg.quality_results (table_name, checked_at);
CREATE TABLE IF NOT EXISTS bq2pg.profiles (
    id                 bigserial PRIMARY KEY,
    run_id             uuid REFERENCES bq2pg.runs ON DELETE SET NULL,
    table_name         text NOT NULL,
    column_name        text NOT NULL,
    data_type          text,
    row_estimate       bigint,
    null_frac          double precision,
    distinct_estimate  double precision,
    min_value          text,
    max_value          text,
    most_common        jsonb,
    avg_width          integer,
    profiled_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS profiles_table_idx ON bq2pg.profiles (table_name, profiled_at);
CREATE TABLE IF NOT EXISTS bq2pg.anomalies (
    id            bigserial PRIMARY KEY,
    run_id        uuid REFERENCES bq2pg.runs ON DELETE CASCADE,
    job           text,
    target        text NOT NULL,
    table_name    text,
    metric        text NOT NULL,
    value         double precision,
    expected      double precision,
    score         double precision,
    method        text NOT NULL,
    severity      text NOT NULL CHECK (severity IN ('error', 'warn')),
    message       text NOT NULL,
    detected_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS anomalies_job_idx ON bq2pg.anomalies (job, detected_at);
CREATE TABLE IF NOT EXISTS bq2pg.lineage (
    id                bigserial PRIMARY KEY,
    run_id            uuid REFERENCES bq2pg.runs ON DELETE CASCADE,
    source_namespace  text NOT NULL,
    source_name       text NOT NULL,
    source_fields     text[] NOT NULL,
    target_namespace  text NOT NULL,
    target_name       text NOT NULL,
    target_column     text NOT NULL,
    transformation    text NOT NULL,
    description       text,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS lineage_target_idx ON bq2pg.lineage (target_name, target_column);
CREATE INDEX IF NOT EXISTS lineage_source_idx ON bq2pg.lineage (source_name);
CREATE TABLE IF NOT EXISTS bq2pg.audit (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text NOT NULL,
    host       text,
    action     text NOT NULL,
    target     text,
    arguments  jsonb NOT NULL DEFAULT '{}',
    outcome    text NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at_idx ON bq2pg.audit (at);
CREATE OR REPLACE FUNCTION bq2pg.audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'bq2pg.audit is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'audit_append_only'
                   AND tgrelid = 'bq2pg.audit'::regclass) THEN
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON bq2pg.audit
            FOR EACH ROW EXECUTE FUNCTION bq2pg.audit_append_only();
        CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON bq2pg.audit
            FOR EACH STATEMENT EXECUTE FUNCTION bq2pg.audit_append_only();
    END IF;
END
$$;
CREATE TABLE IF NOT EXISTS bq2pg.queue (
    id               uuid PRIMARY KEY,
    job              text,
    kind             text NOT NULL,
    target           text NOT NULL,
    request          jsonb NOT NULL,
    dedupe           text NOT NULL,
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                                                     'failed_quality', 'cancelled',
                                                     'interrupted')),
    resume           boolean NOT NULL DEFAULT false,
    run_id           uuid,
    actor            text NOT NULL,
    idempotency_key  text UNIQUE,
    schedule         text,
    slot             timestamptz,
    worker           text,
    heartbeat_at     timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    phase            text,
    rows             bigint NOT NULL DEFAULT 0,
    bytes            bigint NOT NULL DEFAULT 0,
    total_rows       bigint,
    streams          integer,
    attempts         integer NOT NULL DEFAULT 0,
    error            jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (schedule, slot)
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_one_queued ON bq2pg.queue (dedupe)
    WHERE status = 'queued';
CREATE UNIQUE INDEX IF NOT EXISTS queue_one_running ON bq2pg.queue (target)
    WHERE status = 'running';
CREATE INDEX IF NOT EXISTS queue_created_idx ON bq2pg.queue (created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS bq2pg.queue_events (
    id        bigserial PRIMARY KEY,
    queue_id  uuid NOT NULL REFERENCES bq2pg.queue ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    event     text NOT NULL,
    data      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_events_idx ON bq2pg.queue_events (queue_id, id);
CREATE TABLE IF NOT EXISTS bq2pg.workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    concurrency integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bq2pg.schedules (
    job        text PRIMARY KEY,
    cron       text NOT NULL,
    paused     boolean NOT NULL DEFAULT false,
    last_slot  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bq2pg.api_keys (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    hash         text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
"""

#: The state tables (besides ``runs`` and ``chunks``, whose columns :data:`_UPGRADES` checks).
TABLES = ("watermarks", "dead_letters", "quality_results", "profiles", "anomalies", "lineage",
          "audit", "queue", "queue_events", "workers", "schedules", "api_keys")  # fmt: skip


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
    ("runs", "skip_quality", "boolean NOT NULL DEFAULT false"),
    ("runs", "retries", "integer"),
    ("runs", "side_tables", "jsonb"),
    ("chunks", "bytes", "bigint NOT NULL DEFAULT 0"),
    ("chunks", "dead_letters", "integer NOT NULL DEFAULT 0"),
    ("chunks", "checksums", "jsonb"),
    ("dead_letters", "context", "text"),
    ("dead_letters", "source_row", "bytea"),
]
_UPGRADE_DDL = "\n".join(
    f"ALTER TABLE bq2pg.{table} ADD COLUMN IF NOT EXISTS {column} {kind};"
    for table, column, kind in _UPGRADES
) + (  # the statuses 'abandoned', 'failed_quality' and 'cancelled' came later
    "\nALTER TABLE bq2pg.runs DROP CONSTRAINT IF EXISTS runs_status_check;"
    "\nALTER TABLE bq2pg.runs ADD CONSTRAINT runs_status_check CHECK "
    "(status IN ('running', 'succeeded', 'failed', 'abandoned', 'failed_quality',"
    " 'cancelled'));"
)


def ensure(conn: psycopg.Connection) -> None:
    """Create the state schema and tables if they are missing (or add newer columns).

    Nothing is created when everything exists: a DBA may create the ``bq2pg`` schema for a
    loader role that has no CREATE on the database.
    """
    try:
        if is_current(conn):
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [STATE_DDL_LOCK])
            ensure_schema(conn, "bq2pg")
            conn.execute(_DDL)
            conn.execute(_UPGRADE_DDL)  # columns added since a state schema was created
    except psycopg.Error as exc:
        raise translate(exc, "creating bq2pg's state tables") from exc


def is_current(conn: psycopg.Connection) -> bool:
    """Whether every state table and column of this bq2pg exists (psycopg errors pass)."""
    found = conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE NOT attisdropped AND attnum > 0 AND "
        "(attrelid, attname) IN (SELECT to_regclass('bq2pg.' || t), c "
        "FROM unnest(%s::text[], %s::text[]) AS n(t, c)) "
        "UNION ALL SELECT count(*) FROM unnest(%s::text[]) AS t(name) "
        "WHERE to_regclass('bq2pg.' || name) IS NOT NULL "
        "UNION ALL SELECT count(*) FROM pg_constraint WHERE conname = 'runs_status_check' "
        "AND conrelid = to_regclass('bq2pg.runs') "
        "AND pg_get_constraintdef(oid) LIKE '%%cancelled%%'",
        [[t for t, _, _ in _UPGRADES], [c for _, c, _ in _UPGRADES], list(TABLES)],
    ).fetchall()
    return [r[0] for r in found] == [len(_UPGRADES), len(TABLES), 1]
