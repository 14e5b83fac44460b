"""Post-load work spread over several connections, against the real PostgreSQL."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

from bq2pg.errors import TargetError
from bq2pg.plan import ddl
from bq2pg.plan.tables import Field, plan_table
from bq2pg.postgres import connection as load
from bq2pg.postgres import postload


def test_lanes_follow_streams_within_bounds():
    assert postload.lanes_for(2, 9) == 2
    assert postload.lanes_for(16, 9) == postload.MAX_LANES
    assert postload.lanes_for(8, 1) == 1
    assert postload.lanes_for(0, 5) == 1


def test_items_run_on_several_connections_at_once_and_results_keep_their_order(pg_url):
    both_started = threading.Barrier(2, timeout=30)

    def work(conn: psycopg.Connection, n: int) -> tuple[int, int]:
        if n < 2:
            both_started.wait()  # passes only if two items run at the same time
        row = conn.execute("SELECT %s::int * 10, pg_backend_pid()", [n]).fetchone()
        assert row is not None
        return row[0], row[1]

    out = postload.spread(pg_url, list(range(6)), work, lanes=2, what="test", deadline=60)
    assert [value for value, _ in out] == [0, 10, 20, 30, 40, 50]
    assert len({pid for _, pid in out}) == 2


def test_an_item_whose_connection_dies_is_retried_on_a_new_one(pg_url):
    killed: list[int] = []

    def work(conn: psycopg.Connection, n: int) -> int:
        pid = conn.info.backend_pid
        if not killed:
            killed.append(pid)
            with psycopg.connect(pg_url, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", [pid])
        row = conn.execute("SELECT %s::int", [n]).fetchone()
        assert row is not None
        return row[0]

    assert postload.spread(pg_url, [7], work, lanes=1, what="t", deadline=60, attempts=3) == [7]
    assert len(killed) == 1


def test_a_failing_item_stops_the_lanes_and_is_raised(pg_url):
    def work(conn: psycopg.Connection, n: int) -> int:
        conn.execute("SELECT 1 / %s::int", [n])
        return n

    with pytest.raises(TargetError, match="division by zero"):
        postload.spread(pg_url, [1, 0, 2], work, lanes=1, what="dividing", deadline=60)


def test_primary_keys_are_built_once_even_when_asked_again(pg_url, pg_schema, pg):
    tables = [
        plan_table([Field("id", "INT64"), Field("v", "STRING")], source="t", schema=pg_schema,
                   name=f"k{i}", key=("id",))
        for i in range(3)
    ]  # fmt: skip
    with load.connect(pg_url) as conn:
        load.execute(conn, [ddl.create_schema(pg_schema), *map(ddl.create_table, tables)], "t")
    items = [(t, t.name) for t in tables]
    postload.add_primary_keys(pg_url, items, lanes=2, deadline=60)
    postload.add_primary_keys(pg_url, items, lanes=2, deadline=60)  # a resumed run: no error
    keys = pg.execute(
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE n.nspname = %s AND c.contype = 'p'",
        [pg_schema],
    ).fetchone()
    assert keys == (3,)


def test_a_failing_post_publish_statement_is_skipped_and_reported(pg_url, pg_schema, pg):
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(pg_schema, "a")))
    good = [
        sql.SQL("CREATE INDEX {} ON {} (x)").format(
            sql.Identifier(f"a_x{i}"), sql.Identifier(pg_schema, "a")
        )
        for i in range(3)
    ]
    bad = sql.SQL("CREATE INDEX ON {} (no_such_column)").format(sql.Identifier(pg_schema, "a"))
    missed = postload.after_publish(
        pg_url, [good[0], bad, *good[1:]], lanes=2, attempts=2, deadline=60
    )
    assert missed == [bad]
    indexes = pg.execute(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = %s", [pg_schema]
    ).fetchone()
    assert indexes == (3,)
