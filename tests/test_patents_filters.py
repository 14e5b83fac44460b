"""bq2pg patents: pushed-down filters, exact limits, and re-runs that leave one consistent model."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql

from bq2pg.bigquery.client import TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.errors import ConfigError
from bq2pg.patents import model
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
from bq2pg.patents.pipeline import TEST_ROWS, PatentsRequest, row_restriction, run

ROWS = 600


@pytest.fixture(scope="module")
def seeded(source, tmp_path_factory) -> tuple[str, pa.Table]:
    """A publications table of generated rows in the emulator, and the rows themselves."""
    table_id = f"bq2pg-test.filters_{tmp_path_factory.mktemp('x').name[-6:]}.publications"
    ref = TableRef.parse(table_id)
    create_table(source, ref, publications.PUBLICATIONS)
    rows = generate.generate(ROWS, seed=11)
    load_arrow(source, ref, rows)
    return table_id, rows


def numbers(rows: pa.Table, mask: pa.Array) -> set[str]:
    return set(rows.filter(mask).column("publication_number").to_pylist())


def loaded(pg, schema: str) -> set[str]:
    query = sql.SQL("SELECT publication_number FROM {}").format(
        sql.Identifier(schema, "publications")
    )
    return {r[0] for r in pg.execute(query).fetchall()}


def counts(pg, schema: str) -> dict[str, int]:
    out = {}
    for t in model.model(schema).all_tables():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, t.name))
        out[t.name] = pg.execute(query).fetchone()[0]
    return out


def request(pg_url: str, table_id: str, schema: str, **kw: object) -> PatentsRequest:
    return PatentsRequest(database_url=pg_url, source=table_id, schema=schema, **kw)  # type: ignore[arg-type]


def test_year_filter_loads_exactly_that_year(source, seeded, pg_url, pg_schema, pg):
    table_id, rows = seeded
    run(source, request(pg_url, table_id, pg_schema, year=2001))
    dates = rows.column("publication_date")
    want = numbers(rows, pc.and_(pc.greater_equal(dates, 20010101), pc.less_equal(dates, 20011231)))
    assert want and loaded(pg, pg_schema) == want


def test_recent_days_counts_back_from_today(source, seeded, pg_url, pg_schema, pg):
    table_id, rows = seeded
    today = dt.date(2020, 6, 30)
    run(source, request(pg_url, table_id, pg_schema, recent_days=400, today=today))
    want = numbers(rows, pc.greater_equal(rows.column("publication_date"), 20190527))
    assert want and loaded(pg, pg_schema) == want


def test_country_and_kind_filters_combine(source, seeded, pg_url, pg_schema, pg):
    table_id, rows = seeded
    run(source, request(pg_url, table_id, pg_schema, country=("us", "DE"), kind=("B1", "B2", "T2")))
    mask = pc.and_(
        pc.is_in(rows.column("country_code"), pa.array(["US", "DE"])),
        pc.is_in(rows.column("kind_code"), pa.array(["B1", "B2", "T2"])),
    )
    want = numbers(rows, mask)
    assert want and loaded(pg, pg_schema) == want


@pytest.mark.parametrize(
    ("options", "expected"), [({"limit": 17}, 17), ({"test": True}, TEST_ROWS)]
)
def test_limit_and_test_load_exactly_that_many(
    source, seeded, pg_url, pg_schema, pg, options, expected
):
    table_id, rows = seeded
    result = run(source, request(pg_url, table_id, pg_schema, streams=2, **options))
    assert result.rows_read == expected
    got = loaded(pg, pg_schema)
    assert len(got) == expected and got <= set(rows.column("publication_number").to_pylist())
    cpc = pg.execute(
        sql.SQL(
            "SELECT count(DISTINCT publication_number) FROM {} WHERE publication_number <> ALL(%s)"
        ).format(sql.Identifier(pg_schema, "publication_cpc")),
        [list(got)],
    ).fetchone()
    assert cpc == (0,)  # no child row without its publication


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"country": ("USA",)}, "country"),
        ({"country": ("U'S",)}, "country"),
        ({"kind": ("B1; DROP",)}, "kind"),
        ({"year": 20}, "year"),
        ({"recent_days": -1}, "recent-days"),
    ],
)
def test_bad_filters_are_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        row_restriction(PatentsRequest(database_url="", **options))


def test_filters_become_one_row_restriction():
    where = row_restriction(
        PatentsRequest(database_url="", year=2020, country=("US", "ep"), kind=("B1",))
    )
    assert where == (
        "publication_date BETWEEN 20200101 AND 20201231 AND country_code IN ('US', 'EP') "
        "AND kind_code IN ('B1')"
    )


def test_reruns_with_and_without_drop_tables_leave_the_same_model(
    source, seeded, pg_url, pg_schema, pg
):
    table_id, _ = seeded
    first = run(source, request(pg_url, table_id, pg_schema))
    assert first.mode == "replace"
    once = counts(pg, pg_schema)
    assert once["publications"] == ROWS and once["publication_cpc"] > ROWS
    again = run(source, request(pg_url, table_id, pg_schema))
    assert again.mode == "merge"
    assert counts(pg, pg_schema) == once
    # an overlapping partial run merges without duplicating child rows
    run(source, request(pg_url, table_id, pg_schema, country=("US",)))
    assert counts(pg, pg_schema) == once
    dropped = run(source, request(pg_url, table_id, pg_schema, drop_tables=True))
    assert dropped.mode == "replace"
    assert counts(pg, pg_schema) == once


def test_the_30_column_snapshot_loads_into_the_same_model(source, dataset, pg_url, pg_schema, pg):
    table_id = f"{dataset}.publications_201710"
    create_table(source, TableRef.parse(table_id), publications.PUBLICATIONS_30)
    load_arrow(source, TableRef.parse(table_id), generate.generate(50, seed=3, thirty_columns=True))
    run(source, request(pg_url, table_id, pg_schema))
    row = pg.execute(
        sql.SQL("SELECT count(*), count(spif_publication_number), count(title) FROM {}").format(
            sql.Identifier(pg_schema, "publications")
        )
    ).fetchone()
    assert row[0] == 50 and row[1] == 0 and row[2] > 0
    links = pg.execute(
        sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(pg_schema, "publication_family_links")
        )
    ).fetchone()
    assert links == (0,)  # the old snapshots have no parent/child columns


def test_a_table_without_the_patents_columns_is_refused(source, dataset, pg_url, pg_schema):
    from bq2pg.plan.tables import Field
    from conftest import make_table

    table_id = make_table(source, dataset, "other", [Field("id", "INT64")], [])
    with pytest.raises(ConfigError, match="publication_number"):
        run(source, request(pg_url, table_id, pg_schema))


def _fields(schema: list[dict]) -> list:
    from bq2pg.plan import typemap
    from bq2pg.plan.tables import Field

    return [
        Field(
            f["name"],
            typemap.canonical(f["type"]),
            f.get("mode", "NULLABLE"),
            tuple(_fields(f.get("fields", []))),
        )
        for f in schema
    ]


def test_cpc_definitions_load_beside_the_model_and_join_to_codes(
    source, seeded, dataset, pg_url, pg_schema, pg
):
    import json

    from conftest import patents_file

    schema = json.loads(patents_file("cpc_definition_schema.json").read_text())
    rows = [
        json.loads(line)
        for line in patents_file("cpc_definition_samples.jsonl").read_text().splitlines()
    ]
    cpc_id = f"{dataset}.definition"
    create_table(source, TableRef.parse(cpc_id), _fields(schema))
    assert not source.bq.insert_rows_json(cpc_id, rows, retry=None)
    table_id, _ = seeded
    result = run(
        source,
        request(
            pg_url, table_id, pg_schema, limit=50, with_cpc_definitions=True, cpc_source=cpc_id
        ),
    )
    assert [t.name for t in result.tables][-1] == "cpc_definitions"
    got = pg.execute(
        sql.SQL("SELECT symbol, titlefull, level, parents FROM {} ORDER BY symbol").format(
            sql.Identifier(pg_schema, "cpc_definitions")
        )
    ).fetchall()
    want = sorted((r["symbol"], r["titleFull"], r["level"], r["parents"]) for r in rows)
    assert got == want
    pk = pg.execute(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
        [f'"{pg_schema}"."cpc_definitions"'],
    ).fetchone()
    assert pk == (1,)
