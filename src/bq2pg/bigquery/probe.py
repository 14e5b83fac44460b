"""What ``bq2pg doctor`` asks of BigQuery: credentials, endpoints and read permission.

Each probe is short and bounded in time (a doctor must not wait for the clients' ten-minute
retries), and raises a bq2pg error saying what is wrong; judging is :mod:`bq2pg.doctor`'s job.
Credentials are described by their kind and where they come from, never by a token.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from bq2pg.bigquery.client import Source, TableRef, check_key_file, host_port
from bq2pg.bigquery.errors import translate
from bq2pg.errors import ConfigError, SourceError

#: Seconds an endpoint has to answer (REST ``/healthz``, a gRPC channel becoming ready); the
#: emulator answers in milliseconds, so this only bounds a dead one.
ENDPOINT_TIMEOUT_S = 3.0
#: Seconds for the zero-row read session. Without retries: BigQuery answers CreateReadSession
#: in about a second; the client's default retry would wait up to 600 s on UNAVAILABLE.
READ_SESSION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FoundCredentials:
    """Application Default Credentials: what kind, from where, and the project they name."""

    kind: str
    project: str | None


def is_local(source: Source) -> bool:
    """Whether ``source`` is an emulator or a plain-HTTP/loopback endpoint (reached with
    anonymous credentials, so no Google credentials are needed)."""
    return source.plain


def endpoints(source: Source) -> tuple[str | None, str | None]:
    """(REST URL, gRPC ``host:port``) that ``source`` talks to, when set explicitly."""
    _, rest, storage = source.endpoints
    return rest, host_port(storage) if storage else None


def find_credentials() -> FoundCredentials:
    """The Application Default Credentials ``google.auth.default()`` finds (no network, but
    for the Compute Engine metadata server's check when nothing else is found).

    Raises:
        ConfigError: none found, a key file others can read, or a malformed one.
    """
    import google.auth
    from google.auth import _cloud_sdk
    from google.auth.exceptions import DefaultCredentialsError

    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    check_key_file(key_file)
    try:
        credentials, project = google.auth.default()
    except DefaultCredentialsError as exc:
        raise ConfigError(
            f"no usable Google credentials ({exc})",
            hint="run `gcloud auth application-default login`, attach a service account, or "
            "set GOOGLE_APPLICATION_CREDENTIALS to a key file (mode 0600)",
        ) from exc
    path = key_file or _cloud_sdk.get_application_default_credentials_path()
    return FoundCredentials(_describe(credentials, path), project)


def _describe(credentials: object, path: str) -> str:
    """A person's name for the kind of ``credentials`` (from the file ``path``, if any)."""
    module = type(credentials).__module__
    email = getattr(credentials, "service_account_email", None)
    if module == "google.oauth2.credentials":
        return f"authorized user (gcloud ADC) from {path}"
    if module == "google.oauth2.service_account":
        return f"service account key file {path} ({email})"
    if module.startswith("google.auth.compute_engine"):
        return "compute engine metadata (the attached service account)"
    if module == "google.auth.impersonated_credentials":
        return f"impersonated service account from {path}"
    if module.startswith(("google.auth.external_account", "google.auth.identity_pool")):
        return f"workload identity federation (external account) from {path}"
    return f"{type(credentials).__name__} from {path}"


def rest_health(url: str, *, emulator: bool = True, timeout_s: float = ENDPOINT_TIMEOUT_S) -> str:
    """What the REST endpoint says at ``/healthz``: the emulator's version (``bqemulator
    1.4.0``); any HTTP answer from another server (``emulator=False``).

    Raises:
        SourceError: no answer, or (``emulator``) one that is not the emulator's health page.
    """
    target = url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as response:
            raw, status = response.read(4096), response.status
    except urllib.error.HTTPError as exc:
        if not emulator:
            return f"HTTP {exc.code}"
        raise SourceError(
            f"{target} answers HTTP {exc.code}, not the emulator's health page"
        ) from exc
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SourceError(f"no answer from {target} ({reason})") from exc
    if not emulator:
        return f"HTTP {status}"
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = raw[:200]
    if not (isinstance(body, dict) and body.get("status") == "ok"):
        raise SourceError(f"{target} answers {str(body)[:200]}, not status ok")
    return f"bqemulator {body.get('version', '?')}"


def grpc_ready(endpoint: str, timeout_s: float = ENDPOINT_TIMEOUT_S) -> None:
    """Wait until a plain gRPC channel to ``endpoint`` (``host:port``) is ready.

    Raises:
        SourceError: not ready within ``timeout_s``.
    """
    import grpc

    channel = grpc.insecure_channel(host_port(endpoint))
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError as exc:
        raise SourceError(
            f"the Storage Read endpoint {endpoint} is not answering (no gRPC connection within "
            f"{timeout_s:.0f} s)"
        ) from exc
    finally:
        channel.close()


def zero_row_session(
    source: Source, ref: TableRef, timeout_s: float = READ_SESSION_TIMEOUT_S
) -> None:
    """Open a read session on ``ref`` that selects no row (``row_restriction="FALSE"``): it
    needs the same permissions as a load (``bigquery.readsessions.create`` on the billing
    project, ``bigquery.tables.getData`` on the table) and reads nothing.

    Not :func:`bq2pg.bigquery.read.open_session`: that one keeps the client's long retries.

    Raises:
        SourceError: BigQuery refused (not found, permission denied) or did not answer.
    """
    from google.cloud.bigquery_storage_v1 import types

    requested = types.ReadSession(
        table=ref.path,
        data_format=types.DataFormat.ARROW,
        read_options=types.ReadSession.TableReadOptions(row_restriction="FALSE"),
    )
    try:
        source.read.create_read_session(
            parent=f"projects/{source.project}",
            read_session=requested,
            max_stream_count=1,
            retry=None,
            timeout=timeout_s,
        )
    except Exception as exc:
        translated = translate(exc, f"opening a read session on {ref}")
        if translated is exc:
            raise SourceError(
                f"opening a read session on {ref}: {type(exc).__name__}: {exc}"
            ) from exc
        raise translated from exc
