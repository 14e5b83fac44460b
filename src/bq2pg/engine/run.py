"""Running a job: lock the target, decide, read every stream, load, verify, publish, record.

:func:`run_job` is the engine under ``copy`` and ``patents``. The run takes its target's
advisory lock first, on its own connection (``postgres.lock.LockedConnection``), and only then
looks at the target: it drops what the job asks to drop, decides the mode, reads the
watermark, finds an interrupted run to resume, creates the side tables. Then it reads the
read session's streams in parallel (``engine.streams``) and publishes:

* ``replace``: load into fresh ``<table>__bq2pg_new`` tables, add keys, then swap them in
  place of the targets in one transaction (readers see the old or the new table, never half);
* ``append``: load into staging tables, then move their rows into the targets in one
  transaction;
* ``merge``: COPY into staging tables, then upsert on the key in one transaction, replacing the
  child rows of every merged parent.

Exactly once: each chunk commits with its ledger row; an interrupted run resumes from the
ledger; publishing commits with the run's status; one run per target at a time. The run's
connection is reconnected (and its lock taken again) when a fault takes it away.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from functools import partial

import pyarrow as pa

from bq2pg.bigquery import read
from bq2pg.bigquery.client import Source
from bq2pg.bigquery.read import ReadSession
from bq2pg.config.secrets import redact
from bq2pg.config.settings import tuning
from bq2pg.engine import anomalies, lineage, publishing, streams
from bq2pg.engine.job import Job, Resolved, fingerprint
from bq2pg.engine.result import RunResult, TableResult
from bq2pg.errors import (
    Bq2pgError,
    CancelledError,
    ConcurrentRunError,
    NothingToResumeError,
    QualityGateError,
    SessionExpiredError,
)
from bq2pg.observe import context, metrics, tracing
from bq2pg.observe.log import get_logger
from bq2pg.observe.progress import NoProgress, Progress
from bq2pg.plan import ddl, watermark
from bq2pg.postgres import target
from bq2pg.postgres.connection import Connection
from bq2pg.postgres.lock import LockedConnection
from bq2pg.postgres.target import Mode, physical
from bq2pg.quality import checksum, gate
from bq2pg.quality.verify import checksum_columns
from bq2pg.state import audit, ledger, runs, schema, watermarks

log = get_logger(__name__)

#: Seconds a new run's snapshot lies in the past, for a client clock running ahead of BigQuery's.
SNAPSHOT_MARGIN_S = 1.0
#: Seconds a step on the run's connection before the load may take (DDL, ledger reads).
PREPARE_TIMEOUT_S = 300.0


def run_job(source: Source, job: Job, progress: Progress | None = None) -> RunResult:
    """Run a :class:`Job`: lock the target, prepare it, read every stream, load, publish.

    Exactly once: each chunk commits with its ledger row; a run interrupted at any moment
    (``kill -9``, a lost server) is resumed by the next run of the same job, which reads each
    stream from the first row the ledger does not hold. Publishing commits with the run's
    status. One run per target at a time (advisory lock, taken before anything else).

    Raises:
        ConcurrentRunError: another run holds the target's lock.
        NothingToResumeError: ``job.resume_only`` and no interrupted run of the job.
        ConfigError, SourceError, TargetError: see :mod:`bq2pg.errors`.
    """
    progress = progress or NoProgress()
    labels = (job.label, job.plan.qualified)
    with (
        context.bound(job=labels[0], target_table=labels[1]),
        tracing.span(
            "bq2pg.run",
            **{
                "bq2pg.job": labels[0],
                "bq2pg.target_table": labels[1],
                "bq2pg.source": str(job.ref),
            },
        ) as span,
    ):
        metrics.RUN_IN_PROGRESS.labels(*labels).set(1)
        metrics.RUN_STARTED.labels(*labels).set(time.time())
        metrics.progressed()
        started = time.perf_counter()
        ids: dict[str, str] = {}  # the run's id, once it has one
        try:
            result = _locked(source, job, progress, span, started, ids)
        except BaseException as exc:
            status = (
                "failed_quality" if isinstance(exc, QualityGateError)
                else "cancelled" if isinstance(exc, CancelledError) else "failed"
            )  # fmt: skip
            metrics.RUNS.labels(*labels, status).inc()
            log.error(
                "run.failed", run_id=ids.get("run_id"), error=_message(exc),
                error_type=type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG),
            )  # fmt: skip
            raise
        else:
            metrics.RUNS.labels(*labels, "succeeded").inc()
            metrics.RUN_LAST_SUCCESS.labels(*labels).set(time.time())
            log.info(
                "run.succeeded", run_id=str(result.run_id), rows_read=result.rows_read,
                dead_letters=result.dead_letters, seconds=round(result.seconds, 3),
            )  # fmt: skip
            return result
        finally:
            metrics.RUN_IN_PROGRESS.labels(*labels).set(0)
            metrics.RUN_DURATION.labels(*labels).set(time.perf_counter() - started)


def _message(exc: BaseException) -> str:
    """What a failed run records: the error's message, redacted (its repr for the unexpected)."""
    return redact(str(exc)) if isinstance(exc, Bq2pgError) else redact(repr(exc))


