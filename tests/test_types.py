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
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from bq2pg import CopyRequest, TypeMappingError, copy_table
from bq2pg.arrow.encode import Encoder
from bq2pg.bigquery.client import Source
from bq2pg.plan import ddl, typemap
from bq2pg.plan.tables import Field, TablePlan, plan_table
from bq2pg.postgres import connection as load
from bq2pg.postgres import copy
from bq2pg.state import ledger
from conftest import SHARED, make_table

UTC = dt.UTC
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
    inputs: Sequence[object]  #: JSON values for insert_rows_json (UNSET leaves the column out)
    pg_type: str  #: as format_type() prints it
    expected: Sequence[object]  #: what psycopg reads back (``read`` below), row by row
    read: str = "v"  #: SQL expression to read back
    also: tuple[str, Sequence[object]] | None = None  #: another SQL expression and its values


def same(got: object, want: object) -> bool:
    """Equality that tells NaN from NaN, -0.0 from 0.0 and recurses into lists and dicts."""
    if isinstance(want, float) and isinstance(got, float):
        if math.isnan(want):
            return math.isnan(got)
        return struct.pack(">d", got) == struct.pack(">d", want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def wkt(text: object) -> object:
    """WKT with spaces only between coordinates: ``POINT (1 2)`` -> ``POINT(1 2)``."""
    if not isinstance(text, str):
        return text
    return re.sub(r"\s*([(),])\s*", r"\1", " ".join(text.split()))


# fmt: off
RECORD = Field("v", "RECORD", fields=(
    Field("x", "FLOAT64"), Field("b", "BYTES"), Field("n", "NUMERIC"), Field("d", "DATE"),
    Field("ts", "TIMESTAMP"), Field("s", "STRING"),
    Field("sub", "RECORD", fields=(Field("k", "INT64"),)),  # a field "inner" breaks the emulator
    Field("tags", "STRING", "REPEATED"),
))
RECORD_IN = {"x": "NaN", "b": b64(b"\x00\xff"), "n": "1.000000001", "d": "0001-01-01",
             "ts": "2024-06-01T12:34:56.000001Z", "s": 'quote" back\\ nl\n',
             "sub": {"k": BIG_JSON_INT}, "tags": ["a", ""]}
RECORD_OUT = RECORD_IN | {"b": "AP8=", "n": 1.000000001}  # bytes as base64, NaN as "NaN"
RECORD_EMPTY = dict.fromkeys(RECORD_OUT, None) | {"tags": []}
PARTS = Field("v", "RECORD", "REPEATED",
              (Field("name", "STRING"), Field("tags", "STRING", "REPEATED")))
PARTS_IN = [{"name": "a", "tags": ["x", "y"]}, {"name": None, "tags": []}]
STRINGS = [CONTROL, "\t\n\r", "\\", "\\.", "a\n\\.\nb", "\\N", '""', "NULL", "", None,
           "😀 中文 שלום", "a,b", BIG_STRING]
TRICKY_ELEMENTS = ["", "NULL", '"', "\\", ",", "{}", " x ", "a\nb", "😀"]
INTS = [0, -1, 2**63 - 1, -(2**63), 2**53 + 1, None]
FLOATS = [1.5, NAN, INF, -INF, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1]
FLOATS_IN = [1.5, "NaN", "Infinity", "-Infinity", -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1]


def field(type_: str, mode: str = "NULLABLE", element: str | None = None) -> Field:
    return Field("v", type_, mode, range_element_type=element)


CASES: dict[str, Case] = {
    "BOOL": Case(field("BOOL"), [True, False, None], "boolean", [True, False, None]),
    "INT64": Case(field("INT64"), INTS, "bigint", INTS),
    "FLOAT64": Case(field("FLOAT64"), [*FLOATS_IN, None], "double precision", [*FLOATS, None],
        also=("v::text", ["1.5", "NaN", "Infinity", "-Infinity", "-0", "0", "5e-324",
                          "1.7976931348623157e+308", "0.1", None])),
    "NUMERIC": Case(field("NUMERIC"),
        [NUM_MAX, "-" + NUM_MAX, "0.000000001", "-0.000000001", "0", None], "numeric(38,9)",
        [Decimal(NUM_MAX), Decimal("-" + NUM_MAX), Decimal("1E-9"), Decimal("-1E-9"), Decimal(0), None],
        also=("v::text", [NUM_MAX, "-" + NUM_MAX, "0.000000001", "-0.000000001", "0.000000000", None])),
    "STRING": Case(field("STRING"), STRINGS, "text", STRINGS),
    "BYTES": Case(field("BYTES"), [b64(b"\x00\xff\\"), b64(b""), None, b64(bytes(range(256)))],
        "bytea", [b"\x00\xff\\", b"", None, bytes(range(256))]),
    "DATE": Case(field("DATE"), ["0001-01-01", "9999-12-31", "2024-02-29", None], "date",
        [dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2024, 2, 29), None]),
    "TIME": Case(field("TIME"), ["00:00:00", "23:59:59.999999", "12:34:56.5", None],
        "time without time zone",
        [dt.time(0), dt.time(23, 59, 59, 999999), dt.time(12, 34, 56, 500000), None]),
    "DATETIME": Case(field("DATETIME"),
        ["0001-01-01T00:00:00", "9999-12-31T23:59:59.999999", "2024-02-29 12:00:00.000001", None],
        "timestamp without time zone",
        [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
         dt.datetime(2024, 2, 29, 12, 0, 0, 1), None]),
    "TIMESTAMP": Case(field("TIMESTAMP"),
        ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2024-06-01T12:00:00+02:00", None],
        "timestamp with time zone",
        [dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
         dt.datetime(2024, 6, 1, 10, tzinfo=UTC), None]),
    "JSON": Case(field("JSON"),  # the emulator wants JSON columns as JSON text
        [json.dumps({"a": [1, {"b": None}], "é": "😀"}), json.dumps([1, "two", [3]]),
         json.dumps(BIG_JSON_INT), "1e400", json.dumps("s"), json.dumps({"q": 'x"\\\n'}), "null",
         None],
        "jsonb",
        [{"a": [1, {"b": None}], "é": "😀"}, [1, "two", [3]], BIG_JSON_INT, 10**400, "s",
         {"q": 'x"\\\n'}, None, None],
        also=("jsonb_typeof(v)",
              ["object", "array", "number", "number", "string", "object", "null", None])),
    "GEOGRAPHY": Case(field("GEOGRAPHY"),  # the emulator sends WKB, bq2pg writes WKT
        ["POINT(1 2)", "LINESTRING(0 0, 1.5 -2.25)", "POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))", None],
        "text", ["POINT(1 2)", "LINESTRING(0 0,1.5 -2.25)", "POLYGON((0 0,1 0,1 1,0 1,0 0))", None]),
    "INTERVAL": Case(field("INTERVAL"),  # the emulator mis-parses "-H:M:S" (only H is negated)
        ["1-2 3 4:5:6.789", "0-0 0 0:0:0", "10000-0 0 0:0:0", "-10000-0 0 0:0:0", "-1-2 0 0:0:0",
         "0-0 -3 0:0:0", "0-0 0 0:0:0.000001", "0-0 3660000 0:0:0", "0-0 0 1000:0:0", None],
        "interval",
        ["1 year 2 mons 3 days 04:05:06.789", "00:00:00", "10000 years", "-10000 years",
         "-1 years -2 mons", "-3 days", "00:00:00.000001", "3660000 days", "1000:00:00", None],
        read="v::text"),
    "RANGE<DATE>": Case(field("RANGE", element="DATE"),
        [{"start": "2024-01-01", "end": "2024-02-01"}, {"start": None, "end": "2024-02-01"},
         {"start": "2024-01-01", "end": None}, {"start": None, "end": None},
         {"start": "2024-01-01", "end": "2024-01-01"}, {"start": "0001-01-01", "end": "9999-12-31"},
         None],
        "daterange",
        ["[2024-01-01,2024-02-01)", "(,2024-02-01)", "[2024-01-01,)", "(,)", "empty",
         "[0001-01-01,9999-12-31)", None],
        read="v::text"),
    "RANGE<DATETIME>": Case(field("RANGE", element="DATETIME"),
        [{"start": "2024-01-01T01:02:03.456789", "end": None},
         {"start": "0001-01-01T00:00:00", "end": "9999-12-31T23:59:59.999999"}, None],
        "tsrange",
        ['["2024-01-01 01:02:03.456789",)', '["0001-01-01 00:00:00","9999-12-31 23:59:59.999999")',
         None],
        read="v::text"),
    "RANGE<TIMESTAMP>": Case(field("RANGE", element="TIMESTAMP"),
        [{"start": "2024-01-01T01:02:03.456789Z", "end": "2024-01-02T00:00:00Z"},
         {"start": None, "end": "2024-01-02T00:00:00Z"}, None],
        "tstzrange",
        ['["2024-01-01 01:02:03.456789+00","2024-01-02 00:00:00+00")',
         '(,"2024-01-02 00:00:00+00")', None],
        read="v::text"),
    # The emulator returns NULL for an array never set; bq2pg writes '{}' ([] in jsonb).
    "REPEATED STRING": Case(field("STRING", "REPEATED"), [["a", "b"], [], TRICKY_ELEMENTS, UNSET],
        "text[]", [["a", "b"], [], TRICKY_ELEMENTS, []]),
    "REPEATED INT64": Case(field("INT64", "REPEATED"), [[1, 2, 3], [], INTS[:-1], UNSET],
        "bigint[]", [[1, 2, 3], [], INTS[:-1], []]),
    "REPEATED FLOAT64": Case(field("FLOAT64", "REPEATED"), [FLOATS_IN, [], UNSET],
        "double precision[]", [FLOATS, [], []]),
    "RECORD": Case(RECORD, [RECORD_IN, {"x": "-Infinity", "tags": []}, {"tags": []}, None],
        "jsonb", [RECORD_OUT, RECORD_EMPTY | {"x": "-Infinity"}, RECORD_EMPTY, None],
        also=("v->>'n'", ["1.000000001", None, None, None])),
    "REPEATED RECORD": Case(PARTS, [PARTS_IN, [], UNSET], "jsonb", [PARTS_IN, [], []],
        also=("jsonb_typeof(v)", ["array", "array", "array"])),
}
# fmt: on


