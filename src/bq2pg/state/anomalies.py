"""Unusual runs (``bq2pg.anomalies``), and the metrics of the runs they are judged against.

A run's metrics are read from the state tables in one query: rows and bytes per row
(``runs``), duration and rows per second, dead letters (``chunks``), retries, the quality score
(``quality_results``) and the null fraction of each column in the run's latest profile
(``profiles``). A run is anomalous when it has a row in ``anomalies``; judging runs is
``bq2pg.quality.anomaly``'s, which builds on :class:`RunMetrics` (defined here, as ``quality``
sits above ``state``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg.rows import class_row

#: Prefix of the per-column null fraction metrics: ``null_frac:<schema.table>.<column>``.
NULL_FRAC = "null_frac:"


@dataclass(frozen=True)
class RunMetrics:
    """One run's metrics: ``rows``, ``bytes_per_row``, ``duration_seconds``,
    ``rows_per_second``, ``dead_letters``, ``retries``, ``quality_score`` and
    ``null_frac:<table>.<column>`` (a metric the run has no value for is absent)."""

    run_id: str
    started_at: dt.datetime
    metrics: dict[str, float]
    #: Flagged before: left out of every baseline.
    anomalous: bool = False


class Finding(Protocol):
    """What :func:`record` stores of a finding (``bq2pg.quality.anomaly.Finding``)."""

    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def expected(self) -> float | None: ...
    @property
    def score(self) -> float | None: ...
    @property
    def method(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class AnomalyRow:
    """One stored finding, as ``bq2pg anomalies`` lists it."""

    id: int
    run_id: uuid.UUID | None
    job: str | None
    target: str
    table_name: str | None
    metric: str
    value: float | None
    expected: float | None
    score: float | None
    method: str
    severity: str
    message: str
    detected_at: dt.datetime


# The quality score is 100 × Σ weight·passed / Σ weight over the run's rule results, with the
# weights of bq2pg.quality.rules.SEVERITY_WEIGHTS (error 3, warn 1): keep the two in step.
_HISTORY = """
SELECT r.run_id::text AS run_id, r.started_at,
       r.rows_read::float8 AS rows,
       r.bytes::float8 / nullif(r.rows_read, 0) AS bytes_per_row,
       s.seconds AS duration_seconds,
       r.rows_read / nullif(s.seconds, 0) AS rows_per_second,
       (SELECT coalesce(sum(c.dead_letters), 0)::float8
          FROM bq2pg.chunks c WHERE c.run_id = r.run_id) AS dead_letters,
       r.retries::float8 AS retries,
       (SELECT 100.0 * sum(w.weight) FILTER (WHERE w.passed) / nullif(sum(w.weight), 0)
          FROM (SELECT q.passed, CASE q.severity WHEN 'error' THEN 3 ELSE 1 END AS weight
                  FROM bq2pg.quality_results q WHERE q.run_id = r.run_id) w
       )::float8 AS quality_score,
       (SELECT jsonb_object_agg(p.table_name || '.' || p.column_name, p.null_frac)
          FROM (SELECT DISTINCT ON (table_name, column_name) table_name, column_name, null_frac
                  FROM bq2pg.profiles WHERE run_id = r.run_id
                 ORDER BY table_name, column_name, profiled_at DESC, id DESC) p
         WHERE p.null_frac IS NOT NULL) AS null_fracs,
       EXISTS (SELECT 1 FROM bq2pg.anomalies a WHERE a.run_id = r.run_id) AS anomalous
  FROM (SELECT * FROM bq2pg.runs
         WHERE status = 'succeeded' AND target = %(target)s
           AND (%(job)s::text IS NULL OR job = %(job)s)
           AND (%(exclude)s::uuid IS NULL OR run_id <> %(exclude)s::uuid)
         ORDER BY started_at DESC LIMIT %(limit)s) r,
       LATERAL (SELECT extract(epoch FROM r.finished_at - r.started_at)::float8 AS seconds) s
 ORDER BY r.started_at
"""
_METRICS = ("rows", "bytes_per_row", "duration_seconds", "rows_per_second", "dead_letters",
            "retries", "quality_score")  # fmt: skip


def history(
    conn: psycopg.Connection,
    job: str | None,
    target: str,
    limit: int = 200,
    *,
    exclude: uuid.UUID | str | None = None,
) -> list[RunMetrics]:
    """The metrics of the latest ``limit`` succeeded runs of ``job`` into ``target``, oldest
    first (``job`` None: every run into ``target``), without the run ``exclude``.

    A run still running is not among them (it has not succeeded yet).
    """
    params = {"target": target, "job": job, "exclude": str(exclude) if exclude else None,
              "limit": limit}  # fmt: skip
    with conn.cursor() as cur:
        rows = cur.execute(_HISTORY, params).fetchall()
        names = [d.name for d in cur.description or []]
    return [_run_metrics(dict(zip(names, row, strict=True))) for row in rows]


def _run_metrics(row: dict[str, Any]) -> RunMetrics:
    values = {name: float(row[name]) for name in _METRICS if row[name] is not None}
    for column, null_frac in (row["null_fracs"] or {}).items():
        values[f"{NULL_FRAC}{column}"] = float(null_frac)
    return RunMetrics(row["run_id"], row["started_at"], values, bool(row["anomalous"]))


def record(
    conn: psycopg.Connection,
    run_id: uuid.UUID | str | None,
    job: str | None,
    target: str,
    findings: Sequence[Finding],
    table_name: str | None = None,
) -> None:
    """Store the ``findings`` of a run (in the caller's transaction, if any).

    A null fraction's table is taken from its metric when ``table_name`` is not given.
    """
    if not findings:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO bq2pg.anomalies (run_id, job, target, table_name, metric, value, "
            "expected, score, method, severity, message) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (run_id, job, target, table_name or _table_of(f.metric), f.metric, f.value,
                 f.expected, f.score, f.method, f.severity, f.message)
                for f in findings
            ],
        )  # fmt: skip


def _table_of(metric: str) -> str | None:
    """``schema.table`` of a ``null_frac:schema.table.column`` metric (None for the others)."""
    if not metric.startswith(NULL_FRAC):
        return None
    table, _, _ = metric.removeprefix(NULL_FRAC).rpartition(".")
    return table or None


def listing(conn: psycopg.Connection, job: str | None = None, limit: int = 50) -> list[AnomalyRow]:
    """The latest ``limit`` findings, newest first; ``job`` keeps those of that job or target."""
    with conn.cursor(row_factory=class_row(AnomalyRow)) as cur:
        return cur.execute(
            "SELECT id, run_id, job, target, table_name, metric, value, expected, score, method, "
            "severity, message, detected_at FROM bq2pg.anomalies "
            "WHERE %(job)s::text IS NULL OR job = %(job)s OR target = %(job)s "
            "ORDER BY detected_at DESC, id DESC LIMIT %(limit)s",
            {"job": job, "limit": limit},
        ).fetchall()
