"""A local OTLP trace receiver for tests: OTLP/HTTP (protobuf) and OTLP/gRPC on free ports.

:class:`OtlpReceiver` decodes ``ExportTraceServiceRequest`` messages with the official
``opentelemetry-proto`` types and keeps every span as a :class:`ReceivedSpan`, so that a test can
run a real exporter (or a real ``bq2pg copy --otlp-endpoint``) against it and check what arrived.

Not served: OTLP/JSON, metrics and logs.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

Transport = Literal["http", "grpc"]
TRACES_PATH = "/v1/traces"
_PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it; ids are lowercase hex."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: int
    attributes: dict[str, Any]
    status_code: int
    service_name: str | None
    transport: Transport


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (``None`` when unset)."""
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if field == "kvlist_value":
        return key_values(value.kvlist_value.values)
    return getattr(value, field)


def key_values(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP ``KeyValue`` pairs as a dict."""
    return {kv.key: any_value(kv.value) for kv in pairs}


def decode_spans(
    request: trace_service_pb2.ExportTraceServiceRequest, transport: Transport
) -> list[ReceivedSpan]:
    """Every span of an export request, in the order it holds them."""
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = key_values(resource_spans.resource.attributes)
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        kind=int(span.kind),
                        attributes=key_values(span.attributes),
                        status_code=int(span.status.code),
                        service_name=service if isinstance(service, str) else None,
                        transport=transport,
                    )
                )
    return spans


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """The gRPC ``TraceService``: hands each request to the receiver."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver._record(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def _handler(receiver: OtlpReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler class bound to ``receiver``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != TRACES_PATH:
                self._reply(404, b"not found", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip()
            if content_type.lower() != _PROTOBUF:
                self._reply(415, b"only application/x-protobuf", "text/plain")
                return
            encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding != "identity":
                    self._reply(415, b"unsupported Content-Encoding", "text/plain")
                    return
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            except (OSError, EOFError, zlib.error, DecodeError):
                self._reply(400, b"undecodable body", "text/plain")
                return
            receiver._record(request, "http")
            response = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self._reply(200, response, _PROTOBUF)

        def do_GET(self) -> None:
            self._reply(404, b"not found", "text/plain")

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class OtlpReceiver:
    """OTLP/HTTP and OTLP/gRPC trace receivers on ``127.0.0.1`` free ports, as a context manager.

    ``with OtlpReceiver() as receiver:`` starts both; leaving the block stops both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._requests: dict[Transport, int] = {"http": 0, "grpc": 0}
        self._http: http.server.ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None
        self._grpc_port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Start both servers (``__enter__`` does this)."""
        if self._http is not None:
            raise RuntimeError("OtlpReceiver already started")
        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-http-receiver",
            daemon=True,
        )
        self._http_thread.start()
        try:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
            self._grpc_port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            self._grpc = server
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop both servers; safe to call twice."""
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- endpoints --------------------------------------------------------------------------

    @property
    def http_endpoint(self) -> str:
        """Base URL, for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends ``/v1/traces``)."""
        if self._http is None:
            raise RuntimeError("OtlpReceiver not started")
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def http_traces_url(self) -> str:
        """Full traces URL, for the HTTP exporter's ``endpoint=`` argument."""
        return self.http_endpoint + TRACES_PATH

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the gRPC receiver (plaintext)."""
        if self._grpc is None or self._grpc_port is None:
            raise RuntimeError("OtlpReceiver not started")
        return f"http://127.0.0.1:{self._grpc_port}"

    # -- what arrived -----------------------------------------------------------------------

    def _record(self, request: trace_service_pb2.ExportTraceServiceRequest, via: Transport) -> None:
        spans = decode_spans(request, via)
        with self._lock:
            self._spans.extend(spans)
            self._requests[via] += 1

    def spans(self) -> list[ReceivedSpan]:
        """A copy of every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    @property
    def requests(self) -> dict[Transport, int]:
        """Export requests accepted so far, per transport: ``{"http": n, "grpc": n}``."""
        with self._lock:
            return dict(self._requests)

    def clear(self) -> None:
        """Forget the spans and request counts received so far."""
        with self._lock:
            self._spans.clear()
            self._requests = {"http": 0, "grpc": 0}

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], object],
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Poll until ``predicate(spans())`` is true and return those spans.

        Raises:
            AssertionError: after ``timeout`` seconds, naming the spans received.
        """
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() >= deadline:
                names = [f"{s.name} ({s.transport})" for s in spans]
                raise AssertionError(
                    f"OTLP receiver: condition not met after {timeout:g}s; "
                    f"{len(names)} span(s) received: {names}; requests: {self.requests}"
                )
            time.sleep(0.02)
