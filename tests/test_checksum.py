"""Content checksums: the same number on both sides of COPY, and a changed value is caught.

The client's checksum (DuckDB over the Arrow rows, recorded in the ledger) and the server's
(SQL over the stored rows) must agree for every covered type and edge value; a value changed
after loading must make ``bq2pg verify`` and a run's own verification fail.
"""

from __future__ import annotations

import uuid

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from bq2pg import CopyRequest, copy_table
from bq2pg.bigquery import read
from bq2pg.bigquery.client import TableRef
from bq2pg.engine.stream import Stream, write_batches
from bq2pg.errors import VerificationError
from bq2pg.plan import ddl
from bq2pg.plan.tables import Field, plan_table
from bq2pg.postgres.target import physical
from bq2pg.quality import checksum
from bq2pg.quality.verify import verify_run, verify_target
from bq2pg.state import runs as state
from bq2pg.state import schema
from conftest import make_table

FIELDS = [
    Field("id", "INT64"),
    Field("flag", "BOOL"),
    Field("s", "STRING"),
    Field("b", "BYTES"),
    Field("d", "DATE"),
    Field("ts", "TIMESTAMP"),
    Field("dtm", "DATETIME"),
    Field("t", "TIME"),
    Field("n", "NUMERIC"),
    Field("f", "FLOAT64"),  # not covered: counted only
    Field("tags", "STRING", "REPEATED"),
    Field("parts", "RECORD", "REPEATED", (Field("code", "STRING"), Field("day", "DATE"))),
]
TEXTS = ["", 'a,b\n"c"\\d\t', "\\N", "é😀", "NULL", None, "x" * 5000, "\\.", " lead", "1:2"]
ROWS = [
    {
        "id": [-(2**63), 2**63 - 1][i] if i < 2 else i,
        "flag": [True, False, None][i % 3],
        "s": TEXTS[i % len(TEXTS)],
        "b": ["", "AP8A", None, "3q2+7w=="][i % 4],
        "d": ["0001-01-01", "9999-12-31", "1970-01-01", None, "2024-02-29"][i % 5],
        "ts": [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            None,
            "2021-03-14T01:59:59.5+00:00",
        ][i % 4],
        "dtm": ["0001-01-01T00:00:00", "9999-12-31T23:59:59.999999", None][i % 3],
        "t": ["00:00:00", "23:59:59.999999", None, "12:00:00.000001"][i % 4],
        "n": ["99999999999999999999999999999.999999999", "-0.000000001", "0", None, "1.5"][i % 5],
        "f": [0.1, -0.0, None, 1e300][i % 4],
        "tags": [["a", "b"], [], ["c"]][i % 3],
        "parts": [{"code": f"c{j}", "day": "2020-01-0" + str(j + 1)} for j in range(i % 3)],
    }
    for i in range(40)
]


@pytest.fixture
def table_id(source, dataset) -> str:
    return make_table(source, dataset, f"ck_{uuid.uuid4().hex[:6]}", FIELDS, ROWS)


def test_kinds_cover_exact_types_and_leave_out_the_rest():
    covered = ["bigint", "boolean", "text", "bytea", "date", "timestamptz", "timestamp", "time"]
    assert all(checksum.kind(t) for t in [*covered, "numeric(38,9)", "numeric(10, 2)"])
    for t in ["double precision", "float8", "jsonb", "json", "text[]", "numeric", "interval",
              "numeric(76,38)", "tstzrange"]:  # fmt: skip
        assert checksum.kind(t) is None, t


@pytest.mark.parametrize("nested", ["jsonb", "tables"])
def test_a_run_checksums_every_table_with_covered_columns(
    source, table_id, pg_url, pg_schema, pg, nested
):
    target = f"{pg_schema}.ck_{nested}"
    result = copy_table(
        source,
        CopyRequest(source=table_id, database_url=pg_url, table=target, nested=nested, key=("id",)),  # type: ignore[arg-type]
    )
    assert result.rows_read == len(ROWS)
    expected = sorted(t.name for t in result.tables)  # a child table: keys + scalar values
    assert len(expected) == (1 if nested == "jsonb" else 2)
    assert sorted(result.checksummed) == expected
    report = verify_target(pg, target)
    assert {r.status for r in report} <= {"ok (count, checksum)", "ok (count)"}
    assert [r.table.split(".")[1] for r in report if "checksum" in r.status] == sorted(expected)


