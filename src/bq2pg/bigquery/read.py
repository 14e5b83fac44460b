"""Reading through the Storage Read API in Arrow: one session per run, streams from an offset.

A run opens one read session (``selected_fields``, ``row_restriction``, one ``snapshot_time``)
and reads each of its streams from a row offset, reopening a stream at the first row not yet
yielded after a transient error (:data:`bq2pg.retry.READ`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from bq2pg import retry
from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.errors import retry_info_s, translate
from bq2pg.errors import TransientSourceError
from bq2pg.observe import metrics, tracing
from bq2pg.observe.log import get_logger

log = get_logger(__name__)
#: The Storage Read API's service, for the spans' RPC attributes.
SERVICE = "google.cloud.bigquery.storage.v1.BigQueryRead"

#: The Storage Read API caps a session at 1,000 streams (stream.proto, max_stream_count).
READ_STREAMS_MAX = 1000


@dataclass(frozen=True)
class ReadSession:
    """An open read session: its streams, the Arrow schema and the snapshot it reads."""

    name: str
    streams: list[str]
    arrow_schema: pa.Schema
    snapshot_time: dt.datetime | None
    estimated_rows: int | None


def open_session(
    source: Source,
    ref: TableRef,
    *,
    selected_fields: list[str] | None = None,
    row_restriction: str | None = None,
    max_streams: int = 1,
    snapshot_time: dt.datetime | None = None,
) -> ReadSession:
    """Open one Storage Read session in Arrow format for the whole run."""
    from google.cloud.bigquery_storage_v1 import types

    read_options = types.ReadSession.TableReadOptions(
        selected_fields=selected_fields or [], row_restriction=row_restriction or ""
    )
    requested = types.ReadSession(
        table=ref.path, data_format=types.DataFormat.ARROW, read_options=read_options
    )
    if snapshot_time is not None:
        requested.table_modifiers = types.ReadSession.TableModifiers(snapshot_time=snapshot_time)
    try:
        # the client's default retry covers DEADLINE_EXCEEDED and UNAVAILABLE here (backoff
        # from 0.1 s, 600 s in all); what still fails arrives as RetryError or the error
        with tracing.span(
            f"{SERVICE}/CreateReadSession",
            tracing.CLIENT,
            **_rpc("CreateReadSession"),
            **{"bq2pg.table": str(ref)},
        ):
            session = source.read.create_read_session(
                parent=f"projects/{source.project}",
                read_session=requested,
                max_stream_count=max(1, min(max_streams, READ_STREAMS_MAX)),
            )
    except Exception as exc:
        raise translate(exc, f"opening a read session on {ref}") from exc
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    snapshot = None
    if session.table_modifiers and session.table_modifiers.snapshot_time:
        snapshot = session.table_modifiers.snapshot_time
    estimated = getattr(session, "estimated_row_count", None) or None
    return ReadSession(
        name=session.name,
        streams=[s.name for s in session.streams],
        arrow_schema=schema,
        snapshot_time=snapshot or snapshot_time,
        estimated_rows=estimated,
    )


def read_stream(
    source: Source, session: ReadSession, stream: str, offset: int = 0
) -> Iterator[pa.RecordBatch]:
    """Arrow record batches of ``stream`` from row ``offset`` to its end.

    A transient error reopens the stream at the first row not yet yielded, after a bounded
    exponential backoff with jitter, or after the RetryInfo delay BigQuery asks for
    (capped at ``retry.RETRY_INFO_MAX_S``). It gives up after ``retry.READ.attempts``
    reopens or ``retry.READ.seconds`` without a new row. The emulator ignores ``offset`` (it always
    starts at row 0), so against it the rows before ``offset`` are read and dropped here.

    Raises:
        TransientSourceError: the stream kept failing in a retryable way.
        SessionExpiredError: the read session expired.
        SourceError: BigQuery failed in a way that is not safe to retry.
    """
    # A loop rather than tenacity: the budget is "in a row without a new row" (a reopen
    # that brings rows starts it again, so a long stream survives occasional resets), and
    # the wait comes from the server's RetryInfo when it sends one.
    position = offset
    failures = 0
    give_up_at = time.monotonic() + retry.READ.seconds
    received = metrics.READ_BYTES.labels(*metrics.run_labels())
    while True:
        start = 0 if source.emulated else position
        # not the current span: a generator's context would leak into its consumer's
        opening = tracing.tracer().start_span(
            f"{SERVICE}/ReadRows",
            kind=tracing.CLIENT,
            attributes={**_rpc("ReadRows"), "bq2pg.offset": start},
        )
        rows = nbytes = 0
        try:
            # retry=None: a failed first message comes here too, not to the client's retry
            for response in source.read.read_rows(read_stream=stream, offset=start, retry=None):
                if not response.row_count:
                    continue
                payload = response.arrow_record_batch.serialized_record_batch
                received.inc(len(payload))
                nbytes += len(payload)
                batch = pa.ipc.read_record_batch(pa.py_buffer(payload), session.arrow_schema)
                if start < position:  # rows the server sent again
                    skip = min(batch.num_rows, position - start)
                    start += skip
                    batch = batch.slice(skip)
                    if batch.num_rows == 0:
                        continue
                start += batch.num_rows
                position += batch.num_rows
                rows += batch.num_rows
                failures = 0
                give_up_at = time.monotonic() + retry.READ.seconds
                yield batch
            _ended(opening, rows, nbytes)
            return
        except BaseException as exc:
            _ended(opening, rows, nbytes, exc)
            if not isinstance(exc, Exception):
                raise
            translated = translate(exc, f"reading stream {stream} at row {position}")
            if translated is exc:
                raise
            if not isinstance(translated, TransientSourceError):
                raise translated from exc
            failures += 1
            delay = retry_info_s(exc)
            if delay is not None:
                delay = min(delay, retry.RETRY_INFO_MAX_S)
            else:
                delay = retry.READ.wait_s(failures)
            if failures >= retry.READ.attempts or time.monotonic() + delay > give_up_at:
                raise TransientSourceError(
                    f"{translated}; gave up after {failures} attempts without a new row"
                ) from exc
            metrics.RETRIES.labels(retry.READ.kind).inc()
            log.warning(
                "stream.retried", error=str(translated), row=position, wait_s=round(delay, 2),
                attempt=failures + 1, attempts=retry.READ.attempts,
            )  # fmt: skip
            time.sleep(delay)


def _rpc(method: str) -> dict[str, str]:
    """The RPC semantic conventions' attributes of a Storage Read API call."""
    return {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}


def _ended(span: tracing.Span, rows: int, nbytes: int, exc: BaseException | None = None) -> None:
    """End a ``ReadRows`` span with what the opening brought."""
    if span.is_recording():
        span.set_attribute("bq2pg.rows", rows)
        span.set_attribute("bq2pg.bytes", nbytes)
        if exc is not None and not isinstance(exc, GeneratorExit):
            tracing.failed(span, exc)
    span.end()
