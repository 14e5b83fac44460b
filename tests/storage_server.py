"""A real gRPC Storage Read API server that honours ``ReadRows.offset``, as BigQuery does.

The bqemulator ignores read offsets (it always starts a stream at row 0), so it cannot show
whether bq2pg reopens a broken stream at the next row. This server can: it implements
``CreateReadSession`` and ``ReadRows`` of ``google.cloud.bigquery.storage.v1.BigQueryRead`` with
the official message types, serves one pyarrow table in Arrow format split into contiguous
streams, starts each ``ReadRows`` at the row its ``offset`` names, and records what it was asked
and what it sent. :meth:`StorageServer.break_after` makes the next ``ReadRows`` call fail with
UNAVAILABLE after a given number of rows, as a reset connection does.

Not served: ``SplitReadStream``, ``row_restriction`` (refused), formats other than Arrow.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import NamedTuple

import grpc
import pyarrow as pa
import pytest
from google.cloud.bigquery_storage_v1 import types

SERVICE = "google.cloud.bigquery.storage.v1.BigQueryRead"
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
#: What gRPC reports when the peer resets the connection mid-stream.
RESET_DETAILS = "Connection reset by peer"


class Read(NamedTuple):
    """One ReadRows request as the server received it."""

    stream: str
    offset: int


class Sent(NamedTuple):
    """Rows ``start`` to ``stop`` (exclusive) of ``stream``, sent in one ReadRows response."""

    stream: str
    start: int
    stop: int


class StorageServer:
    """Serve ``table`` on ``127.0.0.1:<free port>`` as Storage Read sessions of Arrow streams.

    Args:
        table: the rows every session reads.
        streams: the most streams a session has (fewer if the request's ``max_stream_count``
            asks for fewer, or if the table has fewer rows, none for no rows); the rows are
            split into contiguous ranges of nearly equal size.
        rows_per_message: rows in each ReadRowsResponse, so that a small table gives a stream
            of many messages.
    """

    def __init__(self, table: pa.Table, *, streams: int = 2, rows_per_message: int = 3) -> None:
        self.table = table
        self.max_streams = streams
        self.rows_per_message = rows_per_message
        self.lock = threading.Lock()
        #: Every CreateReadSession request, in order.
        self.sessions: list[types.CreateReadSessionRequest] = []
        #: Every ReadRows request, in order.
        self.reads: list[Read] = []
        #: Every row range sent, in order.
        self.sent: list[Sent] = []
        self._streams: dict[str, pa.Table] = {}  # stream name -> its rows
        self._breaks: list[tuple[str | None, int]] = []  # (stream or any, rows before the break)
        handlers = {
            "CreateReadSession": grpc.unary_unary_rpc_method_handler(
                self._create_read_session,
                request_deserializer=types.CreateReadSessionRequest.deserialize,
                response_serializer=types.ReadSession.serialize,
            ),
            "ReadRows": grpc.unary_stream_rpc_method_handler(
                self._read_rows,
                request_deserializer=types.ReadRowsRequest.deserialize,
                response_serializer=types.ReadRowsResponse.serialize,
            ),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=_UNLIMITED)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        """The gRPC ``host:port``."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop at once, cancelling the calls in flight."""
        self.server.stop(grace=None).wait()

    def break_after(self, rows: int, stream: str | None = None) -> None:
        """Fail the next ReadRows call (of ``stream``, or of any stream) with UNAVAILABLE once
        it has sent ``rows`` rows; a message that would cross that row is cut there."""
        with self.lock:
            self._breaks.append((stream, rows))

    def offsets(self) -> list[int]:
        """The ``offset`` of every ReadRows request, in order."""
        with self.lock:
            return [r.offset for r in self.reads]

    def times_sent(self, stream: str) -> list[int]:
        """How many times each row of ``stream`` was sent (index: the row in the stream)."""
        with self.lock:
            counts = [0] * self._streams[stream].num_rows
            for s in self.sent:
                if s.stream == stream:
                    for row in range(s.start, s.stop):
                        counts[row] += 1
        return counts

    def rows(self, stream: str) -> pa.Table:
        """The rows ``stream`` serves, in order."""
        with self.lock:
            return self._streams[stream]

    def _create_read_session(
        self, request: types.CreateReadSessionRequest, context: grpc.ServicerContext
    ) -> types.ReadSession:
        with self.lock:
            self.sessions.append(request)
            number = len(self.sessions)
        asked = request.read_session
        if asked.data_format != types.DataFormat.ARROW:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this server serves Arrow only")
        if asked.read_options.row_restriction:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this server does not filter rows")
        table = self.table
        if asked.read_options.selected_fields:
            table = table.select(list(asked.read_options.selected_fields))
        count = min(self.max_streams, request.max_stream_count or self.max_streams)
        count = min(count, table.num_rows)  # like BigQuery: no streams for no rows
        # like BigQuery: the session reads one snapshot, the requested one or "now"
        snapshot = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if "table_modifiers" in asked and asked.table_modifiers.snapshot_time:
            snapshot = asked.table_modifiers.snapshot_time
        project = request.parent.removeprefix("projects/")
        name = f"projects/{project}/locations/us/sessions/session{number}"
        bounds = [table.num_rows * i // count for i in range(count + 1)]
        streams = [f"{name}/streams/{i}" for i in range(count)]
        with self.lock:
            for i, stream in enumerate(streams):
                self._streams[stream] = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        return types.ReadSession(
            name=name,
            table=asked.table,
            data_format=types.DataFormat.ARROW,
            arrow_schema=types.ArrowSchema(serialized_schema=table.schema.serialize().to_pybytes()),
            table_modifiers=types.ReadSession.TableModifiers(snapshot_time=snapshot),
            read_options=asked.read_options,
            streams=[types.ReadStream(name=s) for s in streams],
            estimated_row_count=table.num_rows,
        )

    def _take_break(self, stream: str) -> int | None:
        with self.lock:
            for i, (only, rows) in enumerate(self._breaks):
                if only is None or only == stream:
                    del self._breaks[i]
                    return rows
        return None

    def _read_rows(
        self, request: types.ReadRowsRequest, context: grpc.ServicerContext
    ) -> Iterator[types.ReadRowsResponse]:
        stream, offset = request.read_stream, request.offset
        with self.lock:
            self.reads.append(Read(stream, offset))
            rows = self._streams.get(stream)
        if rows is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no such stream: {stream}")
            return  # abort raised
        if offset > rows.num_rows:
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {offset} is past the end of {stream} ({rows.num_rows} rows)",
            )
        break_at = self._take_break(stream)
        stop = rows.num_rows if break_at is None else min(rows.num_rows, offset + break_at)
        position = offset
        while position < stop:
            part = rows.slice(position, min(self.rows_per_message, stop - position))
            response = types.ReadRowsResponse(
                row_count=part.num_rows,
                arrow_record_batch=types.ArrowRecordBatch(
                    serialized_record_batch=part.combine_chunks()
                    .to_batches()[0]
                    .serialize()
                    .to_pybytes(),
                    row_count=part.num_rows,
                ),
            )
            if position == offset:  # like BigQuery, the first message of a call has the schema
                response.arrow_schema = types.ArrowSchema(
                    serialized_schema=rows.schema.serialize().to_pybytes()
                )
            with self.lock:
                self.sent.append(Sent(stream, position, position + part.num_rows))
            yield response
            position += part.num_rows
        if break_at is not None:
            context.abort(grpc.StatusCode.UNAVAILABLE, RESET_DETAILS)


@pytest.fixture(name="storage_server")
def storage_server_fixture(storage_table: pa.Table) -> Iterator[StorageServer]:
    """``storage_server``: a :class:`StorageServer` for one test, serving the ``storage_table``
    fixture (which the test module defines) in two streams of 3-row messages. A test module
    imports ``storage_server_fixture`` to use it."""
    server = StorageServer(storage_table)
    yield server
    server.stop()
