"""The two COPY encodings (binary and CSV) store exactly the same values in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from bq2pg.arrow import binary
from bq2pg.arrow.encode import Encoder
from bq2pg.plan import ddl
from bq2pg.plan.tables import Field, plan_table
from bq2pg.postgres import connection as load
from bq2pg.postgres import copy
from bq2pg.state import ledger

UTC = dt.UTC
CONTROL = "".join(chr(c) for c in range(1, 32))
TEXTS = ["", None, "plain", CONTROL, "tab\tnl\ncr\r", "\\", "\\.", "\\N", '""', "NULL", "a,b", "😀 漢字 مرحبا", "x" * 100_000]  # fmt: skip

FIELDS = [
    Field("i", "INT64"),
    Field("f", "FLOAT64"),
    Field("b", "BOOL"),
    Field("d", "DATE"),
    Field("t", "TIME"),
    Field("dt", "DATETIME"),
    Field("ts", "TIMESTAMP"),
    Field("s", "STRING"),
    Field("y", "BYTES"),
    Field("j", "JSON"),
]


def flat_table() -> pa.Table:
    n = len(TEXTS)
    pick = lambda values: [values[k % len(values)] for k in range(n)]  # noqa: E731
    return pa.table(
        {
            "i": pa.array(pick([0, 2**63 - 1, -(2**63), None, 42]), pa.int64()),
            "f": pa.array(pick([float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, None, 0.1]), pa.float64()),
            "b": pa.array(pick([True, False, None])),
            "d": pa.array(pick([dt.date(1, 1, 1), dt.date(9999, 12, 31), None, dt.date(2000, 1, 1)])),
            "t": pa.array(pick([dt.time(23, 59, 59, 999999), dt.time(0), None]), pa.time64("us")),
            "dt": pa.array(pick([dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999), None]), pa.timestamp("us")),
            "ts": pa.array(pick([dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), None]), pa.timestamp("us", "UTC")),
            "s": pa.array(TEXTS),
            "y": pa.array(pick([b"", b"\x00\xff\\", None, bytes(range(256))]), pa.binary()),
            "j": pa.array(pick(['{"a": [1, 2.5, "x"]}', "[]", None, '{"big": 12345678901234567890}']), pa.string()),
        }
    )  # fmt: skip


def load_with(pg_url: str, schema: str, name: str, table: pa.Table, *, allow_binary: bool) -> str:
    plan = plan_table(FIELDS, source="test", schema=schema, name=name)
    encoder = Encoder(plan.columns, allow_binary=allow_binary)
    payload = encoder.encode(table)
    with load.connect(pg_url) as conn:
        load.execute(conn, [ddl.create_schema(schema), ddl.create_table(plan)], "test")
        ledger.commit_chunk(conn, [copy.Part(plan, plan.name, [payload], encoder.format)], None)
    return encoder.format


def test_flat_tables_use_binary_and_others_csv():
    flat = plan_table(FIELDS, source="t", schema="s", name="n")
    encoder = Encoder(flat.columns)
    encoder.encode(flat_table())
    assert encoder.format == "binary"
    arrays = plan_table(
        [Field("i", "INT64"), Field("a", "STRING", "REPEATED")], source="t", schema="s", name="n"
    )
    encoder = Encoder(arrays.columns)
    encoder.encode(pa.table({"i": [1], "a": [["x"]]}))
    assert encoder.format == "binary"
    records = plan_table(
        [Field("r", "RECORD", "REPEATED", fields=(Field("x", "INT64"),))],
        source="t", schema="s", name="n", nested="jsonb",
    )  # fmt: skip
    encoder = Encoder(records.columns)
    encoder.encode(pa.table({"r": [[{"x": 1}]]}))
    assert encoder.format == "csv"
    numeric = [
        c.pg_type
        for c in plan_table([Field("n", "NUMERIC")], source="t", schema="s", name="n").columns
    ]
    assert not binary.supported(numeric, [pa.decimal128(38, 9)])


def test_binary_and_csv_store_identical_values(pg_url, pg_schema, pg: psycopg.Connection):
    table = flat_table()
    assert load_with(pg_url, pg_schema, "bin", table, allow_binary=True) == "binary"
    assert load_with(pg_url, pg_schema, "csv", table, allow_binary=False) == "csv"
    # compare as text (exact for floats: -0, NaN, shortest digits) and by bits of the doubles
    for name in ("bin", "csv"):
        rows = pg.execute(
            sql.SQL("SELECT i, f::text, float8send(f), b, d, t, dt, ts, s, y, j::text, jsonb_typeof(j) FROM {}").format(
                sql.Identifier(pg_schema, name)
            )
        ).fetchall()  # fmt: skip
        assert len(rows) == len(TEXTS)
        if name == "bin":
            binary_rows = rows
    assert rows == binary_rows
    got = {r[8]: r for r in binary_rows}
    assert got[""][8] == "" and None in got and got[None][8] is None
    assert got[CONTROL][8] == CONTROL and got["x" * 100_000][8] == "x" * 100_000
    floats = [r[1] for r in binary_rows]
    assert {"NaN", "Infinity", "-Infinity", "-0", "5e-324", "0.1"} <= set(floats)
    assert {r[11] for r in binary_rows if r[11]} <= {"object", "array"}
    first = binary_rows[0]
    assert first[4] == dt.date(1, 1, 1) and first[6] == dt.datetime(1, 1, 1)
    assert first[7] == dt.datetime(1, 1, 1, tzinfo=UTC)
    assert first[9] == b""


@pytest.mark.parametrize("seed", [1, 2])
def test_random_doubles_round_trip_bit_exact_in_both_formats(pg_url, pg_schema, pg, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**64, 5000, dtype=np.uint64)
    values = bits.view(np.float64)
    values = np.concatenate(
        [values, [5e-324, 1.7976931348623157e308, -0.0, 2.2250738585072014e-308]]
    )
    table = pa.table({"f": pa.array(values)})
    plan = plan_table([Field("f", "FLOAT64")], source="t", schema=pg_schema, name="x")
    for allow_binary in (True, False):
        encoder = Encoder(plan.columns, allow_binary=allow_binary)
        payload = encoder.encode(table)
        with load.connect(pg_url) as conn:
            load.execute(
                conn,
                [
                    ddl.create_schema(pg_schema),
                    ddl.drop_table(pg_schema, "x"),
                    ddl.create_table(plan),
                ],
                "t",
            )
            ledger.commit_chunk(conn, [copy.Part(plan, "x", [payload], encoder.format)], None)
        stored = pg.execute(
            sql.SQL("SELECT float8send(f) FROM {}").format(sql.Identifier(pg_schema, "x"))
        ).fetchall()
        got = np.frombuffer(b"".join(bytes(r[0]) for r in stored), ">f8").astype(np.float64)
        same = (got.view(np.uint64) == values.view(np.uint64)) | (np.isnan(got) & np.isnan(values))
        assert same.all(), (encoder.format, values[~same][:5], got[~same][:5])
        assert not math.isnan(got[-2]) and math.copysign(1, got[-2]) == -1


ARRAY_FIELDS = [
    Field("n", "INT64"),
    Field("s", "STRING", "REPEATED"),
    Field("i", "INT64", "REPEATED"),
    Field("f", "FLOAT64", "REPEATED"),
    Field("b", "BOOL", "REPEATED"),
    Field("d", "DATE", "REPEATED"),
    Field("ts", "TIMESTAMP", "REPEATED"),
    Field("y", "BYTES", "REPEATED"),
]


def array_table() -> pa.Table:
    """One-dimensional arrays: empty, NULL, with NULL elements, long, every text oddity."""
    texts = [TEXTS[k : k + 3] for k in range(0, len(TEXTS), 3)]
    rows = len(texts) + 3
    lists = lambda values: [None, [], *values, [values[0][0]] * 1000][:rows]  # noqa: E731
    return pa.table(
        {
            "n": pa.array(range(rows), pa.int64()),
            "s": pa.array(lists(texts), pa.list_(pa.string())),
            "i": pa.array(lists([[0, None, 2**63 - 1, -(2**63)]] * rows), pa.list_(pa.int64())),
            "f": pa.array(lists([[float("nan"), -0.0, None, 5e-324]] * rows), pa.list_(pa.float64())),
            "b": pa.array(lists([[True, None, False]] * rows), pa.list_(pa.bool_())),
            "d": pa.array(lists([[dt.date(1, 1, 1), None]] * rows), pa.list_(pa.date32())),
            "ts": pa.array(lists([[dt.datetime(1, 1, 1, tzinfo=UTC), None]] * rows), pa.list_(pa.timestamp("us", "UTC"))),
            "y": pa.array(lists([[b"", b"\x00\xff", None]] * rows), pa.list_(pa.binary())),
        }
    )  # fmt: skip


def test_arrays_in_binary_store_what_csv_stores(pg_url, pg_schema, pg: psycopg.Connection):
    table = array_table()
    plan = plan_table(ARRAY_FIELDS, source="t", schema=pg_schema, name="arr")
    stored = {}
    for allow_binary in (True, False):
        encoder = Encoder(plan.columns, allow_binary=allow_binary)
        # a slice starting mid-table: list offsets that do not start at zero
        payloads = [encoder.encode(table.slice(0, 2)), encoder.encode(table.slice(2))]
        assert encoder.format == ("binary" if allow_binary else "csv")
        with load.connect(pg_url) as conn:
            load.execute(
                conn,
                [ddl.create_schema(pg_schema), ddl.drop_table(pg_schema, "arr"), ddl.create_table(plan)],
                "t",
            )  # fmt: skip
            ledger.commit_chunk(conn, [copy.Part(plan, "arr", payloads, encoder.format)], None)
        stored[encoder.format] = pg.execute(
            sql.SQL("SELECT n, s, i, f::text[], b, d, ts, y, array_ndims(s), array_lower(s, 1) FROM {} ORDER BY n").format(
                sql.Identifier(pg_schema, "arr")
            )
        ).fetchall()  # fmt: skip
    assert stored["binary"] == stored["csv"]
    rows = stored["binary"]
    assert rows[0][1] == [] and rows[1][1] == [] and rows[1][8] is None  # NULL as in BigQuery
    assert rows[2][1] == TEXTS[0:3] and rows[2][8] == 1 and rows[2][9] == 1
    assert sum(len(r[1]) for r in rows[2:-1]) == len(TEXTS)
    assert rows[-1][1] == [TEXTS[0]] * 1000
    assert rows[2][3] == ["NaN", "-0", None, "5e-324"] and rows[2][2][1] is None
