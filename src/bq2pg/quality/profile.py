"""Column profiles of loaded tables, read from the statistics ANALYZE keeps (``pg_stats``).

Per column: the fraction of NULLs, an estimate of the distinct values, the smallest and
largest value, the most common values with their frequencies, and the average width in bytes.
Reading them costs no scan of the table: ANALYZE already sampled it (a load ends with one, and
autovacuum repeats it), and one catalog query reads every table asked for. A table that was
never analyzed is analyzed first (ANALYZE reads a sample of 300 × ``default_statistics_target``
rows, not the whole table).

Everything is an estimate from ANALYZE's sample: ``min_value`` and ``max_value`` are the ends of
the sample's histogram and most common values, not the table's true extremes (a value rarer
than the sample resolves may be missing). Numbers, times, booleans and uuids are compared as
such; text takes the histogram's ends, in the column's collation (the code-point order of the
common values when there is no histogram); arrays get no bounds (their statistics hold arrays
of arrays), and neither do types without a histogram or a known order (``json``, ``point``).

Profiles are stored per run in ``bq2pg.profiles`` (:func:`store`, :func:`latest`).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bq2pg.errors import ConfigError
from bq2pg.plan import ddl
from bq2pg.postgres.errors import translate

#: Most common values kept per column (pg_stats holds up to ``default_statistics_target``).
MOST_COMMON_KEPT = 5
#: The schema of a table named without one.
DEFAULT_SCHEMA = "public"
#: Relation kinds ANALYZE samples locally: tables, partitioned tables, materialized views
#: (foreign tables are left out: analyzing one reads the remote table).
_RELKINDS = ["r", "p", "m"]
# pg_type.typcategory values (https://www.postgresql.org/docs/current/catalog-pg-type.html)
_ARRAY_CATEGORY = "A"
_STRING_CATEGORY = "S"

# One row per column of every table asked for (a row with no attnum for a table without
# columns, and one without relname for a table that does not exist); the stats of a table
# with inheritance children are the whole tree's (inherited first), as a SELECT reads it.
_QUERY = """
SELECT t.ord, t.schema_name, t.table_name, c.relname, c.reltuples::float8 AS reltuples,
       greatest(u.last_analyze, u.last_autoanalyze) AS analyzed_at,
       a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS data_type,
       ty.typname, ty.typcategory, s.null_frac, s.n_distinct, s.avg_width, s.mcv, s.freqs,
       s.bounds
FROM unnest(%(schemas)s::text[], %(names)s::text[]) WITH ORDINALITY
     AS t(schema_name, table_name, ord)
LEFT JOIN pg_namespace n ON n.nspname = t.schema_name
LEFT JOIN pg_class c
       ON c.relnamespace = n.oid AND c.relname = t.table_name
      AND c.relkind = ANY (%(relkinds)s::"char"[])
