"""The BigQuery clients: table references, table schemas (``tables.get``), credentials.

The ``bigquery`` subpackage is the only one that imports the Google clients: ``client`` makes
them, ``read`` reads through the Storage Read API, ``errors`` translates their errors, and
``seed`` writes tables (only to seed the emulator).

Endpoints: production BigQuery by default (Application Default Credentials or
``GOOGLE_APPLICATION_CREDENTIALS``). ``rest_endpoint`` / ``storage_endpoint`` choose other
endpoints, which are real BigQuery unless said otherwise: a regional or Private Service Connect
endpoint honours read offsets and bills every row read again. ``emulator=True`` (or an
emulator found answering at a plain-HTTP REST endpoint) marks a server that ignores read
offsets. Loopback and ``http://`` endpoints, and emulators, are reached without TLS and with
anonymous credentials.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass

from bq2pg.bigquery.errors import translate
from bq2pg.errors import ConfigError
from bq2pg.plan import typemap
from bq2pg.plan.tables import Field

log = logging.getLogger(__name__)

_TABLE_REF = re.compile(r"^(?P<project>[A-Za-z0-9_.:-]+?)[.:](?P<dataset>\w+)\.(?P<table>[\w$-]+)$")


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


_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def host_port(endpoint: str) -> str:
    """``host:port`` of a gRPC endpoint written with or without a scheme."""
    return endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")


def is_plain(endpoint: str) -> bool:
    """Reached without TLS: an ``http://`` URL, or a loopback host written without
    ``https://`` (a local TLS tunnel to BigQuery keeps TLS and real credentials)."""
    if endpoint.startswith("http://"):
        return True
    if endpoint.startswith("https://"):
        return False
    hostport = host_port(endpoint)
    if hostport in _LOOPBACK:
        return True
    return hostport.rsplit(":", 1)[0] in _LOOPBACK


def is_emulator(rest_endpoint: str, timeout_s: float = 3.0) -> bool:
    """Whether the plain-HTTP ``rest_endpoint`` is the bqemulator (its ``/healthz`` answers
    ``{"status": "ok", "version": ...}``; BigQuery's endpoints have no such page). HTTPS
    endpoints are real BigQuery and are not asked."""
    if not rest_endpoint.startswith("http://"):
        return False
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(rest_endpoint.rstrip("/") + "/healthz", timeout=timeout_s) as r:
            body = json.loads(r.read(4096) or b"null")
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok" and "version" in body


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
    """Clients for one BigQuery endpoint (production, another endpoint, or an emulator).

    Args:
        project: the billing project (the read sessions' parent).
        rest_endpoint: the BigQuery REST endpoint, e.g. ``https://bigquery.europe-west3.rep.
            googleapis.com`` or an emulator's ``http://127.0.0.1:9050``.
        storage_endpoint: the Storage Read API gRPC endpoint (``host:port``).
        emulator: the server is an emulator that ignores read offsets (a broken stream is then
            reopened at row 0 and the rows already received are dropped); ``None``: ask the
            plain-HTTP REST endpoint whether it is the bqemulator (``/healthz``).
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        rest_endpoint: str | None = None,
        storage_endpoint: str | None = None,
        emulator: bool | None = None,
    ) -> None:
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        # The generated client, not the hand-written BigQueryReadClient of
        # google.cloud.bigquery_storage_v1, whose read_rows reconnects by itself: unbounded, at
        # an offset the emulator ignores (duplicating rows), sleeping whatever RetryInfo says.
        # read_stream owns the one resume policy (RELIABILITY.md F5).
        from google.cloud.bigquery_storage_v1.services.big_query_read import BigQueryReadClient

        if emulator is None:
            emulator = bool(rest_endpoint) and is_emulator(rest_endpoint or "")
        #: The server ignores read offsets (``read_stream`` reads from row 0 and skips).
        self.emulated = emulator
        plain = emulator or any(is_plain(e) for e in (rest_endpoint, storage_endpoint) if e)
        #: Reached without TLS and with anonymous credentials (an emulator, loopback, http://).
        self.plain = plain
        #: What it takes to make this Source again in another process (``executor``).
        self.endpoints = (project, rest_endpoint, storage_endpoint)
        try:
            if plain:
                import grpc
                from google.auth.credentials import AnonymousCredentials
                from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                    BigQueryReadGrpcTransport,
                )

                if not (rest_endpoint and storage_endpoint):
                    raise ConfigError(
                        "a local or emulated BigQuery needs both --bigquery-endpoint (REST) and "
                        "--bigquery-storage-endpoint (gRPC host:port)"
                    )
                credentials = AnonymousCredentials()
                self.bq = bigquery.Client(
                    project=project or "bq2pg",
                    credentials=credentials,
                    client_options=ClientOptions(api_endpoint=rest_endpoint),
                )
                channel = grpc.insecure_channel(
                    host_port(storage_endpoint),
                    options=[
                        ("grpc.max_receive_message_length", -1),
                        ("grpc.max_send_message_length", -1),
                    ],
                )
                self.read = BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
            else:
                check_key_file(os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"))
                self.bq = bigquery.Client(
                    project=project,
                    client_options=ClientOptions(api_endpoint=rest_endpoint)
                    if rest_endpoint
                    else None,
                )
                self.read = BigQueryReadClient(
                    client_options=(
                        ClientOptions(api_endpoint=host_port(storage_endpoint))
                        if storage_endpoint
                        else None
                    )
                )
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
            raise translate(exc, f"reading the schema of {ref}") from exc
        return TableInfo(ref, [to_field(f) for f in t.schema], t.num_rows, t.num_bytes)
