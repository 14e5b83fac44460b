"""The plan of a run, with cost (``engine.estimate``), against the emulator and PostgreSQL.

Each number of an estimate says where it came from; these tests pin both the number and its
source: table metadata on the emulator (never a dry run), earlier runs once a run succeeded,
the defaults before, and unknowns with a note when PostgreSQL cannot be reached.
"""

from __future__ import annotations

import json
import uuid

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bq2pg.bigquery import dryrun
from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.engine import estimate as planner
from bq2pg.engine.copy import CopyRequest, build_job, copy_table
from bq2pg.engine.estimate import Estimate, check_budget, column_share, field_width, lines
from bq2pg.errors import BudgetExceededError, SourceError
from bq2pg.local.emulator import free_port
from bq2pg.patents import model, synthetic
from bq2pg.patents import pipeline as patents
from bq2pg.patents import source as publications
from bq2pg.plan.tables import Field
from bq2pg.postgres.connection import session
from bq2pg.state import runs
from conftest import EMULATOR_PROJECT, make_table

FIELDS = [
    Field("id", "INT64"),
    Field("name", "STRING"),
    Field("score", "FLOAT64"),
    Field("tags", "STRING", "REPEATED"),
    Field("parts", "RECORD", "REPEATED", (Field("code", "STRING"), Field("n", "INT64"))),
]
ROWS = 40


def rows(n: int = ROWS) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "name": f"name-{i}",
            "score": i / 4,
            "tags": ["a", "b"],
            "parts": [{"code": f"c{j}", "n": j} for j in range(i % 3)],
        }
        for i in range(n)
    ]


@pytest.fixture
def items(source: Source, dataset: str) -> str:
    return make_table(source, dataset, "items", FIELDS, rows())


def copy_request(table_id: str, pg_url: str, schema: str, **kw: object) -> CopyRequest:
    return CopyRequest(source=table_id, database_url=pg_url, table=f"{schema}.items", **kw)  # type: ignore[arg-type]


def plan_of(source: Source, table_id: str, pg_url: str, schema: str, **kw: object) -> Estimate:
    return planner.estimate(source, build_job(source, copy_request(table_id, pg_url, schema, **kw)))


# --- a copy job, from table metadata ------------------------------------------------------------