LEFT JOIN pg_stat_all_tables u ON u.relid = c.oid
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type ty ON ty.oid = a.atttypid
LEFT JOIN LATERAL (
    SELECT p.null_frac, p.n_distinct, p.avg_width,
           p.most_common_vals::text::text[] AS mcv, p.most_common_freqs AS freqs,
           CASE WHEN ty.typcategory <> 'A' THEN p.histogram_bounds::text::text[] END AS bounds
    FROM pg_stats p
    WHERE p.schemaname = n.nspname AND p.tablename = c.relname AND p.attname = a.attname
    ORDER BY p.inherited DESC
    LIMIT 1
) s ON true
ORDER BY t.ord, a.attnum
"""


@dataclass(frozen=True)
class ColumnProfile:
    """Statistics of one column (estimates from ANALYZE's sample; None: not known).

    Attributes:
        column: the column's name.
        data_type: its PostgreSQL type (``format_type``: ``numeric(10,2)``, ``text[]``).
        null_frac: the fraction of rows where it is NULL.
        distinct_estimate: the number of distinct non-NULL values (absolute, also where
            pg_stats gives a fraction of the rows).
        min_value: the smallest value seen by ANALYZE, as text (approximate).
        max_value: the largest value seen by ANALYZE, as text (approximate).
        most_common: up to :data:`MOST_COMMON_KEPT` (value, frequency) pairs, most common
            first; empty when no value is more common than the others.
        avg_width: the average width of its non-NULL values, in bytes.
    """

    column: str
    data_type: str | None
    null_frac: float | None = None
    distinct_estimate: float | None = None
    min_value: str | None = None
    max_value: str | None = None
    most_common: tuple[tuple[str, float], ...] = ()
    avg_width: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``bq2pg profile --format json``, the REST API)."""
        return {
            "column": self.column,
            "data_type": self.data_type,
            "null_frac": self.null_frac,
            "distinct_estimate": self.distinct_estimate,
            "min_value": self.min_value,
            "max_value": self.max_value,
            "most_common": [{"value": v, "freq": f} for v, f in self.most_common],
            "avg_width": self.avg_width,
        }


@dataclass(frozen=True)
class TableProfile:
    """The profile of one table.

    Attributes:
        table: ``schema.table``.
        row_estimate: ``pg_class.reltuples`` (None: never analyzed nor vacuumed).
        columns: its columns in table order.
        analyzed_at: when ANALYZE last sampled it (None: unknown, e.g. a stored profile).
        profiled_at: when the profile was stored (:func:`latest`; None for a fresh one).
        run_id: the run it was stored for (:func:`latest`).
    """

    table: str
    row_estimate: int | None
    columns: tuple[ColumnProfile, ...]
    analyzed_at: dt.datetime | None = None
    profiled_at: dt.datetime | None = None
    run_id: uuid.UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times in ISO 8601)."""
        return {
            "table": self.table,
            "row_estimate": self.row_estimate,
            "analyzed_at": _iso(self.analyzed_at),
            "profiled_at": _iso(self.profiled_at),
            "run_id": str(self.run_id) if self.run_id else None,
            "columns": [c.as_dict() for c in self.columns],
        }


def profile(
    conn: psycopg.Connection, tables: Sequence[str], *, analyze: bool = False
) -> list[TableProfile]:
    """Profiles of ``tables`` (``schema.table``; ``public`` when no schema is given), in order.

    Args:
        conn: a connection to the database holding the tables.
        tables: the tables to profile (repeats are profiled once).
        analyze: run ANALYZE on every table first (fresh statistics, one sample each); a
            table that was never analyzed is analyzed either way.

    Raises:
        ConfigError: a table does not exist (or is not a table, partitioned table or
            materialized view); the message names every such table.
        TargetError: PostgreSQL refused a statement (no privilege to ANALYZE, …).
    """
    names = list(dict.fromkeys(split_name(t) for t in tables))
    if not names:
        return []
    try:
        rows = _read(conn, names)
        _check_known(rows)
        stale = [(r["schema_name"], r["table_name"]) for r in rows if analyze or _unanalyzed(r)]
        if stale:
            for schema, name in dict.fromkeys(stale):
                conn.execute(ddl.analyze(schema, name))
            conn.execute("SELECT pg_stat_clear_snapshot()")  # a transaction caches pg_stat_*
            rows = _read(conn, names)
    except psycopg.Error as exc:
        raise translate(exc, "profiling " + ", ".join(f"{s}.{n}" for s, n in names)) from exc
    return _profiles(rows)


def split_name(table: str) -> tuple[str, str]:
    """``schema.table`` as (schema, table); a name without a dot is in ``public``."""
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else (DEFAULT_SCHEMA, schema)


def _read(conn: psycopg.Connection, names: list[tuple[str, str]]) -> list[dict[str, Any]]:
    params = {
        "schemas": [s for s, _ in names],
        "names": [n for _, n in names],
        "relkinds": _RELKINDS,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_QUERY, params).fetchall()


def _check_known(rows: list[dict[str, Any]]) -> None:
    missing = [f"{r['schema_name']}.{r['table_name']}" for r in rows if r["relname"] is None]
    if missing:
        raise ConfigError(
            f"cannot profile {', '.join(missing)}: no such table in the database (give "
            "SCHEMA.TABLE of a table, partitioned table or materialized view)",
            table=missing[0],
        )


def _unanalyzed(row: dict[str, Any]) -> bool:
    """Whether the row's table was never analyzed (its statistics would all be missing)."""
    return row["analyzed_at"] is None and row["null_frac"] is None


def _profiles(rows: list[dict[str, Any]]) -> list[TableProfile]:
    """The query's rows (ordered by table, then attnum) as profiles."""
    by_table: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_table.setdefault(r["ord"], []).append(r)
    result = []
    for group in by_table.values():
        first = group[0]
        reltuples = first["reltuples"]
        row_estimate = round(reltuples) if reltuples is not None and reltuples >= 0 else None
        columns = tuple(_column(r, row_estimate) for r in group if r["attnum"] is not None)
        table = f"{first['schema_name']}.{first['table_name']}"
        result.append(TableProfile(table, row_estimate, columns, first["analyzed_at"]))
    return result


def _column(r: dict[str, Any], row_estimate: int | None) -> ColumnProfile:
    mcv: list[str] = _flat(r["mcv"])
    freqs: list[float] = list(r["freqs"] or [])
    low, high = _bounds(r["typcategory"], r["typname"], _flat(r["bounds"]), mcv)
    return ColumnProfile(
        column=r["attname"],
        data_type=r["data_type"],
        null_frac=r["null_frac"],
        distinct_estimate=_distinct(r["n_distinct"], r["null_frac"], row_estimate),
        min_value=low,
        max_value=high,
        most_common=tuple(zip(mcv, freqs, strict=False))[:MOST_COMMON_KEPT],
        avg_width=r["avg_width"],
    )


