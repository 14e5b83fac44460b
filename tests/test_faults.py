"""Fault injection (short, fixed seeds): kill -9, PostgreSQL crash-restart, resets, the run's
own connection terminated, concurrency.

The harness (``faults/harness.py``) runs a real ``bq2pg copy`` process against the emulator and
PostgreSQL and compares the target with the source. A transient fault (a crash-restart, a
reset, the run's connection dropped) must not end the run: those trials pass only if the run
that suffered the fault finished by itself; the re-run the harness then makes only lets the
oracle count what was lost. ``make faults`` runs the long randomised
version and writes ``docs/faults.md``. The negative control commits the ledger in a
transaction of its own (``BQ2PG_FAULT_SPLIT_LEDGER``): the same oracle must catch it.
"""

from __future__ import annotations

import os
import random

import psycopg
import pytest
from faults import harness

from bq2pg.bigquery.client import TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
from bq2pg.postgres import lock


@pytest.fixture(scope="module")
def source_table(source, tmp_path_factory) -> tuple[str, dict[str, int]]:
    """Generated publications with planted bad rows (a NUL in the country code)."""
    table_id = f"bq2pg-test.faults_{tmp_path_factory.mktemp('f').name[-6:]}.publications"
    ref = TableRef.parse(table_id)
    create_table(source, ref, publications.PUBLICATIONS)
    rows, planted = harness.plant(generate.generate(harness.ROWS, seed=99))
    load_arrow(source, ref, rows)
    return table_id, harness.expectation(rows, planted)


#: Rows that must load (the others are planted bad rows, to be dead-lettered once).
LOADED = harness.ROWS - harness.ROWS // harness.PLANT_EVERY
PLANTED = harness.ROWS // harness.PLANT_EVERY


def assert_finished_by_itself(trial: harness.Trial) -> None:
    """The loader run that suffered the faults exited 0 or 8 with its run succeeded, and the
    target holds every row exactly once, the planted rows as dead letters."""
    assert not trial.hung, f"the loader hung: {trial.error}"
    assert trial.recovered, (
        f"the fault ended the run (exit {trial.exit}): {trial.error}; a re-run exited "
        f"{trial.rerun}; its stderr ended:\n{trial.log[-1500:]}"
    )
    result = trial.oracle
    assert (result.lost, result.duplicated, result.corrupted, result.rows) == (0, 0, 0, LOADED)
    assert (result.dead, result.dead_wrong) == (PLANTED, 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    emu, source_table, pg_url, pg_schema, pg, seed
):
    table_id, expected = source_table
    trial = harness.kill_trial(emu, pg_url, table_id, expected, pg_schema, random.Random(seed))
    assert trial.faults >= 1, "no kill landed: the run finished too fast to test anything"
    assert not trial.hung
    assert trial.durable == sorted(trial.durable) and trial.durable[0] > 0  # progress survived
    result = trial.oracle
    assert (result.lost, result.duplicated, result.corrupted, result.rows) == (0, 0, 0, LOADED)
    assert (result.dead, result.dead_wrong) == (PLANTED, 0)
    status = pg.execute(
        "SELECT status, count(*) FROM bq2pg.runs WHERE target = %s GROUP BY 1",
        [f"{pg_schema}.pubs"],
    ).fetchall()
    assert dict(status) == {"succeeded": 1}  # every kill was resumed by the same run


def test_negative_control_split_ledger_is_caught_by_the_oracle(
    emu, source_table, pg_url, pg_schema
):
    table_id, expected = source_table
    target = f"{pg_schema}.pubs"
    split = {"BQ2PG_FAULT_SPLIT_LEDGER": "1"}
    kills = 0
    with psycopg.connect(pg_url, autocommit=True) as pg:
        for _ in range(2):
            proc = harness.loader(emu, pg_url, table_id, target, **split)
            # data committed but its ledger row not yet: the window the split opens
            if not harness.kill_when(
                proc, lambda: harness.target_rows(pg, pg_schema) > harness.committed(pg, target)
            ):
                break
            kills += 1
            if harness.finished(pg, target):
                break
        else:
            # the loader's own verification sees more staged rows than its ledger: exit 7
            err = harness.run_to_end(emu, pg_url, table_id, target, expect=7, **split)
            assert "verification" in err and "nothing was published" in err
        result = harness.oracle(pg, pg_schema, expected)
    assert kills >= 1
    # nothing published: the oracle sees every row missing (without the verification it
    # would see duplicates; the negative control is caught either way)
    assert result.lost == LOADED or result.duplicated > 0, "the broken loader went unseen"


def test_a_second_concurrent_run_exits_already_running(emu, source_table, pg_url, pg_schema, pg):
    table_id, expected = source_table
    target = f"{pg_schema}.pubs"
    holder = psycopg.connect(pg_url, autocommit=True)  # a run in progress holds the lock
    lock.lock(holder, target)
    second = harness.loader(emu, pg_url, table_id, target)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 6, err.decode()
    assert "already loading" in err.decode()
    holder.close()  # the holder dies: its lock goes with its connection
    harness.run_to_end(emu, pg_url, table_id, target)
    result = harness.oracle(pg, pg_schema, expected)
    assert (result.lost, result.duplicated, result.corrupted) == (0, 0, 0)
    assert (result.dead, result.dead_wrong) == (PLANTED, 0)


def test_postgres_crash_restart_mid_load_loses_and_duplicates_nothing(
    emu, source_table, pg_url, pg_schema
):
    if os.environ.get("BQ2PG_DATABASE_URL"):
        pytest.skip("restarts only the embedded PostgreSQL of the test session")
    table_id, expected = source_table
    trial = harness.restart_trial(emu, pg_url, table_id, expected, pg_schema, random.Random(5))
    assert trial.faults == 1, f"the load ended before the crash ({trial.error}): nothing tested"
    assert_finished_by_itself(trial)


@pytest.mark.parametrize(
    "blackhole",
    [
        False,
        # one make faults run saw 1 hang in 13 black-hole trials, before the publish steps got
        # deadlines; the next run was clean. ~25 s a trial: run by make faults and
        # `pytest -m long_faults`, not make test, until more runs confirm the fix
        pytest.param(True, marks=pytest.mark.long_faults),
    ],
    ids=["tcp-reset", "black-hole"],
)
def test_reset_and_half_open_connections_lose_nothing_and_hang_nothing(
    emu, source_table, pg_url, pg_schema, blackhole
):
    if os.environ.get("BQ2PG_DATABASE_URL"):
        pytest.skip("the proxy fronts the embedded PostgreSQL's Unix socket")
    table_id, expected = source_table
    trial = harness.network_trial(
        emu, pg_url, table_id, expected, pg_schema, random.Random(7), blackhole=blackhole
    )
    assert trial.faults >= 1, f"the load ended before the fault ({trial.error}): nothing tested"
    assert not trial.hung, "a half-open connection hung the loader"
    assert_finished_by_itself(trial)


@pytest.mark.parametrize(
    "publishing",
    [
        False,
        # the window (ledger complete, run not yet published) is short: make faults times it
        pytest.param(True, marks=pytest.mark.long_faults),
    ],
    ids=["mid-load", "publishing"],
)
def test_the_runs_own_connection_terminated_is_reconnected(
    emu, source_table, pg_url, pg_schema, publishing
):
    table_id, expected = source_table
    trial = harness.idle_trial(
        emu, pg_url, table_id, expected, pg_schema, random.Random(11), publishing=publishing
    )
    assert trial.faults == 1, (
        f"the run's connection was not terminated ({trial.error}): nothing tested"
    )
    assert_finished_by_itself(trial)
