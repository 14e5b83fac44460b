"""Schema drift between runs (RELIABILITY.md b.34): nothing loaded is lost, changes are explicit.

Run 1 loads schema A; later runs see A plus a column (added to the target, earlier rows NULL),
A minus a column (the target keeps it, new rows NULL), a column renamed (drop + add: both kept)
and a column retyped (refused with the difference, nothing loaded).
"""

from __future__ import annotations

import uuid

import pytest

from bq2pg import CopyRequest, TargetMismatchError, copy_table
from bq2pg.plan.tables import Field
from conftest import make_table


@pytest.mark.parametrize("mode", ["append", "merge"])
def test_columns_added_dropped_renamed_and_retyped(source, dataset, pg_url, pg_schema, pg, mode):
    name = f"drift_{uuid.uuid4().hex[:6]}"
    target = f"{pg_schema}.drift"

    def run(fields: list[Field], rows: list[dict]):
        table_id = make_table(source, dataset, name, fields, rows)
        request = CopyRequest(source=table_id, database_url=pg_url, table=target, mode=mode,
                              key=("id",) if mode == "merge" else ())  # fmt: skip
        return copy_table(source, request)

    run([Field("id", "INT64"), Field("name", "STRING")], [{"id": 1, "name": "a"}])
    run(  # + extra
        [Field("id", "INT64"), Field("name", "STRING"), Field("extra", "STRING")],
        [{"id": 2, "name": "b", "extra": "x"}],
    )
    run([Field("id", "INT64"), Field("extra", "STRING")], [{"id": 3, "extra": "y"}])  # - name
    run([Field("id", "INT64"), Field("title", "STRING")], [{"id": 4, "title": "t"}])  # renamed
    rows = pg.execute(f"SELECT id, name, extra, title FROM {target} ORDER BY id").fetchall()
    assert rows == [
        (1, "a", None, None),
        (2, "b", "x", None),
        (3, None, "y", None),
        (4, None, None, "t"),
    ]
    with pytest.raises(TargetMismatchError, match=r"'extra' is text, the source needs bigint"):
        run([Field("id", "INT64"), Field("extra", "INT64")], [{"id": 5, "extra": 5}])
    assert pg.execute(f"SELECT count(*) FROM {target}").fetchone() == (4,)
