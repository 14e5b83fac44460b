"""Every decision about types, in one data table.

Each BigQuery type has one row of :data:`TYPES`: the PostgreSQL type it becomes, the Arrow type
the Storage Read API delivers, how the value is rendered for ``COPY ... (FORMAT csv)``, and
whether it can be an incremental watermark. Each PostgreSQL type bq2pg writes has one row of
:data:`PG_TYPES`: how ``format_type`` spells it, its binary COPY layout and OID, and how its
content checksum is made. DDL (``plan.tables``), the encoders (``arrow``), the checksums
(``quality.checksum``), the watermark (``plan.watermark``), ``bq2pg types``, the docs and the
tests all read these two tables.

A type missing from the table raises :class:`~bq2pg.errors.TypeMappingError` naming the type,
the column and the table: bq2pg never falls back to ``text`` silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bq2pg.errors import TypeMappingError

#: How the encoder turns an Arrow column of this type into CSV text.
#: ``native``: Arrow's CSV writer already prints what PostgreSQL reads back exactly.
#: ``render``: the encoder renders the column to text first (see ``encode.py``).
Render = Literal["native", "render"]


@dataclass(frozen=True)
class TypeRule:
    """One row of the type table."""

    bigquery: str
    pg: str
    arrow: str
    render: Render
    note: str = ""
    #: Whether a column of this type can be an incremental watermark (ordered, never NaN).
    watermark: bool = False


TYPES: dict[str, TypeRule] = {
    rule.bigquery: rule
    for rule in (
        TypeRule("BOOL", "boolean", "bool", "native"),
        TypeRule("INT64", "bigint", "int64", "native", watermark=True),
        TypeRule(
            "FLOAT64",
            "double precision",
            "double",
            "native",
            "NaN, Infinity, -Infinity and -0 kept; shortest round-trip digits",
        ),
        TypeRule(
            "NUMERIC",
            "numeric(38,9)",
            "decimal128(38, 9)",
            "native",
            "parameterised NUMERIC(P,S) keeps its P and S",
            watermark=True,
        ),
        TypeRule(
            "BIGNUMERIC",
            "numeric",
            "decimal256(76, 38)",
            "render",
            "unconstrained numeric: the extremes need 39 integer digits",
            watermark=True,
        ),
        TypeRule("STRING", "text", "string", "native", "'' and NULL stay distinct", watermark=True),
        TypeRule("BYTES", "bytea", "binary", "render"),
        TypeRule("DATE", "date", "date32", "native", "0001-01-01 .. 9999-12-31", watermark=True),
        TypeRule("TIME", "time", "time64[us]", "native"),
        TypeRule(
            "DATETIME",
            "timestamp",
            "timestamp[us]",
            "native",
            "civil time, no zone",
            watermark=True,
        ),
        TypeRule(
            "TIMESTAMP", "timestamptz", "timestamp[us, UTC]", "native", "an instant", watermark=True
        ),
        TypeRule(
            "JSON",
            "jsonb",
            "string (JSON marked by field metadata only)",
            "render",
            "the column type is taken from tables.get, not from Arrow",
        ),
        TypeRule(
            "GEOGRAPHY",
            "text",
            "string (WKT); the emulator sends WKB",
            "render",
            "WKT text; WKB from the emulator is converted to WKT",
        ),
        TypeRule(
            "INTERVAL",
            "interval",
            "month_day_nano_interval or string",
            "render",
            "months, days and microseconds kept apart",
        ),
        TypeRule(
            "RANGE<DATE>",
            "daterange",
            "struct<start: date32, end: date32>",
            "render",
            "[start, end)",
        ),
        TypeRule(
            "RANGE<DATETIME>",
            "tsrange",
            "struct<start: timestamp[us], end: timestamp[us]>",
            "render",
            "[start, end); an UNBOUNDED end is an infinite bound",
        ),
        TypeRule(
            "RANGE<TIMESTAMP>",
            "tstzrange",
            "struct<start: timestamp[us, UTC], end: timestamp[us, UTC]>",
            "render",
            "[start, end)",
        ),
        TypeRule(
            "RECORD",
            "jsonb",
            "struct",
            "render",
            "with --nested tables, a REPEATED RECORD becomes a child table instead",
        ),
    )
}

#: Legacy (REST) names of the types, as ``tables.get`` reports them.
ALIASES = {
    "BOOLEAN": "BOOL",
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BIGDECIMAL": "BIGNUMERIC",
    "DECIMAL": "NUMERIC",
    "STRUCT": "RECORD",
}

#: PostgreSQL array types have spaces in some element names; these are the array spellings.
_ARRAY_OF = {"double precision": "double precision[]"}


def canonical(field_type: str, range_element_type: str | None = None) -> str:
    """The canonical type name of a BigQuery field type (``INTEGER`` -> ``INT64``)."""
    name = ALIASES.get(field_type.upper(), field_type.upper())
    if name == "RANGE":
        element = ALIASES.get(
            (range_element_type or "").upper(), (range_element_type or "").upper()
        )
        return f"RANGE<{element}>"
    return name


def rule_for(
    field_type: str,
    *,
    column: str,
    table: str,
    range_element_type: str | None = None,
) -> TypeRule:
    """The :class:`TypeRule` of a BigQuery type, or a :class:`TypeMappingError` naming it."""
    name = canonical(field_type, range_element_type)
    try:
        return TYPES[name]
    except KeyError:
        raise TypeMappingError(
            f"cannot map BigQuery type {name} of column {column!r} in table {table} to "
            "PostgreSQL without loss; leave the column out with --columns"
        ) from None


def pg_type(
    field_type: str,
    *,
    repeated: bool,
    column: str,
    table: str,
    precision: int | None = None,
    scale: int | None = None,
    range_element_type: str | None = None,
) -> str:
    """The PostgreSQL type of a BigQuery column (scalar columns and REPEATED scalars).

    RECORD columns (repeated or not) become ``jsonb``; child tables are planned in ``schema``.
    """
    rule = rule_for(field_type, column=column, table=table, range_element_type=range_element_type)
    base = rule.pg
    if rule.bigquery == "NUMERIC" and precision is not None:
        # A parameterised NUMERIC(P[,S]) is enforced by BigQuery, so numeric(P,S) is exact.
        base = f"numeric({precision},{scale or 0})"
    elif rule.bigquery == "BIGNUMERIC" and precision is not None and precision <= 1000:
        base = f"numeric({precision},{scale or 0})"
    if rule.bigquery == "RECORD":
        return "jsonb"
    if repeated:
        return _ARRAY_OF.get(base, base + "[]")
    return base


#: How a PostgreSQL type's values become the canonical text that content checksums hash on both
#: sides of COPY (``quality.checksum``): ``cast`` (the value's own text), ``text``, ``hex``
#: (bytea), ``days`` (since 1970), ``micros`` (since the epoch, or since midnight).
ChecksumKind = Literal["cast", "text", "hex", "days", "micros"]


@dataclass(frozen=True)
class PgType:
    """One PostgreSQL type bq2pg writes.

    Attributes:
        name: as bq2pg writes it in DDL.
        spelled: as ``format_type`` spells it (how an existing table's columns read back).
        binary_width: its binary COPY field width in bytes (0: variable), or None when
            ``arrow.binary`` has no layout for it (the table then goes in CSV).
        oid: the type's OID (element type of a binary COPY array), when it has a layout.
        checksum: how its values are checksummed, or None when they are not (counted only).
    """

    name: str
    spelled: str
    binary_width: int | None = None
    oid: int | None = None
    checksum: ChecksumKind | None = None


PG_TYPES: dict[str, PgType] = {
    t.name: t
    for t in (
        PgType("boolean", "boolean", 1, 16, "cast"),
        PgType("smallint", "smallint", None, None, "cast"),
        PgType("integer", "integer", 4, 23, "cast"),
        PgType("bigint", "bigint", 8, 20, "cast"),
        # floats print differently on the two sides: counted only
        PgType("double precision", "double precision", 8, 701),
        PgType("date", "date", 4, 1082, "days"),
        PgType("time", "time without time zone", 8, 1083, "micros"),
        PgType("timestamp", "timestamp without time zone", 8, 1114, "micros"),
        PgType("timestamptz", "timestamp with time zone", 8, 1184, "micros"),
        PgType("text", "text", 0, 25, "text"),
        PgType("bytea", "bytea", 0, 17, "hex"),
        # jsonb normalises its text (key order, spaces): counted only
        PgType("jsonb", "jsonb", 0, 3802),
        PgType("numeric", "numeric"),
        PgType("interval", "interval"),
        PgType("daterange", "daterange"),
        PgType("tsrange", "tsrange"),
        PgType("tstzrange", "tstzrange"),
    )
}
#: Spellings ``format_type`` gives that are not a type's own name (checksums of columns read
#: back from an existing table come in these).
_BY_SPELLING = {t.spelled: t for t in PG_TYPES.values() if t.spelled != t.name}
_NUMERIC = re.compile(r"numeric\(\s*(\d+)\s*,\s*\d+\s*\)")
#: DuckDB's decimals, which compute the client's checksums, stop at 38 digits.
CHECKSUM_MAX_NUMERIC_PRECISION = 38


def pg_facts(pg: str) -> PgType | None:
    """The :class:`PgType` row of a PostgreSQL type name (as written or as spelled by
    ``format_type``), or None for a type bq2pg does not write."""
    name = pg.strip()
    return PG_TYPES.get(name) or _BY_SPELLING.get(name)


def spelled(pg: str) -> str:
    """How ``format_type`` spells ``pg`` (``timestamptz[]`` -> ``timestamp with time zone[]``)."""
    array = pg.endswith("[]")
    facts = pg_facts(pg[:-2] if array else pg)
    base = facts.spelled if facts else (pg[:-2] if array else pg)
    return base + "[]" if array else base


def checksum_kind(pg: str) -> ChecksumKind | None:
    """How a column of ``pg`` is checksummed, or None when it is not covered."""
    numeric = _NUMERIC.fullmatch(pg.strip())
    if numeric:
        return "cast" if int(numeric.group(1)) <= CHECKSUM_MAX_NUMERIC_PRECISION else None
    facts = pg_facts(pg)
    return facts.checksum if facts else None


def binary_width(pg: str) -> int | None:
    """The binary COPY field width of a scalar ``pg`` (0: variable), or None without a layout."""
    facts = PG_TYPES.get(pg)
    return facts.binary_width if facts else None


def watermark_types() -> list[str]:
    """The BigQuery types a watermark column can have."""
    return [rule.bigquery for rule in TYPES.values() if rule.watermark]
