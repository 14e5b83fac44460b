"""One hand-written case per BigQuery type, end to end (emulator -> bq2pg -> PostgreSQL).

Each case inserts edge values with ``insert_rows_json``, copies the table with ``copy_table`` and
reads it back with psycopg. What the emulator cannot create (BIGNUMERIC) and the bit-exact FLOAT64
round trip go through ``Encoder`` + ``copy_chunk`` directly. RELIABILITY.md b.1-b.4 lists the
inputs; DESIGN.md "Lossless type mapping" the target types.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import struct
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from conftest import SHARED, make_table
from psycopg import sql

from bq2pg import CopyRequest, TypeMappingError, copy_table, ddl, load, typemap
from bq2pg.encode import Encoder
from bq2pg.schema import Field, TablePlan, plan_table
from bq2pg.source import Source

UTC = dt.timezone.utc
UNSET = object()  #: the column is left out of the inserted row
NAN, INF = float("nan"), float("inf")
NUM_MAX = "99999999999999999999999999999.999999999"
CONTROL = "".join(chr(c) for c in range(1, 32))
BIG_STRING = "é" * 500_000 + "x" * 24  # 1 MB of UTF-8
BIG_JSON_INT = 2**60 + 1  # above 2^53: a double cannot hold it


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Case:
    field: Field
    inputs: list[object]  #: JSON values for insert_rows_json (UNSET leaves the column out)
    pg_type: str  #: as format_type() prints it
    expected: list[object]  #: what psycopg reads back (``read`` below), row by row
    read: str = "v"  #: SQL expression to read back
    also: tuple[str, list[object]] | None = None  #: another SQL expression and its values


def same(got: object, want: object) -> bool:
    """Equality that tells NaN from NaN, -0.0 from 0.0 and recurses into lists and dicts."""
    if isinstance(want, float) and isinstance(got, float):
        if math.isnan(want):
            return math.isnan(got)
        return struct.pack(">d", got) == struct.pack(">d", want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def wkt(text: str | None) -> str | None:
    return None if text is None else re.sub(r"\s+", "", text)


RECORD = Field(
    "v",
    "RECORD",
    fields=(
        Field("x", "FLOAT64"),
        Field("b", "BYTES"),
        Field("n", "NUMERIC"),
        Field("d", "DATE"),
        Field("ts", "TIMESTAMP"),
        Field("s", "STRING"),
        Field("sub", "RECORD", fields=(Field("k", "INT64"),)),  # "inner" breaks the emulator
        Field("tags", "STRING", "REPEATED"),
    ),
)
RECORD_FULL = {
    "x": "NaN",
    "b": b64(b"\x00\xff"),
    "n": "1.000000001",
    "d": "0001-01-01",
    "ts": "2024-06-01T12:34:56.000001Z",
    "s": 'quote" back\\ nl\n',
    "sub": {"k": BIG_JSON_INT},
    "tags": ["a", ""],
}
RECORD_READ = {
    "x": "NaN",
    "b": "AP8=",
    "n": 1.000000001,
    "d": "0001-01-01",
    "ts": "2024-06-01T12:34:56.000001Z",
    "s": 'quote" back\\ nl\n',
    "sub": {"k": BIG_JSON_INT},
    "tags": ["a", ""],
}
RECORD_EMPTY = dict.fromkeys(RECORD_READ, None) | {"tags": []}
PARTS = Field(
    "v", "RECORD", "REPEATED", (Field("name", "STRING"), Field("tags", "STRING", "REPEATED"))
)
STRINGS = [CONTROL, "\t\n\r", "\\", "\\.", "a\n\\.\nb", "\\N", '""', "NULL", "", None,
           "😀 中文 שלום", "a,b", BIG_STRING]  # fmt: skip
TRICKY_ELEMENTS = ["", "NULL", '"', "\\", ",", "{}", " x ", "a\nb", "😀"]

CASES: dict[str, Case] = {
    "BOOL": Case(Field("v", "BOOL"), [True, False, None], "boolean", [True, False, None]),
    "INT64": Case(
        Field("v", "INT64"),
        [0, -1, 2**63 - 1, -(2**63), 2**53 + 1, None],
        "bigint",
        [0, -1, 2**63 - 1, -(2**63), 2**53 + 1, None],
    ),
    "FLOAT64": Case(
        Field("v", "FLOAT64"),
        [1.5, "NaN", "Infinity", "-Infinity", -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1, None],
        "double precision",
        [1.5, NAN, INF, -INF, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1, None],
        also=("v::text", ["1.5", "NaN", "Infinity", "-Infinity", "-0", "0", "5e-324",
                          "1.7976931348623157e+308", "0.1", None]),
    ),  # fmt: skip
    "NUMERIC": Case(
        Field("v", "NUMERIC"),
        [NUM_MAX, "-" + NUM_MAX, "0.000000001", "-0.000000001", "0", None],
        "numeric(38,9)",
        [Decimal(NUM_MAX), Decimal("-" + NUM_MAX), Decimal("1E-9"), Decimal("-1E-9"), Decimal(0), None],
        also=("v::text", [NUM_MAX, "-" + NUM_MAX, "0.000000001", "-0.000000001", "0.000000000", None]),
    ),  # fmt: skip
    "STRING": Case(
        Field("v", "STRING"),
        STRINGS,
        "text",
        STRINGS,
    ),
    "BYTES": Case(
        Field("v", "BYTES"),
        [b64(b"\x00\xff\\"), b64(b""), None, b64(bytes(range(256)))],
        "bytea",
        [b"\x00\xff\\", b"", None, bytes(range(256))],
    ),
    "DATE": Case(
        Field("v", "DATE"),
        ["0001-01-01", "9999-12-31", "2024-02-29", None],
        "date",
        [dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2024, 2, 29), None],
    ),
    "TIME": Case(
        Field("v", "TIME"),
        ["00:00:00", "23:59:59.999999", "12:34:56.5", None],
        "time without time zone",
        [dt.time(0), dt.time(23, 59, 59, 999999), dt.time(12, 34, 56, 500000), None],
    ),
    "DATETIME": Case(
        Field("v", "DATETIME"),
        ["0001-01-01T00:00:00", "9999-12-31T23:59:59.999999", "2024-02-29 12:00:00.000001", None],
        "timestamp without time zone",
        [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
         dt.datetime(2024, 2, 29, 12, 0, 0, 1), None],
    ),  # fmt: skip
    "TIMESTAMP": Case(
        Field("v", "TIMESTAMP"),
        ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2024-06-01T12:00:00+02:00", None],
        "timestamp with time zone",
        [dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
         dt.datetime(2024, 6, 1, 10, tzinfo=UTC), None],
    ),  # fmt: skip
    "JSON": Case(
        Field("v", "JSON"),
        [json.dumps({"a": [1, {"b": None}], "é": "😀"}), json.dumps([1, "two", [3]]),
         json.dumps(BIG_JSON_INT), "1e400", json.dumps("s"), json.dumps({"q": 'x"\\\n'}), "null",
         None],
        "jsonb",
        [{"a": [1, {"b": None}], "é": "😀"}, [1, "two", [3]], BIG_JSON_INT, 10**400, "s",
         {"q": 'x"\\\n'}, None, None],
        also=("jsonb_typeof(v)", ["object", "array", "number", "number", "string", "object", "null",
                                  None]),
    ),  # fmt: skip
    "GEOGRAPHY": Case(
        Field("v", "GEOGRAPHY"),
        ["POINT(1 2)", "LINESTRING(0 0, 1.5 -2.25)", "POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))", None],
        "text",
        ["POINT(12)", "LINESTRING(00,1.5-2.25)", "POLYGON((00,10,11,01,00))", None],
        read="v",
    ),
    "INTERVAL": Case(
        Field("v", "INTERVAL"),
        ["1-2 3 4:5:6.789", "0-0 0 0:0:0", "10000-0 0 0:0:0", "-10000-0 0 0:0:0", "-1-2 0 0:0:0",
         "0-0 -3 0:0:0", "0-0 0 0:0:0.000001", "0-0 3660000 0:0:0", "0-0 0 1000:0:0", None],
        "interval",
        ["1 year 2 mons 3 days 04:05:06.789", "00:00:00", "10000 years", "-10000 years",
         "-1 years -2 mons", "-3 days", "00:00:00.000001", "3660000 days", "1000:00:00", None],
        read="v::text",
    ),  # fmt: skip
    "RANGE<DATE>": Case(
        Field("v", "RANGE", range_element_type="DATE"),
        [{"start": "2024-01-01", "end": "2024-02-01"}, {"start": None, "end": "2024-02-01"},
         {"start": "2024-01-01", "end": None}, {"start": None, "end": None},
         {"start": "2024-01-01", "end": "2024-01-01"}, {"start": "0001-01-01", "end": "9999-12-31"},
         None],
        "daterange",
        ["[2024-01-01,2024-02-01)", "(,2024-02-01)", "[2024-01-01,)", "(,)", "empty",
         "[0001-01-01,9999-12-31)", None],
        read="v::text",
    ),  # fmt: skip
    "RANGE<DATETIME>": Case(
        Field("v", "RANGE", range_element_type="DATETIME"),
        [{"start": "2024-01-01T01:02:03.456789", "end": None},
         {"start": "0001-01-01T00:00:00", "end": "9999-12-31T23:59:59.999999"}, None],
        "tsrange",
        ['["2024-01-01 01:02:03.456789",)', '["0001-01-01 00:00:00","9999-12-31 23:59:59.999999")',
         None],
        read="v::text",
    ),  # fmt: skip
    "RANGE<TIMESTAMP>": Case(
        Field("v", "RANGE", range_element_type="TIMESTAMP"),
        [{"start": "2024-01-01T01:02:03.456789Z", "end": "2024-01-02T00:00:00Z"},
         {"start": None, "end": "2024-01-02T00:00:00Z"}, None],
        "tstzrange",
        ['["2024-01-01 01:02:03.456789+00","2024-01-02 00:00:00+00")',
         '(,"2024-01-02 00:00:00+00")', None],
        read="v::text",
    ),  # fmt: skip
    "REPEATED STRING": Case(
        Field("v", "STRING", "REPEATED"),
        [["a", "b"], [], TRICKY_ELEMENTS, UNSET],
        "text[]",
        [["a", "b"], [], TRICKY_ELEMENTS, []],
    ),
    "REPEATED INT64": Case(
        Field("v", "INT64", "REPEATED"),
        [[1, 2, 3], [], [2**63 - 1, -(2**63)], UNSET],
        "bigint[]",
        [[1, 2, 3], [], [2**63 - 1, -(2**63)], []],
    ),
    "REPEATED FLOAT64": Case(
        Field("v", "FLOAT64", "REPEATED"),
        [[1.5, "NaN", "Infinity", "-Infinity", -0.0, 5e-324, 1.7976931348623157e308, 0.1], [], UNSET],
        "double precision[]",
        [[1.5, NAN, INF, -INF, -0.0, 5e-324, 1.7976931348623157e308, 0.1], [], []],
    ),  # fmt: skip
    "RECORD": Case(
        RECORD,
        [RECORD_FULL, {"x": "-Infinity", "tags": []}, {"tags": []}, None],
        "jsonb",
        [RECORD_READ, RECORD_EMPTY | {"x": "-Infinity"}, RECORD_EMPTY, None],
        also=("v->>'n'", ["1.000000001", None, None, None]),
    ),
    "REPEATED RECORD": Case(
        PARTS,
        [[{"name": "a", "tags": ["x", "y"]}, {"name": None, "tags": []}], [], UNSET],
        "jsonb",
        [[{"name": "a", "tags": ["x", "y"]}, {"name": None, "tags": []}], [], []],
        also=("jsonb_typeof(v)", ["array", "array", "array"]),
    ),
}


def read_back(pg: psycopg.Connection, schema: str, expr: str) -> list[object]:
    rows = pg.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY id").format(sql.SQL(expr), sql.Identifier(schema, "t"))
    ).fetchall()
    return [r[0] for r in rows]


def assert_same(got: list[object], want: list[object]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert same(g, w), f"row {i}: got {g!r:.200}, want {w!r:.200}"


@pytest.mark.parametrize("name", list(CASES))
def test_each_bigquery_type_round_trips_through_the_emulator(
    name: str, source: Source, dataset: str, pg_url: str, pg_schema: str, pg: psycopg.Connection
) -> None:
    case = CASES[name]
    rows = [{"id": i} | ({} if v is UNSET else {"v": v}) for i, v in enumerate(case.inputs)]
    table_id = make_table(source, dataset, "t", [Field("id", "INT64"), case.field], rows)
    result = copy_table(source, CopyRequest(table_id, pg_url, table=f"{pg_schema}.t"))
    assert result.rows_read == len(rows)
    pg_type = pg.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attname = 'v'",
        [f'"{pg_schema}"."t"'],
    ).fetchone()
    assert pg_type == (case.pg_type,)
    got = read_back(pg, pg_schema, case.read)
    assert_same([wkt(g) for g in got] if name == "GEOGRAPHY" else got, case.expected)
    if case.also:
        assert_same(read_back(pg, pg_schema, case.also[0]), case.also[1])
