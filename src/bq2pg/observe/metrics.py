"""bq2pg's Prometheus metrics, named once (prefix ``bq2pg_``, base units, ``_total`` counters).

A run records into these while it runs; ``bq2pg copy --metrics-port N`` serves them with the
process metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds``), ``--pushgateway URL`` pushes the ``bq2pg_*`` families when the run ends.
Labels are bounded: ``job`` (a configured job's name, else the command), ``target_table``
(the job's target, ``schema.table``), ``table`` (a table of its plan), ``status`` and ``kind``
from short fixed lists. A run's id is never a label: it is in the logs and traces.

``bq2pg exporter`` serves another set, ``bq2pg_state_*``, read from the state tables at
scrape time (``bq2pg.exporter``), so that what it reports survives restarts.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.metrics_core import Metric

from bq2pg.observe.context import labels

# no ``*_created`` series: they double every counter's series and no rule or panel reads them
disable_created_metrics()

_RUN = ("job", "target_table")

BUILD = Info("bq2pg_build", "The running bq2pg: its version and Python's.")
RUNS = Counter("bq2pg_runs_total", "Runs that ended, by status.", [*_RUN, "status"])
RUN_IN_PROGRESS = Gauge("bq2pg_run_in_progress", "1 while a run of the job is running.", _RUN)
RUN_STARTED = Gauge(
    "bq2pg_run_started_timestamp_seconds", "When the job's current or last run started.", _RUN
)
RUN_LAST_SUCCESS = Gauge(
    "bq2pg_run_last_success_timestamp_seconds", "When a run of the job last succeeded.", _RUN
)
RUN_DURATION = Gauge("bq2pg_run_duration_seconds", "How long the job's last run took.", _RUN)
LAST_PROGRESS = Gauge(
    "bq2pg_last_progress_timestamp_seconds",
    "When the job's run last committed a chunk or changed phase.",
    _RUN,
)
ROWS_READ = Counter("bq2pg_rows_read_total", "Source rows read from BigQuery.", _RUN)
ROWS_COMMITTED = Counter(
    "bq2pg_rows_committed_total",
    "Rows committed into PostgreSQL, per table of the plan (parent and children).",
    [*_RUN, "table"],
)
ROWS_DEAD_LETTERED = Counter(
    "bq2pg_rows_dead_lettered_total",
    "Source rows PostgreSQL rejected (in bq2pg.dead_letters).",
    _RUN,
)
READ_BYTES = Counter(
    "bq2pg_bigquery_read_bytes_total", "Arrow bytes received from the Storage Read API.", _RUN
)
COPY_BYTES = Counter(
    "bq2pg_copy_bytes_total", "Bytes sent to PostgreSQL by COPY, in committed chunks.", _RUN
)
CHUNKS = Counter(
    "bq2pg_chunks_total",
    "Chunks by outcome: committed, isolated (committed with rows dead-lettered), "
    "already_committed (found in the ledger after a lost answer), failed.",
    [*_RUN, "status"],
)
_CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CHUNK_SECONDS = Histogram(
    "bq2pg_chunk_duration_seconds",
    "A chunk from its first source row read to its commit (read, encode, COPY, retries).",
    _RUN,
    buckets=_CHUNK_BUCKETS,
)
COPY_SECONDS = Histogram(
    "bq2pg_copy_duration_seconds",
    "One COPY transaction of a chunk (COPY of each table, ledger row, commit).",
    _RUN,
    buckets=_CHUNK_BUCKETS,
)
RETRIES = Counter(
    "bq2pg_retries_total",
    "Retries after a transient error, by what was retried: chunk, read, run_connection, postload.",
    ["kind"],
)
BREAKER_STATE = Gauge(
    "bq2pg_circuit_breaker_state",
    "The run's circuit breaker towards PostgreSQL: 0 closed, 1 open, 2 half-open.",
    ["target_table"],
)
BREAKER_OPENINGS = Counter(
    "bq2pg_circuit_breaker_openings_total", "Times the circuit breaker opened.", ["target_table"]
)
STREAMS_ACTIVE = Gauge("bq2pg_read_streams_active", "Read streams being loaded now.", _RUN)
WATERMARK = Gauge(
    "bq2pg_watermark_value",
    "The table's incremental watermark after the last run (seconds since the epoch for dates "
    "and timestamps, the number itself for numbers).",
    ["target_table"],
)
VERIFICATION_MISMATCHES = Counter(
    "bq2pg_verification_mismatches_total",
    "Tables whose row counts or checksums did not match the ledger when a run verified them.",
    ["target_table"],
)
QUALITY_SCORE = Gauge(
    "bq2pg_quality_score_ratio",
    "The table's quality score at the job's last checked run, 0 to 1: the severity-weighted "
    "share of its rules that passed (docs/quality.md).",
    [*_RUN, "table"],
)
QUALITY_RULES_FAILING = Gauge(
    "bq2pg_quality_rules_failing",
    "Quality rules of the table that failed at the job's last checked run, by severity.",
    [*_RUN, "table", "severity"],
)
ANOMALIES = Counter(
    "bq2pg_anomalies_total",
    "Unusual runs found by the anomaly detection, by metric and severity.",
    [*_RUN, "metric", "severity"],
)
LINEAGE_EVENTS = Counter(
    "bq2pg_lineage_events_total",
    "OpenLineage events sent, or that failed to reach the lineage backend (never failing a run).",
    ["status"],
)

HTTP_SECONDS = Histogram(
    "bq2pg_http_request_duration_seconds",
    "Requests to bq2pg's REST API (``bq2pg serve``), by method, route template and status.",
    ["method", "route", "status"],
)

#: Breaker states as the gauge's values.
BREAKER_VALUES = {"closed": 0, "open": 1, "half-open": 2}

BUILD.info({"version": "", "python_version": platform.python_version()})


def set_version(version: str) -> None:
    """Record bq2pg's version in ``bq2pg_build_info`` (the package passes it: no cycle)."""
    BUILD.info({"version": version, "python_version": platform.python_version()})