def _flat(values: list[Any] | None) -> list[str]:
    """A text[] read from pg_stats as a flat list; a multidimensional array (the statistics
    of an array column may read as one) yields nothing rather than nested lists."""
    if not values or any(isinstance(v, list) for v in values):
        return []
    return [v for v in values if v is not None]


def _distinct(
    n_distinct: float | None, null_frac: float | None, row_estimate: int | None
) -> float | None:
    """pg_stats' ``n_distinct`` as a count: a negative value is minus a fraction of the rows
    (the count grows with the table: -1 means unique), and 0 means unknown (a type without
    equality, such as ``json``), except in a column of NULLs only."""
    if n_distinct is None or (n_distinct == 0 and null_frac != 1):
        return None
    if n_distinct >= 0:
        return float(n_distinct)
    return float(round(-n_distinct * row_estimate)) if row_estimate is not None else None


def _bounds(
    category: str | None, typname: str | None, histogram: list[str], mcv: list[str]
) -> tuple[str | None, str | None]:
    """The smallest and largest value of a column's histogram and most common values.

    The histogram leaves the most common values out, so both count where their text forms
    order like the values (numbers, times, booleans, uuids). Elsewhere the histogram's ends
    (in the type's own order) give the bounds; text with no histogram (every value is a
    common one) is ordered by code point; other types and arrays get none.
    """
    if category == _ARRAY_CATEGORY:
        return None, None
    key = _order_key(category, typname)
    if key and (histogram or mcv):
        try:
            ordered = sorted(histogram[:1] + histogram[-1:] + mcv, key=key)
        except ValueError:  # a text form the key cannot read (money's '$1.00')
            ordered = []
        if ordered:
            return ordered[0], ordered[-1]
    if histogram:
        return histogram[0], histogram[-1]
    if mcv and category == _STRING_CATEGORY:
        return min(mcv), max(mcv)
    return None, None


def _order_key(category: str | None, typname: str | None) -> Callable[[str], Any] | None:
    """A sort key that orders a type's text forms exactly as the values order, or None."""
    if category == "N":
        return _number_key
    if category == "D":
        return _time_key
    if category == "B" or typname == "uuid":
        return str
    return None


def _number_key(text: str) -> tuple[int, float]:
    """Numbers, with NaN above everything (PostgreSQL's order)."""
    value = float(text)
    return (1, 0.0) if math.isnan(value) else (0, value)


def _time_key(text: str) -> tuple[int, str]:
    """ISO dates and times order as text (one session time zone), between the infinities."""
    return {"-infinity": (0, ""), "infinity": (2, "")}.get(text, (1, text))


def store(
    conn: psycopg.Connection, run_id: uuid.UUID | None, profiles: Sequence[TableProfile]
) -> int:
    """Insert ``profiles`` into ``bq2pg.profiles`` in one transaction (one row per column);
    the number of rows. ``run_id`` is None for a profile taken outside a run."""
    rows = [
        (run_id, p.table, c.column, c.data_type, p.row_estimate, c.null_frac,
         c.distinct_estimate, c.min_value, c.max_value,
         Jsonb([{"value": v, "freq": f} for v, f in c.most_common]), c.avg_width)
        for p in profiles
        for c in p.columns
    ]  # fmt: skip
    if not rows:
        return 0
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bq2pg.profiles (run_id, table_name, column_name, data_type, "
                "row_estimate, null_frac, distinct_estimate, min_value, max_value, most_common, "
                "avg_width) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
    except psycopg.Error as exc:
        raise translate(exc, "storing column profiles") from exc
    return len(rows)


def latest(conn: psycopg.Connection, table: str) -> TableProfile | None:
    """The latest profile stored for ``table`` (``schema.table``), or None.

    Its ``analyzed_at`` is None (not stored); ``profiled_at`` and ``run_id`` say when and for
    which run it was taken.
    """
    name = ".".join(split_name(table))
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT DISTINCT ON (column_name) * FROM bq2pg.profiles "
                "WHERE table_name = %(t)s AND profiled_at = "
                "(SELECT max(profiled_at) FROM bq2pg.profiles WHERE table_name = %(t)s) "
                "ORDER BY column_name, id DESC",
                {"t": name},
            ).fetchall()
    except psycopg.Error as exc:
        raise translate(exc, f"reading the stored profile of {name}", table=name) from exc
    if not rows:
        return None
    rows.sort(key=lambda r: r["id"])  # the order they were stored in: the table's
    columns = tuple(
        ColumnProfile(
            column=r["column_name"],
            data_type=r["data_type"],
            null_frac=r["null_frac"],
            distinct_estimate=r["distinct_estimate"],
            min_value=r["min_value"],
            max_value=r["max_value"],
            most_common=tuple((m["value"], m["freq"]) for m in r["most_common"] or []),
            avg_width=r["avg_width"],
        )
        for r in rows
    )
    last = rows[-1]
    return TableProfile(
        name, last["row_estimate"], columns, None, last["profiled_at"], last["run_id"]
    )


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None