def read_back(pg: psycopg.Connection, schema: str, expr: str) -> list[object]:
    rows = pg.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY id").format(sql.SQL(expr), sql.Identifier(schema, "t"))
    ).fetchall()
    return [r[0] for r in rows]


def assert_same(got: Sequence[object], want: Sequence[object]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert same(g, w), f"row {i}: got {g!r:.200}, want {w!r:.200}"


#: A REPEATED column makes a table non-flat, so bq2pg loads it as CSV instead of binary COPY.
PAD = Field("pad", "STRING", "REPEATED")


#: Cases that fail because of a bug in bq2pg, by test id.
KNOWN_BUGS: dict[str, str] = {}


def shape_param(name: str, shape: str) -> object:
    test_id = f"{name}-{shape}"
    bug = KNOWN_BUGS.get(test_id)
    return pytest.param(
        name, shape, id=test_id, marks=[pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    )


@pytest.mark.parametrize(
    ("name", "shape"), [shape_param(n, s) for n in CASES for s in ("alone", "with_array")]
)
def test_each_bigquery_type_round_trips_through_the_emulator(
    name: str, shape: str, source: Source, dataset: str, pg_url: str, pg_schema: str,
    pg: psycopg.Connection,
) -> None:  # fmt: skip
    case = CASES[name]
    rows = [{"id": i} | ({} if v is UNSET else {"v": v}) for i, v in enumerate(case.inputs)]
    fields = [Field("id", "INT64"), case.field] + ([PAD] if shape == "with_array" else [])
    table_id = make_table(source, dataset, "t", fields, rows)
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


@pytest.mark.parametrize("allow_binary", [True, False], ids=["binary", "csv"])
def test_a_lone_backslash_dot_line_is_data_not_the_end_of_copy(
    allow_binary: bool, pg_url: str, pg_schema: str, pg: psycopg.Connection
) -> None:
    # In a one-column table the value \. is a CSV line of its own: COPY must not stop there.
    values = ["before", "\\.", "after", "", None]
    plan = plan_table([Field("v", "STRING")], source="p.d.t", schema=pg_schema, name="t")
    encoder = Encoder(plan.columns, allow_binary=allow_binary)
    with load.connect(pg_url) as conn:
        load.execute(conn, [ddl.create_schema(pg_schema), ddl.create_table(plan)], "creating t")
        payload = encoder.encode(pa.table({"v": pa.array(values, pa.string())}))
        encoder.close()
        ledger.commit_chunk(conn, [copy.Part(plan, plan.name, [payload], encoder.format)], None)
    got = pg.execute(sql.SQL("SELECT v FROM {}").format(sql.Identifier(pg_schema, "t"))).fetchall()
    assert sorted(got, key=repr) == sorted([(v,) for v in values], key=repr)


def test_an_unset_array_inside_a_record_becomes_an_empty_json_array(
    source: Source, dataset: str, pg_url: str, pg_schema: str, pg: psycopg.Connection
) -> None:
    # The emulator returns NULL for a REPEATED sub-field never set; BigQuery has no NULL arrays,
    # and bq2pg writes '{}' for a top-level one, so inside jsonb it should be [] too.
    fields = [
        Field("id", "INT64"),
        Field("v", "RECORD", fields=(Field("tags", "STRING", "REPEATED"),)),
    ]
    table_id = make_table(source, dataset, "t", fields, [{"id": 0, "v": {}}])
    copy_table(source, CopyRequest(table_id, pg_url, table=f"{pg_schema}.t"))
    assert read_back(pg, pg_schema, "v") == [{"tags": []}]


# --- direct Encoder + COPY: what the emulator cannot create -------------------------------------

BIG_MAX = "578960446186580977117854925043439539266.34992332820282019728792003956564819967"
#: unscaled 256-bit integers of BIGNUMERIC values (scale 38)
BIG_UNSCALED = [2**255 - 1, -(2**255 - 1), -(2**255), 1, -1, 0, 15 * 10**37, None]


def text38(unscaled: int | None) -> str | None:
    """PostgreSQL's text of the numeric with this unscaled value and scale 38 (no arithmetic)."""
    if unscaled is None:
        return None
    digits = str(abs(unscaled)).rjust(39, "0")
    return ("-" if unscaled < 0 else "") + digits[:-38] + "." + digits[-38:]


def decimal256(unscaled: Sequence[int | None]) -> pa.Array:
    """A decimal256(76, 38) array from raw 32-byte little-endian two's-complement integers."""
    data = b"".join((u or 0).to_bytes(32, "little", signed=True) for u in unscaled)
    validity = pa.array([u is not None for u in unscaled]).buffers()[1]
    return pa.Array.from_buffers(
        pa.decimal256(76, 38),
        len(unscaled),
        [validity, pa.py_buffer(data)],
        null_count=sum(u is None for u in unscaled),
    )


def load_direct(
    pg_url: str, schema: str, v: Field, column: pa.Array, allow_binary: bool = True
) -> TablePlan:
    """Plan, create and COPY a table (id, v) straight from Arrow, as one stream would."""
    plan = plan_table([Field("id", "INT64"), v], source="p.d.t", schema=schema, name="t")
    table = pa.table({"id": pa.array(range(len(column)), pa.int64()), "v": column})
    encoder = Encoder(plan.columns, allow_binary=allow_binary)
    with load.connect(pg_url) as conn:
        load.execute(conn, [ddl.create_schema(schema), ddl.create_table(plan)], "creating t")
        try:
            payload = encoder.encode(table)
        finally:
            encoder.close()
        ledger.commit_chunk(conn, [copy.Part(plan, plan.name, [payload], encoder.format)], None)
    return plan


def test_bignumeric_extremes_and_epsilon_round_trip_exactly(pg_url, pg_schema, pg) -> None:
    assert text38(2**255 - 1) == BIG_MAX
    plan = load_direct(pg_url, pg_schema, Field("v", "BIGNUMERIC"), decimal256(BIG_UNSCALED))
    assert plan.columns[1].pg_type == "numeric"
    assert read_back(pg, pg_schema, "v::text") == [text38(u) for u in BIG_UNSCALED]


def test_bignumeric_inside_a_record_is_an_exact_json_string(pg_url, pg_schema, pg) -> None:
    # JSON numbers this long are read as doubles by most consumers: bq2pg keeps the exact
    # decimal as a string (documented in the README type table).
    values = decimal256(BIG_UNSCALED)
    mask = pa.array([False] * (len(BIG_UNSCALED) - 1) + [True])  # the last record is NULL
    records = pa.StructArray.from_arrays([values], names=["b"], mask=mask)
    v = Field("v", "RECORD", fields=(Field("b", "BIGNUMERIC"),))
    load_direct(pg_url, pg_schema, v, records)
    want_types = ["string"] * (len(BIG_UNSCALED) - 1) + [None]
    assert read_back(pg, pg_schema, "jsonb_typeof(v->'b')") == want_types
    exact = read_back(pg, pg_schema, "((v->>'b')::numeric(77,38))::text")
    assert exact == [text38(u) for u in BIG_UNSCALED]


def test_repeated_bignumeric_is_an_exact_numeric_array(pg_url, pg_schema, pg) -> None:
    present = [u for u in BIG_UNSCALED if u is not None]
    lists = pa.ListArray.from_arrays(
        pa.array([0, len(present), len(present), len(present)], pa.int32()),
        decimal256(present),
        mask=pa.array([False, False, True]),
    )
    plan = load_direct(pg_url, pg_schema, Field("v", "BIGNUMERIC", "REPEATED"), lists)
    assert plan.columns[1].pg_type == "numeric[]"
    whole = "{" + ",".join(text38(u) or "" for u in present) + "}"
    assert read_back(pg, pg_schema, "v::text") == [whole, "{}", "{}"]


@pytest.mark.parametrize("allow_binary", [True, False], ids=["binary", "csv"])
def test_float64_round_trips_bit_exact_including_denormals(
    allow_binary: bool, pg_url: str, pg_schema: str, pg: psycopg.Connection
) -> None:
    rng = np.random.default_rng(20240601)
    anything = rng.integers(0, 2**64, size=9_000, dtype=np.uint64, endpoint=False).view(np.float64)
    denormals = rng.integers(1, 2**52, size=1_000, dtype=np.uint64).view(np.float64)
    specials = np.array(
        [
            5e-324,
            -5e-324,
            2.225073858507201e-308,
            2.2250738585072014e-308,
            1.7976931348623157e308,
            -1.7976931348623157e308,
            0.0,
            -0.0,
            INF,
            -INF,
            0.1,
            1 / 3,
            2.0**53 + 2,
        ]
    )
    values = np.concatenate([specials, denormals, -denormals, anything])
    values = values[~np.isnan(values)]  # NaN payloads are not data; NaN is covered above
    column = pa.array(values, pa.float64())
    load_direct(pg_url, pg_schema, Field("v", "FLOAT64"), column, allow_binary)
    got = read_back(pg, pg_schema, "float8send(v)")
    want = [struct.pack(">d", x) for x in values.tolist()]
    mismatches = [(x, g) for x, g, w in zip(values.tolist(), got, want, strict=True) if g != w]
    assert not mismatches, f"{len(mismatches)} doubles changed, e.g. {mismatches[:5]}"


# --- the type table ------------------------------------------------------------------------------


def design_type_rows() -> dict[str, str]:
    """BigQuery type -> PostgreSQL cell of the DESIGN.md "Lossless type mapping" table."""
    design = SHARED / "DESIGN.md"
    if not design.exists():
        pytest.skip(f"{design} is absent")
    section = design.read_text().split("## Lossless type mapping", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("BigQuery", "") or set(cells[0]) <= set("-"):
            continue
        bq, pg_cell = cells[0], cells[2]
        if bq.startswith("RANGE<"):
            for elem, pg_range in zip(
                ("DATE", "DATETIME", "TIMESTAMP"), pg_cell.split(" / "), strict=True
            ):
                rows[f"RANGE<{elem}>"] = pg_range
        elif bq.startswith("REPEATED scalar"):
            continue  # a mode, not a type: covered by the REPEATED cases above
        else:
            rows[bq.split(",")[0].strip()] = pg_cell
    return rows


def test_type_table_covers_every_row_of_the_design() -> None:
    rows = design_type_rows()
    assert len(rows) >= 17
    for bq, pg_cell in rows.items():
        assert bq in typemap.TYPES, f"{bq} is in DESIGN.md but not in typemap.TYPES"
        assert typemap.TYPES[bq].pg.replace(" ", "") in pg_cell.replace(" ", ""), bq
    assert set(typemap.TYPES) == set(rows)


def test_every_type_in_the_table_has_an_end_to_end_case() -> None:
    covered = {typemap.canonical(c.field.type, c.field.range_element_type) for c in CASES.values()}
    assert set(typemap.TYPES) - covered == {"BIGNUMERIC"}  # tested directly above


@pytest.mark.parametrize(
    ("bad", "column"),
    [
        (Field("x", "FOOBAR"), "'x'"),
        (Field("r", "RECORD", fields=(Field("y", "FOOBAR"),)), "'r.y'"),
    ],
)
def test_an_unmappable_type_names_the_type_the_column_and_the_table(bad, column) -> None:
    with pytest.raises(TypeMappingError) as err:
        plan_table([Field("id", "INT64"), bad], source="proj.ds.tbl", schema="s", name="t")
    message = str(err.value)
    assert "FOOBAR" in message and column in message and "proj.ds.tbl" in message