def run_labels() -> tuple[str, str]:
    """(job, target_table) of the run in the current context (``observe.context``)."""
    found = labels()
    return found["job"], found["target_table"]


def progressed() -> None:
    """The current run made progress now."""
    LAST_PROGRESS.labels(*run_labels()).set(time.time())


def breaker_changed(state: str, opened: bool = False) -> None:
    """The run's circuit breaker is now ``state`` (``opened``: it just opened)."""
    target = labels()["target_table"]
    BREAKER_STATE.labels(target).set(BREAKER_VALUES[state])
    if opened:
        BREAKER_OPENINGS.labels(target).inc()


def watermark_number(value: str) -> float | None:
    """A watermark's text as the gauge's number: a number as itself, a date or timestamp as
    seconds since the epoch (UTC when it has no zone); None when it is neither."""
    import datetime as dt

    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def set_watermark(target_table: str, value: str) -> None:
    """Record ``target_table``'s watermark (left alone when it is not a number or a time)."""
    number = watermark_number(value)
    if number is not None:
        WATERMARK.labels(target_table).set(number)


class Only:
    """The families of the default registry whose names start with one of ``prefixes`` (what
    a run pushes; what the exporter serves beside its own)."""

    def __init__(self, *prefixes: str) -> None:
        self.prefixes = prefixes

    def collect(self) -> Iterator[Metric]:
        for metric in REGISTRY.collect():
            if metric.name.startswith(self.prefixes):
                yield metric


OURS = Only("bq2pg_")

_served: dict[int, object] = {}
_served_lock = threading.Lock()


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve the default registry (bq2pg's metrics and the process's) on ``port`` while the
    process lives (a daemon thread); serving the same port twice is a no-op."""
    from prometheus_client import start_http_server

    with _served_lock:
        if port not in _served:
            _served[port] = start_http_server(port, addr=addr)


def push(gateway: str, job: str, grouping: dict[str, str] | None = None) -> None:
    """Push the ``bq2pg_*`` families to a Pushgateway (``pushadd``: other pushed groups stay),
    grouped by ``job`` and ``grouping``."""
    from prometheus_client import pushadd_to_gateway

    pushadd_to_gateway(gateway, job=job, registry=OURS, grouping_key=grouping or {}, timeout=10)
