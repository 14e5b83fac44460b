"""Traces: OpenTelemetry spans of a run, exported over OTLP when asked, off by default.

The spans of a run::

    bq2pg.run                          the run (job, target, mode, run id)
      bq2pg.read_session               opening the read session and loading its streams
        CreateReadSession              the Storage Read API call (RPC conventions)
        bq2pg.stream                   one stream (its thread, or its Dask task)
          ReadRows                     each opening of the stream at an offset
          bq2pg.chunk                  one chunk: rows, offsets, bytes
            COPY schema.table          COPY of one table (database conventions)
      bq2pg.verify, bq2pg.publish, bq2pg.postload

With no exporter configured the spans are OpenTelemetry's no-op ones (nothing is recorded).
:func:`configure` turns export on: an explicit endpoint (``--otlp-endpoint``) or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, with
``OTEL_SERVICE_NAME`` and ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` or ``http/protobuf``).
A Dask task continues its run's trace from a W3C ``traceparent`` carried in the task
(:func:`carrier`, :func:`continued`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span as Span
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

Protocol = Literal["grpc", "http/protobuf"]
#: The instrumentation scope of bq2pg's spans.
SCOPE = "bq2pg"
#: The service name when ``OTEL_SERVICE_NAME`` does not say.
SERVICE = "bq2pg"

_provider: trace.TracerProvider | None = None


def tracer() -> Tracer:
    """bq2pg's tracer: from the provider :func:`configure` or :func:`use` installed, else the
    global one (no-op unless an application configured OpenTelemetry itself)."""
    return (_provider or trace.get_tracer_provider()).get_tracer(SCOPE)


def use(provider: trace.TracerProvider | None) -> None:
    """Record bq2pg's spans with ``provider`` (None: the global provider again)."""
    global _provider
    _provider = provider


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The OTLP endpoint the standard variables name, if any."""
    env = os.environ if environ is None else environ
    return (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ) or None


def protocol_for(endpoint: str, environ: Mapping[str, str] | None = None) -> Protocol:
    """The OTLP protocol: the standard variables', else gRPC on port 4317, else HTTP."""
    env = os.environ if environ is None else environ
    said = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if said in ("grpc", "http/protobuf"):
        return said  # type: ignore[return-value]
    return "grpc" if endpoint.rstrip("/").endswith(":4317") else "http/protobuf"


def configure(
    endpoint: str | None = None,
    *,
    protocol: Protocol | None = None,
    service_name: str | None = None,
    version: str = "",
    environ: Mapping[str, str] | None = None,
) -> Any:
    """Export bq2pg's spans over OTLP to ``endpoint`` (or the standard variables' endpoint).

    Returns the SDK's ``TracerProvider`` (call ``shutdown()`` to flush at exit), or None when no
    endpoint is configured (tracing stays off).
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if environ is None else environ
    # a full URL only when it came from the traces variable; otherwise a base URL
    full_url = not endpoint and bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    endpoint = endpoint or endpoint_from_env(env)
    if not endpoint:
        return None
    protocol = protocol or protocol_for(endpoint, env)
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        url = endpoint.rstrip("/")
        if not full_url and not url.endswith("/v1/traces"):
            url += "/v1/traces"  # a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is
        exporter = HttpExporter(endpoint=url)
    resource = Resource.create(
        {
            "service.name": service_name or env.get("OTEL_SERVICE_NAME") or SERVICE,
            "service.version": version,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)
    return provider


@contextlib.contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, /, **attributes: Any) -> Iterator[Span]:
    """A span named ``name`` under the current one (``kind``: CLIENT for a call to a server);
    an exception ends it with an error status (and SQLSTATE, when the error has one)."""
    with tracer().start_as_current_span(
        name,
        kind=kind,
        attributes={k: v for k, v in attributes.items() if v is not None},
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            failed(current, exc)
            raise


#: A call to BigQuery or PostgreSQL.
CLIENT = SpanKind.CLIENT


def failed(current: Span, exc: BaseException) -> None:
    """Mark ``current`` as failed by ``exc``: error status, the exception, SQLSTATE if any."""
    if not current.is_recording():
        return
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        current.set_attribute("db.response.status_code", sqlstate)
    current.set_attribute("error.type", type(exc).__qualname__)
    current.record_exception(exc)
    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``), for a Dask task."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextlib.contextmanager
def continued(headers: Mapping[str, str]) -> Iterator[None]:
    """Continue the trace of ``headers`` (:func:`carrier`) in this thread."""
    token = otel_context.attach(propagate.extract(dict(headers)))
    try:
        yield
    finally:
        otel_context.detach(token)
