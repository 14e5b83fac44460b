"""Real Google Patents rows copied without loss: the 37-column and the older 30-column schema.

The 20 rows of ``../shared/patents/publications_sample.jsonl`` (lines 1-15: 37 columns,
lines 16-20: 30 columns) are inserted into the emulator as they are, copied with both
``--nested jsonb`` and ``--nested tables``, and compared value by value with the source JSON:
``''`` stays ``''``, date ``0`` stays ``0``, duplicates inside ``cpc`` stay, full texts (up
to ~66 KB each) are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bq2pg import CopyRequest, copy_table
from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.seed import create_table
from bq2pg.patents import source as publications
from bq2pg.plan.tables import Field
from conftest import patents_file

KEY = "publication_number"
MAIN = "publications"
SCHEMAS = {
    "37": (publications.PUBLICATIONS, slice(0, 15)),
    "30": (publications.PUBLICATIONS_30, slice(15, 20)),
}
ABSENT_IN_30 = (
    "spif_publication_number", "spif_application_number", "claims_localized_html",
    "description_localized_html", "locarno", "parent", "child",
)  # fmt: skip


@cache
def sample_rows() -> tuple[dict[str, object], ...]:
    path = patents_file("publications_sample.jsonl")
    return tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())


def rows_for(version: str) -> list[dict]:
    fields, lines = SCHEMAS[version]
    rows = list(sample_rows()[lines])
    assert len(rows) == (15 if version == "37" else 5)
    assert all(list(r) == [f.name for f in fields] for r in rows), "file and schema disagree"
    return rows


def records(fields: tuple[Field, ...]) -> list[Field]:
    return [f for f in fields if f.repeated and f.is_record]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_source(source: Source, dataset: str, version: str) -> tuple[str, list[dict]]:
    """Create the emulator table for ``version`` and insert its rows as in the file."""
    fields, _ = SCHEMAS[version]
    rows = rows_for(version)
    table_id = f"{dataset}.publications_{version}"
    create_table(source, TableRef.parse(table_id), fields)
    errors = source.bq.insert_rows_json(table_id, rows, retry=None)
    assert not errors, errors
    return table_id, rows


def copy(source: Source, table_id: str, pg_url: str, pg_schema: str, nested: str, name: str = MAIN):
    return copy_table(
        source,
        CopyRequest(source=table_id, database_url=pg_url, table=f"{pg_schema}.{name}",
                    key=(KEY,), nested=nested),  # type: ignore[arg-type]
    )  # fmt: skip


def select(pg: psycopg.Connection, query: sql.Composable, params: list | None = None) -> list[dict]:
    with pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def by_key(pg: psycopg.Connection, schema: str) -> dict[str, dict]:
    got = select(pg, sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, MAIN)))
    return {r[KEY]: r for r in got}


def table_names(pg: psycopg.Connection, schema: str) -> set[str]:
    got = pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema]).fetchall()
    return {r[0] for r in got}


def column_names(pg: psycopg.Connection, schema: str, table: str) -> list[str]:
    got = pg.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [f'"{schema}"."{table}"'],
    ).fetchall()
    return [r[0] for r in got]


def check_scalars(fields: tuple[Field, ...], rows: list[dict], got: dict[str, dict]) -> None:
    """Every non-RECORD column equal to the source, with its Python type (no '' -> NULL)."""
    assert sorted(got) == sorted(r[KEY] for r in rows)
    for row in rows:
        target = got[row[KEY]]
        for f in fields:
            if f.is_record:
                continue
            want, have = row[f.name], target[f.name]
            assert have == want and type(have) is type(want), (row[KEY], f.name, have, want)


def check_jsonb(pg, schema: str, fields: tuple[Field, ...], rows: list[dict], got: dict) -> None:
    """Every REPEATED RECORD a jsonb array equal to the source list (duplicates and order kept)."""
    for f in records(fields):
        kinds = pg.execute(
            sql.SQL("SELECT DISTINCT jsonb_typeof({}) FROM {}").format(
                sql.Identifier(f.name), sql.Identifier(schema, MAIN)
            )
        ).fetchall()
        assert kinds == [("array",)], (f.name, kinds)
        for row in rows:
            assert got[row[KEY]][f.name] == row[f.name], (row[KEY], f.name)


def check_children(pg, schema: str, fields: tuple[Field, ...], rows: list[dict]) -> None:
    """Each REPEATED RECORD ``f`` as ``publications__f``: len(row[f]) rows, ordinals 1..n."""
    for f in records(fields):
        child = f"{MAIN}__{f.name}"
        subs = [s.name for s in f.fields]
        assert column_names(pg, schema, child) == [f"parent_{KEY}", "ordinal", *subs]
        got = select(
            pg,
            sql.SQL("SELECT * FROM {} ORDER BY {}, ordinal").format(
                sql.Identifier(schema, child), sql.Identifier(f"parent_{KEY}")
            ),
        )
        assert len(got) == sum(len(r[f.name]) for r in rows), child
        for row in rows:
            mine = [g for g in got if g[f"parent_{KEY}"] == row[KEY]]
            ordinals = [g["ordinal"] for g in mine]
            assert ordinals == list(range(1, len(row[f.name]) + 1)), (child, row[KEY])
            elements = [{s: g[s] for s in subs} for g in mine]
            assert elements == row[f.name], (child, row[KEY])
            for g, e in zip(mine, row[f.name], strict=True):
                assert all(type(g[s]) is type(e[s]) for s in subs), (child, row[KEY], g, e)
        parents = {g[f"parent_{KEY}"] for g in got}
        assert parents <= {r[KEY] for r in rows}, child


def check_full_text(pg, schema: str, nested: str, rows: list[dict]) -> None:
    """Claims and descriptions byte-identical: SHA-256 and octet length computed in PostgreSQL."""
    checked = 0
    for col in publications.FULL_TEXT_COLUMNS:
        if col not in rows[0]:
            continue
        if nested == "jsonb":
            query = sql.SQL(
                "SELECT {k} AS k, e.ord AS ordinal, e.v->>'text' AS text FROM {t}, "
                "jsonb_array_elements({c}) WITH ORDINALITY AS e(v, ord)"
            ).format(k=sql.Identifier(KEY), t=sql.Identifier(schema, MAIN), c=sql.Identifier(col))
        else:
            query = sql.SQL("SELECT {k} AS k, ordinal, text FROM {t}").format(
                k=sql.Identifier(f"parent_{KEY}"), t=sql.Identifier(schema, f"{MAIN}__{col}")
            )
        hashed = sql.SQL(
            "SELECT k, ordinal, octet_length(text) AS n, "
            "encode(sha256(convert_to(text, 'UTF8')), 'hex') AS h FROM ({}) q"
        ).format(query)
        got = {(g["k"], g["ordinal"]): (g["n"], g["h"]) for g in select(pg, hashed)}
        want = {
            (r[KEY], i): (len(e["text"].encode("utf-8")), sha(e["text"]))
            for r in rows
            for i, e in enumerate(r[col], 1)
        }
        assert got == want, col
        checked += len(want)
    assert checked == (20 if len(rows[0]) == 37 else 2)  # 5 US rows x 4 / 1 US row x 2


@pytest.mark.parametrize("nested", ["jsonb", "tables"])
@pytest.mark.parametrize("version", ["37", "30"])
def test_real_rows_copy_without_loss(source, dataset, pg_url, pg_schema, pg, version, nested):
    fields, _ = SCHEMAS[version]
    table_id, rows = load_source(source, dataset, version)
    result = copy(source, table_id, pg_url, pg_schema, nested)
    assert result.rows_read == len(rows)
    got = by_key(pg, pg_schema)
    check_scalars(fields, rows, got)
    if nested == "jsonb":
        assert table_names(pg, pg_schema) == {MAIN}
        assert column_names(pg, pg_schema, MAIN) == [f.name for f in fields]
        check_jsonb(pg, pg_schema, fields, rows, got)
    else:
        scalars = [f.name for f in fields if f not in records(fields)]
        assert column_names(pg, pg_schema, MAIN) == scalars
        check_children(pg, pg_schema, fields, rows)
    check_full_text(pg, pg_schema, nested, rows)


@pytest.mark.parametrize("version", ["37", "30"])
def test_child_row_counts_are_the_array_lengths(source, dataset, pg_url, pg_schema, pg, version):
    fields, _ = SCHEMAS[version]
    table_id, rows = load_source(source, dataset, version)
    result = copy(source, table_id, pg_url, pg_schema, "tables")
    children = {f"{MAIN}__{f.name}": sum(len(r[f.name]) for r in rows) for f in records(fields)}
    assert table_names(pg, pg_schema) == {MAIN, *children}
    counted = {t.name: t.rows for t in result.tables}
    assert counted == {MAIN: len(rows), **children}
    for name, expected in children.items():
        n = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, name)))
        assert n.fetchone() == (expected,), name
    if version == "37":
        # the real rows exercise duplicates: cpc of US-2001032386-A1 has 32 entries, 17 distinct
        assert children[f"{MAIN}__cpc"] == sum(len(r["cpc"]) for r in rows) > 0
        assert len({json.dumps(e, sort_keys=True) for e in rows[3]["cpc"]}) < len(rows[3]["cpc"])


def test_thirty_column_table_has_no_newer_columns(source, dataset, pg_url, pg_schema, pg):
    table_id, _ = load_source(source, dataset, "30")
    assert len(source.table(TableRef.parse(table_id)).fields) == 30
    copy(source, table_id, pg_url, pg_schema, "tables")
    main = column_names(pg, pg_schema, MAIN)
    newer = [c for c in main if c.startswith("spif_") or c.endswith("_html") or c in ABSENT_IN_30]
    assert not newer
    tables = table_names(pg, pg_schema)
    assert not [t for t in tables if t.removeprefix(f"{MAIN}__") in ABSENT_IN_30]
    for t in ("title_localized", "abstract_localized", "claims_localized", "description_localized"):
        columns = column_names(pg, pg_schema, f"{MAIN}__{t}")
        assert columns == [f"parent_{KEY}", "ordinal", "text", "language"]
    # and in jsonb mode no element carries a 'truncated' key
    copy(source, table_id, pg_url, pg_schema, "jsonb", name="publications_jsonb")
    assert table_names(pg, pg_schema) == tables | {"publications_jsonb"}
    leaked = pg.execute(
        sql.SQL(
            "SELECT count(*) FROM {}, jsonb_array_elements(title_localized || abstract_localized "
            "|| claims_localized || description_localized) e WHERE e ? 'truncated'"
        ).format(sql.Identifier(pg_schema, "publications_jsonb"))
    ).fetchone()
    assert leaked == (0,)
