"""Column lineage: which BigQuery field(s) each PostgreSQL column is made from, and how.

An edge's ``transformation`` is one word of :data:`TRANSFORMATIONS`:

* ``identity``: the field's value, unchanged (``INT64`` -> ``bigint``, ``STRING`` -> ``text``,
  a ``REPEATED`` scalar -> an array of the same values);
* ``cast``: the value converted to PostgreSQL's form of it (``GEOGRAPHY`` -> WKT ``text``,
  ``BIGNUMERIC``, ``INTERVAL``, ``RANGE``, ``BYTES``: the types ``plan.typemap`` marks
  ``render``; in the patents model, ``YYYYMMDD`` integers -> ``date``);
* ``json_encoding``: a ``RECORD`` (or an array of them) or a ``JSON`` value, written as ``jsonb``;
* ``array_explode``: a child table's row comes from one element of a ``REPEATED`` field; its
  ``ordinal`` (the element's position) and its parent-key columns (the parent row's key,
  repeated for each element) carry this edge;
* ``pick``: one entry chosen out of several (the patents model's English title, else the first);
* ``derived``: computed from the fields by an expression (``''`` -> NULL, counts, distinct codes,
  constants naming the array a row came from).

An edge with an empty ``target_column`` is table-level: the table's rows come from the source
table's rows (``identity``: one row per source row) or from the elements of an array
(``array_explode``). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from bq2pg.plan import typemap
from bq2pg.plan.tables import ORDINAL_COLUMN, Column, TablePlan


@dataclass(frozen=True)
class Transformation:
    """A transformation word and how OpenLineage's column-lineage facet (1-2-0) classifies it."""

    name: str
    #: ``DIRECT``: the output value is computed from the input value.
    ol_type: str
    #: ``IDENTITY``: the same value; ``TRANSFORMATION``: a value computed from it.
    ol_subtype: str
    meaning: str


TRANSFORMATIONS: dict[str, Transformation] = {
    t.name: t
    for t in (
        Transformation("identity", "DIRECT", "IDENTITY", "the field's value, unchanged"),
        Transformation("cast", "DIRECT", "TRANSFORMATION", "the value in PostgreSQL's form"),
        Transformation(
            "json_encoding", "DIRECT", "TRANSFORMATION", "a RECORD or JSON value as jsonb"
        ),
        Transformation(
            "array_explode", "DIRECT", "TRANSFORMATION", "one row per element of an array"
        ),
        Transformation("pick", "DIRECT", "TRANSFORMATION", "one entry chosen out of several"),
        Transformation("derived", "DIRECT", "TRANSFORMATION", "computed by an expression"),
    )
}


@dataclass(frozen=True)
class ColumnEdge:
    """One PostgreSQL column (or table, when ``target_column`` is empty) and its sources.

    ``source_fields`` are paths in the source table: ``name`` for a top-level field,
    ``record.field`` for a field of a RECORD's elements.
    """

    target_table: str
    target_column: str
    source_fields: tuple[str, ...]
    transformation: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.transformation not in TRANSFORMATIONS:
            raise ValueError(
                f"lineage transformation {self.transformation!r} of {self.target_table}."
                f"{self.target_column} is not one of {', '.join(TRANSFORMATIONS)}"
            )

    @property
    def table_level(self) -> bool:
        return not self.target_column


def typed(target_table: str, column: Column, source_field: str) -> ColumnEdge:
    """The edge of a column loaded from one field as ``plan.typemap`` maps its type."""
    f = column.field
    if f.is_record:
        what = "array of RECORD" if f.repeated else "RECORD"
        return ColumnEdge(
            target_table, column.name, (source_field,), "json_encoding", f"{what} -> jsonb"
        )
    rule = typemap.rule_for(
        f.type, column=f.name, table=target_table, range_element_type=f.range_element_type
    )
    source_type = f"ARRAY<{rule.bigquery}>" if f.repeated else rule.bigquery
    description = f"{source_type} -> {column.pg_type}"
    if rule.bigquery == "JSON":
        transformation = "json_encoding"
    elif rule.render == "native":
        transformation = "identity"
    else:
        transformation = "cast"
        description += f" ({rule.note})" if rule.note else ""
    return ColumnEdge(target_table, column.name, (source_field,), transformation, description)


def for_plan(plan: TablePlan) -> list[ColumnEdge]:
    """The edges of a ``bq2pg copy`` plan: its table, its columns and its child tables'.

    Each column of the main table is loaded from the field of its name; a child table
    (``--nested tables``) explodes the REPEATED RECORD ``plan.children[i].source_field``.
    """
    main = plan.qualified
    edges = [
        ColumnEdge(
            main,
            "",
            tuple(c.field.name for c in plan.columns),
            "identity",
            "one row per source row",
        )
    ]
    edges += [typed(main, c, c.field.name) for c in plan.columns]
    for child in plan.children:
        edges += _child(child)
    return edges


def _child(child: TablePlan) -> list[ColumnEdge]:
    table, array = child.qualified, child.source_field
    keys = child.columns[: len(child.parent_key)]
    elements = [c for c in child.columns[len(child.parent_key) :] if c.name != ORDINAL_COLUMN]
    edges = [
        ColumnEdge(
            table,
            "",
            (*(k.field.name for k in keys), array),
            "array_explode",
            f"one row per element of {array}",
        ),
        *(
            ColumnEdge(
                table,
                k.name,
                (k.field.name,),
                "array_explode",
                f"the parent row's {k.field.name}, repeated for each element of {array}",
            )
            for k in keys
        ),
        ColumnEdge(
            table, ORDINAL_COLUMN, (array,), "array_explode", f"1-based position in {array}"
        ),
    ]
    edges += [typed(table, c, f"{array}.{c.field.name}") for c in elements]
    return edges
