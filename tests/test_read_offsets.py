"""Reopening a broken Storage Read stream at the next row, against a server that honours offsets.

Real BigQuery, at its default, regional or Private Service Connect endpoint, starts a
``ReadRows`` call at the ``offset`` asked and bills every row it sends: a broken stream must be
reopened at the first row not yet received. Only the bqemulator ignores offsets, so only a
Source marked as emulated reads from row 0 again and drops the rows it already has.

``storage_server.StorageServer`` is a real gRPC server with BigQuery's offset semantics; it
records every ReadRows request and every row it sends. ``is_emulator`` is asked of the real
bqemulator and of a small HTTP server that answers ``/healthz`` as told.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest
from google.cloud.bigquery_storage_v1 import types

from bq2pg import retry
from bq2pg.bigquery import read
from bq2pg.bigquery.client import Source, TableRef, is_emulator
from bq2pg.local.emulator import free_port
from conftest import EMULATOR_PROJECT
from storage_server import Read, StorageServer, storage_server_fixture  # noqa: F401

ROWS = 40
#: The test table's rows fall in two streams of 20; the server sends 3 rows a message.
STREAM_ROWS = 20
REF = TableRef(EMULATOR_PROJECT, "offsets", "items")


@pytest.fixture
def storage_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(ROWS), pa.int64()),
            "name": pa.array([f"name-{i}" for i in range(ROWS)], pa.string()),
        }
    )


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = dataclasses.replace(retry.READ, initial_s=0.01, max_wait_s=0.05)
    monkeypatch.setattr(retry, "READ", fast)


def closed_url() -> str:
    """An http:// URL on a loopback port where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def connect(server: StorageServer, *, emulator: bool) -> Source:
    """A Source whose Storage Read calls go to ``server``; read_stream makes no REST call."""
    return Source(
        project=EMULATOR_PROJECT,
        rest_endpoint=closed_url(),
        storage_endpoint=server.endpoint,
        emulator=emulator,
    )


def second_stream(bq: Source) -> tuple[read.ReadSession, str]:
    """A session and its second stream, whose rows are not the table's first rows."""
    session = read.open_session(bq, REF, max_streams=2)
    assert len(session.streams) == 2
    return session, session.streams[1]


def read_rows(bq: Source, session: read.ReadSession, stream: str, offset: int = 0) -> pa.Table:
    batches = list(read.read_stream(bq, session, stream, offset))
    return pa.Table.from_batches(batches, schema=session.arrow_schema)


@pytest.mark.parametrize(
    "after",
    [7, 9, 0, STREAM_ROWS],
    ids=["inside-a-message", "between-messages", "before-the-first-row", "after-the-last-row"],
)
def test_a_broken_stream_is_reopened_at_the_next_row_and_no_row_is_read_twice(
    storage_server: StorageServer, after: int
):
    bq = connect(storage_server, emulator=False)
    assert not bq.emulated
    session, stream = second_stream(bq)
    storage_server.break_after(after, stream)
    got = read_rows(bq, session, stream)
    assert got.equals(storage_server.rows(stream)), "rows lost, repeated or out of order"
    assert storage_server.reads == [Read(stream, 0), Read(stream, after)]
    assert storage_server.times_sent(stream) == [1] * STREAM_ROWS, "BigQuery sent rows twice"


def test_a_broken_stream_of_an_emulator_is_read_again_from_row_0_and_the_repeats_dropped(
    storage_server: StorageServer,
):
    bq = connect(storage_server, emulator=True)
    session, stream = second_stream(bq)
    storage_server.break_after(7, stream)
    got = read_rows(bq, session, stream)
    assert got.equals(storage_server.rows(stream))
    assert storage_server.reads == [Read(stream, 0), Read(stream, 0)]
    assert storage_server.times_sent(stream) == [2] * 7 + [1] * (STREAM_ROWS - 7)


@pytest.mark.parametrize(
    ("emulator", "offsets", "times_sent"),
    [
        (False, [5], [0] * 5 + [1] * (STREAM_ROWS - 5)),
        (True, [0], [1] * STREAM_ROWS),  # the emulator ignores offsets: read and dropped
    ],
    ids=["bigquery", "emulator"],
)
def test_a_resumed_stream_asks_for_its_offset_unless_emulated(
    storage_server: StorageServer, emulator: bool, offsets: list[int], times_sent: list[int]
):
    bq = connect(storage_server, emulator=emulator)
    session, stream = second_stream(bq)
    got = read_rows(bq, session, stream, offset=5)
    assert got.equals(storage_server.rows(stream).slice(5))
    assert storage_server.offsets() == offsets
    assert storage_server.times_sent(stream) == times_sent


def test_a_resumed_stream_that_breaks_is_reopened_past_both_offsets(
    storage_server: StorageServer,
):
    bq = connect(storage_server, emulator=False)
    session, stream = second_stream(bq)
    storage_server.break_after(7, stream)
    got = read_rows(bq, session, stream, offset=5)
    assert got.equals(storage_server.rows(stream).slice(5))
    assert storage_server.offsets() == [5, 12]
    assert storage_server.times_sent(stream) == [0] * 5 + [1] * (STREAM_ROWS - 5)