def test_copy_estimate_reads_rows_from_metadata_and_bytes_without_a_dry_run(
    source, items, pg_url, pg_schema, monkeypatch
):
    def no_query(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dry run was sent to the emulator")

    monkeypatch.setattr(source.bq, "query", no_query)
    est = plan_of(source, items, pg_url, pg_schema, streams=3)
    assert est.rows == source.table(TableRef.parse(items)).num_rows == ROWS
    assert not est.rows_at_most
    assert est.rows_source == "table metadata (numRows)"
    # the emulator keeps no numBytes: rows × the columns' typical widths, and it says so
    assert est.bytes == ROWS * sum(field_width(f) for f in FIELDS)
    assert est.bytes_source.startswith("table metadata (numRows × ")
    assert "emulator" in est.bytes_source and "no cost model" in est.bytes_source
    assert est.usd == pytest.approx(est.bytes / 2**40 * planner.PRICE_PER_TIB_USD)
    assert est.tables == [f"{pg_schema}.items"]
    assert est.streams == 3
    assert any("emulator" in n and "nothing is billed" in n for n in est.notes)


def test_nested_tables_plan_lists_the_child_tables(source, items, pg_url, pg_schema):
    est = plan_of(source, items, pg_url, pg_schema, nested="tables", key=("id",))
    assert est.tables == [f"{pg_schema}.items", f"{pg_schema}.items__parts"]


def test_fewer_columns_read_fewer_bytes(source, items, pg_url, pg_schema):
    every = plan_of(source, items, pg_url, pg_schema)
    two = plan_of(source, items, pg_url, pg_schema, columns=("id", "score"))
    assert two.rows == every.rows
    assert two.bytes == ROWS * (8 + 8)
    assert every.bytes is not None and two.bytes < every.bytes
    assert two.usd is not None and every.usd is not None and two.usd < every.usd


def test_limit_scales_rows_and_bytes_down(source, items, pg_url, pg_schema):
    every = plan_of(source, items, pg_url, pg_schema)
    ten = plan_of(source, items, pg_url, pg_schema, limit=10)
    assert ten.rows == 10
    assert every.bytes is not None and ten.bytes == round(every.bytes * 10 / ROWS)
    assert f"--limit 10 of {ROWS}" in ten.bytes_source
    assert plan_of(source, items, pg_url, pg_schema, limit=1000).rows == ROWS


def test_where_makes_the_rows_an_upper_bound(source, items, pg_url, pg_schema):
    est = plan_of(source, items, pg_url, pg_schema, where="id < 5")
    assert est.rows == ROWS and est.rows_at_most
    assert "the filter keeps an unknown share" in est.rows_source
    assert any(f"at most {ROWS} (filtered)" in line for line in lines(est))


def test_cost_follows_the_configured_price(source, items, pg_url, pg_schema):
    job = build_job(source, copy_request(items, pg_url, pg_schema))
    est = planner.estimate(source, job, price_per_tib_usd=6.25)
    assert est.price_per_tib_usd == 6.25
    assert est.bytes is not None and est.usd == pytest.approx(est.bytes / 2**40 * 6.25)


# --- after a run: earlier runs ----------------------------------------------------------------


def test_after_a_run_time_and_space_come_from_earlier_runs(source, items, pg_url, pg_schema):
    request = copy_request(items, pg_url, pg_schema, key=("id",))
    before = planner.estimate(source, build_job(source, request))
    assert before.seconds_source.startswith("default rate, 3,000 rows/s")
    assert before.seconds == pytest.approx(ROWS / planner.DEFAULT_ROWS_PER_SECOND)
    assert before.pg_bytes_source.startswith(f"{planner.PG_BYTES_PER_BYTE_READ} × bytes to read")

    copy_table(source, request)
    after = planner.estimate(source, build_job(source, request))
    with session(pg_url, "test") as conn:
        recorded = runs.listing(conn, f"{pg_schema}.items", limit=1)[0]
    assert recorded.status == "succeeded" and recorded.pg_bytes
    assert after.seconds_source.startswith(f"earlier runs: 1 run(s) of {pg_schema}.items at ")
    assert after.seconds is not None and after.seconds > 0
    assert after.pg_bytes_source.startswith("earlier runs: ")
    assert after.pg_bytes is not None
    assert recorded.pg_bytes / 2 <= after.pg_bytes <= recorded.pg_bytes * 2
    # the embedded server is local and its role a superuser: its free space is known
    assert after.free_bytes is not None and after.free_bytes > 0
    assert after.free_source.startswith("statvfs of ")


def test_patents_estimate_lists_the_model_and_reads_fewer_columns(
    source, dataset, pg_url, pg_schema
):
    table_id = f"{dataset}.publications"
    create_table(source, TableRef.parse(table_id), publications.PUBLICATIONS)
    load_arrow(source, TableRef.parse(table_id), synthetic.generate(20, seed=3))
    request = patents.PatentsRequest(database_url=pg_url, source=table_id, schema=pg_schema)
    job = patents.build_job(source, request)
    est = planner.estimate(source, job)
    expected = [t.qualified for t in model.model(pg_schema).all_tables()]
    assert est.tables == expected and len(expected) > 1
    assert f"{pg_schema}.publications" == est.tables[0]
    assert est.rows == 20
    # the full-text columns are not read
    every = 20 * sum(field_width(f) for f in publications.PUBLICATIONS)
    assert est.bytes is not None and 0 < est.bytes < every


# --- PostgreSQL unreachable, or without bq2pg's state -----------------------------------------


def test_unreachable_postgres_still_gives_an_estimate_with_a_note(source, items, pg_schema):
    nowhere = f"postgresql://bq2pg@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    est = plan_of(source, items, nowhere, pg_schema)
    assert est.rows == ROWS and est.bytes
    assert est.free_bytes is None and est.free_source == "PostgreSQL could not be reached"
    assert est.seconds_source.startswith("default rate")
    assert est.pg_bytes == round(est.bytes * planner.PG_BYTES_PER_BYTE_READ)
    assert any("PostgreSQL could not be reached" in n for n in est.notes)


def test_database_without_state_says_there_are_no_earlier_runs(source, items, pg_url, pg):
    name = f"e_{uuid.uuid4().hex[:12]}"
    pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_conninfo(pg_url, dbname=name)
        est = plan_of(source, items, url, "public")
        assert est.free_bytes is not None
        assert "the database has no bq2pg state yet: no earlier runs" in est.notes
        assert est.seconds_source.startswith("default rate")
        with session(url, "test") as conn:
            state = conn.execute("SELECT to_regnamespace('bq2pg')").fetchone()
        assert state == (None,)  # a plan creates nothing
    finally:
        pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# --- budgets, storage, rendering ----------------------------------------------------------------


def sample(**kw: object) -> Estimate:
    values: dict[str, object] = dict(
        tables=["public.items", "public.items__parts"], streams=2,
        rows=1_000_000, rows_source="table metadata (numRows)",
        bytes=3 * 2**40, bytes_source="dry-run query (totalBytesProcessed: ...)",
        usd=3 * 1.10, price_per_tib_usd=1.10,
        seconds=333.3, seconds_source="default rate",
        pg_bytes=5 * 2**30, pg_bytes_source="earlier runs: 5,369 bytes per row × rows",
        free_bytes=None, free_source="unknown: the server runs on db.example, not on this machine",
        notes=["a note"],
    )  # fmt: skip
    values.update(kw)
    return Estimate(**values)  # type: ignore[arg-type]


def test_budget_above_the_limit_exits_9_and_says_how_to_raise_it():
    est = sample()
    with pytest.raises(BudgetExceededError) as raised:
        check_budget(est, max_bytes=2**40, max_usd=None)
    assert raised.value.exit_code == 9
    text = str(raised.value)
    assert "3.0 TiB" in text and "1.0 TiB" in text and "dry-run query" in text
    assert "--max-bytes / budget.max_bytes" in text
    with pytest.raises(BudgetExceededError, match=r"budget.max_usd of \$1.0000"):
        check_budget(est, max_bytes=None, max_usd=1.0)


def test_budget_below_the_limit_passes():
    check_budget(sample(), max_bytes=4 * 2**40, max_usd=10.0)
    check_budget(sample(), max_bytes=None, max_usd=None)


def test_budget_with_unknown_bytes_refuses_rather_than_guess():
    unknown = sample(bytes=None, usd=None, bytes_source="unknown: no numBytes")
    with pytest.raises(BudgetExceededError, match="cannot be checked"):
        check_budget(unknown, max_bytes=10, max_usd=None)
    check_budget(unknown, max_bytes=None, max_usd=None)


def test_estimate_round_trips_through_json():
    est = sample(rows_at_most=True)
    stored = json.loads(json.dumps(est.as_dict()))
    assert stored["format"] == planner.PLAN_FORMAT
    assert Estimate.from_dict(stored) == est


def test_lines_render_sizes_cost_and_the_free_tier():
    text = "\n".join(lines(sample()))
    assert "public.items, public.items__parts" in text
    assert "up to 2 (BigQuery may grant fewer)" in text
    assert "3.0 TiB" in text and "5.0 GiB" in text
    assert "$3.3000 at $1.10 per TiB read" in text
    assert "first 300 TiB a month per billing account are free" in text
    assert "5.6 min" in text
    assert "free space:           unknown — unknown: the server runs on db.example" in text
    assert "note: a note" in text


# --- pure: the weighting of columns -------------------------------------------------------------


def test_column_share_weighs_columns_by_type_width():
    fields = [Field("id", "INT64"), Field("name", "STRING")]
    assert column_share(fields, None) == 1.0
    assert column_share(fields, ["ID"]) == pytest.approx(8 / (8 + 32))
    assert column_share(fields, ["name"]) == pytest.approx(32 / (8 + 32))
    assert column_share(fields, ["id", "name"]) == 1.0


@pytest.mark.parametrize(
    ("f", "width"),
    [
        (Field("b", "BOOL"), 1),
        (Field("n", "NUMERIC"), 16),
        (Field("s", "STRING", "REPEATED"), 32 * planner.REPEATED_ELEMENTS),
        (Field("r", "RANGE<DATE>"), 16),
        (Field("x", "SOMETHING_NEW"), planner.OTHER_WIDTH_BYTES),
        (Field("rec", "RECORD", "NULLABLE", (Field("a", "INT64"), Field("b", "DATE"))), 16),
        (
            Field("recs", "RECORD", "REPEATED", (Field("a", "INT64"),)),
            8 * planner.REPEATED_ELEMENTS,
        ),
    ],
)
def test_field_width_by_type(f: Field, width: int):
    assert field_width(f) == width


def test_dry_run_query_keeps_the_projection_and_filter():
    ref = TableRef.parse("p.d.t")
    assert dryrun.query(ref, None, None) == "SELECT * FROM `p.d.t`"
    assert dryrun.query(ref, ["a", "b`c"], "a > 1") == "SELECT `a`, `bc` FROM `p.d.t` WHERE a > 1"


def test_no_dry_run_is_sent_to_an_emulator(source, items, monkeypatch):
    def no_query(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dry run was sent to the emulator")

    monkeypatch.setattr(source.bq, "query", no_query)
    assert dryrun.dry_run_bytes(source, TableRef.parse(items), ["id"], "id > 1") is None
    assert "no cost model" in dryrun.dry_run(source, TableRef.parse(items), None, None).reason


@pytest.fixture
def as_bigquery(emu) -> Source:
    """The emulator taken for real BigQuery (``emulator=False``), to drive the dry-run path; it
    answers a dry run with 0 bytes, which is why bq2pg never sends one to a known emulator."""
    return Source(
        project=EMULATOR_PROJECT,
        rest_endpoint=emu.rest_url,
        storage_endpoint=emu.grpc_endpoint,
        emulator=False,
    )


def test_on_bigquery_the_dry_run_gives_the_bytes(as_bigquery, items, pg_url, pg_schema):
    est = plan_of(as_bigquery, items, pg_url, pg_schema, columns=("id",), where="id > 3")
    assert est.bytes_source == (
        "dry-run query (totalBytesProcessed of the same columns and filter)"
    )
    assert est.bytes == 0  # the emulator's answer, taken as BigQuery's
    assert not any("emulator" in n for n in est.notes)


def test_a_refused_dry_run_falls_back_to_metadata_and_says_why(as_bigquery, items):
    found = dryrun.dry_run(as_bigquery, TableRef.parse(items), ["no_such_column"], None)
    assert found.bytes is None
    assert found.reason.startswith("BigQuery refused it (BadRequest: ")


def test_a_dry_run_of_a_missing_table_is_a_source_error(as_bigquery, dataset):
    with pytest.raises(SourceError, match="not found"):
        dryrun.dry_run(as_bigquery, TableRef.parse(f"{dataset}.missing"), None, None)