def _locked(
    source: Source,
    job: Job,
    progress: Progress,
    span: tracing.Span,
    started: float,
    ids: dict[str, str],
) -> RunResult:
    """The run under its target's lock (taken first, on the run's own connection); its id
    goes into ``ids`` once it has one."""
    conn = LockedConnection(job.database_url, job.plan.qualified)  # the lock comes first
    try:
        conn.call("creating bq2pg's state tables", schema.ensure, PREPARE_TIMEOUT_S)
        if job.quality and not job.skip_quality:  # before anything is read
            conn.call(
                "checking the quality rules", partial(gate.check_in_database, rules=job.quality),
                60.0,
            )  # fmt: skip
        resolved = conn.call("preparing the run", partial(_resolve, job), PREPARE_TIMEOUT_S)
        resume = conn.call(
            "looking for an interrupted run", partial(_find_resume, job, resolved),
            PREPARE_TIMEOUT_S,
        )  # fmt: skip
        if resume is None and job.resume_only:
            raise NothingToResumeError(
                f"no interrupted run of this job on {job.plan.qualified} to resume; run it "
                "without --resume to start a new one",
                table=job.plan.qualified,
            )
        if resume is None:
            run_id = conn.call("recording the run", partial(_start, job, resolved), 60.0)
        else:
            run_id = resume.run_id
        conn.rejoin = partial(_still_ours, run_id)
        ids["run_id"] = str(run_id)
        with context.bound(run_id=str(run_id)):
            span.set_attribute("bq2pg.run_id", str(run_id))
            span.set_attribute("bq2pg.mode", resolved.mode)
            log.info(
                "run.resumed" if resume else "run.started", mode=resolved.mode,
                source=str(job.ref), streams=job.streams, executor=job.executor,
            )  # fmt: skip
            tracker = lineage.begin(job, run_id)
            try:
                result = _run(source, job, resolved, conn, progress, run_id, resume, started,
                              tracker)  # fmt: skip
                if tracker is not None:
                    tracker.completed(result)
                return result
            except BaseException as exc:
                if tracker is not None:
                    tracker.failed(exc)
                # the side tables and the ledger stay: the next run of this job resumes
                # from them
                with contextlib.suppress(Bq2pgError):
                    failed = partial(
                        _failed, run_id, job.plan.qualified, _message(exc),
                        "cancelled" if isinstance(exc, CancelledError) else "failed",
                    )  # fmt: skip
                    conn.call("recording the failure", failed, 30.0)
                raise
            finally:
                if tracker is not None:
                    tracker.close()
    finally:
        conn.close()


def _resolve(job: Job, conn: Connection) -> Resolved:
    """Under the lock: drop what the job drops, decide the mode, read the watermark."""
    mode: Mode
    if job.drop_tables:
        target.drop(conn, list(job.drop_tables), f"dropping the tables of {job.plan.qualified}")
    if job.mode == "auto":
        mode = "merge" if target.exists(conn, job.plan) and not job.drop_tables else "replace"
    else:
        mode = job.mode
    where = job.where
    if job.incremental is not None:
        found = watermarks.read(conn, job.plan.qualified)
        inc = job.incremental
        value = found[1] if found and found[0] == inc.column else None
        bound = watermark.restriction(inc.field, value, inc.lag)
        if bound:
            where = f"({where}) AND {bound}" if where else bound
    return Resolved(mode, where, fingerprint(job, mode, where))


