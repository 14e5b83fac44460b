"""The keys of ``bq2pg.yaml`` and their types (pydantic): targets, sources, jobs, defaults,
budget and environments.

A job's keys are the options of ``bq2pg copy`` and ``bq2pg patents``, spelled as the option
(``--recent-days`` is ``recent_days`` or ``recent-days``), plus ``kind``, ``target`` (a name
under ``targets``; ``to`` is the same key, as the option spells it), ``bigquery`` (a name
under ``sources``) and the budget keys. :data:`BUILTIN` holds the built-in defaults, which are
the command line's (``tests/test_config_file.py`` checks that both agree).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from bq2pg.config.settings import DEFAULT_STREAMS

Kind = Literal["copy", "patents"]


def _comma_list(value: Any) -> Any:
    """A YAML list of names is the option's comma-separated text."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


CommaList = Annotated[str | None, BeforeValidator(_comma_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TargetConfig(_Strict):
    """A named PostgreSQL connection. ``url`` may be a URL or a conninfo string; the other keys
    are libpq's and override the URL's (``password`` is usually a secret reference)."""

    url: str | None = None
    password: str | None = None
    user: str | None = None
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    sslmode: str | None = None
    service: str | None = None


class SourceConfig(_Strict):
    """A named BigQuery endpoint: billing project, credentials, endpoints, emulation."""

    project: str | None = None
    #: A service-account key file (``GOOGLE_APPLICATION_CREDENTIALS``); ADC when absent.
    credentials: str | None = None
    bigquery_endpoint: str | None = None
    bigquery_storage_endpoint: str | None = None
    #: The server ignores read offsets (the bqemulator); None: detect it.
    emulator: bool | None = None


class BudgetConfig(_Strict):
    """Refuse a run whose estimate exceeds these; the price turns bytes into dollars."""

    max_bytes: int | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, ge=0)
    price_per_tib_usd: float | None = Field(default=None, ge=0)


class JobOptions(_Strict):
    """Every key a job may set; all optional (``defaults`` and environments set some)."""

    kind: Kind | None = None
    target: str | None = Field(default=None, alias="to")
    bigquery: str | None = None
    # copy and patents
    source: str | None = None
    limit: int | None = Field(default=None, ge=0)
    streams: int | None = Field(default=None, ge=1)
    checksum: bool | None = None
    executor: str | None = None
    resume: bool | None = None
    dry_run: bool | None = None
    max_bytes: int | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, ge=0)
    project: str | None = None
    bigquery_endpoint: str | None = None
    bigquery_storage_endpoint: str | None = None
    emulator: bool | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_linger: float | None = Field(default=None, ge=0)
    pushgateway: str | None = None
    otlp_endpoint: str | None = None
    #: Quality rules: a list (on the job's target table) or a mapping of tables to lists.
    quality: dict[str, Any] | list[Any] | None = None
    quality_file: str | None = None
    skip_quality: bool | None = None
    quality_samples: int | None = Field(default=None, ge=0, le=1000)
    profile: bool | None = None
    anomaly_severity: Literal["warn", "error"] | None = None
    #: When the service's workers run the job: a cron expression (``0 3 * * *``, UTC).
    schedule: str | None = None
    # copy
    table: str | None = None
    columns: CommaList = None
    where: str | None = None
    mode: Literal["replace", "append", "merge"] | None = None
    key: CommaList = None
    nested: Literal["jsonb", "tables"] | None = None
    drop: bool | None = None
    incremental: str | None = None
    lag: str | None = None
    # patents
    schema_: str | None = Field(default=None, alias="schema")
    test: bool | None = None
    year: int | None = None
    recent_days: int | None = Field(default=None, ge=0)
    country: CommaList = None
    kind_codes: CommaList = None
    full_text: bool | None = None
    drop_tables: bool | None = None
    with_cpc_definitions: bool | None = None
    cpc_source: str | None = None
    default_rules: bool | None = None


class LineageConfig(_Strict):
    """Where OpenLineage events go (off when unset and ``OPENLINEAGE_URL`` /
    ``OPENLINEAGE_CONFIG`` are unset): ``http`` (url, endpoint, api_key), ``file`` (path) or
    ``console``."""

    transport: Literal["http", "file", "console"] | None = None
    url: str | None = None
    endpoint: str | None = None
    api_key: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    path: str | None = None
    namespace: str | None = None


