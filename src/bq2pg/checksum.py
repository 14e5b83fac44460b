"""Content checksums, computed the same way on both sides of COPY.

Counting rows proves nothing was lost or doubled; a checksum proves the values arrived as they
left. For every row, the canonical text of each covered column (length-prefixed, NULL as ``N``)
is joined and hashed with MD5; the first 60 bits of the digest, summed over the rows, are the
table's checksum. The sum is order-free and adds up across chunks, streams and runs.

The client computes it with DuckDB over the Arrow rows it hands to the encoder (recorded in the
ledger with each chunk); PostgreSQL computes it over the stored rows when the run is verified
and by ``bq2pg verify``. A value the encoder mangled (an escape, a time zone, a digit) makes the
two differ.

Covered: columns whose stored value has one exact text form on both sides: integers, booleans,
text, bytea (hex), dates (days since 1970), timestamps and times (microseconds since the
epoch / midnight) and ``numeric(p,s)`` (its fixed scale). Not covered, so counted only: floats
(the two sides print them differently), ``numeric`` without a scale (BIGNUMERIC), jsonb, json,
arrays, intervals, ranges. Timestamps need PostgreSQL 14 or later (exact ``extract(epoch)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import duckdb
import pyarrow as pa
from psycopg import sql

from bq2pg.encode import DUCKDB_CONFIG
from bq2pg.schema import TablePlan

#: PostgreSQL type -> how its canonical text is made on each side.
_KINDS = {
    "bigint": "cast",
    "integer": "cast",
    "smallint": "cast",
    "boolean": "cast",
    "text": "text",
    "bytea": "hex",
    "date": "days",
    "timestamptz": "micros",
    "timestamp with time zone": "micros",
    "timestamp": "micros",
    "timestamp without time zone": "micros",
    "time": "micros",
    "time without time zone": "micros",
}
_NUMERIC = re.compile(r"numeric\(\s*(\d+)\s*,\s*\d+\s*\)")
#: Server version from which ``extract(epoch ...)`` is exact (numeric, not double).
MIN_SERVER_VERSION = 140000


def kind(pg_type: str) -> str | None:
    """How a column of ``pg_type`` is checksummed, or None when it is not covered."""
    numeric = _NUMERIC.fullmatch(pg_type.strip())
    if numeric:  # DuckDB's decimals stop at 38 digits
        return "cast" if int(numeric.group(1)) <= 38 else None
    return _KINDS.get(pg_type.strip())


def covered(table: TablePlan) -> list[str]:
    """The columns of ``table`` that its checksum covers, in table order."""
    return [c.name for c in table.columns if kind(c.pg_type)]


def _duck(name: str, how: str) -> str:
    col = '"' + name.replace('"', '""') + '"'
    text = {
        "text": col,
        "cast": f"CAST({col} AS VARCHAR)",
        "hex": f"lower(hex({col}))",
        "days": f"CAST(date_diff('day', DATE '1970-01-01', {col}) AS VARCHAR)",
        "micros": f"CAST(epoch_us({col}) AS VARCHAR)",
    }[how]
    return f"coalesce(CAST(strlen({text}) AS VARCHAR) || ':' || {text}, 'N')"


def _pg(name: str, how: str) -> sql.Composable:
    col = sql.Identifier(name)
    text = {
        "text": sql.SQL("{}"),
        "cast": sql.SQL("{}::text"),
        "hex": sql.SQL("encode({}, 'hex')"),
        "days": sql.SQL("({} - DATE '1970-01-01')::text"),
        "micros": sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint::text"),
    }[how].format(col)
    return sql.SQL("coalesce(octet_length({0})::text || ':' || {0}, 'N')").format(text)


class Checksummer:
    """Checksums of Arrow rows, per table of a plan (one per thread: it owns a DuckDB
    connection)."""

    def __init__(self, tables: Sequence[TablePlan]) -> None:
        self._con = duckdb.connect(config=DUCKDB_CONFIG)
        self._columns: dict[str, list[str]] = {}
        self._queries: dict[str, str] = {}
        for t in tables:
            names = covered(t)
            if not names:
                continue
            kinds = {c.name: kind(c.pg_type) for c in t.columns}
            parts = ", ',', ".join(_duck(n, kinds[n] or "") for n in names)
            self._columns[t.name] = names
            # identifiers quoted by _duck; no value is spliced
            self._queries[t.name] = (
                f"SELECT sum(CAST('0x' || substr(md5(concat({parts})), 1, 15) AS BIGINT)) "  # noqa: S608
                "FROM rows"
            )

    def of(self, table: str, rows: pa.Table) -> int | None:
        """The checksum of ``rows`` of ``table``; None when nothing is covered or DuckDB
        cannot read the rows (invalid UTF-8: PostgreSQL will reject them too)."""
        if table not in self._queries:
            return None
        if rows.num_rows == 0:
            return 0
        selected = rows.select(self._columns[table])
        try:
            self._con.register("rows", selected)
            value = self._con.execute(self._queries[table]).fetchone()
        except duckdb.Error:
            return None
        finally:
            self._con.unregister("rows")
        return int(value[0]) if value and value[0] is not None else 0

    def close(self) -> None:
        self._con.close()


def server_query(schema: str, name: str, columns: Sequence[tuple[str, str]]) -> sql.Composed:
    """``SELECT count(*), checksum`` of a stored table; ``columns`` are (name, pg type) of the
    covered columns (none: the checksum is NULL)."""
    if not columns:
        return sql.SQL("SELECT count(*), NULL::text FROM {}").format(sql.Identifier(schema, name))
    parts = sql.SQL(", ',', ").join(_pg(n, kind(t) or "") for n, t in columns)
    return sql.SQL(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(concat({})), 1, 15))::bit(60)::bigint),"
        " 0)::text FROM {}"
    ).format(parts, sql.Identifier(schema, name))
