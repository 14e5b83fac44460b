"""--executor dask://: the read streams as tasks on a Dask cluster (a LocalCluster of 2 worker
processes), with results identical to the local executor, and a task run twice loading once."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from bq2pg import CopyRequest, copy_table
from bq2pg.bigquery.read import ReadSession
from bq2pg.engine.copy import plan
from bq2pg.engine.dask import StreamTask, run_task
from bq2pg.errors import ConfigError
from bq2pg.plan.tables import Field
from bq2pg.quality.verify import verify_target
from conftest import make_table

distributed = pytest.importorskip("distributed", reason="needs the dask extra")

FIELDS = [
    Field("id", "INT64"),
    Field("name", "STRING"),
    Field("parts", "RECORD", "REPEATED", (Field("code", "STRING"), Field("n", "INT64"))),
]
ROWS = [
    {"id": i, "name": f"n{i}", "parts": [{"code": f"c{j}", "n": j} for j in range(i % 4)]}
    for i in range(3000)
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as running:
        yield "dask://" + running.scheduler_address.removeprefix("tcp://")


def rows_of(pg, table: str) -> list[tuple]:
    return pg.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def test_dask_loads_the_same_rows_as_local(source, dataset, pg_url, pg_schema, pg, cluster):
    table_id = make_table(source, dataset, "items", FIELDS, ROWS)
    results = {}
    for executor in ("local", cluster):
        name = "local" if executor == "local" else "dask"
        request = CopyRequest(
            source=table_id,
            database_url=pg_url,
            table=f"{pg_schema}.{name}",
            key=("id",),
            nested="tables",
            streams=2,
            executor=executor,
        )
        results[name] = copy_table(source, request)
    local, dask = results["local"], results["dask"]
    assert dask.rows_read == local.rows_read == len(ROWS)
    assert [t.rows for t in dask.tables] == [t.rows for t in local.tables]
    assert sorted(dask.checksummed) == ["dask", "dask__parts"]
    assert rows_of(pg, f"{pg_schema}.dask") == rows_of(pg, f"{pg_schema}.local")
    assert rows_of(pg, f"{pg_schema}.dask__parts") == rows_of(pg, f"{pg_schema}.local__parts")
    assert {r.status for r in verify_target(pg, f"{pg_schema}.dask")} == {"ok (count, checksum)"}


def test_a_task_run_again_resumes_from_the_ledger(source, dataset, pg_url, pg_schema, pg):
    """What Dask does when a worker dies after its task committed: the task runs again."""
    table_id = make_table(source, dataset, "items", FIELDS, ROWS[:500])
    request = CopyRequest(
        source=table_id,
        database_url=pg_url,
        table=f"{pg_schema}.again",
        key=("id",),
        nested="tables",
        mode="append",
    )
    first = copy_table(source, request)
    run = pg.execute(
        "SELECT session, streams, arrow_schema FROM bq2pg.runs WHERE run_id = %s", [first.run_id]
    ).fetchone()
    assert run is not None
    schema = pa.ipc.read_schema(pa.py_buffer(run[2]))
    session = ReadSession(run[0], list(run[1]), schema, None, None)
    task = StreamTask(
        endpoints=source.endpoints,
        emulated=source.emulated,
        session=session,
        stream=session.streams[0],
        run_id=first.run_id,
        database_url=pg_url,
        plan=plan(source, request)[0],
        mode="append",
        splitter=None,
        checksum=True,
    )
    pg.execute(f"CREATE TABLE {pg_schema}.again__bq2pg_stage (LIKE {pg_schema}.again)")
    done = run_task(task)  # the whole stream is in the ledger: nothing to load
    assert done.rows == {} and done.dead == 0
    assert pg.execute(f"SELECT count(*) FROM {pg_schema}.again__bq2pg_stage").fetchone() == (0,)


def test_limit_is_refused_with_dask(source, dataset, pg_url, pg_schema, cluster):
    table_id = make_table(source, dataset, "items", FIELDS, ROWS[:10])
    request = CopyRequest(
        source=table_id, database_url=pg_url, table=f"{pg_schema}.x", limit=5, executor=cluster
    )
    with pytest.raises(ConfigError, match="--limit"):
        copy_table(source, request)


def test_a_bad_executor_is_refused(source, dataset, pg_url, pg_schema):
    request = CopyRequest(source="p.d.t", database_url=pg_url, executor="spark://x")
    with pytest.raises(ConfigError, match="--executor"):
        copy_table(source, request)


def test_no_scheduler_is_a_clear_error(source, dataset, pg_url, pg_schema):
    table_id = make_table(source, dataset, "items", FIELDS, ROWS[:10])
    request = CopyRequest(
        source=table_id, database_url=pg_url, table=f"{pg_schema}.y", executor="dask://127.0.0.1:9"
    )
    with pytest.raises(ConfigError, match="no Dask scheduler"):
        copy_table(source, request)
