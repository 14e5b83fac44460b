"""``bq2pg exporter``: Prometheus metrics read from bq2pg's state tables at scrape time.

The pattern of postgres_exporter: a custom collector asks the database on every scrape, so the
numbers (last success and duration per job and table, runs in progress, dead letters pending,
watermark lag, the last run's rows) survive restarts of the exporter, of the runs and of
Prometheus, with no Pushgateway. The metrics are ``bq2pg_state_*``; a failed scrape of the
database is ``bq2pg_state_up 0``, never a failed HTTP scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bq2pg.config.secrets import redact
from bq2pg.errors import Bq2pgError
from bq2pg.observe import metrics
from bq2pg.observe.log import get_logger
from bq2pg.postgres.connection import session
from bq2pg.state import report

log = get_logger(__name__)

#: The exporter's port by default (postgres_exporter's is 9187 too: run one or the other on it).
DEFAULT_PORT = 9187
_JOB = ["job", "target_table"]


@dataclass(eq=False)  # registered in a registry: hashed by identity
class StateCollector(Collector):
    """Reads the state tables of ``database_url`` on each scrape.

    ``expected``: how often each job (by name or target table) is expected to succeed, in
    seconds, exported as ``bq2pg_state_expected_interval_seconds`` for the
    ``Bq2pgNoRecentSuccess`` alert.
    """

    database_url: str
    expected: Mapping[str, float] = field(default_factory=dict)

    def collect(self) -> Iterator[Metric]:
        began = time.perf_counter()
        up = GaugeMetricFamily("bq2pg_state_up", "1 when bq2pg's state database answered.")
        try:
            with session(self.database_url, "reading bq2pg's state tables") as conn:
                state = report.read(conn)
        except Bq2pgError as exc:
            log.warning("exporter.scrape_failed", error=redact(str(exc)))
            up.add_metric([], 0)
            yield up
            yield _scrape_seconds(began)
            return
        up.add_metric([], 1)
        yield up
        yield from self._families(state)
        yield _scrape_seconds(began)

    def _families(self, state: report.StateReport) -> Iterator[Metric]:
        now = time.time()
        success = _gauge("last_success_timestamp_seconds", "When the job last succeeded.")
        last = _gauge("last_run_duration_seconds", "How long the job's last finished run took.")
        usual = _gauge(
            "run_duration_usual_seconds",
            f"The median duration of the job's last {report.USUAL_OF_LAST} successful runs.",
        )
        rows = _gauge("last_run_rows", "Rows the job's last finished run loaded.")
        failed = _gauge("last_run_failed", "1 when the job's last finished run failed.")
        expected = _gauge(
            "expected_interval_seconds", "How often the job is expected to succeed (--expect)."
        )
        for j in state.jobs:
            key = [j.job, j.target]
            if j.last_success is not None:
                success.add_metric(key, j.last_success)
            if j.last_seconds is not None:
                last.add_metric(key, j.last_seconds)
            if j.usual_seconds is not None:
                usual.add_metric(key, j.usual_seconds)
            if j.last_rows is not None:
                rows.add_metric(key, j.last_rows)
            failed.add_metric(key, 1 if j.last_failed else 0)
            interval = self.expected.get(j.job) or self.expected.get(j.target)
            if interval:
                expected.add_metric(key, interval)
        yield from (success, last, usual, rows, failed, expected)

        in_progress = GaugeMetricFamily(
            "bq2pg_state_runs_in_progress",
            "Runs recorded as running (an interrupted run counts until it is resumed).",
            labels=["target_table"],
        )
        counts: dict[str, int] = {}
        age = _gauge("run_in_progress_seconds", "How long the job's running run has run.")
        chunk = _gauge(
            "last_chunk_timestamp_seconds", "When the job's running run last committed a chunk."
        )
        for r in state.running:
            counts[r.target] = counts.get(r.target, 0) + 1
            age.add_metric([r.job, r.target], r.seconds)
            if r.last_chunk is not None:
                chunk.add_metric([r.job, r.target], r.last_chunk)
        for target, n in counts.items():
            in_progress.add_metric([target], n)
        yield from (in_progress, age, chunk)

        dead = GaugeMetricFamily(
            "bq2pg_state_dead_letters_pending",
            "Rows in bq2pg.dead_letters (not replayed or purged yet).",
            labels=["target_table"],
        )
        for target, n in state.dead_letters.items():
            dead.add_metric([target], n)
        yield dead

        lag = GaugeMetricFamily(
            "bq2pg_state_watermark_lag_seconds",
            "Now less the table's watermark (date and timestamp watermarks).",
            labels=["target_table"],
        )
        for target, value in state.watermarks.items():
            if _is_number(value):
                continue
            moment = metrics.watermark_number(value)
            if moment is not None:
                lag.add_metric([target], max(0.0, now - moment))
        yield lag


def _gauge(name: str, text: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"bq2pg_state_{name}", text, labels=_JOB)


def _scrape_seconds(began: float) -> Metric:
    family = GaugeMetricFamily(
        "bq2pg_state_scrape_duration_seconds", "How long reading the state tables took."
    )
    family.add_metric([], time.perf_counter() - began)
    return family


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def registry(database_url: str, expected: Mapping[str, float] | None = None) -> CollectorRegistry:
    """The exporter's registry: the state collector, ``bq2pg_build_info`` and the exporter
    process's own metrics."""
    reg = CollectorRegistry()
    reg.register(StateCollector(database_url, dict(expected or {})))
    reg.register(metrics.Only("bq2pg_build", "process_", "python_"))
    return reg


def serve(
    database_url: str,
    port: int = DEFAULT_PORT,
    addr: str = "0.0.0.0",
    expected: Mapping[str, float] | None = None,
) -> object:
    """Serve the exporter's metrics on ``addr:port`` (a daemon thread); the HTTP server."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=addr, registry=registry(database_url, expected))
    log.info("exporter.serving", port=port)
    return server
