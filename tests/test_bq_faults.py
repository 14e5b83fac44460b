"""BigQuery Storage Read API stream errors (RELIABILITY.md c.2, F5), through a real gRPC proxy.

``faults/bqproxy.py`` sits between the official client and the emulator, fails the calls each
test plans with the status and message BigQuery sends, and records every request. The proxy
honours ``ReadRows.offset`` as BigQuery does, so the Source here takes the production path
(``emulated = False``: it asks for the offset it needs) unless a test says otherwise.

Every copy is checked against the source rows: count, distinct keys and content. The targets
have no primary key, so a duplicated row would show instead of failing the publish.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from faults import bqproxy
from psycopg import sql

from bq2pg import CopyRequest, copy_table, retry
from bq2pg.bigquery import read
from bq2pg.bigquery.client import Source, TableRef
from bq2pg.errors import SessionExpiredError, SourceError, TransientSourceError
from bq2pg.plan.tables import Field
from conftest import EMULATOR_PROJECT, make_table

ROWS = 3000
#: 3,000 rows in messages of 500: six messages in the table's one stream.
ROWS_PER_MESSAGE = 500
FIELDS = [Field("id", "INT64"), Field("name", "STRING"), Field("score", "FLOAT64")]


def expected_rows() -> list[tuple[int, str, float]]:
    return [(i, f"name-{i}", i / 8) for i in range(ROWS)]


@pytest.fixture(scope="module")
def proxy(emu) -> Iterator[bqproxy.BigQueryProxy]:
    running = bqproxy.BigQueryProxy(emu.grpc_endpoint, rows_per_message=ROWS_PER_MESSAGE)
    yield running
    running.close()


@pytest.fixture(scope="module")
def table_id(source: Source) -> str:
    dataset = f"{EMULATOR_PROJECT}.bqf_{uuid.uuid4().hex[:8]}"
    source.bq.create_dataset(dataset)
    rows = [{"id": i, "name": n, "score": s} for i, n, s in expected_rows()]
    return make_table(source, dataset, "items", FIELDS, rows)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = dataclasses.replace(retry.READ, initial_s=0.01, max_wait_s=0.05)
    monkeypatch.setattr(retry, "READ", fast)


@pytest.fixture
def bq(emu, proxy: bqproxy.BigQueryProxy) -> Source:
    """A Source whose Storage Read calls go through the proxy (REST goes to the emulator)."""
    proxy.reset()
    through = Source(
        project=EMULATOR_PROJECT, rest_endpoint=emu.rest_url, storage_endpoint=proxy.endpoint
    )
    through.emulated = False  # the proxy honours offsets: take BigQuery's path
    return through


def copy(bq: Source, table_id: str, pg_url: str, pg_schema: str):
    return copy_table(
        bq, CopyRequest(source=table_id, database_url=pg_url, table=f"{pg_schema}.items", streams=1)
    )


def assert_every_row_once(pg: psycopg.Connection, pg_schema: str) -> None:
    target = sql.Identifier(pg_schema, "items")
    counts = pg.execute(
        sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(target)
    ).fetchone()
    assert counts == (ROWS, ROWS), "rows lost or duplicated"
    got = pg.execute(sql.SQL("SELECT id, name, score FROM {} ORDER BY id").format(target))
    assert got.fetchall() == expected_rows()


def assert_nothing_published(pg: psycopg.Connection, pg_schema: str) -> None:
    assert pg.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."items"']).fetchone() == (None,)
    status = pg.execute(
        "SELECT status FROM bq2pg.runs WHERE target = %s ORDER BY started_at DESC LIMIT 1",
        [f"{pg_schema}.items"],
    ).fetchone()
    assert status == ("failed",)


def offsets(proxy: bqproxy.BigQueryProxy) -> list[int]:
    return [r.offset for r in proxy.reads]


@pytest.mark.parametrize(
    ("emulated", "after", "reopened_at"),
    [(False, 2, 2 * ROWS_PER_MESSAGE), (False, 0, 0), (True, 2, 0)],
    ids=["mid-stream", "before-the-first-message", "emulated-offsets"],
)
def test_unavailable_reopens_the_stream_without_loss_or_duplicates(
    bq, proxy, table_id, pg_url, pg_schema, pg, emulated, after, reopened_at
):
    # emulated: bq2pg asks for row 0 again and drops the rows it already has
    bq.emulated = emulated
    proxy.plan(bqproxy.unavailable(after=after))
    result = copy(bq, table_id, pg_url, pg_schema)
    assert result.rows_read == ROWS
    assert offsets(proxy) == [0, reopened_at]
    assert proxy.reads[0].stream == proxy.reads[1].stream
    assert_every_row_once(pg, pg_schema)


@pytest.mark.parametrize("fault", [bqproxy.rst_stream, bqproxy.unexpected_eos])
def test_internal_stream_reset_resumes_at_the_offset(
    bq, proxy, table_id, pg_url, pg_schema, pg, fault
):
    proxy.plan(fault(after=3))
    copy(bq, table_id, pg_url, pg_schema)
    assert offsets(proxy) == [0, 3 * ROWS_PER_MESSAGE]
    assert_every_row_once(pg, pg_schema)


def test_other_internal_error_fails_the_run_and_publishes_nothing(
    bq, proxy, table_id, pg_url, pg_schema, pg
):
    proxy.plan(bqproxy.internal(after=2))
    with pytest.raises(SourceError, match="Internal error encountered") as failed:
        copy(bq, table_id, pg_url, pg_schema)
    assert not isinstance(failed.value, TransientSourceError)
    assert failed.value.exit_code == 3
    assert len(proxy.reads) == 1, "an unknown INTERNAL error was retried"
    assert_nothing_published(pg, pg_schema)


def test_other_internal_error_exits_3_with_the_reason(emu, proxy, table_id, pg_url, pg_schema, pg):
    proxy.reset()
    proxy.plan(bqproxy.internal(after=1))
    env = {
        **os.environ,
        "BQ2PG_BIGQUERY_ENDPOINT": emu.rest_url,
        "BQ2PG_BIGQUERY_STORAGE_ENDPOINT": proxy.endpoint,
        "BQ2PG_PROJECT": EMULATOR_PROJECT,
        "BQ2PG_DATABASE_URL": pg_url,
    }
    run = subprocess.run(
        [sys.executable, "-m", "bq2pg", "copy", table_id, "--table", f"{pg_schema}.items",
         "--streams", "1"],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    message = " ".join(run.stderr.split())  # the console wraps long lines
    assert "INTERNAL" in message and "Internal error encountered" in message, message
    assert len(proxy.reads) == 1
    assert_nothing_published(pg, pg_schema)


def test_resource_exhausted_with_retry_info_waits_then_resumes(
    bq, proxy, table_id, pg_url, pg_schema, pg
):
    proxy.plan(bqproxy.resource_exhausted(after=1, retry_delay_s=0.4))
    copy(bq, table_id, pg_url, pg_schema)
    assert offsets(proxy) == [0, ROWS_PER_MESSAGE]
    assert proxy.reads[1].at - proxy.reads[0].at >= 0.4, "the RetryInfo delay was not honoured"
    assert_every_row_once(pg, pg_schema)


def test_a_long_retry_info_delay_is_bounded(bq, proxy, table_id, monkeypatch):
    monkeypatch.setattr(retry, "RETRY_INFO_MAX_S", 0.2)
    proxy.plan(bqproxy.resource_exhausted(after=1, retry_delay_s=3600))
    session = read.open_session(bq, TableRef.parse(table_id))
    rows = sum(b.num_rows for b in read.read_stream(bq, session, session.streams[0]))
    assert rows == ROWS
    assert 0.2 <= proxy.reads[1].at - proxy.reads[0].at < 30


def test_resource_exhausted_without_retry_info_fails_the_run(
    bq, proxy, table_id, pg_url, pg_schema, pg
):
    proxy.plan(bqproxy.resource_exhausted(after=1))
    with pytest.raises(SourceError, match="quota is exhausted") as failed:
        copy(bq, table_id, pg_url, pg_schema)
    assert not isinstance(failed.value, TransientSourceError)
    assert len(proxy.reads) == 1, "RESOURCE_EXHAUSTED without RetryInfo was retried"
    assert_nothing_published(pg, pg_schema)


def test_unavailable_every_time_gives_up_after_the_attempts(bq, proxy, table_id, monkeypatch):
    monkeypatch.setattr(retry, "READ", dataclasses.replace(retry.READ, attempts=3))
    proxy.plan(*[bqproxy.unavailable(after=0)] * 5)
    session = read.open_session(bq, TableRef.parse(table_id))
    with pytest.raises(TransientSourceError, match="3 attempts"):
        list(read.read_stream(bq, session, session.streams[0]))
    assert offsets(proxy) == [0, 0, 0]


def test_deadline_exceeded_on_create_read_session_is_retried(
    bq, proxy, table_id, pg_url, pg_schema, pg
):
    proxy.plan(bqproxy.deadline_exceeded(), bqproxy.deadline_exceeded())
    copy(bq, table_id, pg_url, pg_schema)
    assert len(proxy.sessions) == 3
    assert proxy.sessions[0] == proxy.sessions[2]  # the same request again
    assert_every_row_once(pg, pg_schema)


def test_a_session_with_zero_streams_copies_zero_rows(bq, proxy, table_id, pg_url, pg_schema, pg):
    request = CopyRequest(
        source=table_id, database_url=pg_url, table=f"{pg_schema}.items", where="id < 0"
    )
    result = copy_table(bq, request)
    assert result.rows_read == 0 and result.streams == 0
    assert len(proxy.sessions) == 1 and proxy.reads == []
    target = sql.Identifier(pg_schema, "items")
    assert pg.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone() == (0,)


def test_a_snapshot_older_than_time_travel_is_a_clear_terminal_error(bq, proxy, table_id):
    eight_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    with pytest.raises(SourceError, match="time travel") as failed:
        read.open_session(bq, TableRef.parse(table_id), snapshot_time=eight_days_ago)
    assert not isinstance(failed.value, TransientSourceError)
    assert "Cannot read before" in str(failed.value)  # BigQuery's own words stay in the message
    assert len(proxy.sessions) == 1, "a refused snapshot time was retried"


def test_an_expired_session_reaches_the_reader_as_session_expired(bq, proxy, table_id):
    proxy.plan(bqproxy.session_expired(after=1))
    session = read.open_session(bq, TableRef.parse(table_id))
    batches = read.read_stream(bq, session, session.streams[0])
    assert next(batches).num_rows == ROWS_PER_MESSAGE
    with pytest.raises(SessionExpiredError, match="session expired") as failed:
        next(batches)
    assert session.streams[0] in str(failed.value)
    assert len(proxy.reads) == 1, "an expired session's stream was reopened"


def test_a_session_that_expires_mid_run_is_reopened_at_the_same_snapshot(
    bq, proxy, table_id, pg_url, pg_schema, pg
):
    """The run empties what it loaded, reads again from a new session at the recorded
    snapshot_time, and publishes every row exactly once (job.py)."""
    proxy.plan(bqproxy.session_expired(after=3))
    result = copy(bq, table_id, pg_url, pg_schema)
    assert result.rows_read == ROWS
    assert len(proxy.sessions) == 2
    first, second = (s.read_session.table_modifiers.snapshot_time for s in proxy.sessions)
    assert first == second and first.year >= 2026  # the same, explicit snapshot
    assert offsets(proxy) == [0, 0]  # the new session's stream from its start
    assert proxy.reads[0].stream != proxy.reads[1].stream
    assert_every_row_once(pg, pg_schema)
    snapshot, chunks = pg.execute(
        "SELECT r.snapshot_time, (SELECT count(*) FROM bq2pg.chunks c WHERE c.run_id = r.run_id) "
        "FROM bq2pg.runs r WHERE run_id = %s",
        [result.run_id],
    ).fetchone()
    assert snapshot == first
    assert chunks >= 1
    ledger = pg.execute(
        "SELECT sum((rows->>'items')::bigint) FROM bq2pg.chunks WHERE run_id = %s",
        [result.run_id],
    ).fetchone()
    assert ledger == (ROWS,)  # the first session's chunks were forgotten


def test_a_session_that_expires_twice_fails_the_run(bq, proxy, table_id, pg_url, pg_schema, pg):
    proxy.plan(bqproxy.session_expired(after=1), bqproxy.session_expired(after=1))
    with pytest.raises(SessionExpiredError):
        copy(bq, table_id, pg_url, pg_schema)
    assert_nothing_published(pg, pg_schema)
