"""A run's lineage: OpenLineage events when it starts and ends, and its column edges recorded
in ``bq2pg.lineage`` (what ``bq2pg lineage`` draws).

Lineage reports on a run and never changes its outcome: a backend that is down, or anything
else that goes wrong here, is logged (``lineage.failed``) and counted
(``bq2pg_lineage_events_total{status="failed"}``), and the run goes on.
"""

from __future__ import annotations

import importlib.metadata
import uuid
from dataclasses import dataclass, field

from bq2pg.engine.job import Job
from bq2pg.engine.result import RunResult
from bq2pg.lineage import columns, emit, events
from bq2pg.lineage import runs as lineage_runs
from bq2pg.lineage.naming import BIGQUERY_NAMESPACE
from bq2pg.observe.log import get_logger
from bq2pg.postgres.connection import Connection
from bq2pg.state import lineage as state_lineage

log = get_logger(__name__)


@dataclass
class Tracker:
    """One run's lineage: where its events go (None: nowhere) and what they describe."""

    emitter: emit.Emitter | None
    run: lineage_runs.LineageRun
    session: lineage_runs.ReadSession | None = field(default=None)

    def opened(self, name: str, streams: int, snapshot_time: object) -> None:
        """The run's read session, for the events' ``bq2pg_readSession`` facet."""
        self.session = lineage_runs.ReadSession(snapshot_time, name, streams)  # type: ignore[arg-type]

    def record(self, conn: Connection) -> None:
        """Record the run's column edges (replacing any earlier ones of the run)."""
        try:
            state_lineage.record(
                conn, uuid.UUID(self.run.run_id), source_namespace=BIGQUERY_NAMESPACE,
                source_name=self.run.source, target_namespace=self.run.pg_namespace,
                target_database=self.run.database, edges=self.run.edges,
            )  # fmt: skip
        except Exception as exc:  # lineage must not fail a published run
            log.warning("lineage.failed", step="recording the edges", error=str(exc))

    def completed(self, result: RunResult) -> None:
        if self.emitter is not None:
            self._send(lambda: events.complete(self.run, outcome(result), session=self.session))

    def failed(self, exc: BaseException) -> None:
        if self.emitter is None:
            return
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            self._send(lambda: events.abort(self.run, exc, session=self.session))
        else:
            self._send(lambda: events.fail(self.run, exc, session=self.session))

    def close(self) -> None:
        if self.emitter is not None:
            self.emitter.close()

    def _send(self, make: object) -> None:
        try:
            event = make()  # type: ignore[operator]
        except Exception as exc:  # a bug in building the event must not fail the run
            log.warning("lineage.failed", step="building the event", error=str(exc))
            return
        assert self.emitter is not None
        self.emitter.emit(event)


def begin(job: Job, run_id: uuid.UUID) -> Tracker | None:
    """The run's tracker (and its START event sent), or None when it cannot be built."""
    try:
        emitter = emit.from_settings(job.lineage_settings)
        edges = job.lineage if job.lineage is not None else tuple(columns.for_plan(job.plan))
        fields = job.source_fields or tuple(
            dict.fromkeys(
                c.field for t in job.plan.all_tables() for c in t.columns if not t.source_field
            )
        )
        run = lineage_runs.describe(
            run_id, source=str(job.ref), fields=fields, database_url=job.database_url,
            plan=job.plan, edges=edges, job=job.name, kind=job.kind, version=_version(),
        )  # fmt: skip
    except Exception as exc:
        log.warning("lineage.failed", step="describing the run", error=str(exc))
        return None
    tracker = Tracker(emitter, run)
    if emitter is not None:
        tracker._send(lambda: events.start(run))
    return tracker


def _version() -> str:
    """bq2pg's version, from its installed metadata (the package's ``__version__`` sits above
    the engine)."""
    try:
        return importlib.metadata.version("bq2pg")
    except importlib.metadata.PackageNotFoundError:
        return ""


def outcome(result: RunResult) -> lineage_runs.Outcome:
    """What the COMPLETE event reports: rows and bytes per table, the quality rules."""
    return lineage_runs.Outcome(
        rows={t.name: t.rows for t in result.tables},
        bytes={t.name: t.bytes for t in result.tables},
        rows_read=result.rows_read,
        checks=tuple(
            lineage_runs.Check(
                o.rule.table,
                o.rule.kind,
                o.rule.name,
                o.passed,
                o.rule.columns,
                o.rule.severity,
                o.evaluated,
                o.failing,
                o.detail,
            )
            for o in result.quality
        ),
    )
