"""Read BigQuery tables through the Storage Read API in Arrow format.

The only module that imports the Google clients. It gets table schemas (``tables.get``),
opens one read session per run (``selected_fields``, ``row_restriction``, one
``snapshot_time``), and yields each stream's Arrow record batches from a row offset, reopening
the stream at the first row not yet yielded after a transient error.

Storage Read errors are handled as RELIABILITY.md c.2 (F5) says: UNAVAILABLE, a reset HTTP/2
stream (INTERNAL "RST_STREAM" or "unexpected EOS") and RESOURCE_EXHAUSTED with a RetryInfo
reopen the stream; any other INTERNAL and RESOURCE_EXHAUSTED without RetryInfo fail; an expired
session is :class:`~bq2pg.errors.SessionExpiredError`.

Endpoints: production BigQuery by default (Application Default Credentials or
``GOOGLE_APPLICATION_CREDENTIALS``); an emulator when ``rest_endpoint`` /
``storage_endpoint`` are given (anonymous credentials, plain gRPC).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from google.api_core import exceptions as gexc

from bq2pg.errors import ConfigError, SessionExpiredError, SourceError, TransientSourceError
from bq2pg.plan import typemap
from bq2pg.plan.tables import Field

log = logging.getLogger(__name__)

#: Reopening one stream: attempts in a row without a new row, and seconds without a new row,
#: before giving up; a reopen that brings rows starts the count again.
READ_RETRY_ATTEMPTS = 8
READ_RETRY_SECONDS = 300.0
#: Backoff between reopens: doubling from the first wait up to the cap, plus up to the first
#: wait of jitter (seconds).
READ_RETRY_INITIAL_S = 0.5
READ_RETRY_MAX_WAIT_S = 30.0
#: The longest wait honoured from a RESOURCE_EXHAUSTED's RetryInfo (seconds): the server's
#: delay is respected, but a run never sleeps unboundedly on one answer.
RETRY_INFO_MAX_S = 60.0
#: The Storage Read API caps a session at 1,000 streams (stream.proto, max_stream_count).
READ_STREAMS_MAX = 1000

_TABLE_REF = re.compile(r"^(?P<project>[A-Za-z0-9_.:-]+?)[.:](?P<dataset>\w+)\.(?P<table>[\w$-]+)$")

#: Worth retrying over REST and gRPC alike. Over REST a 500 or 429 is worth retrying too.
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.BadGateway,
    gexc.GatewayTimeout,
    gexc.DeadlineExceeded,
    gexc.Aborted,
)
#: The INTERNAL errors of a ReadRows call that are a reset HTTP/2 stream, safe to resume
#: (google-cloud-python#9994; RELIABILITY.md F5); any other INTERNAL fails the stream.
_RESUMABLE_INTERNAL = ("RST_STREAM", "Received unexpected EOS on DATA frame")
#: BigQuery's answer to a snapshot time outside the time-travel window
#: (https://cloud.google.com/bigquery/docs/time-travel): "Invalid snapshot time 1601168925462
#: for table p:d.t@1601168925462. Cannot read before 1601573410026."
_SNAPSHOT_TOO_OLD = ("Invalid snapshot time", "Cannot read before")
_READ_BEFORE = re.compile(r"Cannot read before (?P<ms>\d+)")


@dataclass(frozen=True)
class TableRef:
    """``project.dataset.table``."""

    project: str
    dataset: str
    table: str

    @classmethod
    def parse(cls, text: str) -> TableRef:
        """Parse ``project.dataset.table`` (or the legacy ``project:dataset.table``)."""
        m = _TABLE_REF.match(text.strip().strip("`"))
        if not m:
            raise ConfigError(
                f"source table {text!r} is not PROJECT.DATASET.TABLE "
                "(for example patents-public-data.patents.publications)"
            )
        return cls(m["project"], m["dataset"], m["table"])

    @property
    def path(self) -> str:
        """The resource path the Storage Read API wants."""
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{self.table}"

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"


@dataclass(frozen=True)
class TableInfo:
    """What ``tables.get`` says about a table."""

    ref: TableRef
    fields: list[Field]
    num_rows: int | None
    num_bytes: int | None


@dataclass(frozen=True)
class ReadSession:
    """An open read session: its streams, the Arrow schema and the snapshot it reads."""

    name: str
    streams: list[str]
    arrow_schema: pa.Schema
    snapshot_time: dt.datetime | None
    estimated_rows: int | None


def to_field(schema_field: object) -> Field:
    """bq2pg's :class:`Field` for a ``google.cloud.bigquery.SchemaField``."""
    sf = schema_field
    range_type = getattr(sf, "range_element_type", None)
    range_name = getattr(range_type, "element_type", None) if range_type is not None else None
    return Field(
        name=sf.name,  # type: ignore[attr-defined]
        type=typemap.canonical(sf.field_type, range_name),  # type: ignore[attr-defined]
        mode=(sf.mode or "NULLABLE").upper(),  # type: ignore[attr-defined]
        fields=tuple(to_field(s) for s in sf.fields),  # type: ignore[attr-defined]
        precision=sf.precision,  # type: ignore[attr-defined]
        scale=sf.scale,  # type: ignore[attr-defined]
        range_element_type=range_name,
    )


