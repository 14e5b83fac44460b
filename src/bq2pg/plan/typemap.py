"""Every decision about types, in one data table.

Each BigQuery type has one row: the PostgreSQL type it becomes, the Arrow type the Storage Read
API delivers, and how the value is rendered for ``COPY ... (FORMAT csv)``. DDL (``schema``), the
encoder (``encode``), ``bq2pg types``, the docs and the tests all read :data:`TYPES`.

A type missing from the table raises :class:`~bq2pg.errors.TypeMappingError` naming the type,
the column and the table: bq2pg never falls back to ``text`` silently.
"""

from __future__ import annotations

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


TYPES: dict[str, TypeRule] = {
    rule.bigquery: rule
    for rule in (
        TypeRule("BOOL", "boolean", "bool", "native"),
        TypeRule("INT64", "bigint", "int64", "native"),
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
        ),
        TypeRule(
            "BIGNUMERIC",
            "numeric",
            "decimal256(76, 38)",
            "render",
            "unconstrained numeric: the extremes need 39 integer digits",
        ),
        TypeRule("STRING", "text", "string", "native", "'' and NULL stay distinct"),
        TypeRule("BYTES", "bytea", "binary", "render"),
        TypeRule("DATE", "date", "date32", "native", "0001-01-01 .. 9999-12-31"),
        TypeRule("TIME", "time", "time64[us]", "native"),
        TypeRule("DATETIME", "timestamp", "timestamp[us]", "native", "civil time, no zone"),
        TypeRule("TIMESTAMP", "timestamptz", "timestamp[us, UTC]", "native", "an instant"),
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
