"""The run's lifecycle against the real servers: the lock comes first, the run's connection comes
back after a fault, ``--resume``, and the errors a new user meets (a role without privileges,
a three-part ``--table``, a URL that is not PostgreSQL's)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bq2pg import CopyRequest, NothingToResumeError, copy_table
from bq2pg.bigquery.client import TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.errors import ConcurrentRunError
from bq2pg.patents import source as patents_source
from bq2pg.patents import synthetic
from bq2pg.plan.tables import Field
from bq2pg.postgres import lock
from bq2pg.state import schema
from conftest import bq2pg_cmd, make_table

FIELDS = [Field("id", "INT64"), Field("name", "STRING")]
ROWS = [{"id": i, "name": f"n{i}"} for i in range(50)]


@pytest.fixture
def items(source, dataset) -> str:
    return make_table(source, dataset, "items", FIELDS, ROWS)


def holders_of(pg: psycopg.Connection, target: str) -> list[int]:
    """Backends holding ``target``'s advisory lock."""
    rows = pg.execute(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND "
        "(l.classid::bigint << 32 | l.objid::bigint) = "
        "(hashtextextended(%s, 0) & 'xFFFFFFFFFFFFFFFF'::bit(64)::bigint)",
        [lock.lock_key(target)],
    ).fetchall()
    return [r[0] for r in rows]


def test_patents_drop_tables_while_another_run_holds_the_lock_drops_nothing(
    source, dataset, pg_url, pg_schema, pg, emulator_env
):
    """The run takes its lock before any DDL: a second run exits 6 and the model survives."""
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(sql.SQL("CREATE TABLE {} (publication_number text)").format(
        sql.Identifier(pg_schema, "publications")))  # fmt: skip
    pg.execute(sql.SQL("INSERT INTO {} VALUES ('US-1-A')").format(
        sql.Identifier(pg_schema, "publications")))  # fmt: skip
    holder = psycopg.connect(pg_url, autocommit=True)
    try:
        lock.lock(holder, f"{pg_schema}.publications")
        publications = f"{dataset}.publications"
        create_table(source, TableRef.parse(publications), patents_source.PUBLICATIONS)
        load_arrow(source, TableRef.parse(publications), synthetic.generate(20, seed=5))
        done = bq2pg_cmd("patents", "--to", pg_url, "--schema", pg_schema, "--drop-tables",
                         "--source", publications, env=emulator_env)  # fmt: skip
        assert done.returncode == 6, done.stderr
        assert "already loading" in done.stderr
        survived = pg.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "publications"))
        ).fetchone()
        assert survived == (1,)
    finally:
        holder.close()


def test_resume_without_an_interrupted_run_says_so(source, items, pg_url, pg_schema):
    request = CopyRequest(source=items, database_url=pg_url, table=f"{pg_schema}.r", resume=True)
    with pytest.raises(NothingToResumeError, match="no interrupted run"):
        copy_table(source, request)


