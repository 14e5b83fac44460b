"""A state schema made by an older bq2pg (runs without the columns and the status added since)
is upgraded in place: the next run adds what is missing and works, keeping the old rows (an
old failed run of the same target is abandoned, a status the first release did not have)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bq2pg import CopyRequest, copy_table
from bq2pg.plan.tables import Field
from conftest import make_table

#: bq2pg.runs as the first release made it, with one run in it.
OLD_STATE = """
CREATE SCHEMA bq2pg;
CREATE TABLE bq2pg.runs (
    run_id uuid PRIMARY KEY, source text NOT NULL, target text NOT NULL, mode text NOT NULL,
    arguments jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at timestamptz NOT NULL, finished_at timestamptz, rows_read bigint,
    rows_loaded bigint, bytes bigint, error text
);
INSERT INTO bq2pg.runs VALUES (gen_random_uuid(), 'p.d.t', 'public.t', 'replace', '{}',
    'succeeded', now(), now(), 1, 1, 10, NULL),
    (gen_random_uuid(), 'p.d.t', 'public.items', 'replace', '{}', 'failed', now(), now(),
    0, 0, 0, 'interrupted');
CREATE TABLE bq2pg.chunks (
    run_id uuid NOT NULL REFERENCES bq2pg.runs ON DELETE CASCADE, stream text NOT NULL,
    start_offset bigint NOT NULL, end_offset bigint NOT NULL, rows jsonb NOT NULL,
    PRIMARY KEY (run_id, stream, start_offset)
);
"""


@pytest.fixture
def old_database(pg_url: str, pg) -> Iterator[str]:
    name = f"bq2pg_old_{uuid.uuid4().hex[:8]}"
    pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(**{**conninfo_to_dict(pg_url), "dbname": name})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_STATE)
    yield url
    pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_an_old_state_schema_is_upgraded_by_the_next_run(source, dataset, old_database):
    table_id = make_table(
        source, dataset, "items", [Field("id", "INT64")], [{"id": i} for i in range(5)]
    )
    request = CopyRequest(source=table_id, database_url=old_database, table="public.items")
    assert copy_table(source, request).rows_read == 5
    with psycopg.connect(old_database) as conn:
        runs = conn.execute("SELECT count(*), count(snapshot_time) FROM bq2pg.runs").fetchone()
        assert runs == (3, 1)  # the old runs kept, the new one recorded with its snapshot
        statuses = conn.execute("SELECT status FROM bq2pg.runs ORDER BY started_at").fetchall()
        assert sorted(s for (s,) in statuses) == ["abandoned", "succeeded", "succeeded"]
        assert conn.execute("SELECT count(checksums) FROM bq2pg.chunks").fetchone() == (1,)