def test_the_client_checksum_equals_the_server_checksum_of_the_stored_rows(
    source, table_id, pg_url, pg_schema, pg
):
    """Computed independently of the ledger: DuckDB over the source rows vs SQL over the table."""
    target = f"{pg_schema}.ck_direct"
    copy_table(source, CopyRequest(source=table_id, database_url=pg_url, table=target))
    info = source.table(TableRef.parse(table_id))
    plan = plan_table(info.fields, schema=pg_schema, name="ck_direct", source=table_id)
    session = read.open_session(source, TableRef.parse(table_id))
    rows = pa.Table.from_batches(
        [b for s in session.streams for b in read.read_stream(source, session, s)],
        schema=session.arrow_schema,
    )
    summer = checksum.Checksummer([plan])
    client = summer.of("ck_direct", rows)
    summer.close()
    columns = [(c.name, c.pg_type) for c in plan.columns if checksum.kind(c.pg_type)]
    assert {c for c, _ in columns} == {"id", "flag", "s", "b", "d", "ts", "dtm", "t", "n"}
    count, server = pg.execute(checksum.server_query(pg_schema, "ck_direct", columns)).fetchone()
    assert count == len(ROWS)
    assert client == int(server) != 0


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE {t} SET s = s || ' ' WHERE id = 7",  # one trailing space
        "UPDATE {t} SET ts = ts + interval '1 microsecond' WHERE ts IS NOT NULL AND id = 3",
        "UPDATE {t} SET n = -n WHERE n = 1.5",
        "UPDATE {t} SET b = NULL WHERE b = ''::bytea",  # empty is not NULL
        "UPDATE {t} SET (s, d) = (d::text, NULL) WHERE id = 9",
        # two rows trade values: every column's multiset of values is unchanged
        "UPDATE {t} SET s = CASE id WHEN 4 THEN (SELECT s FROM {t} WHERE id = 5) "
        "ELSE (SELECT s FROM {t} WHERE id = 4) END WHERE id IN (4, 5)",
    ],
)
def test_bq2pg_verify_catches_a_changed_value_that_counts_cannot(
    source, table_id, pg_url, pg_schema, pg, change
):
    target = f"{pg_schema}.ck_changed"
    copy_table(source, CopyRequest(source=table_id, database_url=pg_url, table=target))
    assert verify_target(pg, target)[0].status == "ok (count, checksum)"
    cur = pg.execute(
        sql.SQL(change).format(t=sql.Identifier(pg_schema, "ck_changed"))  # type: ignore[arg-type]
    )
    assert cur.rowcount >= 1
    (report,) = verify_target(pg, target)
    assert report.rows == report.ledger == len(ROWS)
    assert report.status == "MISMATCH (checksum)"


def test_runs_checksummed_in_an_older_form_are_verified_by_counts(
    source, table_id, pg_url, pg_schema, pg
):
    target = f"{pg_schema}.ck_form"
    result = copy_table(source, CopyRequest(source=table_id, database_url=pg_url, table=target))
    pg.execute("UPDATE bq2pg.runs SET checksum_form = NULL WHERE run_id = %s", [result.run_id])
    assert verify_target(pg, target)[0].status == "ok (count)"


def test_a_run_refuses_to_publish_rows_changed_after_their_copy(
    source, table_id, pg_url, pg_schema, pg
):
    """The ledger's checksums vs the staged rows: what verify() checks before publishing."""
    info = source.table(TableRef.parse(table_id))
    plan = plan_table(info.fields, schema=pg_schema, name="ck_staged", source=table_id)
    stage = physical("append", plan)
    pg.execute(ddl.create_schema(pg_schema))
    pg.execute(ddl.create_table(plan, name=stage))
    schema.ensure(pg)
    run_id = state.start(pg, source=table_id, target=plan.qualified, mode="append",
                         arguments={}, fingerprint="test")  # fmt: skip
    state.record_checksums(pg, run_id, {}, checksum.FORM)

    def verify():
        checks = verify_run(pg, pg_url, plan, "append", run_id, with_checksums=True, lanes=2,
                            deadline=60)  # fmt: skip
        return [c.table for c in checks if c.checksummed]

    session = read.open_session(source, TableRef.parse(table_id))
    for s in session.streams:
        write_batches(pg_url, plan, read.read_stream(source, session, s), into=lambda t: stage,
                      stream=Stream(run_id, s), checksum=True)  # fmt: skip
    assert verify() == ["ck_staged"]
    pg.execute(
        sql.SQL("UPDATE {} SET s = upper(s) WHERE s = 'é😀'").format(
            sql.Identifier(pg_schema, stage)
        )
    )
    with pytest.raises(VerificationError, match="content checksum"):
        verify()
    # begun by a bq2pg that wrote another form (resumed by this one): counts only
    pg.execute("UPDATE bq2pg.runs SET checksum_form = 1 WHERE run_id = %s", [run_id])
    assert verify() == []


def test_no_checksum_records_none_and_verifies_counts_only(source, table_id, pg_url, pg_schema, pg):
    target = f"{pg_schema}.ck_off"
    result = copy_table(
        source, CopyRequest(source=table_id, database_url=pg_url, table=target, checksum=False)
    )
    assert result.checksummed == []
    row = pg.execute(
        "SELECT count(*), count(checksums) FROM bq2pg.chunks WHERE run_id = %s", [result.run_id]
    ).fetchone()
    assert row is not None and row[0] >= 1 and row[1] == 0
    assert verify_target(pg, target)[0].status == "ok (count)"


def test_a_row_that_is_dead_lettered_is_not_in_the_checksum(source, dataset, pg_url, pg_schema, pg):
    """Isolation checksums only the rows that load, so the run still verifies."""
    fields = [Field("id", "INT64"), Field("s", "STRING")]
    rows = [{"id": i, "s": "bad\x00" if i == 5 else f"v{i}"} for i in range(12)]
    tid = make_table(source, dataset, f"ckdl_{uuid.uuid4().hex[:6]}", fields, rows)
    target = f"{pg_schema}.ck_dead"
    result = copy_table(source, CopyRequest(source=tid, database_url=pg_url, table=target))
    assert (result.dead_letters, result.checksummed) == (1, ["ck_dead"])
    assert verify_target(pg, target)[0].status == "ok (count, checksum)"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(f'SELECT id FROM "{pg_schema}".ck_dead ORDER BY id')]
    assert ids == [i for i in range(12) if i != 5]