def _over_grpc(exc: Exception) -> bool:
    """Whether ``exc`` came from a gRPC call (the Storage Read API), not from REST."""
    import grpc

    return isinstance(getattr(exc, "response", None), grpc.RpcError)


def _retry_info_s(exc: BaseException | None) -> float | None:
    """The delay a gRPC error's ``google.rpc.RetryInfo`` asks for, in seconds, or None.

    google-api-core unpacks the details of the trailing ``grpc-status-details-bin``.
    """
    from google.rpc import error_details_pb2

    for detail in getattr(exc, "details", None) or ():
        if isinstance(detail, error_details_pb2.RetryInfo) and detail.HasField("retry_delay"):
            return max(0.0, detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9)
    return None


def _translate_grpc(exc: gexc.GoogleAPICallError, what: str) -> Exception | None:
    """The Storage Read API's own cases (RELIABILITY.md F5); None for the common ones."""
    detail = exc.message
    if isinstance(exc, gexc.FailedPrecondition) and "expired" in detail:
        # BigQuery: FAILED_PRECONDITION "there was an error operating on '<stream>': session
        # expired at <time>" (spark-bigquery-connector#1316, google-cloud-go#10671)
        return SessionExpiredError(
            f"{what}: the read session expired ({detail}); read sessions last about 6 hours, "
            "so the rows must be read from a new session at the same snapshot time"
        )
    if isinstance(exc, gexc.BadRequest) and any(m in detail for m in _SNAPSHOT_TOO_OLD):
        earliest = ""
        if m := _READ_BEFORE.search(detail):
            first = dt.datetime.fromtimestamp(int(m["ms"]) / 1000, dt.UTC)
            earliest = f"; the earliest readable time is {first:%Y-%m-%d %H:%M:%S} UTC"
        return SourceError(
            f"{what}: the snapshot time is outside BigQuery's time travel window ({detail})"
            f"{earliest}. BigQuery keeps a table's history only for the dataset's time travel "
            "window (2 to 7 days, 7 by default) and not before the table was created: read a "
            "more recent snapshot, or start a new run, which reads the table as it is now"
        )
    if isinstance(exc, gexc.InternalServerError):
        if any(m in detail for m in _RESUMABLE_INTERNAL):
            return TransientSourceError(f"{what}: the stream was reset (INTERNAL: {detail})")
        return SourceError(
            f"{what}: BigQuery failed (INTERNAL: {detail}); not retried, as only a reset "
            "stream is known to be safe to resume. The rows committed so far are kept: run "
            "the same command again to resume"
        )
    if isinstance(exc, gexc.TooManyRequests):  # RESOURCE_EXHAUSTED
        delay = _retry_info_s(exc)
        if delay is not None:
            return TransientSourceError(
                f"{what}: BigQuery asks to retry in {delay:.1f} s (RESOURCE_EXHAUSTED: {detail})"
            )
        return SourceError(
            f"{what}: a BigQuery quota is exhausted (RESOURCE_EXHAUSTED: {detail}); without a "
            "retry delay from the server this is not retried. Check the Storage Read API "
            "quotas of the billing project, or read with fewer --streams"
        )
    if isinstance(exc, gexc.Unknown):  # a transport error with no status (bigquery-storage#262)
        return TransientSourceError(f"{what}: the connection to BigQuery broke ({detail})")
    return None