@dataclass(frozen=True)
class _Resume:
    """An interrupted run this run continues: its id, session, and what the ledger holds."""

    run_id: uuid.UUID
    session: ReadSession
    committed: ledger.Committed


def _find_resume(job: Job, resolved: Resolved, conn: Connection) -> _Resume | None:
    found = runs.interrupted(conn, job.plan.qualified, resolved.fingerprint)
    if found is None or not target.side_tables_exist(conn, job.plan, resolved.mode):
        return None
    session = ReadSession(
        name=found.session,
        streams=found.streams,
        arrow_schema=pa.ipc.read_schema(pa.py_buffer(found.arrow_schema)),
        snapshot_time=found.snapshot_time,
        estimated_rows=None,
    )
    return _Resume(found.run_id, session, ledger.committed(conn, found.run_id))


def _start(job: Job, resolved: Resolved, conn: Connection) -> uuid.UUID:
    """Record a new run (dead runs of the target abandoned), and create its side tables."""
    runs.abandon(conn, job.plan.qualified)
    target.prepare(conn, job.plan, resolved.mode, drop_first=job.drop)
    run_id = runs.start(
        conn,
        source=str(job.ref),
        target=job.plan.qualified,
        mode=resolved.mode,
        arguments=runs.pack_arguments(job.kind, job.request),
        fingerprint=resolved.fingerprint,
        plan=job.estimate,
        job=job.label,
        run_id=job.run_id,
    )
    if job.checksum:
        runs.record_checksums(conn, run_id, checksum_columns(job.plan), checksum.FORM)
    audit.record(
        conn, audit.RUN_STARTED, target=job.plan.qualified,
        arguments={"run_id": str(run_id), "job": job.label, "source": str(job.ref),
                   "mode": resolved.mode, "skip_quality": job.skip_quality},
    )  # fmt: skip
    return run_id


def _still_ours(run_id: uuid.UUID, conn: Connection) -> None:
    """After a reconnection: nobody abandoned or finished the run while its lock was gone."""
    status = runs.status(conn, run_id)
    if status not in ("running", "failed", "succeeded", "failed_quality", "cancelled"):
        raise ConcurrentRunError(
            f"run {run_id} was taken over ({status}) while its connection was lost; the run "
            "stops (its committed rows are in the ledger)"
        )


def _failed(
    run_id: uuid.UUID,
    target: str,
    message: str,
    status: runs.Status,
    conn: Connection,
) -> None:
    """Record a run that stopped (``failed`` or ``cancelled``): the next run of its job
    resumes it from the ledger."""
    if runs.status(conn, run_id) not in ("succeeded", "failed_quality"):
        runs.finish(conn, run_id, status=status, rows_read=0, rows_loaded=0, nbytes=0,
                    error=message)  # fmt: skip
        audit.record(conn, audit.RUN_FINISHED, target=target, arguments={"run_id": str(run_id)},
                     outcome=f"{status}: {message}")  # fmt: skip


def _snapshot_now() -> dt.datetime:
    """The snapshot a new run reads: now, less a margin for the client's clock running ahead
    of BigQuery's, to the millisecond."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=SNAPSHOT_MARGIN_S)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _open_session(
    source: Source,
    job: Job,
    where: str | None,
    conn: LockedConnection,
    run_id: uuid.UUID,
    snapshot_time: dt.datetime,
) -> ReadSession:
    """Open the run's read session at ``snapshot_time`` and record it (for resuming)."""
    session = read.open_session(
        source,
        job.ref,
        selected_fields=job.selected,
        row_restriction=where,
        max_streams=max(1, job.streams),
        snapshot_time=snapshot_time,
    )
    schema_bytes = session.arrow_schema.serialize().to_pybytes()
    conn.call(
        "recording the read session",
        lambda c: runs.record_session(
            c, run_id, session.name, session.streams, schema_bytes, snapshot_time
        ),
        60.0,
    )
    return session


