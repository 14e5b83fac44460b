"""Rows PostgreSQL rejects go to bq2pg.dead_letters with their error; the rest loads.

RELIABILITY.md b.1-b.4: NUL in text (first, middle and last row of a batch, inside an array
element and a record field), NUL and lone surrogates inside JSON, and invalid UTF-8; each time
``rows_read = rows_loaded + rows_dead_lettered`` exactly, and the dead letter holds the raw row.
"""

from __future__ import annotations

import json

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from bq2pg import CopyRequest, copy_table
from bq2pg.engine.stream import write_batches
from bq2pg.plan.tables import Field, plan_table
from bq2pg.postgres.connection import connect
from bq2pg.state import schema as state_schema
from bq2pg.state.ledger import DEAD_LETTERS
from conftest import make_table

N = 200  # rows per case; bad rows are planted among them


def load_direct(pg_url: str, schema: str, fields: list[Field], table: pa.Table) -> dict[str, int]:
    plan = plan_table(fields, source="test", schema=schema, name="t", key=("id",), nested="tables")
    with connect(pg_url) as conn:
        state_schema.ensure(conn)
        from bq2pg.plan import ddl
        from bq2pg.postgres import connection as load

        load.execute(
            conn,
            [ddl.create_schema(schema)] + [ddl.create_table(t) for t in plan.all_tables()],
            "t",
        )
    counts: dict[str, int] = {}

    def counted(name: str, rows: int, _: int) -> None:
        counts[name] = counts.get(name, 0) + rows

    write_batches(pg_url, plan, table.to_batches(max_chunksize=N), counted=counted)
    return counts


def dead_letters(pg: psycopg.Connection, target: str) -> list[tuple]:
    return pg.execute(
        "SELECT row_offset, sqlstate, error, context, raw FROM bq2pg.dead_letters "
        "WHERE target = %s ORDER BY row_offset",
        [target],
    ).fetchall()


def ids(pg: psycopg.Connection, schema: str) -> list[int]:
    return [
        r[0]
        for r in pg.execute(
            sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "t"))
        )
    ]


STRING_FIELDS = [Field("id", "INT64"), Field("s", "STRING")]


@pytest.mark.parametrize("bad_at", [[0], [N // 2], [N - 1], [3, 4, 150]])
def test_nul_in_text_dead_letters_only_that_row(pg_url, pg_schema, pg, bad_at):
    values = [f"row {i}" if i not in bad_at else f"bad\x00{i}" for i in range(N)]
    counts = load_direct(pg_url, pg_schema, STRING_FIELDS, pa.table({"id": range(N), "s": values}))
    assert counts["t"] == N - len(bad_at) and counts[DEAD_LETTERS] == len(bad_at)
    assert ids(pg, pg_schema) == [i for i in range(N) if i not in bad_at]
    letters = dead_letters(pg, f"{pg_schema}.t")
    assert [r[0] for r in letters] == bad_at
    for offset, sqlstate, error, _, raw in letters:
        assert sqlstate.startswith("22") and error
        assert json.loads(raw) == {"id": offset, "s": f"bad\x00{offset}"}  # the exact original


def test_nul_in_an_array_element_and_a_record_field(pg_url, pg_schema, pg):
    fields = [
        Field("id", "INT64"),
        Field("tags", "STRING", "REPEATED"),
        Field("parts", "RECORD", "REPEATED", (Field("code", "STRING"),)),
    ]
    tags = [["a", "b"] for _ in range(N)]
    tags[10] = ["ok", "n\x00ul"]
    parts = [[{"code": f"c{i}"}] for i in range(N)]
    parts[20] = [{"code": "x\x00y"}]  # lands in the child table t__parts
    table = pa.table({"id": range(N), "tags": tags, "parts": parts})
    counts = load_direct(pg_url, pg_schema, fields, table)
    assert counts[DEAD_LETTERS] == 2 and counts["t"] == N - 2
    assert counts["t__parts"] == N - 2  # the bad row's children are not loaded either
    assert [r[0] for r in dead_letters(pg, f"{pg_schema}.t")] == [10, 20]
    orphans = pg.execute(
        sql.SQL(
            "SELECT count(*) FROM {} c WHERE NOT EXISTS (SELECT 1 FROM {} p WHERE p.id = c.parent_id)"
        ).format(sql.Identifier(pg_schema, "t__parts"), sql.Identifier(pg_schema, "t"))
    ).fetchone()
    assert orphans == (0,)


@pytest.mark.parametrize(
    "bad_json",
    [
        '{"k": "a\\u0000b"}',  # \u0000: jsonb cannot store it
        '{"k": "\\ud800"}',  # a lone high surrogate
        '{"k": "\\udc00x"}',  # a lone low surrogate
    ],
)
def test_json_that_jsonb_rejects_is_dead_lettered(pg_url, pg_schema, pg, bad_json):
    fields = [Field("id", "INT64"), Field("j", "JSON")]
    values = ['{"k": "\\ud83d\\ude00"}'] * N  # a valid surrogate pair loads (jsonb folds it)
    values[7] = bad_json
    counts = load_direct(pg_url, pg_schema, fields, pa.table({"id": range(N), "j": values}))
    assert (counts["t"], counts[DEAD_LETTERS]) == (N - 1, 1)
    [(offset, sqlstate, _, _, raw)] = dead_letters(pg, f"{pg_schema}.t")
    assert offset == 7 and sqlstate.startswith("22")
    assert json.loads(raw)["j"] == bad_json
    emoji = pg.execute(
        sql.SQL("SELECT j->>'k' FROM {} WHERE id = 0").format(sql.Identifier(pg_schema, "t"))
    ).fetchone()
    assert emoji == ("😀",)


def test_invalid_utf8_is_dead_lettered(pg_url, pg_schema, pg):
    good = [f"v{i}".encode() for i in range(N)]
    good[5] = b"bad \xc3\x28"
    strings = pa.array(good, pa.binary()).cast(pa.string(), safe=False)  # Arrow does not validate
    counts = load_direct(pg_url, pg_schema, STRING_FIELDS, pa.table({"id": range(N), "s": strings}))
    assert (counts["t"], counts[DEAD_LETTERS]) == (N - 1, 1)
    [(offset, sqlstate, _, _, raw)] = dead_letters(pg, f"{pg_schema}.t")
    assert offset == 5 and sqlstate.startswith("22")
    assert "unreadable" in json.loads(raw)


def test_a_copy_run_counts_read_loaded_and_dead_letters(source, dataset, pg_url, pg_schema, pg):
    rows = [{"id": i, "s": f"row {i}"} for i in range(50)]
    rows[3]["s"] = "bad\x00row"
    table_id = make_table(source, dataset, "t", STRING_FIELDS, rows)
    result = copy_table(
        source, CopyRequest(source=table_id, database_url=pg_url, table=f"{pg_schema}.t")
    )
    assert (result.rows_read, result.tables[0].rows, result.dead_letters) == (50, 49, 1)
    run = pg.execute(
        "SELECT rows_read, rows_loaded, (SELECT sum(dead_letters) FROM bq2pg.chunks c WHERE c.run_id = r.run_id) "
        "FROM bq2pg.runs r WHERE run_id = %s",
        [result.run_id],
    ).fetchone()
    assert run == (50, 49, 1)
    [(offset, _, _, _, raw)] = dead_letters(pg, f"{pg_schema}.t")
    assert offset == 3 and json.loads(raw) == {"id": 3, "s": "bad\x00row"}
