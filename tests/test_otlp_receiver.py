"""The OTLP test receiver decodes what the real OpenTelemetry SDK exports, over HTTP and gRPC."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AnyValue

from otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.timeout(60)

ATTRIBUTES: dict[str, AnyValue] = {
    "table": "patents.publications",
    "rows": 12345,
    "ratio": 0.25,
    "resumed": True,
    "columns": ["id", "title", "claims"],
}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def export_parent_and_child(exporter: SpanExporter) -> tuple[str, str, str]:
    """Export a parent and an erroring child span; return (trace id, parent id, child id) as hex."""
    provider = TracerProvider(resource=Resource.create({"service.name": "receiver-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        tracer = provider.get_tracer("tests.otlp_receiver")
        with (
            tracer.start_as_current_span("copy", kind=SpanKind.INTERNAL) as parent,
            tracer.start_as_current_span("read-stream", kind=SpanKind.CLIENT) as child,
        ):
            child.set_attributes(ATTRIBUTES)
            child.set_status(Status(StatusCode.ERROR, "stream broke"))
        assert provider.force_flush(5_000)
    finally:
        provider.shutdown()
    parent_ctx, child_ctx = parent.get_span_context(), child.get_span_context()
    return (
        f"{parent_ctx.trace_id:032x}",
        f"{parent_ctx.span_id:016x}",
        f"{child_ctx.span_id:016x}",
    )


def check_parent_and_child(
    spans: list[ReceivedSpan], ids: tuple[str, str, str], transport: str
) -> None:
    trace_id, parent_id, child_id = ids
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"copy", "read-stream"}
    parent, child = by_name["copy"], by_name["read-stream"]
    assert parent.trace_id == child.trace_id == trace_id
    assert parent.span_id == parent_id
    assert parent.parent_span_id is None
    assert child.span_id == child_id
    assert child.parent_span_id == parent_id
    assert parent.kind == trace_pb2.Span.SPAN_KIND_INTERNAL
    assert child.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert child.attributes == ATTRIBUTES
    assert isinstance(child.attributes["rows"], int)
    assert isinstance(child.attributes["resumed"], bool)
    assert isinstance(child.attributes["ratio"], float)
    assert parent.attributes == {}
    assert child.status_code == trace_pb2.Status.STATUS_CODE_ERROR
    assert parent.status_code == trace_pb2.Status.STATUS_CODE_UNSET
    assert {span.service_name for span in spans} == {"receiver-test"}
    assert {span.transport for span in spans} == {transport}


def test_http(receiver: OtlpReceiver) -> None:
    assert receiver.http_traces_url == receiver.http_endpoint + "/v1/traces"
    ids = export_parent_and_child(HttpSpanExporter(endpoint=receiver.http_traces_url, timeout=5))
    spans = receiver.wait_for(lambda spans: len(spans) >= 2, timeout=5)
    check_parent_and_child(spans, ids, "http")
    assert receiver.requests == {"http": 2, "grpc": 0}


def test_http_gzip(receiver: OtlpReceiver) -> None:
    exporter = HttpSpanExporter(
        endpoint=receiver.http_traces_url, compression=Compression.Gzip, timeout=5
    )
    ids = export_parent_and_child(exporter)
    spans = receiver.wait_for(lambda spans: len(spans) >= 2, timeout=5)
    check_parent_and_child(spans, ids, "http")


def test_grpc(receiver: OtlpReceiver) -> None:
    assert receiver.grpc_endpoint.startswith("http://127.0.0.1:")
    exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
    ids = export_parent_and_child(exporter)
    spans = receiver.wait_for(lambda spans: len(spans) >= 2, timeout=5)
    check_parent_and_child(spans, ids, "grpc")
    assert receiver.requests == {"http": 0, "grpc": 2}


def test_nested_values_and_bytes(receiver: OtlpReceiver) -> None:
    """kvlist, nested arrays and bytes, which the SDK never sends, posted by hand."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "raw", b"\x01" * 16, b"\x02" * 8
    attribute = span.attributes.add()
    attribute.key = "nested"
    entry = attribute.value.kvlist_value.values.add()
    entry.key = "blob"
    entry.value.bytes_value = b"\x00\xff"
    entry = attribute.value.kvlist_value.values.add()
    entry.key = "list"
    entry.value.array_value.values.add().int_value = 7
    entry.value.array_value.values.add().double_value = 1.5
    post(receiver.http_traces_url, gzip.compress(request.SerializeToString()), gzip_=True)
    (received,) = receiver.spans()
    assert received.attributes == {"nested": {"blob": b"\x00\xff", "list": [7, 1.5]}}
    assert received.service_name is None
    assert received.trace_id == "01" * 16
    assert received.parent_span_id is None


def post(url: str, body: bytes, *, gzip_: bool = False, content_type: str = "") -> int:
    """POST ``body`` and return the HTTP status."""
    headers = {"Content-Type": content_type or "application/x-protobuf"}
    if gzip_:
        headers["Content-Encoding"] = "gzip"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_http_refusals(receiver: OtlpReceiver) -> None:
    body = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
    assert post(receiver.http_endpoint + "/v1/metrics", body) == 404
    assert post(receiver.http_traces_url, b"{}", content_type="application/json") == 415
    assert post(receiver.http_traces_url, b"not gzip", gzip_=True) == 400
    assert post(receiver.http_traces_url, body) == 200
    assert receiver.requests == {"http": 1, "grpc": 0}


def test_wait_for_times_out_with_names(receiver: OtlpReceiver) -> None:
    with pytest.raises(AssertionError, match=r"0 span\(s\) received"):
        receiver.wait_for(lambda spans: bool(spans), timeout=0.1)


def test_exit_stops_both_servers() -> None:
    with OtlpReceiver() as receiver:
        url = receiver.http_traces_url
        target = receiver.grpc_endpoint.removeprefix("http://")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, data=b"", timeout=2)
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=0.5)