def _load(
    source: Source,
    job: Job,
    resolved: Resolved,
    conn: LockedConnection,
    progress: Progress,
    run_id: uuid.UUID,
    resume: _Resume | None,
) -> tuple[ReadSession, dict[str, int], float]:
    """Open (or take up) the read session and load its streams: the session, the COPY bytes
    per table and the seconds the load took."""
    if resume is None:
        snapshot = _snapshot_now()
        session = _open_session(source, job, resolved.where, conn, run_id, snapshot)
        offsets: dict[str, int] = {}
        done: dict[str, int] = {}
    else:
        session = resume.session
        snapshot = session.snapshot_time or _snapshot_now()
        offsets = resume.committed.offsets
        done = {**resume.committed.rows, ledger.DEAD_LETTERS: resume.committed.dead_letters}
    total = job.total_rows if job.total_rows is not None else session.estimated_rows
    if job.limit is not None:
        total = min(total, job.limit) if total is not None else job.limit
    progress.start(total, len(session.streams))
    log.info("session.opened", session=session.name, streams=len(session.streams))
    load = partial(streams.load, source, job, resolved.mode)
    try:
        with conn.heartbeat():
            sizes, seconds = load(session, run_id, offsets, done, progress)
    except SessionExpiredError as exc:
        # the offsets mean nothing in a new session: load again from the start, at the same
        # snapshot (the same data), once
        log.warning("session.expired", error=str(exc), snapshot=str(snapshot))
        progress.phase("the read session expired: loading again at the same snapshot")
        sides = [ddl.ident(t.schema, physical(resolved.mode, t)) for t in job.plan.all_tables()]
        conn.call(
            "emptying the side tables",
            lambda c: ledger.forget(c, run_id, sides),
            tuning().publish_timeout_s,
        )
        session = _open_session(source, job, resolved.where, conn, run_id, snapshot)
        progress.start(total, len(session.streams))
        with conn.heartbeat():
            sizes, seconds = load(session, run_id, {}, {}, progress)
    return session, sizes, seconds


def _run(
    source: Source,
    job: Job,
    resolved: Resolved,
    conn: LockedConnection,
    progress: Progress,
    run_id: uuid.UUID,
    resume: _Resume | None,
    started: float,
    tracker: lineage.Tracker | None = None,
) -> RunResult:
    """Load and publish; the run's result (``started``: when the run began, perf_counter)."""
    retries = anomalies.retries_so_far()
    with tracing.span("bq2pg.read_session", **{"bq2pg.resumed": resume is not None}) as span:
        session, sizes, seconds = _load(source, job, resolved, conn, progress, run_id, resume)
        span.set_attribute("bq2pg.streams", len(session.streams))
    if tracker is not None:
        tracker.opened(session.name, len(session.streams), session.snapshot_time)

    publish_started = time.perf_counter()
    # what the run loaded, as the ledger holds it (wherever the streams ran)
    committed = conn.call("reading the ledger", lambda c: ledger.committed(c, run_id), 60.0)
    rows_loaded = committed.rows.get(job.plan.name, 0)
    published = publishing.publish(
        conn, job, resolved.mode, progress, run_id,
        rows_read=rows_loaded + committed.dead_letters, rows_loaded=rows_loaded,
        nbytes=sum(sizes.values()), started=started, retries=retries,
    )  # fmt: skip
    if tracker is not None:
        with contextlib.suppress(Bq2pgError):  # lineage must not fail a published run
            conn.call("recording the lineage", tracker.record, 60.0)
    tables = [
        TableResult(t.name, committed.rows.get(t.name, 0), sizes.get(t.name, 0), seconds)
        for t in job.plan.all_tables()
    ]
    finished = time.perf_counter()
    return RunResult(
        run_id=run_id,
        source=str(job.ref),
        target=job.plan.qualified,
        mode=resolved.mode,
        streams=len(session.streams),
        rows_read=rows_loaded + committed.dead_letters,
        tables=tables,
        seconds=finished - started,
        load_seconds=seconds,
        publish_seconds=finished - publish_started,
        duplicates_collapsed=published.duplicates,
        resumed=resume is not None,
        dead_letters=committed.dead_letters,
        checksummed=published.checksummed,
        quality=published.quality,
        skip_quality=job.skip_quality,
        anomalies=published.anomalies,
    )
