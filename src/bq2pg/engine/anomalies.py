"""Is this run unusual for its job? The run's metrics against the job's history
(``quality.anomaly``), before publishing, so that an anomaly configured as an ``error`` can
keep the run from publishing like an error rule; and its columns' null rates after publishing,
once the run's profile exists (reported only: the data is published by then).

Findings go to ``bq2pg.anomalies``, the log (``anomaly.found``), the metric
``bq2pg_anomalies_total`` and the run's summary.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence

from bq2pg.engine.job import Job
from bq2pg.observe import metrics
from bq2pg.observe.log import get_logger
from bq2pg.postgres.connection import Connection
from bq2pg.quality import anomaly
from bq2pg.quality.gate import Outcome
from bq2pg.quality.rules import score
from bq2pg.state import anomalies as stored

log = get_logger(__name__)


def retries_so_far() -> float:
    """Retries of every kind this process counted (a run's retries: the difference)."""
    return sum(
        s.value
        for family in metrics.RETRIES.collect()
        for s in family.samples
        if s.name.endswith("_total")
    )


def settings(job: Job) -> anomaly.Settings:
    return anomaly.Settings(severity=job.anomaly_severity)


def expected_rows(job: Job) -> float | None:
    """The rows the plan expects from the source (None: unknown, or only an upper bound)."""
    plan = job.estimate or {}
    if plan.get("rows") is None or plan.get("rows_at_most"):
        return None
    return float(plan["rows"])


def before_publishing(
    conn: Connection,
    job: Job,
    run_id: uuid.UUID,
    *,
    rows_read: int,
    nbytes: int,
    dead_letters: int,
    seconds: float,
    retries: float,
    outcomes: Sequence[Outcome],
) -> list[anomaly.Finding]:
    """The run's volume, speed, size, dead letters, retries and quality score against its
    job's earlier runs (or, with too short a history, its rows against the plan's)."""
    values: dict[str, float] = {
        "rows": float(rows_read),
        "duration_seconds": seconds,
        "rows_per_second": rows_read / seconds if seconds > 0 else 0.0,
        "dead_letters": float(dead_letters),
        "retries": retries,
    }
    if rows_read:
        values["bytes_per_row"] = nbytes / rows_read
    quality = score([(o.rule.severity, o.passed) for o in outcomes])
    if quality is not None:
        values["quality_score"] = quality
    current = anomaly.RunMetrics(str(run_id), dt.datetime.now(dt.UTC), values)
    history = stored.history(conn, job.label, job.plan.qualified)
    report = anomaly.detect(
        current, [h for h in history if h.run_id != str(run_id)],
        expected_rows=expected_rows(job), settings=settings(job),
    )  # fmt: skip
    _report(job, report)
    return report.findings


def after_publishing(conn: Connection, job: Job, run_id: uuid.UUID) -> list[anomaly.Finding]:
    """The run's null rates per column (from its profile) against the job's earlier runs;
    recorded, never blocking (the run published)."""
    history = stored.history(conn, job.label, job.plan.qualified)
    mine = next((h for h in history if h.run_id == str(run_id)), None)
    if mine is None:
        return []
    nulls = {k: v for k, v in mine.metrics.items() if k.startswith(anomaly.NULL_FRAC)}
    if not nulls:
        return []
    current = anomaly.RunMetrics(mine.run_id, mine.started_at, nulls)
    report = anomaly.detect(
        current, [h for h in history if h.run_id != mine.run_id],
        settings=anomaly.Settings(severity="warn"),
    )  # fmt: skip
    _report(job, report)
    stored.record(conn, run_id, job.label, job.plan.qualified, report.findings)
    return report.findings


def record(conn: Connection, job: Job, run_id: uuid.UUID, found: list[anomaly.Finding]) -> None:
    stored.record(conn, run_id, job.label, job.plan.qualified, found)


def _report(job: Job, report: anomaly.Report) -> None:
    for note in report.notes:
        log.debug("anomaly.note", note=note)
    for f in report.findings:
        metrics.ANOMALIES.labels(job.label, job.plan.qualified, f.metric, f.severity).inc()
        log.log(
            logging.ERROR if f.severity == "error" else logging.WARNING, "anomaly.found",
            metric=f.metric, value=f.value, expected=f.expected, method=f.method,
            message=f.message,
        )  # fmt: skip