def test_resume_continues_the_interrupted_run(source, items, pg_url, pg_schema, pg):
    """A run interrupted after its first chunk (simulated: marked running, its lock gone) is
    resumed by ``--resume``, exactly once."""
    target = f"{pg_schema}.r2"
    first = copy_table(source, CopyRequest(source=items, database_url=pg_url, table=target))
    # make the finished run look interrupted before publishing: side table back, status running
    pg.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(pg_schema, "r2"), sql.Identifier("r2__bq2pg_new")
        )
    )
    pg.execute(
        "UPDATE bq2pg.runs SET status = 'running', finished_at = NULL WHERE run_id = %s",
        [first.run_id],
    )
    pg.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS r2_pkey").format(
        sql.Identifier(pg_schema, "r2__bq2pg_new")))  # fmt: skip
    again = copy_table(
        source, CopyRequest(source=items, database_url=pg_url, table=target, resume=True)
    )
    assert again.resumed and again.run_id == first.run_id
    assert again.rows_read == len(ROWS)
    count = pg.execute(sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(
        sql.Identifier(pg_schema, "r2"))).fetchone()  # fmt: skip
    assert count == (len(ROWS), len(ROWS))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "a.b.c"], "is not SCHEMA.NAME or NAME"),
        (["--table", "a."], "is not SCHEMA.NAME or NAME"),
        (["--to", "mysql://u:CANARY-pw@h/db"], "is not a PostgreSQL URL"),
    ],
)
def test_bad_targets_exit_2_with_a_clear_message(items, pg_url, emulator_env, args, message):
    full = ["copy", items, *(["--to", pg_url] if "--to" not in args else []), *args]
    done = bq2pg_cmd(*full, env=emulator_env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "CANARY-pw" not in done.stderr + done.stdout


@pytest.fixture
def unprivileged(pg_url) -> Iterator[str]:
    """A login role with CONNECT on the database and no privilege on schema ``bq2pg``."""
    role = f"bq2pg_nopriv_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        schema.ensure(admin)  # the state tables exist, owned by another role
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'x'").format(sql.Identifier(role)))
        try:
            yield make_conninfo(pg_url, user=role, password="x")
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    "command",
    [["state", "show"], ["state", "reset", "s.t"], ["dlq", "list"], ["verify", "s.t"]],
)
def test_a_role_without_privileges_on_the_state_exits_4_naming_the_privilege(unprivileged, command):
    done = bq2pg_cmd(*command, "--database", unprivileged)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "permission denied for schema bq2pg" in done.stderr
    assert "Traceback" not in done.stderr and "GRANT USAGE ON SCHEMA bq2pg" in done.stderr


def test_the_runs_connection_comes_back_with_its_lock_after_it_is_killed(pg_url, pg_schema, pg):
    """A backend terminated under the run (what a crash-restart or a reset does to it): the
    next call reconnects and takes the lock again, and a second run still cannot start."""
    target = f"{pg_schema}.locked"
    run = lock.LockedConnection(pg_url, target)
    try:
        (pid,) = holders_of(pg, target)
        pg.execute("SELECT pg_terminate_backend(%s)", [pid])
        time.sleep(0.2)
        assert holders_of(pg, target) == []  # the lock went with the connection
        run.ping()
        assert run.reconnections == 1 and len(holders_of(pg, target)) == 1
        with pytest.raises(ConcurrentRunError):
            lock.LockedConnection(pg_url, target)
    finally:
        run.close()


def test_the_heartbeat_takes_the_lock_again_while_the_run_waits(pg_url, pg_schema, pg):
    target = f"{pg_schema}.beat"
    run = lock.LockedConnection(pg_url, target)
    try:
        with run.heartbeat(every_s=0.2):
            (pid,) = holders_of(pg, target)
            pg.execute("SELECT pg_terminate_backend(%s)", [pid])
            deadline = time.monotonic() + 10
            while run.reconnections == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert run.reconnections == 1 and len(holders_of(pg, target)) == 1
    finally:
        run.close()


def test_a_run_whose_lock_was_taken_meanwhile_stops(pg_url, pg_schema, pg):
    target = f"{pg_schema}.taken"
    run = lock.LockedConnection(pg_url, target)
    other = psycopg.connect(pg_url, autocommit=True)
    try:
        (pid,) = holders_of(pg, target)
        pg.execute("SELECT pg_terminate_backend(%s)", [pid])
        ready = threading.Event()
        deadline = time.monotonic() + 5
        while not lock.try_lock(other, target) and time.monotonic() < deadline:
            time.sleep(0.05)
        ready.set()
        with pytest.raises(ConcurrentRunError):
            run.ping()
    finally:
        other.close()
        run.close()


def test_closing_a_run_connection_releases_the_lock_at_once(pg_url):
    """The next run of a target, a moment after the last one closed its connection, gets the
    lock even when the old server process has not exited yet (a busy server)."""
    from bq2pg.postgres import lock as pg_lock

    for _ in range(20):
        held = pg_lock.LockedConnection(pg_url, "lock_release.t")
        held.close()
        again = pg_lock.LockedConnection(pg_url, "lock_release.t")  # ConcurrentRunError if held
        again.close()
