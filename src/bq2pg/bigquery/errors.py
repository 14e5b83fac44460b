"""The BigQuery boundary: Google client errors become bq2pg errors here, once.

Storage Read errors are handled as RELIABILITY.md c.2 (F5) says: UNAVAILABLE, a reset HTTP/2
stream (INTERNAL "RST_STREAM" or "unexpected EOS") and RESOURCE_EXHAUSTED with a RetryInfo are
:class:`~bq2pg.errors.TransientSourceError` (the stream is reopened); any other INTERNAL and
RESOURCE_EXHAUSTED without RetryInfo are terminal; an expired session is
:class:`~bq2pg.errors.SessionExpiredError`.
"""

from __future__ import annotations

import datetime as dt
import re

from google.api_core import exceptions as gexc

from bq2pg.errors import SessionExpiredError, SourceError, TransientSourceError

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


def _over_grpc(exc: Exception) -> bool:
    """Whether ``exc`` came from a gRPC call (the Storage Read API), not from REST."""
    import grpc

    return isinstance(getattr(exc, "response", None), grpc.RpcError)


def retry_info_s(exc: BaseException | None) -> float | None:
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
        delay = retry_info_s(exc)
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


def translate(exc: Exception, what: str) -> Exception:
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
