"""Content checksums, computed the same way on both sides of COPY.

Counting rows proves nothing was lost or doubled; a checksum proves the values arrived as they
left. For every row, the canonical text of each covered column (NULL as U+001E) is joined with
U+001F between columns and hashed with MD5; the first 60 bits of the digest, summed over the
rows, are the table's checksum. The sum is order-free and adds up across chunks, streams and runs.
Each row's value depends on every covered column of that row, so a value moved to another row
changes the sum even where per-column totals would not.

Form 2 (:data:`FORM`): form 1 length-prefixed every value and parsed the digest's hex text,
which cost about 2.5 times the client CPU (a third of the patents loader's). DuckDB now takes
the bits from ``md5_number`` (the digest as a little-endian number) with a byte swap; U+001E
and U+001F are control characters that text seldom holds. Runs recorded with another
form are verified by row counts only.

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

from collections.abc import Sequence

import duckdb
import pyarrow as pa
from psycopg import sql

from bq2pg.arrow.encode import DUCKDB_CONFIG
from bq2pg.plan import typemap
from bq2pg.plan.tables import TablePlan

#: The canonical form of the checksums computed here (recorded with each run).
FORM = 2
#: Between two columns' texts, and in place of NULL.
_SEP, _NULL = "\x1f", "\x1e"
#: Server version from which ``extract(epoch ...)`` is exact (numeric, not double).
MIN_SERVER_VERSION = 140000


def kind(pg_type: str) -> str | None:
    """How a column of ``pg_type`` is checksummed (``plan.typemap``), or None: not covered."""
    return typemap.checksum_kind(pg_type)


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
    return f"coalesce({text}, '{_NULL}')"


def _pg(name: str, how: str) -> sql.Composable:
    col = sql.Identifier(name)
    text = {
        "text": sql.SQL("{}"),
        "cast": sql.SQL("{}::text"),
        "hex": sql.SQL("encode({}, 'hex')"),
        "days": sql.SQL("({} - DATE '1970-01-01')::text"),
        "micros": sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint::text"),
    }[how].format(col)
    return sql.SQL("coalesce({}, {})").format(text, sql.Literal(_NULL))


#: DuckDB: the first 8 bytes of the digest as a big-endian number (``md5_number`` reads the
#: digest little-endian; parsing its hex text instead costs twice as much).
_FIRST_64 = " | ".join(f"((({{x}} >> {8 * i}) & 255) << {8 * (7 - i)})" for i in range(8))


def _fits(how: str, arrow: pa.DataType) -> bool:
    """Whether an Arrow column of type ``arrow`` holds the values the server will store for a
    column checksummed as ``how`` (GEOGRAPHY arrives as WKB bytes and is stored as WKT text:
    the two sides would hash different things)."""
    t = pa.types
    return {
        "text": t.is_string(arrow) or t.is_large_string(arrow),
        "hex": t.is_binary(arrow) or t.is_large_binary(arrow) or t.is_fixed_size_binary(arrow),
        "days": t.is_date(arrow),
        "micros": t.is_timestamp(arrow) or t.is_time(arrow),
        "cast": t.is_integer(arrow) or t.is_boolean(arrow) or t.is_decimal(arrow),
    }[how]


class Checksummer:
    """Checksums of Arrow rows, per table of a plan (one per thread: it owns a DuckDB
    connection)."""

    def __init__(self, tables: Sequence[TablePlan]) -> None:
        self._con = duckdb.connect(config=DUCKDB_CONFIG)
        self._columns: dict[str, list[str]] = {}
        self._kinds: dict[str, list[str]] = {}
        self._queries: dict[str, str] = {}
        for t in tables:
            names = covered(t)
            if not names:
                continue
            kinds = {c.name: kind(c.pg_type) for c in t.columns}
            self._kinds[t.name] = [kinds[n] or "" for n in names]
            parts = f", '{_SEP}', ".join(_duck(n, kinds[n] or "") for n in names)
            self._columns[t.name] = names
            # identifiers quoted by _duck; no value is spliced
            first = _FIRST_64.format(x="h")
            self._queries[t.name] = (
                f"SELECT sum(CAST(({first}) >> 4 AS BIGINT)) FROM (SELECT "  # noqa: S608
                f"CAST(md5_number(concat({parts})) & 18446744073709551615 AS UBIGINT) AS h "
                "FROM rows)"
            )

    def of(self, table: str, rows: pa.Table) -> int | None:
        """The checksum of ``rows`` of ``table``; None when nothing is covered, a covered
        column arrives in another form than it is stored in, or DuckDB cannot read the rows
        (invalid UTF-8: PostgreSQL will reject them too)."""
        if table not in self._queries:
            return None
        if rows.num_rows == 0:
            return 0
        selected = rows.select(self._columns[table])
        if not all(map(_fits, self._kinds[table], selected.schema.types)):
            return None
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
    parts = sql.SQL(f", '{_SEP}', ").join(_pg(n, kind(t) or "") for n, t in columns)
    return sql.SQL(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(concat({})), 1, 15))::bit(60)::bigint),"
        " 0)::text FROM {}"
    ).format(parts, sql.Identifier(schema, name))
