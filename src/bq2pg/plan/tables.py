"""Plan PostgreSQL tables for a BigQuery schema: names, types, keys and child tables.

Pure logic, no I/O. :class:`Field` is bq2pg's own description of a BigQuery field (``source``
converts the client's ``SchemaField`` into it), and :func:`plan_table` turns a list of fields
into a :class:`TablePlan`, the single source of truth for DDL, encoding and loading.

Naming rules (documented in the README):

* identifiers are lower-cased (BigQuery names are case-insensitive) and always quoted;
* a name longer than 63 bytes keeps a prefix and gains ``_`` plus 8 hex digits of its SHA-256,
  so shortening is deterministic and two long names sharing a prefix do not collide;
* collisions after these steps are detected before any DDL and reported as an error;
* with ``--nested tables`` every top-level REPEATED RECORD ``f`` of table ``t`` becomes the
  child table ``t__f`` with the columns ``parent_<key>...``, ``ordinal`` (1-based position in
  the source array) and the element's fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from bq2pg.errors import ConfigError, IdentifierError
from bq2pg.plan import typemap

#: PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1); see RELIABILITY.md b.28.
PG_MAX_IDENTIFIER_BYTES = 63
#: Hex digits of the SHA-256 kept in a shortened identifier: 32 bits make accidental
#: collisions between two long names of one table vanishingly unlikely, and they are checked.
SHORT_HASH_HEX = 8
#: More columns than this and PostgreSQL refuses the table (``tables can have at most 1600``).
PG_MAX_COLUMNS = 1600

ORDINAL_COLUMN = "ordinal"
PARENT_PREFIX = "parent_"

Nested = Literal["jsonb", "tables"]


@dataclass(frozen=True)
class Field:
    """A BigQuery field: name, canonical type, mode and sub-fields."""

    name: str
    type: str
    mode: str = "NULLABLE"
    fields: tuple[Field, ...] = ()
    precision: int | None = None
    scale: int | None = None
    range_element_type: str | None = None

    @property
    def repeated(self) -> bool:
        return self.mode == "REPEATED"

    @property
    def is_record(self) -> bool:
        return self.type == "RECORD"


@dataclass(frozen=True)
class Column:
    """One PostgreSQL column and the BigQuery field it is loaded from."""

    name: str
    pg_type: str
    field: Field
    not_null: bool = False


@dataclass(frozen=True)
class TablePlan:
    """A PostgreSQL table to create and load.

    ``source_field`` is empty for the main table; for a child table it names the REPEATED
    RECORD of the main table whose elements become its rows. ``parent_key`` names a child
    table's columns holding its parent's key, in the order of the parent's ``key``.
    """

    schema: str
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    source_field: str = ""
    children: tuple[TablePlan, ...] = field(default=())
    parent_key: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        """``schema.name`` for messages (not for SQL: use ``ddl``)."""
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def all_tables(self) -> list[TablePlan]:
        """This table and its child tables, parent first."""
        return [self, *self.children]


@dataclass(frozen=True)
class Index:
    """An index built after the load (``IF NOT EXISTS``: a merge keeps the ones it has)."""

    table: str
    name: str
    method: str
    columns: tuple[str, ...]


def normalize_identifier(name: str) -> str:
    """Lower-case ``name`` and shorten it deterministically to 63 bytes when longer."""
    lowered = name.lower()
    if "\x00" in lowered:
        raise IdentifierError(f"identifier {name!r} contains a NUL character")
    if len(lowered.encode()) <= PG_MAX_IDENTIFIER_BYTES:
        return lowered
    digest = hashlib.sha256(lowered.encode()).hexdigest()[:SHORT_HASH_HEX]
    budget = PG_MAX_IDENTIFIER_BYTES - SHORT_HASH_HEX - 1
    prefix = lowered.encode()[:budget].decode(errors="ignore")  # cut on a character boundary
    return f"{prefix}_{digest}"


def _check_unique(names: list[tuple[str, str]], where: str) -> None:
    """Fail if two source names map to one PostgreSQL name (pairs of (source, target))."""
    seen: dict[str, str] = {}
    for source, target in names:
        if target in seen:
            raise IdentifierError(
                f"{where}: source names {seen[target]!r} and {source!r} both become "
                f"{target!r} in PostgreSQL; rename one in BigQuery or leave it out with --columns"
            )
        seen[target] = source
    if len(names) > PG_MAX_COLUMNS:
        raise ConfigError(
            f"{where}: {len(names)} columns, PostgreSQL allows at most {PG_MAX_COLUMNS}; "
            "choose fewer with --columns"
        )


def _column(f: Field, table: str, name: str | None = None) -> Column:
    pg = typemap.pg_type(
        f.type,
        repeated=f.repeated,
        column=f.name,
        table=table,
        precision=f.precision,
        scale=f.scale,
        range_element_type=f.range_element_type,
    )
    _check_nested_types(f, table)
    return Column(name or normalize_identifier(f.name), pg, f, not_null=f.mode == "REQUIRED")


def _check_nested_types(f: Field, table: str) -> None:
    """Every leaf of a RECORD must have a mapping too (it becomes JSON or a child column)."""
    for sub in f.fields:
        typemap.rule_for(
            sub.type,
            column=f"{f.name}.{sub.name}",
            table=table,
            range_element_type=sub.range_element_type,
        )
        _check_nested_types(sub, table)


def plan_table(
    fields: list[Field],
    *,
    source: str,
    schema: str,
    name: str,
    key: tuple[str, ...] = (),
    nested: Nested = "jsonb",
) -> TablePlan:
    """Plan the PostgreSQL table(s) for the BigQuery ``fields`` of table ``source``.

    Args:
        fields: the (already projected) top-level fields, in source order.
        source: ``project.dataset.table``, for messages.
        schema: target PostgreSQL schema.
        name: target table name (normalised here).
        key: source names of the key columns (for merge and for child tables).
        nested: ``jsonb`` keeps REPEATED RECORD columns as jsonb; ``tables`` makes child tables.

    Raises:
        TypeMappingError: a field has a type with no lossless mapping.
        IdentifierError: names collide after normalisation.
        ConfigError: the key is missing, repeated or not a scalar; child tables without a key.
    """
    table_name = normalize_identifier(name)
    schema_name = normalize_identifier(schema)
    by_name = {f.name.lower(): f for f in fields}
    key_names: list[str] = []
    for k in key:
        f = by_name.get(k.lower())
        if f is None:
            raise ConfigError(f"key column {k!r} is not a column of {source} (or not selected)")
        if f.repeated or f.is_record:
            raise ConfigError(f"key column {k!r} of {source} must be a non-repeated scalar")
        key_names.append(normalize_identifier(f.name))

    child_fields = [f for f in fields if nested == "tables" and f.repeated and f.is_record]
    if child_fields and not key_names:
        raise ConfigError(
            f"--nested tables needs --key: child tables of {source} are keyed by the parent key"
        )
    main_fields = [f for f in fields if f not in child_fields]
    columns = [_column(f, source) for f in main_fields]
    _check_unique([(f.name, c.name) for f, c in zip(main_fields, columns, strict=True)], source)

    key_columns = {c.name: c for c in columns if c.name in key_names}
    children = []
    child_names: list[tuple[str, str]] = [(name, table_name)]
    for f in child_fields:
        child = _plan_child(f, source, schema_name, table_name, [key_columns[k] for k in key_names])
        child_names.append((f"{name}.{f.name}", child.name))
        children.append(child)
    _check_unique(child_names, f"tables of {source}")
    return TablePlan(
        schema=schema_name,
        name=table_name,
        columns=tuple(columns),
        key=tuple(key_names),
        children=tuple(children),
    )


def _plan_child(f: Field, source: str, schema: str, parent: str, keys: list[Column]) -> TablePlan:
    where = f"{source}.{f.name}"
    name = normalize_identifier(f"{parent}__{f.name}")
    key_cols = [
        Column(normalize_identifier(PARENT_PREFIX + k.name), k.pg_type, k.field, not_null=True)
        for k in keys
    ]
    ordinal = Column(ORDINAL_COLUMN, "integer", Field(ORDINAL_COLUMN, "INT64"), not_null=True)
    element_cols = [_column(sub, where) for sub in f.fields]
    pairs = [(c.name, c.name) for c in (*key_cols, ordinal)]
    pairs += [(sub.name, c.name) for sub, c in zip(f.fields, element_cols, strict=True)]
    _check_unique(pairs, where)
    return TablePlan(
        schema=schema,
        name=name,
        columns=(*key_cols, ordinal, *element_cols),
        key=(*(c.name for c in key_cols), ORDINAL_COLUMN),
        source_field=f.name,
        parent_key=tuple(c.name for c in key_cols),
    )
