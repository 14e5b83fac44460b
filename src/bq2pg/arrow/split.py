"""Reshape Arrow batches from BigQuery into the tables of a :class:`~bq2pg.schema.TablePlan`.

Pure Arrow compute, no I/O and no per-row Python: columns are renamed to their PostgreSQL
names, and with ``--nested tables`` each REPEATED RECORD column is exploded into its child
table (parent key, 1-based ``ordinal``, the element's fields) with ``list_flatten`` and
``list_parent_indices``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bq2pg.plan.tables import TablePlan


def _column(table: pa.Table, source_name: str) -> pa.ChunkedArray:
    """A column by its BigQuery name (BigQuery names are case-insensitive)."""
    index = table.schema.get_field_index(source_name)
    if index < 0:
        lowered = [n.lower() for n in table.column_names]
        index = lowered.index(source_name.lower())
    return table.column(index)


def split(table: pa.Table, plan: TablePlan) -> dict[str, pa.Table]:
    """The rows of ``table`` (a read from the source) for the plan's tables, by table name.

    Every table in the result has the plan's columns, named and ordered as in the plan.
    """
    main = pa.table([_column(table, c.field.name) for c in plan.columns], names=plan.column_names)
    out = {plan.name: main}
    for child in plan.children:
        out[child.name] = explode(table, main, plan, child)
    return out


def explode(source: pa.Table, main: pa.Table, plan: TablePlan, child: TablePlan) -> pa.Table:
    """The child-table rows of one REPEATED RECORD column, in source order."""
    lists = _column(source, child.source_field).combine_chunks()
    parents = pc.list_parent_indices(lists)
    elements = pc.list_flatten(lists)
    offsets = lists.offsets.to_numpy(zero_copy_only=False)
    parent_idx = parents.to_numpy(zero_copy_only=False)
    # ordinal = position inside the parent's array, 1-based; list values are contiguous.
    ordinal = np.arange(len(elements), dtype=np.int64) - (offsets[parent_idx] - offsets[0]) + 1
    keys = [main.column(k).take(parents) for k in plan.key]
    n_key = len(plan.key)
    element_columns = child.columns[n_key + 1 :]
    fields = [pc.struct_field(elements, c.field.name) for c in element_columns]
    return pa.table([*keys, pa.array(ordinal.astype(np.int32)), *fields], names=child.column_names)
