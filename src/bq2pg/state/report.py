"""What the state tables say about the jobs, for ``bq2pg exporter``: read in one transaction at
scrape time, so that a restart of anything loses nothing.

A job is named by ``bq2pg.runs.job`` (a configured job's name, or the command of an ad-hoc run;
"" for runs recorded before bq2pg kept it) and its target table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

#: Successful runs whose median duration is a job's usual duration.
USUAL_OF_LAST = 10

_JOBS = """
WITH finished AS (
    SELECT coalesce(job, '') AS job, target, status, finished_at, rows_loaded,
           extract(epoch FROM finished_at - started_at)::float8 AS seconds,
           row_number() OVER (PARTITION BY coalesce(job, ''), target
                              ORDER BY finished_at DESC) AS back,
           row_number() OVER (PARTITION BY coalesce(job, ''), target, status = 'succeeded'
                              ORDER BY finished_at DESC) AS back_same
    FROM bq2pg.runs WHERE status IN ('succeeded', 'failed') AND finished_at IS NOT NULL
)
SELECT job, target,
       extract(epoch FROM max(finished_at) FILTER (WHERE status = 'succeeded'))::float8,
       max(seconds) FILTER (WHERE back = 1),
       max(rows_loaded) FILTER (WHERE back = 1),
       bool_or(status = 'failed') FILTER (WHERE back = 1),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
           FILTER (WHERE status = 'succeeded' AND back_same <= %(usual)s)
FROM finished GROUP BY job, target
"""
_RUNNING = """
SELECT coalesce(r.job, ''), r.target, extract(epoch FROM now() - r.started_at)::float8,
       (SELECT extract(epoch FROM max(c.committed_at))::float8 FROM bq2pg.chunks c
        WHERE c.run_id = r.run_id)
FROM bq2pg.runs r WHERE r.status = 'running'
"""
_DEAD_LETTERS = "SELECT target, count(*) FROM bq2pg.dead_letters GROUP BY target"
_WATERMARKS = "SELECT target, value FROM bq2pg.watermarks"


@dataclass(frozen=True)
class JobState:
    """One job's finished runs: last success (epoch seconds), last run's duration, rows and
    outcome, and the median duration of its last successful runs."""

    job: str
    target: str
    last_success: float | None
    last_seconds: float | None
    last_rows: int | None
    last_failed: bool
    usual_seconds: float | None


@dataclass(frozen=True)
class RunningState:
    """A run recorded as running (or interrupted, until it is resumed or abandoned): its age
    and when it last committed a chunk (epoch seconds; None before its first)."""

    job: str
    target: str
    seconds: float
    last_chunk: float | None


@dataclass(frozen=True)
class StateReport:
    """Everything ``bq2pg exporter`` reports, as of one transaction."""

    exists: bool
    jobs: list[JobState] = field(default_factory=list)
    running: list[RunningState] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, str] = field(default_factory=dict)


def read(conn: psycopg.Connection) -> StateReport:
    """The state tables' report (``exists`` False when bq2pg never ran against this database).

    Raises:
        psycopg.Error: the database failed (the caller reports it as down).
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        found = conn.execute("SELECT to_regclass('bq2pg.runs') IS NOT NULL").fetchone()
        if not found or not found[0]:
            return StateReport(exists=False)
        jobs = [
            JobState(
                job,
                target,
                success,
                seconds,
                None if rows is None else int(rows),
                bool(failed),
                usual,
            )
            for job, target, success, seconds, rows, failed, usual in conn.execute(
                _JOBS, {"usual": USUAL_OF_LAST}
            ).fetchall()
        ]
        running = [RunningState(*row) for row in conn.execute(_RUNNING).fetchall()]
        dead = {t: int(n) for t, n in conn.execute(_DEAD_LETTERS).fetchall()}
        marks = {t: v for t, v in conn.execute(_WATERMARKS).fetchall()}
    return StateReport(True, jobs, running, dead, marks)
