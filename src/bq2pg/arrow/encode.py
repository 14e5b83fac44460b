"""Encode Arrow tables as PostgreSQL ``COPY`` data, column at a time.

Tables whose columns all have simple binary layouts (numbers, dates, times, text, bytea,
jsonb) are encoded in binary by ``binary.py``, where the server parses them fastest; the others
in CSV, as follows.

This is the pure formatter half of loading (``load`` is the writer). No per-row Python runs
here: columns that Arrow's C++ CSV writer already prints the way PostgreSQL reads them
(``native`` in :data:`bq2pg.typemap.TYPES`) go straight to it; the others (arrays, records,
bytes, ranges, intervals, geography from WKB) are first rendered to text by one DuckDB
projection over the Arrow batch (zero-copy in), generated once per table from its plan.

Why CSV and not binary COPY: CSV keeps NULL (unquoted empty) and ``''`` (``""``) apart, needs
no escaping beyond doubling quotes (Arrow's writer does it in C++), and the server parses it as
fast as binary for the text-heavy tables bq2pg moves; the measurement is in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from bq2pg.arrow import binary
from bq2pg.errors import ConfigError
from bq2pg.plan import typemap
from bq2pg.plan.tables import Column, Field

#: Settings of every DuckDB connection on the load path: one thread (each stream has threads of
#: its own already), and freed memory handed back after each query: DuckDB's allocator keeps
#: it otherwise, and a loader's RSS grew with the row count (0.86 to 1.48 GiB from 0.25 to 4
#: million publications in make bench; flat at ~0.5 GiB for the splitter with this setting).
DUCKDB_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "threads": 1,
    "allocator_flush_threshold": "8MB",
}

#: Rows per internal batch of Arrow's CSV writer (its default is 1,024; larger batches
#: amortise per-batch overhead on narrow tables, measured in bench/).
CSV_WRITER_BATCH_ROWS = 8192

_CSV_OPTIONS = pacsv.WriteOptions(
    include_header=False, quoting_style="needed", batch_size=CSV_WRITER_BATCH_ROWS
)

_spatial_lock = threading.Lock()


def _q(name: str) -> str:
    """Quote a DuckDB identifier (names come from the BigQuery schema, never from users)."""
    return '"' + name.replace('"', '""') + '"'


def _scalar_text(f: Field, x: str, arrow_type: pa.DataType | None) -> str:
    """DuckDB expression: the PostgreSQL text form of one scalar value ``x`` of field ``f``."""
    t = f.type
    if t == "BYTES":
        return rf"'\x' || lower(hex({x}))"
    if t == "TIMESTAMP":
        return f"CAST({x} AS VARCHAR) || '+00'"
    if t == "GEOGRAPHY" and arrow_type is not None and pa.types.is_binary(arrow_type):
        return f"ST_AsText(ST_GeomFromWKB({x}))"
    if t in ("STRING", "JSON", "GEOGRAPHY", "BIGNUMERIC"):
        return x
    if t.startswith("RANGE<"):
        elem = t[len("RANGE<") : -1]
        sub = Field("bound", elem)
        lo = _scalar_text(sub, f"{x}.start", None)
        hi = _scalar_text(sub, f'{x}."end"', None)
        quote = "'\"'"
        return (
            f"CASE WHEN {x} IS NULL THEN NULL ELSE '[' || coalesce({quote} || {lo} || {quote}, '')"
            f" || ',' || coalesce({quote} || {hi} || {quote}, '') || ')' END"
        )
    return f"CAST({x} AS VARCHAR)"


def _json_value(f: Field, x: str, arrow_type: pa.DataType | None) -> str:
    """DuckDB expression for ``x`` made JSON-safe: ``to_json`` of it is exact, valid JSON.

    NaN and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (as
    PostgreSQL's ``to_jsonb`` does); bytes become base64; JSON values are embedded, not quoted;
    BIGNUMERIC becomes a string holding the exact decimal (DuckDB would print a double); an
    absent array becomes ``[]``, as at the top level.
    """
    if f.repeated:
        elem = Field(f.name, f.type, "NULLABLE", f.fields, f.precision, f.scale)
        elem_type = arrow_type.value_type if arrow_type is not None else None
        var = f"e{len(x)}"  # a lambda variable unique to this nesting depth
        inner = _json_value(elem, var, elem_type)
        return f"coalesce(list_transform({x}, {var} -> {inner}), [])"
    if f.is_record:
        parts = []
        for i, sub in enumerate(f.fields):
            sub_type = arrow_type.field(i).type if arrow_type is not None else None
            parts.append(f"{_q(sub.name)} := {_json_value(sub, f'{x}.{_q(sub.name)}', sub_type)}")
        return f"CASE WHEN {x} IS NULL THEN NULL ELSE struct_pack({', '.join(parts)}) END"
    t = f.type
    if t == "FLOAT64":
        return (
            f"CASE WHEN isnan({x}) THEN '\"NaN\"'::JSON WHEN {x} = 'infinity'::DOUBLE "
            f"THEN '\"Infinity\"'::JSON WHEN {x} = '-infinity'::DOUBLE THEN '\"-Infinity\"'::JSON "
            f"ELSE to_json({x}) END"
        )
    if t == "BYTES":
        return f"to_base64({x})"
    if t == "JSON":
        return f"json({x})"
    if t == "BIGNUMERIC":
        return x  # already text (see prepare); a JSON string keeps all 76 digits
    if t == "TIMESTAMP":
        return f"strftime({x}, '%Y-%m-%dT%H:%M:%S.%fZ')"
    if t == "DATETIME":
        return f"strftime({x}, '%Y-%m-%dT%H:%M:%S.%f')"
    if t in ("GEOGRAPHY", "INTERVAL") or t.startswith("RANGE<"):
        return _scalar_text(f, x, arrow_type)
    return x


def _array_literal(f: Field, x: str, arrow_type: pa.DataType | None) -> str:
    """DuckDB expression: a PostgreSQL array literal for a REPEATED scalar column."""
    elem_type = arrow_type.value_type if arrow_type is not None else None
    text = _scalar_text(Field(f.name, f.type, precision=f.precision), "e", elem_type)
    # Inside an array literal every element is double-quoted, with \ and " backslash-escaped.
    quoted = "'\"' || replace(replace(" + text + ", '\\', '\\\\'), '\"', '\\\"') || '\"'"
    return (
        f"'{{' || coalesce(array_to_string(list_transform({x}, e -> coalesce({quoted}, 'NULL')), "
        f"','), '') || '}}'"
    )


def render_expression(column: Column, arrow_type: pa.DataType | None = None) -> str | None:
    """The DuckDB expression that renders ``column`` to text, or None if it is ``native``."""
    f = column.field
    x = _q(column.name)
    if f.repeated and not f.is_record:
        return _array_literal(f, x, arrow_type)
    if f.is_record:
        empty = "'[]'" if f.repeated else "NULL"
        return f"coalesce(CAST(to_json({_json_value(f, x, arrow_type)}) AS VARCHAR), {empty})"
    rule = typemap.rule_for(
        f.type, column=f.name, table="", range_element_type=f.range_element_type
    )
    if rule.render == "native":
        return None
    return _scalar_text(f, x, arrow_type)


def prepare(table: pa.Table) -> pa.Table:
    """Cheap Arrow casts that make every column printable as PostgreSQL text.

    Time-zone-aware timestamps become naive UTC (the encoder adds ``+00``) and decimal256
    becomes text (DuckDB has no 256-bit decimals; ``str`` of the value is exact).
    """
    target = pa.schema([f.with_type(_printable(f.type)) for f in table.schema])
    if target.equals(table.schema, check_metadata=False):
        return table
    return table.cast(target)


def _printable(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t) and t.tz is not None:
        return pa.timestamp(t.unit)
    if pa.types.is_decimal256(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(_printable(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct(
            [t.field(i).with_type(_printable(t.field(i).type)) for i in range(t.num_fields)]
        )
    return t


class Encoder:
    """Encodes Arrow tables shaped like ``columns`` as CSV bytes for ``COPY FROM STDIN``.

    One encoder per thread: it owns a DuckDB connection. The input table's columns must be
    named and ordered like ``columns`` (``normalize`` makes them so).
    """

    def __init__(self, columns: Sequence[Column], *, allow_binary: bool = True) -> None:
        self.columns = list(columns)
        self.allow_binary = allow_binary
        self._db: duckdb.DuckDBPyConnection | None = None
        self._sql: str | None = None
        self._sql_for: pa.Schema | None = None
        self._rendered: list[str] = []
        self._needs_spatial = False
        self._spatial_loaded = False
        self._format = "csv"
        self._names: list[str] = []
        self._pg_types: list[str] = []

    def _connection(self, needs_spatial: bool) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            self._db = duckdb.connect(config=DUCKDB_CONFIG)
        if needs_spatial and not self._spatial_loaded:
            self._spatial_loaded = True
            with _spatial_lock:
                try:
                    self._db.execute("LOAD spatial")
                except duckdb.Error as exc:
                    raise ConfigError(
                        "GEOGRAPHY values arrived as WKB (as the emulator sends them); turning "
                        "them into WKT needs DuckDB's spatial extension: pip install "
                        "'bq2pg[embedded]'"
                    ) from exc
        return self._db

    @property
    def format(self) -> str:
        """``binary`` or ``csv``: the COPY format of :meth:`encode`'s output (after a call)."""
        return self._format

    def encode(self, table: pa.Table) -> pa.Buffer:
        """COPY data of ``table`` in :attr:`format` (binary tuples or CSV lines)."""
        if self._sql_for is None or not self._sql_for.equals(table.schema):
            self._plan(table.schema)
        if self._format == "binary":
            return binary.encode(table.select(self._names), self._pg_types)
        if self._sql is not None:
            db = self._connection(self._needs_spatial)
            prepared = prepare(table.select(self._rendered))
            rendered = db.from_arrow(prepared).select(self._sql).to_arrow_table()
            table = pa.table(
                [
                    rendered.column(c.name) if c.name in self._rendered else table.column(c.name)
                    for c in self.columns
                ],
                names=[c.name for c in self.columns],
            )
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, _CSV_OPTIONS)
        return sink.getvalue()

    def _plan(self, schema: pa.Schema) -> None:
        """Pick the format; for CSV, build the DuckDB projection of the columns to render."""
        self._names = [c.name for c in self.columns]
        self._pg_types = [c.pg_type for c in self.columns]
        arrow_types = [schema.field(n).type for n in self._names]
        simple = binary.supported(self._pg_types, arrow_types)
        self._format = "binary" if simple and self.allow_binary else "csv"
        selects = []
        self._rendered = []
        self._needs_spatial = False
        for c in self.columns:
            arrow_type = _printable(schema.field(c.name).type)
            expr = render_expression(c, arrow_type)
            if expr is not None:
                selects.append(f"{expr} AS {_q(c.name)}")
                self._rendered.append(c.name)
                self._needs_spatial |= "ST_GeomFromWKB" in expr
        self._sql = ", ".join(selects) if selects else None
        self._sql_for = schema

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._spatial_loaded = False