class ServiceConfig(_Strict):
    """The service (``bq2pg serve`` and ``bq2pg worker``): where its queue lives, how it
    listens, and its limits."""

    #: The target (a name under ``targets``, or a URL) holding the queue and the API keys;
    #: default: the ``defaults`` target, else ``BQ2PG_DATABASE_URL``.
    database: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    #: Serve ``/metrics`` without a key (for a Prometheus that scrapes without one).
    metrics_open: bool | None = None
    #: Origins allowed to call the API from a browser (none by default: no CORS).
    cors_origins: list[str] | None = None
    #: Seconds between a worker's heartbeats, and without one before a run is reaped.
    heartbeat_s: float | None = Field(default=None, gt=0)
    reaper_timeout_s: float | None = Field(default=None, gt=0)
    #: Queue a run that the reaper marked interrupted again, to resume it.
    auto_resume: bool | None = None
    #: Bounds: request body bytes, page size, open event streams, failed logins per minute.
    max_body_bytes: int | None = Field(default=None, ge=1024)
    max_page: int | None = Field(default=None, ge=1)
    max_event_streams: int | None = Field(default=None, ge=1)
    max_auth_failures: int | None = Field(default=None, ge=1)
    #: Signs the dashboard's session cookies (a secret reference; default: random per process).
    session_secret: str | None = None


class Environment(_Strict):
    """What an environment overrides: any section but ``environments``."""

    targets: dict[str, TargetConfig] = {}
    sources: dict[str, SourceConfig] = {}
    jobs: dict[str, JobOptions] = {}
    defaults: JobOptions = JobOptions()
    budget: BudgetConfig = BudgetConfig()
    #: Quality rules of any job's tables: a mapping of tables to lists of rules.
    quality: dict[str, Any] = {}
    lineage: LineageConfig = LineageConfig()
    service: ServiceConfig = ServiceConfig()


class Document(Environment):
    """A whole ``bq2pg.yaml``."""

    environments: dict[str, Environment] = {}


def key_name(field: str) -> str:
    """The key as written in the file (``schema_`` is ``schema``)."""
    info = JobOptions.model_fields.get(field)
    return info.alias if info is not None and info.alias and field != "target" else field


#: The keys of each section, as written (``to`` is a second spelling of ``target``).
JOB_KEYS = frozenset(key_name(f) for f in JobOptions.model_fields) | {"to"}
TARGET_KEYS = frozenset(TargetConfig.model_fields)
SOURCE_KEYS = frozenset(SourceConfig.model_fields)
BUDGET_KEYS = frozenset(BudgetConfig.model_fields)
LINEAGE_KEYS = frozenset(LineageConfig.model_fields)
SERVICE_KEYS = frozenset(ServiceConfig.model_fields)
SECTIONS = ("targets", "sources", "jobs", "defaults", "budget", "quality", "lineage", "service")
TOP_KEYS = (*SECTIONS, "environments")

#: Keys of both kinds of job, then the keys only one kind has.
COMMON_KEYS = frozenset(
    {"kind", "target", "to", "bigquery", "source", "limit", "streams", "checksum", "executor",
     "resume", "dry_run", "max_bytes", "max_usd", "project", "bigquery_endpoint",
     "bigquery_storage_endpoint", "emulator", "metrics_port", "metrics_linger", "pushgateway",
     "otlp_endpoint", "quality", "quality_file", "skip_quality", "quality_samples", "profile",
     "anomaly_severity", "schedule"}
)  # fmt: skip
COPY_KEYS = frozenset(
    {"table", "columns", "where", "mode", "key", "nested", "drop", "incremental", "lag"}
)
PATENTS_KEYS = JOB_KEYS - COMMON_KEYS - COPY_KEYS
KIND_KEYS: dict[str, frozenset[str]] = {
    "copy": COMMON_KEYS | COPY_KEYS,
    "patents": COMMON_KEYS | PATENTS_KEYS,
}

#: The built-in defaults of a job's keys (the command line's defaults); None: unset.
BUILTIN: dict[str, dict[str, Any]] = {
    "copy": {
        "mode": "replace", "nested": "jsonb", "drop": False, "checksum": True,
        "executor": "local", "resume": False, "dry_run": False, "bigquery": "default",
        "streams": DEFAULT_STREAMS, "skip_quality": False, "profile": True,
    },
    "patents": {
        "source": "patents-public-data.patents.publications", "schema": "patents",
        "test": False, "full_text": False, "drop_tables": False,
        "with_cpc_definitions": False, "cpc_source": "patents-public-data.cpc.definition",
        "checksum": True, "executor": "local", "resume": False, "dry_run": False,
        "bigquery": "default", "streams": DEFAULT_STREAMS, "skip_quality": False,
        "profile": True, "default_rules": True,
    },
}  # fmt: skip
