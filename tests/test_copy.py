"""copy: modes, filters, projection, limits and streams, against the emulator and PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from bq2pg import ConfigError, CopyRequest, FilterError, TargetMismatchError, copy_table
from bq2pg.bigquery.client import Source
from bq2pg.plan.tables import Field
from conftest import make_table

FIELDS = [
    Field("id", "INT64"),
    Field("name", "STRING"),
    Field("score", "FLOAT64"),
    Field("tags", "STRING", "REPEATED"),
    Field(
        "parts",
        "RECORD",
        "REPEATED",
        (Field("code", "STRING"), Field("n", "INT64")),
    ),
]


def rows(ids: range, suffix: str = "") -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "name": f"name-{i}{suffix}",
            "score": i / 4,
            "tags": [f"t{i % 3}", "x"] if i % 2 else [],
            "parts": [{"code": f"c{j}", "n": j} for j in range(i % 4)],
        }
        for i in ids
    ]


def fetch(pg: psycopg.Connection, schema: str, table: str, order: str = "id") -> list[tuple]:
    return pg.execute(
        sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(schema, table), sql.SQL(order)
        )
    ).fetchall()


def request(table_id: str, pg_url: str, schema: str, **kw: object) -> CopyRequest:
    return CopyRequest(source=table_id, database_url=pg_url, table=f"{schema}.items", **kw)  # type: ignore[arg-type]


def test_replace_copies_every_row_with_arrays_and_jsonb(
    source: Source, dataset, pg_url, pg_schema, pg
):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(50)))
    result = copy_table(source, request(table_id, pg_url, pg_schema, key=("id",)))
    assert result.rows_read == 50
    got = fetch(pg, pg_schema, "items")
    assert [r[0] for r in got] == list(range(50))
    assert got[3][1:4] == ("name-3", 0.75, ["t0", "x"])
    assert got[2][3] == []  # an empty array stays '{}', not NULL
    assert got[3][4] == [{"code": "c0", "n": 0}, {"code": "c1", "n": 1}, {"code": "c2", "n": 2}]
    kinds = pg.execute(
        sql.SQL("SELECT DISTINCT jsonb_typeof(parts) FROM {}").format(
            sql.Identifier(pg_schema, "items")
        )
    ).fetchall()
    assert kinds == [("array",)]
    pk = pg.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
        [f'"{pg_schema}"."items"'],
    ).fetchall()
    assert pk == [("items_pkey",)]


def test_replace_twice_leaves_only_the_second_copy(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(10)))
    copy_table(source, request(table_id, pg_url, pg_schema, key=("id",)))
    copy_table(source, request(table_id, pg_url, pg_schema, key=("id",)))
    assert len(fetch(pg, pg_schema, "items")) == 10
    leftovers = pg.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
        [pg_schema, "%bq2pg%"],
    ).fetchone()
    assert leftovers == (0,)


def test_append_adds_rows_each_run(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(5)))
    copy_table(source, request(table_id, pg_url, pg_schema, mode="append"))
    copy_table(source, request(table_id, pg_url, pg_schema, mode="append"))
    ids = [r[0] for r in fetch(pg, pg_schema, "items")]
    assert ids == sorted(list(range(5)) * 2)


def test_merge_upserts_on_the_key_and_replaces_child_rows(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(6)))
    kw = {"mode": "merge", "key": ("id",), "nested": "tables"}
    copy_table(source, request(table_id, pg_url, pg_schema, **kw))
    # the source changes: rows 4..7 rewritten (4, 5 updated; 6, 7 new), 3 parts each
    changed = [
        dict(r, parts=[{"code": "new", "n": k} for k in range(3)]) for r in rows(range(4, 8), "-v2")
    ]
    table2 = make_table(source, dataset, "items2", FIELDS, changed)
    copy_table(source, request(table2, pg_url, pg_schema, **kw))
    got = fetch(pg, pg_schema, "items")
    assert [r[0] for r in got] == list(range(8))
    assert got[0][1] == "name-0" and got[4][1] == "name-4-v2" and got[7][1] == "name-7-v2"
    children = pg.execute(
        sql.SQL("SELECT parent_id, count(*), min(code) FROM {} GROUP BY 1 ORDER BY 1").format(
            sql.Identifier(pg_schema, "items__parts")
        )
    ).fetchall()
    assert children == [(1, 1, "c0"), (2, 2, "c0"), (3, 3, "c0")] + [
        (i, 3, "new") for i in range(4, 8)
    ]


def test_merge_collapses_duplicate_keys_in_the_source(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(3)) + rows(range(2)))
    result = copy_table(source, request(table_id, pg_url, pg_schema, mode="merge", key=("id",)))
    assert result.duplicates_collapsed == 2
    assert [r[0] for r in fetch(pg, pg_schema, "items")] == [0, 1, 2]


def test_merge_without_key_is_a_config_error(source, dataset, pg_url, pg_schema):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(2)))
    with pytest.raises(ConfigError, match="--key"):
        copy_table(source, request(table_id, pg_url, pg_schema, mode="merge"))


def test_where_is_pushed_down_to_the_read_session(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(40)))
    copy_table(source, request(table_id, pg_url, pg_schema, where="id >= 30 AND name != 'name-35'"))
    ids = [r[0] for r in fetch(pg, pg_schema, "items")]
    assert ids == [i for i in range(30, 40) if i != 35]


@pytest.mark.parametrize(
    "where", ["id > 1; DROP TABLE x", "id >", "SELECT 1", "id IN (SELECT 1)", "nosuch = 1"]
)
def test_bad_where_is_refused_before_reading(source, dataset, pg_url, pg_schema, where, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(2)))
    with pytest.raises(FilterError):
        copy_table(source, request(table_id, pg_url, pg_schema, where=where))
    exists = pg.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."items"']).fetchone()
    assert exists == (None,)


def test_columns_selects_only_those_columns(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(4)))
    copy_table(source, request(table_id, pg_url, pg_schema, columns=("name", "id")))
    cols = pg.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "ORDER BY attnum",
        [f'"{pg_schema}"."items"'],
    ).fetchall()
    assert cols == [("id",), ("name",)]
    assert fetch(pg, pg_schema, "items")[1] == (1, "name-1")


def test_unknown_column_is_a_config_error(source, dataset, pg_url, pg_schema):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(2)))
    with pytest.raises(ConfigError, match="nosuch"):
        copy_table(source, request(table_id, pg_url, pg_schema, columns=("id", "nosuch")))


@pytest.mark.parametrize("limit", [0, 1, 7, 999])
def test_limit_copies_exactly_that_many_rows(source, dataset, pg_url, pg_schema, pg, limit):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(20)))
    result = copy_table(
        source, request(table_id, pg_url, pg_schema, limit=limit, key=("id",), nested="tables")
    )
    expected = min(limit, 20)
    assert result.rows_read == expected
    got = fetch(pg, pg_schema, "items")
    assert len(got) == expected
    children = pg.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "items__parts"))
    ).fetchone()
    assert children == (sum(r[0] % 4 for r in got),)


def test_many_streams_give_the_same_rows_as_one(source, dataset, pg_url, pg_schema, pg):
    from bq2pg.bigquery.client import TableRef
    from bq2pg.bigquery.seed import create_table, load_arrow
    from bq2pg.patents import source as publications
    from bq2pg.patents import synthetic as generate

    table_id = f"{dataset}.pubs"
    create_table(source, TableRef.parse(table_id), publications.PUBLICATIONS)
    # wide enough (> 1 MB of Arrow) for the emulator to split the session into streams
    load_arrow(source, TableRef.parse(table_id), generate.generate(3000, seed=7))
    one = copy_table(
        source,
        CopyRequest(source=table_id, database_url=pg_url, table=f"{pg_schema}.one", streams=1,
                    key=("publication_number",), nested="tables"),
    )  # fmt: skip
    four = copy_table(
        source,
        CopyRequest(source=table_id, database_url=pg_url, table=f"{pg_schema}.four", streams=4,
                    key=("publication_number",), nested="tables"),
    )  # fmt: skip
    assert one.streams == 1 and four.streams > 1
    for suffix in ("", "__cpc", "__citation", "__title_localized"):
        diff = pg.execute(
            sql.SQL("SELECT count(*) FROM ((TABLE {a} EXCEPT ALL TABLE {b}) UNION ALL "
                    "(TABLE {b} EXCEPT ALL TABLE {a})) d").format(
                a=sql.Identifier(pg_schema, "one" + suffix), b=sql.Identifier(pg_schema, "four" + suffix)
            )
        ).fetchone()  # fmt: skip
        assert diff == (0,), suffix
    assert fetch(pg, pg_schema, "one", "publication_number")[0][0] is not None


def test_append_into_an_incompatible_table_says_use_drop(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(2)))
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(sql.SQL("CREATE TABLE {} (id text)").format(sql.Identifier(pg_schema, "items")))
    with pytest.raises(TargetMismatchError, match="--drop"):
        copy_table(source, request(table_id, pg_url, pg_schema, mode="append"))
    copy_table(source, request(table_id, pg_url, pg_schema, mode="append", drop=True))
    assert len(fetch(pg, pg_schema, "items")) == 2


def test_empty_table_copies_zero_rows(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, [])
    result = copy_table(source, request(table_id, pg_url, pg_schema))
    assert result.rows_read == 0
    assert fetch(pg, pg_schema, "items") == []


def test_runs_are_recorded_without_the_database_url(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(3)))
    result = copy_table(source, request(table_id, pg_url, pg_schema))
    row = pg.execute(
        "SELECT status, rows_read, arguments::text FROM bq2pg.runs WHERE run_id = %s",
        [result.run_id],
    ).fetchone()
    assert row is not None and row[0] == "succeeded" and row[1] == 3
    assert "database_url" not in row[2] and "postgresql://" not in row[2]


def test_a_target_with_row_level_security_is_refused_up_front(
    source, dataset, pg_url, pg_schema, pg
):
    table_id = make_table(source, dataset, "items", FIELDS, rows(range(3)))
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    copy_table(source, request(table_id, pg_url, pg_schema, mode="append"))
    pg.execute(
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(
            sql.Identifier(pg_schema, "items")
        )
    )
    for mode in ("append", "replace"):  # replacing would drop the policies
        with pytest.raises(TargetMismatchError, match="row-level security"):
            copy_table(source, request(table_id, pg_url, pg_schema, mode=mode))
    assert len(fetch(pg, pg_schema, "items")) == 3  # nothing half-loaded


def test_a_database_that_is_not_utf8_is_refused(pg_url, pg):
    from bq2pg.errors import TargetError
    from bq2pg.postgres.connection import connect

    pg.execute("DROP DATABASE IF EXISTS bq2pg_ascii")
    pg.execute(
        "CREATE DATABASE bq2pg_ascii ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    try:
        url = (
            pg_url.replace("/postgres?", "/bq2pg_ascii?")
            if "/postgres?" in pg_url
            else pg_url.rsplit("/", 1)[0] + "/bq2pg_ascii"
        )
        with pytest.raises(TargetError, match="UTF8"):
            connect(url)
    finally:
        pg.execute("DROP DATABASE IF EXISTS bq2pg_ascii")
