"""--incremental: only new rows, the boundary read again and merged once, late rows by --lag."""

from __future__ import annotations

import datetime as dt

import pytest
from psycopg import sql

from bq2pg import ConfigError, CopyRequest, copy_table
from bq2pg.plan.tables import Field
from bq2pg.plan.watermark import bound, parse_lag
from conftest import make_table

FIELDS = [
    Field("id", "INT64"),
    Field("updated_at", "TIMESTAMP"),
    Field("v", "STRING"),
    Field("score", "FLOAT64"),
]
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def row(i: int, minutes: int, v: str) -> dict[str, object]:
    return {
        "id": i,
        "updated_at": (T0 + dt.timedelta(minutes=minutes)).isoformat(),
        "v": v,
        "score": 1.0,
    }


def request(table_id: str, pg_url: str, schema: str, **kw: object) -> CopyRequest:
    return CopyRequest(
        source=table_id, database_url=pg_url, table=f"{schema}.t", mode="merge", key=("id",),
        incremental="updated_at", **kw,
    )  # type: ignore[arg-type]  # fmt: skip


def target(pg, schema: str) -> dict[int, str]:
    return dict(
        pg.execute(sql.SQL("SELECT id, v FROM {}").format(sql.Identifier(schema, "t"))).fetchall()
    )


def test_the_second_run_reads_new_boundary_and_late_rows_exactly_once(
    source, dataset, pg_url, pg_schema, pg
):
    table_id = make_table(source, dataset, "src", FIELDS, [row(i, i, f"v{i}") for i in range(10)])
    first = copy_table(source, request(table_id, pg_url, pg_schema))
    assert first.rows_read == 10
    mark = pg.execute(
        "SELECT value FROM bq2pg.watermarks WHERE target = %s", [f"{pg_schema}.t"]
    ).fetchone()
    assert mark == ("2024-01-01 00:09:00+00",)
    later = [
        row(10, 9, "at the boundary"),  # equal to the watermark: must arrive
        row(11, 30, "new"),
        row(3, 31, "v3 updated"),  # an update of an old row
        row(12, -30, "late, within the lag"),  # older than the watermark by 39 minutes
        row(13, -600, "too late for the lag"),
    ]
    source.bq.insert_rows_json(table_id, later, retry=None)
    second = copy_table(source, request(table_id, pg_url, pg_schema, lag="1h"))
    # read: every row at or above the watermark (00:09) minus 1h: the first ten again (merged in
    # place) and the four new ones; the row 10 hours late is outside the window
    assert second.rows_read == 14
    got = target(pg, pg_schema)
    assert got[10] == "at the boundary" and got[11] == "new" and got[3] == "v3 updated"
    assert got[12] == "late, within the lag"
    assert 13 not in got  # older than the lag window: documented, not silently duplicated
    assert len(got) == 13
    mark = pg.execute(
        "SELECT value FROM bq2pg.watermarks WHERE target = %s", [f"{pg_schema}.t"]
    ).fetchone()
    assert mark == ("2024-01-01 00:31:00+00",)


def test_a_run_with_nothing_new_keeps_the_watermark(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "src", FIELDS, [row(i, i, "x") for i in range(3)])
    copy_table(source, request(table_id, pg_url, pg_schema))
    again = copy_table(source, request(table_id, pg_url, pg_schema))
    assert again.rows_read == 1  # only the boundary row, merged in place
    assert len(target(pg, pg_schema)) == 3
    mark = pg.execute(
        "SELECT value FROM bq2pg.watermarks WHERE target = %s", [f"{pg_schema}.t"]
    ).fetchone()
    assert mark == ("2024-01-01 00:02:00+00",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"incremental": "score"}, "NaN"),
        ({"incremental": "updated_at", "mode": "append"}, "--mode merge"),
        ({"incremental": "nosuch"}, "not a copied column"),
        ({"incremental": "updated_at", "lag": "soon"}, "--lag"),
    ],
)
def test_bad_incremental_options_are_clear_errors(
    source, dataset, pg_url, pg_schema, options, message
):
    table_id = make_table(source, dataset, "src", FIELDS, [])
    kw = {
        "source": table_id,
        "database_url": pg_url,
        "table": f"{pg_schema}.t",
        "mode": "merge",
        "key": ("id",),
    }
    with pytest.raises(ConfigError, match=message):
        copy_table(source, CopyRequest(**{**kw, **options}))  # type: ignore[arg-type]


def test_bounds_are_bigquery_literals():
    assert (
        bound(Field("t", "TIMESTAMP"), "2024-01-01 00:09:00+00", parse_lag("1h"))
        == "TIMESTAMP '2023-12-31 23:09:00+00:00'"
    )
    assert bound(Field("d", "DATE"), "2024-03-01", parse_lag("1d")) == "DATE '2024-02-29'"
    assert bound(Field("n", "INT64"), "100", parse_lag("5")) == "95"
    assert bound(Field("s", "STRING"), "it's", 0) == "'it\\'s'"
    assert parse_lag("15m") == 900 and parse_lag(None) == 0