def test_every_stream_broken_once_still_reads_the_table_once(
    storage_server: StorageServer, storage_table: pa.Table
):
    bq = connect(storage_server, emulator=False)
    session = read.open_session(bq, REF, max_streams=2)
    for i, stream in enumerate(session.streams):
        storage_server.break_after(4 + i * 6, stream)
    got = pa.concat_tables(read_rows(bq, session, s) for s in session.streams)
    assert got.equals(storage_table)
    assert storage_server.offsets() == [0, 4, 0, 10]
    assert all(storage_server.times_sent(s) == [1] * STREAM_ROWS for s in session.streams)


def test_open_session_sends_the_request_and_reads_the_answer(
    storage_server: StorageServer, storage_table: pa.Table
):
    bq = connect(storage_server, emulator=False)
    snapshot = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    session = read.open_session(
        bq, REF, selected_fields=["name", "id"], max_streams=5, snapshot_time=snapshot
    )
    (sent,) = storage_server.sessions
    assert sent.parent == f"projects/{EMULATOR_PROJECT}"
    assert sent.read_session.table == REF.path
    assert sent.read_session.data_format == types.DataFormat.ARROW
    assert list(sent.read_session.read_options.selected_fields) == ["name", "id"]
    assert sent.max_stream_count == 5
    assert sent.read_session.table_modifiers.snapshot_time == snapshot
    assert session.name.startswith(f"projects/{EMULATOR_PROJECT}/locations/")
    assert len(session.streams) == 2  # the server's most
    assert session.arrow_schema == storage_table.select(["name", "id"]).schema
    assert session.snapshot_time == snapshot
    assert session.estimated_rows == ROWS
    got = pa.concat_tables(read_rows(bq, session, s) for s in session.streams)
    assert got.equals(storage_table.select(["name", "id"]))


def test_open_session_without_a_snapshot_reads_the_one_the_server_chose(
    storage_server: StorageServer,
):
    bq = connect(storage_server, emulator=False)
    session = read.open_session(bq, REF, max_streams=1)
    assert len(session.streams) == 1
    assert storage_server.sessions[0].max_stream_count == 1
    assert isinstance(session.snapshot_time, dt.datetime)
    assert session.snapshot_time.tzinfo is not None


# is_emulator ------------------------------------------------------------------------------


class Healthz(http.server.ThreadingHTTPServer):
    """An HTTP server on a free loopback port answering ``/healthz`` with ``status`` and
    ``body``; it counts the connections it accepts."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HealthzHandler)
        self.status = 200
        self.body = b""
        self.connections = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def verify_request(self, request: object, client_address: object) -> bool:
        self.connections += 1
        return True


class _HealthzHandler(http.server.BaseHTTPRequestHandler):
    server: Healthz

    def do_GET(self) -> None:
        status, body = (self.server.status, self.server.body)
        if self.path != "/healthz":
            status, body = 404, b"not found"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def healthz() -> Iterator[Healthz]:
    server = Healthz()
    yield server
    server.shutdown()
    server.server_close()


EMULATOR_ANSWER = json.dumps({"status": "ok", "version": "test"}).encode()


def test_the_bqemulator_is_an_emulator(emu):
    assert is_emulator(emu.rest_url)
    assert is_emulator(emu.rest_url + "/")


def test_a_closed_port_is_not_an_emulator():
    assert not is_emulator(closed_url(), timeout_s=1)


def test_an_https_endpoint_is_not_asked(healthz: Healthz):
    healthz.body = EMULATOR_ANSWER  # it would pass for the emulator, if it were asked
    assert is_emulator(f"http://127.0.0.1:{healthz.port}")
    asked = healthz.connections
    assert not is_emulator(f"https://127.0.0.1:{healthz.port}")
    assert healthz.connections == asked, "an https endpoint was asked"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"status": "ok"}'),
        (200, b'{"status": "SERVING", "version": "1"}'),
        (200, b"ok"),
        (200, b'["status", "ok", "version"]'),
        (200, b""),
        (404, EMULATOR_ANSWER),
        (503, EMULATOR_ANSWER),
    ],
    ids=["no-version", "other-status", "text", "a-list", "empty", "404", "503"],
)
def test_another_http_server_is_not_an_emulator(healthz: Healthz, status: int, body: bytes):
    healthz.status, healthz.body = status, body
    assert not is_emulator(f"http://127.0.0.1:{healthz.port}")
    assert healthz.connections == 1


def test_source_asks_the_rest_endpoint_when_not_told(emu, storage_server: StorageServer):
    def detect(rest_endpoint: str) -> bool:
        return Source(
            project=EMULATOR_PROJECT,
            rest_endpoint=rest_endpoint,
            storage_endpoint=storage_server.endpoint,
        ).emulated

    assert detect(emu.rest_url)
    assert not detect(closed_url())
    assert not detect(f"https://127.0.0.1:{free_port()}")
