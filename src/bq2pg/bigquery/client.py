"""The BigQuery clients: table references, table schemas (``tables.get``), credentials.

The ``bigquery`` subpackage is the only one that imports the Google clients: ``client`` makes
them, ``read`` reads through the Storage Read API, ``errors`` translates their errors, and
``seed`` writes tables (only to seed the emulator).

Endpoints: production BigQuery by default (Application Default Credentials or
``GOOGLE_APPLICATION_CREDENTIALS``); an emulator when ``rest_endpoint`` /
``storage_endpoint`` are given (anonymous credentials, plain gRPC).
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
            raise translate(exc, f"reading the schema of {ref}") from exc
        return TableInfo(ref, [to_field(f) for f in t.schema], t.num_rows, t.num_bytes)
