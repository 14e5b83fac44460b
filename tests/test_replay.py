"""bq2pg dlq replay: dead-lettered rows load again once the cause is fixed, exactly once.

A user's CHECK constraint on an appended target rejects two rows: they are dead-lettered, the
rest loads. Replaying while the constraint stands leaves them where they are (with the error);
after the user drops it, replay loads them (with their child rows) and empties the dead letters.
"""

from __future__ import annotations

import uuid

import pytest

from bq2pg import CopyRequest, admin, copy_table
from bq2pg.errors import ConfigError
from bq2pg.plan.tables import Field
from bq2pg.quality.verify import verify_target
from conftest import bq2pg_cmd, make_table

FIELDS = [
    Field("id", "INT64"),
    Field("name", "STRING"),
    Field("parts", "RECORD", "REPEATED", (Field("code", "STRING"),)),
]
BAD = {3, 7}
ROWS = [
    {
        "id": i,
        "name": "bad" if i in BAD else f"n{i}",
        "parts": [{"code": f"c{j}"} for j in range(i % 3)],
    }
    for i in range(10)
]


@pytest.fixture
def loaded(source, dataset, pg_url, pg_schema, pg):
    """The source copied in append mode into a target whose CHECK rejects the BAD rows."""
    table_id = make_table(source, dataset, f"rp_{uuid.uuid4().hex[:6]}", FIELDS, ROWS)
    target = f"{pg_schema}.items"
    request = CopyRequest(source=table_id, database_url=pg_url, table=target, mode="append",
                          key=("id",), nested="tables")  # fmt: skip
    copy_table(source, CopyRequest(**{**request.__dict__, "limit": 0}))  # creates the tables
    pg.execute(f"ALTER TABLE {pg_schema}.items ADD CONSTRAINT no_bad CHECK (name <> 'bad')")
    result = copy_table(source, request)
    assert (result.rows_read, result.dead_letters) == (10, 2)
    return target


def ids(pg, schema: str) -> list[int]:
    return [r[0] for r in pg.execute(f"SELECT id FROM {schema}.items ORDER BY id")]


def test_replay_loads_the_rows_once_the_cause_is_fixed(source, loaded, pg_url, pg_schema, pg):
    assert ids(pg, pg_schema) == [i for i in range(10) if i not in BAD]
    still = admin.replay_dead_letters(pg_url, loaded, lambda: source)
    assert still.loaded == [] and len(still.failed) == 2
    assert all("no_bad" in e for e in still.failed.values()), still.failed
    pg.execute(f"ALTER TABLE {pg_schema}.items DROP CONSTRAINT no_bad")
    done = admin.replay_dead_letters(pg_url, loaded, lambda: source)
    assert (len(done.loaded), done.failed) == (2, {})
    assert ids(pg, pg_schema) == list(range(10))
    children = pg.execute(
        f"SELECT parent_id, count(*) FROM {pg_schema}.items__parts GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert dict(children) == {i: i % 3 for i in range(10) if i % 3}
    again = admin.replay_dead_letters(
        pg_url, loaded, lambda: source
    )  # nothing left: nothing loads twice
    assert (again.loaded, again.failed) == ([], {})
    assert ids(pg, pg_schema) == list(range(10))


def test_replay_of_one_id_and_of_an_unknown_id(source, loaded, pg_url, pg, pg_schema):
    letters = [r[0] for r in pg.execute(
        "SELECT id FROM bq2pg.dead_letters WHERE target = %s ORDER BY id", [loaded])]  # fmt: skip
    pg.execute(f"ALTER TABLE {pg_schema}.items DROP CONSTRAINT no_bad")
    done = admin.replay_dead_letters(pg_url, loaded, lambda: source, [letters[0]])
    assert done.loaded == [letters[0]]
    with pytest.raises(ConfigError, match="no dead letter"):
        admin.replay_dead_letters(pg_url, loaded, lambda: source, [letters[0]])


def test_the_cli_replays_and_exits_8_while_rows_still_fail(
    loaded, emulator_env, pg_url, pg_schema, pg
):
    failed = bq2pg_cmd("dlq", "replay", loaded, "--database", pg_url, env=emulator_env)
    assert failed.returncode == 8 and "failed again" in failed.stderr
    pg.execute(f"ALTER TABLE {pg_schema}.items DROP CONSTRAINT no_bad")
    ok = bq2pg_cmd("dlq", "replay", loaded, "--database", pg_url, env=emulator_env)
    assert ok.returncode == 0, ok.stderr
    assert "2 dead letter(s) replayed" in ok.stdout
    report = verify_target(pg, loaded)  # replayed rows are in their run's ledger
    assert {r.status for r in report} == {"ok (count, checksum)"}, report


def test_dead_letters_of_a_run_stored_by_bq2pg_0_1_still_replay(
    source, loaded, pg_url, pg_schema, pg
):
    """``runs.arguments`` of format 1 (bq2pg 0.1 stored the request's fields alone, as this
    run's are turned back into here) are read through the upgrade path."""
    stored = pg.execute(
        "SELECT DISTINCT r.arguments FROM bq2pg.runs r JOIN bq2pg.dead_letters d USING (run_id) "
        "WHERE d.target = %s",
        [loaded],
    ).fetchall()
    assert [a["format"] for (a,) in stored] == [2]  # what this bq2pg writes
    pg.execute(
        "UPDATE bq2pg.runs SET arguments = arguments->'request' WHERE run_id IN "
        "(SELECT run_id FROM bq2pg.dead_letters WHERE target = %s)",
        [loaded],
    )
    (old,) = pg.execute(
        "SELECT DISTINCT r.arguments FROM bq2pg.runs r JOIN bq2pg.dead_letters d USING (run_id) "
        "WHERE d.target = %s",
        [loaded],
    ).fetchone()
    assert "format" not in old and old["source"] and "full_text" not in old
    pg.execute(f"ALTER TABLE {pg_schema}.items DROP CONSTRAINT no_bad")
    done = admin.replay_dead_letters(pg_url, loaded, lambda: source)
    assert (len(done.loaded), done.failed) == (2, {})
    assert ids(pg, pg_schema) == list(range(10))
