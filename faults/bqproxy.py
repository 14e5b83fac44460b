"""A gRPC proxy in front of the emulator's Storage Read API that injects BigQuery's stream errors.

The loader's storage endpoint is ``127.0.0.1:port``; the proxy forwards ``CreateReadSession``,
``ReadRows`` and ``SplitReadStream`` of ``google.cloud.bigquery.storage.v1.BigQueryRead`` to the
emulator, and fails the calls that :meth:`BigQueryProxy.plan` lists, with the status codes and
messages BigQuery sends (RELIABILITY.md c.2, F5). Every request is recorded for the tests.

Where the emulator differs from BigQuery, the proxy behaves like BigQuery:

* ``ReadRows.offset`` is honoured (the emulator always starts at row 0);
* a ``snapshot_time`` older than the time-travel window is refused with BigQuery's message
  (https://cloud.google.com/bigquery/docs/time-travel).

It also re-cuts the Arrow record batches into messages of ``rows_per_message`` rows (the
emulator sends up to 65,536 rows a message), so a small table gives a multi-message stream.
Arrow sessions only.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Literal, NamedTuple

import grpc
import pyarrow as pa
from google.cloud.bigquery_storage_v1 import types
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

SERVICE = "google.cloud.bigquery.storage.v1.BigQueryRead"
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
#: BigQuery's default time-travel window (datasets may set 2 to 7 days).
TIME_TRAVEL = dt.timedelta(days=7)

Method = Literal["CreateReadSession", "ReadRows"]


@dataclass(frozen=True)
class Fault:
    """One planned failure of the next call of ``method``.

    ``details`` may name the stream as ``{stream}``. ``after``: ReadRows messages sent before the
    error (more than the stream has: the error comes after the last one). ``retry_delay_s``: a
    ``google.rpc.RetryInfo`` in the trailing ``grpc-status-details-bin``, as BigQuery attaches to
    a retryable RESOURCE_EXHAUSTED.
    """

    method: Method
    code: grpc.StatusCode
    details: str
    after: int = 0
    retry_delay_s: float | None = None


# The F5 faults, with the messages BigQuery and gRPC really send.
def unavailable(after: int) -> Fault:
    return Fault("ReadRows", grpc.StatusCode.UNAVAILABLE, "Connection reset by peer", after)


def rst_stream(after: int) -> Fault:
    """The HTTP/2 stream reset that gRPC reports as INTERNAL (google-cloud-python#9994)."""
    return Fault(
        "ReadRows", grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2", after
    )


def unexpected_eos(after: int) -> Fault:
    return Fault(
        "ReadRows",
        grpc.StatusCode.INTERNAL,
        "Received unexpected EOS on DATA frame from server",
        after,
    )


def internal(after: int) -> Fault:
    """An INTERNAL that is not a transport reset: not safe to resume."""
    return Fault("ReadRows", grpc.StatusCode.INTERNAL, "Internal error encountered.", after)


def resource_exhausted(after: int, retry_delay_s: float | None = None) -> Fault:
    return Fault(
        "ReadRows",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Exceeded rate limits: too many concurrent streams for this read session",
        after,
        retry_delay_s,
    )


def session_expired(after: int) -> Fault:
    """What BigQuery answers on a stream of an expired session (spark-bigquery-connector#1316)."""
    return Fault(
        "ReadRows",
        grpc.StatusCode.FAILED_PRECONDITION,
        "there was an error operating on '{stream}': session expired at {expired}",
        after,
    )


def deadline_exceeded() -> Fault:
    return Fault("CreateReadSession", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class Read(NamedTuple):
    """One ReadRows request as the proxy received it."""

    stream: str
    offset: int
    at: float  # time.monotonic()


class BigQueryProxy:
    """Forward the Storage Read API on 127.0.0.1:<port> to ``upstream`` (``host:port``)."""

    def __init__(
        self,
        upstream: str,
        *,
        rows_per_message: int | None = None,
        time_travel: dt.timedelta = TIME_TRAVEL,
    ) -> None:
        self.rows_per_message = rows_per_message
        self.time_travel = time_travel
        self.channel = grpc.insecure_channel(upstream, options=_UNLIMITED)
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.sessions: list[types.CreateReadSessionRequest] = []
        self.reads: list[Read] = []
        self.schemas: dict[str, pa.Schema] = {}  # session name -> Arrow schema
        handlers = {
            "CreateReadSession": grpc.unary_unary_rpc_method_handler(self._create_read_session),
            "ReadRows": grpc.unary_stream_rpc_method_handler(self._read_rows),
            "SplitReadStream": grpc.unary_unary_rpc_method_handler(self._split_read_stream),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=_UNLIMITED)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def plan(self, *faults: Fault) -> None:
        """Fail the next calls: each fault applies to the next call of its method, in order."""
        with self.lock:
            self.faults.extend(faults)

    def reset(self) -> None:
        """Forget the planned faults and the recorded requests."""
        with self.lock:
            self.faults.clear()
            self.sessions.clear()
            self.reads.clear()

    def close(self) -> None:
        self.server.stop(grace=None)
        self.channel.close()

    def _take(self, method: Method) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault.method == method:
                    return self.faults.pop(i)
        return None

    @staticmethod
    def _abort(context: grpc.ServicerContext, fault: Fault, stream: str = "") -> None:
        expired = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
        details = fault.details.format(stream=stream, expired=expired.isoformat())
        if fault.retry_delay_s is None:
            context.abort(fault.code, details)
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromTimedelta(dt.timedelta(seconds=fault.retry_delay_s))
        status = status_pb2.Status(code=fault.code.value[0], message=details)
        status.details.add().Pack(info)
        context.abort_with_status(rpc_status.to_status(status))

    @staticmethod
    def _metadata(context: grpc.ServicerContext) -> list[tuple[str, str | bytes]]:
        # the routing header and the emulator's caller header; gRPC sets the rest itself
        return [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]

    def _unary(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            response: bytes = self.channel.unary_unary(f"/{SERVICE}/{method}")(
                request, metadata=self._metadata(context)
            )
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]
        return response

    def _create_read_session(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        parsed = types.CreateReadSessionRequest.deserialize(request)
        with self.lock:
            self.sessions.append(parsed)
        fault = self._take("CreateReadSession")
        if fault:
            self._abort(context, fault)
        read_session = parsed.read_session
        if "table_modifiers" in read_session and read_session.table_modifiers.snapshot_time:
            snapshot = read_session.table_modifiers.snapshot_time
            earliest = dt.datetime.now(dt.UTC) - self.time_travel
            if snapshot < earliest:
                ms, first = int(snapshot.timestamp() * 1000), int(earliest.timestamp() * 1000)
                _, project, _, dataset, _, table = read_session.table.split("/")
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Invalid snapshot time {ms} for table {project}:{dataset}.{table}@{ms}. "
                    f"Cannot read before {first}",
                )
        response = self._unary("CreateReadSession", request, context)
        session = types.ReadSession.deserialize(response)
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        with self.lock:
            self.schemas[session.name] = schema
        return response

    def _split_read_stream(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return self._unary("SplitReadStream", request, context)

    def _read_rows(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        parsed = types.ReadRowsRequest.deserialize(request)
        stream = parsed.read_stream
        with self.lock:
            self.reads.append(Read(stream, parsed.offset, time.monotonic()))
            schema = self.schemas.get(stream.rsplit("/streams/", 1)[0])
        fault = self._take("ReadRows")
        if schema is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"the proxy saw no session for {stream}")
        upstream = self.channel.unary_stream(f"/{SERVICE}/ReadRows")(
            request, metadata=self._metadata(context)
        )
        sent = 0
        try:
            for message in self._recut(upstream, schema, parsed.offset):
                if fault and sent == fault.after:
                    self._abort(context, fault, stream)
                yield message
                sent += 1
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]
        finally:
            upstream.cancel()
        if fault:  # planned after the last message
            self._abort(context, fault, stream)

    def _recut(self, upstream: Iterator[bytes], schema: pa.Schema, offset: int) -> Iterator[bytes]:
        """Upstream's rows from ``offset`` on, in messages of at most ``rows_per_message`` rows."""
        first = True
        for raw in upstream:
            response = types.ReadRowsResponse.deserialize(raw)
            batch = pa.ipc.read_record_batch(
                pa.py_buffer(response.arrow_record_batch.serialized_record_batch), schema
            )
            skip = min(offset, batch.num_rows)  # rows the caller already has
            offset -= skip
            batch = batch.slice(skip)
            step = self.rows_per_message or max(batch.num_rows, 1)
            for start in range(0, batch.num_rows, step):
                part = batch.slice(start, step)
                out = types.ReadRowsResponse(
                    row_count=part.num_rows,
                    arrow_record_batch=types.ArrowRecordBatch(
                        serialized_record_batch=part.serialize().to_pybytes()
                    ),
                    stats=response.stats,
                )
                if first:  # like BigQuery, the first message of a call carries the schema
                    out.arrow_schema = types.ArrowSchema(
                        serialized_schema=schema.serialize().to_pybytes()
                    )
                    first = False
                yield types.ReadRowsResponse.serialize(out)