def _translate(exc: Exception, what: str) -> Exception:
    """One place where Google client errors become bq2pg errors."""
    if isinstance(exc, gexc.RetryError):  # the client's own retries ran out
        return TransientSourceError(
            f"{what}: BigQuery kept failing while the client retried ({exc.cause or exc})"
        )
    if isinstance(exc, gexc.GoogleAPICallError) and _over_grpc(exc):
        translated = _translate_grpc(exc, what)
        if translated is not None:
            return translated
    if isinstance(exc, (*_TRANSIENT, gexc.InternalServerError, gexc.TooManyRequests)):
        detail = getattr(exc, "message", exc)
        return TransientSourceError(
            f"{what}: BigQuery is unavailable for now ({exc.__class__.__name__}: {detail})"
        )
    if isinstance(exc, gexc.NotFound):
        return SourceError(f"{what}: not found ({getattr(exc, 'message', exc)})")
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized | gexc.PermissionDenied):
        return SourceError(
            f"{what}: permission denied ({getattr(exc, 'message', exc)}); the principal needs "
            "roles/bigquery.readSessionUser on the billing project and "
            "roles/bigquery.dataViewer on the table"
        )
    if isinstance(exc, gexc.BadRequest | gexc.InvalidArgument):
        return SourceError(
            f"{what}: BigQuery rejected the request ({getattr(exc, 'message', exc)})"
        )
    if isinstance(exc, gexc.GoogleAPICallError):
        return SourceError(f"{what}: {exc.__class__.__name__}: {getattr(exc, 'message', exc)}")
    return exc


def check_key_file(path: str | None) -> None:
    """Refuse a service-account key file that others can read (it must be mode 0600 or 0400).

    Application Default Credentials (``gcloud auth application-default login``, an attached
    service account, workload identity) need no key file and are preferred.
    """
    if not path:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"GOOGLE_APPLICATION_CREDENTIALS names {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`, or better use Application Default Credentials"
        )
    log.warning("using a service-account key file; Application Default Credentials are safer")


