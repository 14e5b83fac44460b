"""Property: binary COPY and CSV COPY store the same values, and they are the values sent.

Hypothesis generates small Arrow tables of every scalar type the encoders write (and the
one-dimensional arrays of int64 and string, with NULL elements and empty lists); each table
is loaded twice into the real PostgreSQL through ``write_batches``, once as binary COPY and
once as CSV (``allow_binary=False``), and both are read back and compared with each other and
with the generated values. Text excludes NUL, which PostgreSQL refuses (a dead letter).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import struct
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from bq2pg.arrow.encode import Encoder
from bq2pg.engine.stream import write_batches
from bq2pg.plan import ddl
from bq2pg.plan.tables import Field, plan_table

UTC = dt.UTC
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,  # nothing written into the checkout; a failure prints its example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Text the CSV and array-literal renderings must quote or escape.
TRICKY = ["", " ", "\\", "\\.", "\\N", '"', '""', "'", "NULL", "null", ",", "a,b", "{", "}",
          "{a,b}", "\t", "\n", "\r\n", "\x01\x1f\x7f", "é 漢字 😀"]  # fmt: skip
CHARS = st.one_of(
    st.characters(min_codepoint=1, max_codepoint=0x7F),  # control chars, quotes, backslashes
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
)
TEXT = st.one_of(st.sampled_from(TRICKY), st.text(CHARS, max_size=12))
#: NUMERIC values: 38 digits, 9 after the point (from the unscaled integer: exact, where
#: Decimal arithmetic would round to its context's 28 digits)
DECIMALS = st.integers(-(10**38) + 1, 10**38 - 1).map(lambda unscaled: Decimal(f"{unscaled}e-9"))


def nullable(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), values)


def lists(elements: st.SearchStrategy) -> st.SearchStrategy:
    """A REPEATED column: NULL (absent), empty, or a few elements, NULL ones among them."""
    return nullable(st.lists(nullable(elements), max_size=4))


#: column -> (BigQuery field, Arrow type, values)
COLUMNS: dict[str, tuple[Field, pa.DataType, st.SearchStrategy]] = {
    "i": (Field("i", "INT64"), pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "f": (Field("f", "FLOAT64"), pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "s": (Field("s", "STRING"), pa.string(), TEXT),
    "y": (Field("y", "BYTES"), pa.binary(), st.binary(max_size=12)),
    "b": (Field("b", "BOOL"), pa.bool_(), st.booleans()),
    "d": (Field("d", "DATE"), pa.date32(), st.dates()),
    "dt": (Field("dt", "DATETIME"), pa.timestamp("us"), st.datetimes()),
    "ts": (Field("ts", "TIMESTAMP"), pa.timestamp("us", "UTC"), st.datetimes(timezones=st.just(UTC))),
    "t": (Field("t", "TIME"), pa.time64("us"), st.times()),
    "li": (Field("li", "INT64", "REPEATED"), pa.list_(pa.int64()), st.integers(-(2**63), 2**63 - 1)),
    "ls": (Field("ls", "STRING", "REPEATED"), pa.list_(pa.string()), TEXT),
}  # fmt: skip
NUMERIC = {"n": (Field("n", "NUMERIC"), pa.decimal128(38, 9), DECIMALS)}
SETS = {"flat": COLUMNS, "numeric": NUMERIC}


@st.composite
def tables(draw: st.DrawFn, columns: str) -> pa.Table:
    """1-6 rows: an ``id`` 0..n-1, then each column of the set ``columns`` of :data:`SETS`
    (NULL in any row, lists as :func:`lists`)."""
    n = draw(st.integers(1, 6))
    data = {"id": pa.array(range(n), pa.int64())}
    for name, (field, arrow_type, values) in SETS[columns].items():
        values = lists(values) if field.repeated else nullable(values)
        data[name] = pa.array(draw(st.lists(values, min_size=n, max_size=n)), arrow_type)
    return pa.table(data)


_names = itertools.count()


@pytest.fixture(scope="module")
def schema(pg_url: str) -> Iterator[str]:
    """One schema for every example of the module (hypothesis reruns a test many times)."""
    name = f"prop_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def load(pg_url: str, schema: str, columns: dict, table: pa.Table, allow_binary: bool) -> str:
    """Create a new table for ``table`` and load it with ``write_batches``; the table's name."""
    fields = [Field("id", "INT64"), *(c[0] for c in columns.values())]
    plan = plan_table(fields, source="p.d.t", schema=schema, name=f"t{next(_names)}")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(ddl.create_schema(schema))
        conn.execute(ddl.create_table(plan))
    counts: dict[str, int] = {}

    def counted(name: str, rows: int, _: int) -> None:
        counts[name] = counts.get(name, 0) + rows

    # two batches: the second's list offsets do not start at zero
    batches = table.to_batches(max_chunksize=max(1, table.num_rows // 2))
    write_batches(pg_url, plan, batches, allow_binary=allow_binary, counted=counted)
    assert counts == {plan.name: table.num_rows}, counts  # nothing dead-lettered
    return plan.name


def copy_format(columns: dict, table: pa.Table, allow_binary: bool) -> str:
    """The COPY format the encoder picks for ``table`` (CSV where binary has no layout)."""
    fields = [Field("id", "INT64"), *(c[0] for c in columns.values())]
    plan = plan_table(fields, source="p.d.t", schema="s", name="t")
    encoder = Encoder(plan.columns, allow_binary=allow_binary)
    try:
        encoder.encode(table)
        return encoder.format
    finally:
        encoder.close()


def read(pg_url: str, schema: str, name: str, columns: dict) -> list[tuple]:
    """The stored rows in id order; a double as (its text, its 8 bytes): -0 and NaN stay exact,
    a numeric as its text (scale included)."""
    exprs = [sql.Identifier("id")]
    for c in columns:
        column = sql.Identifier(c)
        if c == "f":
            exprs += [sql.SQL("{}::text").format(column), sql.SQL("float8send({})").format(column)]
        elif c == "n":
            exprs.append(sql.SQL("{}::text").format(column))
        else:
            exprs.append(column)
    query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(
        sql.SQL(", ").join(exprs), sql.Identifier(schema, name)
    )
    with psycopg.connect(pg_url, options="-c TimeZone=UTC") as conn:
        rows = conn.execute(query).fetchall()
    if "f" not in columns:
        return rows
    at = 1 + list(columns).index("f")  # the two cells of the double back into one
    return [
        (*r[:at], (r[at], None if r[at + 1] is None else bytes(r[at + 1])), *r[at + 2 :])
        for r in rows
    ]


def bits(value: float) -> bytes:
    return struct.pack(">d", value)


def same_double(stored: tuple[str | None, bytes | None], sent: float | None) -> bool:
    """The stored double is the sent one: bit for bit, or both NaN (of any payload)."""
    text, stored_bits = stored
    if text is None or stored_bits is None or sent is None:
        return text is None and stored_bits is None and sent is None
    if math.isnan(sent):
        return text == "NaN" and math.isnan(struct.unpack(">d", stored_bits)[0])
    return stored_bits == bits(sent) and float(text) == sent


def expected_cell(column: str, value: object) -> object:
    """What PostgreSQL should give back for a sent value (doubles: see :func:`same_double`)."""
    if column in ("li", "ls") and value is None:
        return []  # an absent array is '{}' (README, types)
    if column == "n" and value is not None:
        return f"{value:.9f}" if value else "0.000000000"  # numeric(38,9) text, no -0
    return value


def assert_stored_as_sent(rows: list[tuple], table: pa.Table, columns: dict) -> None:
    sent = table.to_pylist()
    assert [r[0] for r in rows] == [s["id"] for s in sent]
    for row, want in zip(rows, sent, strict=True):
        for column, got in zip(columns, row[1:], strict=True):
            if column == "f":
                ok = same_double(got, want["f"])
            else:
                ok = got == expected_cell(column, want[column])
            assert ok, f"row {want['id']} column {column}: stored {got!r}, sent {want[column]!r}"


def normalized(rows: list[tuple]) -> list[tuple]:
    """Rows with NaN doubles reduced to their text: any NaN payload is the same NaN."""
    nan = ("NaN", None)
    return [tuple(nan if isinstance(c, tuple) and c[0] == "NaN" else c for c in r) for r in rows]


@SETTINGS
@given(table=tables("flat"))
def test_binary_and_csv_copy_store_identical_values(pg_url: str, schema: str, table: pa.Table):
    assert copy_format(COLUMNS, table, allow_binary=True) == "binary"
    assert copy_format(COLUMNS, table, allow_binary=False) == "csv"
    stored = {}
    for allow_binary in (True, False):
        name = load(pg_url, schema, COLUMNS, table, allow_binary)
        stored[allow_binary] = read(pg_url, schema, name, COLUMNS)
        assert_stored_as_sent(stored[allow_binary], table, COLUMNS)
    assert normalized(stored[True]) == normalized(stored[False])


@SETTINGS
@given(table=tables("numeric"))
def test_numeric_values_are_stored_exactly_with_binary_allowed_or_not(
    pg_url: str, schema: str, table: pa.Table
):
    # numeric has no binary layout in the encoder: with binary allowed it goes as CSV too
    assert copy_format(NUMERIC, table, allow_binary=True) == "csv"
    stored = {}
    for allow_binary in (True, False):
        name = load(pg_url, schema, NUMERIC, table, allow_binary)
        stored[allow_binary] = read(pg_url, schema, name, NUMERIC)
        assert_stored_as_sent(stored[allow_binary], table, NUMERIC)
    assert stored[True] == stored[False]
