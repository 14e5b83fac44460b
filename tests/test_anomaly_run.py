"""Anomaly detection on real runs: a run against its job's recorded history (a volume drop is
found and stored; configured as an error, it keeps the run from publishing), and the plan's
row estimate before a history exists."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from bq2pg.engine import copy as copy_engine
from bq2pg.engine.run import run_job
from bq2pg.errors import QualityGateError
from bq2pg.plan.tables import Field
from conftest import bq2pg_cmd, make_table

FIELDS = [Field("id", "INT64"), Field("name", "STRING")]


def rows(n: int) -> list[dict[str, object]]:
    return [{"id": i, "name": f"n{i}"} for i in range(n)]


def history(pg, target: str, runs: int = 20, rows_each: int = 100) -> None:
    """``runs`` earlier succeeded runs of the ad-hoc copy job into ``target``, a day apart,
    with a little noise: the baseline the next run is compared with."""
    now = dt.datetime.now(dt.UTC)
    for k in range(runs):
        started = now - dt.timedelta(days=runs - k)
        n = rows_each + (k % 5) - 2
        pg.execute(
            "INSERT INTO bq2pg.runs (run_id, source, target, mode, arguments, status, "
            "started_at, finished_at, rows_read, rows_loaded, bytes, job) VALUES "
            "(%s, 'p.d.t', %s, 'replace', %s, 'succeeded', %s, %s, %s, %s, %s, 'copy')",
            [uuid.uuid4(), target, Jsonb({}), started,
             started + dt.timedelta(seconds=2 + (k % 3) * 0.1), n, n, n * 40],
        )  # fmt: skip


def job_of(source, table_id: str, pg_url: str, schema: str, **kw):
    request = copy_engine.CopyRequest(source=table_id, database_url=pg_url,
                                      table=f"{schema}.items")  # fmt: skip
    return dataclasses.replace(copy_engine.build_job(source, request), **kw)


def count(pg, schema: str) -> int:
    return pg.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "items"))
    ).fetchone()[0]


def test_a_volume_drop_against_the_history_is_found_and_stored(
    source, dataset, pg_url, pg_schema, pg
):
    target = f"{pg_schema}.items"
    usual = make_table(source, dataset, "usual", FIELDS, rows(100))
    first = run_job(source, job_of(source, usual, pg_url, pg_schema))  # creates the state
    history(pg, target)
    usual_run = run_job(source, job_of(source, usual, pg_url, pg_schema))
    assert [f for f in usual_run.anomalies if f.metric == "rows"] == []
    dropped = make_table(source, dataset, "dropped", FIELDS, rows(7))
    result = run_job(source, job_of(source, dropped, pg_url, pg_schema))
    found = {f.metric: f for f in result.anomalies}
    assert "rows" in found and found["rows"].method == "robust_z"
    assert found["rows"].severity == "warn" and found["rows"].value == 7
    assert count(pg, pg_schema) == 7  # warn: published
    stored = pg.execute(
        "SELECT metric, method, severity FROM bq2pg.anomalies WHERE run_id = %s",
        [result.run_id],
    ).fetchall()
    assert ("rows", "robust_z", "warn") in stored
    listed = bq2pg_cmd("anomalies", "copy", "--to", pg_url, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert any(a["metric"] == "rows" and a["target"] == target
               for a in json.loads(listed.stdout))  # fmt: skip
    del first


def test_an_error_anomaly_keeps_the_run_from_publishing(source, dataset, pg_url, pg_schema, pg):
    target = f"{pg_schema}.items"
    usual = make_table(source, dataset, "usual", FIELDS, rows(100))
    run_job(source, job_of(source, usual, pg_url, pg_schema))
    history(pg, target)
    dropped = make_table(source, dataset, "dropped", FIELDS, rows(5))
    with pytest.raises(QualityGateError, match=r"anomaly \[error\]: rows"):
        run_job(source, job_of(source, dropped, pg_url, pg_schema, anomaly_severity="error"))
    assert count(pg, pg_schema) == 100  # the target kept its content
    status = pg.execute(
        "SELECT status FROM bq2pg.runs WHERE target = %s ORDER BY started_at DESC LIMIT 1",
        [target],
    ).fetchone()[0]
    assert status == "failed_quality"


def test_before_a_history_the_plans_row_estimate_is_the_baseline(
    source, dataset, pg_url, pg_schema
):
    table_id = make_table(source, dataset, "items", FIELDS, rows(30))
    plan = {"rows": 1000, "rows_at_most": False}
    result = run_job(source, job_of(source, table_id, pg_url, pg_schema, estimate=plan))
    found = {f.metric: f for f in result.anomalies}
    assert found["rows"].method == "expected_rows" and found["rows"].expected == 1000
    fine = run_job(source, job_of(source, table_id, pg_url, pg_schema,
                                  estimate={"rows": 30, "rows_at_most": False}))  # fmt: skip
    assert [f for f in fine.anomalies if f.metric == "rows"] == []