class Source:
    """Clients for one BigQuery endpoint (production or an emulator)."""

    def __init__(
        self,
        *,
        project: str | None = None,
        rest_endpoint: str | None = None,
        storage_endpoint: str | None = None,
    ) -> None:
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        # The generated client, not the hand-written BigQueryReadClient of
        # google.cloud.bigquery_storage_v1, whose read_rows reconnects by itself: unbounded, at
        # an offset the emulator ignores (duplicating rows), sleeping whatever RetryInfo says.
        # read_stream owns the one resume policy (RELIABILITY.md F5).
        from google.cloud.bigquery_storage_v1.services.big_query_read import BigQueryReadClient

        self.emulated = bool(rest_endpoint or storage_endpoint)
        #: What it takes to make this Source again in another process (``executor``).
        self.endpoints = (project, rest_endpoint, storage_endpoint)
        try:
            if self.emulated:
                import grpc
                from google.auth.credentials import AnonymousCredentials
                from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                    BigQueryReadGrpcTransport,
                )

                if not (rest_endpoint and storage_endpoint):
                    raise ConfigError(
                        "an emulator needs both --bigquery-endpoint (REST) and "
                        "--bigquery-storage-endpoint (gRPC host:port)"
                    )
                credentials = AnonymousCredentials()
                self.bq = bigquery.Client(
                    project=project or "bq2pg",
                    credentials=credentials,
                    client_options=ClientOptions(api_endpoint=rest_endpoint),
                )
                channel = grpc.insecure_channel(
                    storage_endpoint.removeprefix("http://"),
                    options=[
                        ("grpc.max_receive_message_length", -1),
                        ("grpc.max_send_message_length", -1),
                    ],
                )
                self.read = BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
            else:
                check_key_file(os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"))
                self.bq = bigquery.Client(project=project)
                self.read = BigQueryReadClient()
        except ConfigError:
            raise
        except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
            if exc.__class__.__name__ == "DefaultCredentialsError":
                raise ConfigError(
                    "no Google credentials found: run `gcloud auth application-default login` "
                    "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
                ) from exc
            raise
        self.project = project or self.bq.project

    def table(self, ref: TableRef) -> TableInfo:
        """Schema and size of ``ref`` (``tables.get``)."""
        try:
            t = self.bq.get_table(str(ref))
        except Exception as exc:
            raise _translate(exc, f"reading the schema of {ref}") from exc
        return TableInfo(ref, [to_field(f) for f in t.schema], t.num_rows, t.num_bytes)

    def open_session(
        self,
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
            requested.table_modifiers = types.ReadSession.TableModifiers(
                snapshot_time=snapshot_time
            )
        try:
            # the client's default retry covers DEADLINE_EXCEEDED and UNAVAILABLE here (backoff
            # from 0.1 s, 600 s in all); what still fails arrives as RetryError or the error
            session = self.read.create_read_session(
                parent=f"projects/{self.project}",
                read_session=requested,
                max_stream_count=max(1, min(max_streams, READ_STREAMS_MAX)),
            )
        except Exception as exc:
            raise _translate(exc, f"opening a read session on {ref}") from exc
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
        self, session: ReadSession, stream: str, offset: int = 0
    ) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of ``stream`` from row ``offset`` to its end.

        A transient error reopens the stream at the first row not yet yielded, after a bounded
        exponential backoff with jitter, or after the RetryInfo delay BigQuery asks for
        (capped at ``RETRY_INFO_MAX_S``). It gives up after ``READ_RETRY_ATTEMPTS`` reopens or
        ``READ_RETRY_SECONDS`` without a new row. The emulator ignores ``offset`` (it always
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
        give_up_at = time.monotonic() + READ_RETRY_SECONDS
        while True:
            start = 0 if self.emulated else position
            try:
                # retry=None: a failed first message comes here too, not to the client's retry
                for response in self.read.read_rows(read_stream=stream, offset=start, retry=None):
                    if not response.row_count:
                        continue
                    batch = pa.ipc.read_record_batch(
                        pa.py_buffer(response.arrow_record_batch.serialized_record_batch),
                        session.arrow_schema,
                    )
                    if start < position:  # rows the server sent again
                        skip = min(batch.num_rows, position - start)
                        start += skip
                        batch = batch.slice(skip)
                        if batch.num_rows == 0:
                            continue
                    start += batch.num_rows
                    position += batch.num_rows
                    failures = 0
                    give_up_at = time.monotonic() + READ_RETRY_SECONDS
                    yield batch
                return
            except Exception as exc:
                translated = _translate(exc, f"reading stream {stream} at row {position}")
                if translated is exc:
                    raise
                if not isinstance(translated, TransientSourceError):
                    raise translated from exc
                failures += 1
                delay = _retry_info_s(exc)
                if delay is not None:
                    delay = min(delay, RETRY_INFO_MAX_S)
                else:
                    backoff = READ_RETRY_INITIAL_S * 2 ** (failures - 1)
                    delay = min(backoff, READ_RETRY_MAX_WAIT_S)
                    delay += random.uniform(0, READ_RETRY_INITIAL_S)
                if failures >= READ_RETRY_ATTEMPTS or time.monotonic() + delay > give_up_at:
                    raise TransientSourceError(
                        f"{translated}; gave up after {failures} attempts without a new row"
                    ) from exc
                log.warning(
                    "%s; reopening the stream at row %d in %.1f s (attempt %d of %d)",
                    translated, position, delay, failures + 1, READ_RETRY_ATTEMPTS,
                )  # fmt: skip
                time.sleep(delay)


def _schema_field(f: Field) -> object:
    from google.cloud import bigquery

    kwargs: dict[str, object] = {"mode": f.mode}
    if f.fields:
        kwargs["fields"] = [_schema_field(s) for s in f.fields]
    if f.range_element_type:
        kwargs["range_element_type"] = f.range_element_type
    return bigquery.SchemaField(f.name, f.type, **kwargs)  # type: ignore[arg-type]


def create_table(source: Source, ref: TableRef, fields: list[Field] | tuple[Field, ...]) -> None:
    """Create (or re-create) table ``ref`` with ``fields``, and its dataset if missing."""
    from google.cloud import bigquery

    # no client-side retry: a refused schema must fail now, not after 10 minutes of retries
    bq = source.bq
    try:
        bq.create_dataset(f"{ref.project}.{ref.dataset}", exists_ok=True, retry=None, timeout=60)  # type: ignore[arg-type]
        bq.delete_table(str(ref), not_found_ok=True, retry=None, timeout=60)  # type: ignore[arg-type]
        schema = [_schema_field(f) for f in fields]
        bq.create_table(bigquery.Table(str(ref), schema=schema), retry=None, timeout=60)  # type: ignore[arg-type]
    except Exception as exc:
        raise _translate(exc, f"creating {ref}") from exc


def load_arrow(source: Source, ref: TableRef, table: pa.Table) -> int:
    """Append ``table`` to ``ref`` with a load job from Parquet; returns the rows loaded.

    Columns are matched by position (the emulator's load job does so), so ``table`` must have
    the target's columns in order.
    """
    import tempfile

    import pyarrow.parquet as pq
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
    )
    with tempfile.TemporaryFile() as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.seek(0)
        try:
            job = source.bq.load_table_from_file(fh, str(ref), job_config=config)
            job.result()
        except Exception as exc:
            raise _translate(exc, f"loading rows into {ref}") from exc
    return table.num_rows
