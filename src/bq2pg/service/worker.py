"""``bq2pg worker``: runs the queued runs, up to ``concurrency`` at a time.

The loop claims requests (:func:`bq2pg.state.queue.claim`), runs each in a thread through the
same functions as the command line (:mod:`bq2pg.runner`), and every ``heartbeat_s`` writes a
heartbeat with each run's progress, flushes the runs' events (progress and log events) for the
API's event streams, and learns which runs were asked to cancel. A cancelled run stops at its
next chunk boundary: the committed chunks stay in the ledger, nothing is published, and the
run is ``cancelled`` (a resume takes it up). The loop also reaps the runs of dead workers
(:func:`bq2pg.state.queue.reap`) and fires the schedules (:mod:`bq2pg.service.schedules`).
Between claims it waits on ``LISTEN bq2pg_queue``, so a new request starts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bq2pg import runner
from bq2pg.config import jobs as config_jobs
from bq2pg.config.secrets import redact
from bq2pg.engine import estimate
from bq2pg.errors import Bq2pgError, CancelledError, QualityGateError
from bq2pg.observe import context
from bq2pg.observe.log import get_logger
from bq2pg.postgres.connection import connect, session
from bq2pg.service import schedules, submit
from bq2pg.service.settings import Settings
from bq2pg.state import audit, schema
from bq2pg.state import queue as q
from bq2pg.state import schedules as stored_schedules

log = get_logger(__name__)

#: Phases from which cancelling is too late: the run is publishing (one transaction) or done.
_PUBLISHING = ("swapping the new tables in", "merging the staged rows", "appending the staged")
#: Log events a run's event stream carries (and the fields it drops: they are in the progress).
_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
_MAX_BUFFERED = 2000


class _Running:
    """A run this worker executes: its progress, its cancel flag, its buffered events."""

    def __init__(self, entry: q.Entry) -> None:
        self.entry = entry
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.rows = 0
        self.bytes = 0
        self.total: int | None = None
        self.streams: int | None = None
        self.phase: str | None = "planning"
        self.run_id: uuid.UUID | None = None
        self.publishing = False
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.dirty = True

    def add_event(self, name: str, data: dict[str, Any]) -> None:
        with self.lock:
            if len(self.events) < _MAX_BUFFERED:
                self.events.append((name, data))

    def beat(self) -> q.Beat:
        with self.lock:
            self.dirty = False
            return q.Beat(self.entry.id, self.rows, self.bytes, self.phase, self.total,
                          self.streams, self.run_id)  # fmt: skip

    def progress_event(self) -> dict[str, Any]:
        return {"rows": self.rows, "bytes": self.bytes, "total_rows": self.total,
                "phase": self.phase, "streams": self.streams}  # fmt: skip


class QueueProgress:
    """The :class:`~bq2pg.observe.progress.Progress` of a queued run: counts what committed
    and stops the run at a chunk boundary once it is asked to cancel."""

    def __init__(self, running: _Running) -> None:
        self.running = running

    def _check(self) -> None:
        r = self.running
        if r.cancel.is_set() and not r.publishing:
            raise CancelledError(
                "the run was cancelled: it stopped at a chunk boundary, its committed chunks "
                "are in the ledger and nothing was published; resume it to finish",
                hint="POST /api/v1/runs/{id}/resume",
            )

    def start(self, total_rows: int | None, streams: int) -> None:
        r = self.running
        with r.lock:
            r.total, r.streams, r.phase, r.dirty = total_rows, streams, "loading", True
        self._check()

    def advance(self, rows: int, nbytes: int) -> None:
        r = self.running
        with r.lock:
            r.rows += rows
            r.bytes += nbytes
            r.dirty = True
        self._check()

    def phase(self, description: str) -> None:
        r = self.running
        self._check()
        with r.lock:
            r.phase, r.dirty = description, True
            if description.startswith(_PUBLISHING):
                r.publishing = True
        r.add_event("phase", {"phase": description})


class _Events(logging.Handler):
    """Copies the log events of the runs this worker executes into their event streams."""

    def __init__(self, running: dict[uuid.UUID, _Running]) -> None:
        super().__init__(logging.INFO)
        self.running = running

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno not in _LEVELS:
            return
        fields = context.fields()
        try:
            r = self.running.get(uuid.UUID(str(fields.get("queue_id"))))
        except ValueError:
            return
        if r is None:
            return
        message = record.msg if isinstance(record.msg, dict) else {"event": record.getMessage()}
        data = {
            k: redact(v) if isinstance(v, str) else v
            for k, v in message.items()
            if k not in ("exc_info", "_record", "_from_structlog", "logger")
            and isinstance(v, str | int | float | bool | type(None))
        }
        data["level"] = record.levelname.lower()
        if fields.get("run_id"):
            with contextlib.suppress(ValueError):
                r.run_id = uuid.UUID(str(fields["run_id"]))
        r.add_event("log", data)


class Worker:
    """Claims and runs queued runs until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        cfg: config_jobs.Config,
        concurrency: int = 1,
        *,
        worker_id: str | None = None,
        schedules_on: bool = True,
    ) -> None:
        self.settings = settings
        self.cfg = cfg
        self.concurrency = max(1, concurrency)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.running: dict[uuid.UUID, _Running] = {}
        self.threads: dict[uuid.UUID, threading.Thread] = {}
        self.schedules = schedules.configured(cfg) if schedules_on else []
        self._handler = _Events(self.running)
        self.stopping = False

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; then stop the running runs at their next chunk boundary:
        they end ``interrupted`` (their ledger keeps what committed) and, with
        ``auto_resume``, are queued again for the next worker."""
        url = self.settings.database_url
        with session(url, "preparing the service's queue") as conn:
            schema.ensure(conn)
        logging.getLogger("bq2pg").addHandler(self._handler)
        listener = connect(url)
        listener.execute(f"LISTEN {q.CHANNEL}")
        log.info("worker.started", worker=self.id, concurrency=self.concurrency,
                 schedules=[s.job for s in self.schedules])  # fmt: skip
        last_beat = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now - last_beat >= self.settings.heartbeat_s:
                    self._tick()
                    last_beat = now
                self._reap_threads()
                while len(self.running) < self.concurrency and not stop.is_set():
                    if not self._claim_one():
                        break
                with contextlib.suppress(Exception):
                    for _ in listener.notifies(timeout=0.5, stop_after=1):
                        pass
        finally:
            self.stopping = True
            for r in list(self.running.values()):
                r.cancel.set()  # stop at the next chunk boundary: resumable
            for t in list(self.threads.values()):
                t.join(timeout=60)
            logging.getLogger("bq2pg").removeHandler(self._handler)
            with contextlib.suppress(Exception):
                self._tick()
                with session(url, "stopping the worker") as conn:
                    q.forget_worker(conn, self.id)
            listener.close()
            log.info("worker.stopped", worker=self.id)

    def _tick(self) -> None:
        """Heartbeat, progress, events, cancellations; the reaper; the schedules."""
        url = self.settings.database_url
        try:
            with session(url, "the worker's heartbeat") as conn:
                running = list(self.running.values())
                for r in running:
                    if r.dirty:
                        r.add_event("progress", r.progress_event())
                pending: list[tuple[uuid.UUID, str, dict]] = []
                for r in running:
                    with r.lock:
                        pending += [(r.entry.id, n, d) for n, d in r.events]
                        r.events.clear()
                cancelled = q.heartbeat(
                    conn, self.id, [r.beat() for r in running], self.concurrency,
                    socket.gethostname(), os.getpid(),
                )  # fmt: skip
                q.events_many(conn, pending)
                for entry_id in cancelled:
                    found = self.running.get(entry_id)
                    if found is not None and not found.cancel.is_set():
                        log.info("run.cancelling", queue_id=str(entry_id))
                        found.cancel.set()
                reaped = q.reap(conn, self.settings.reaper_timeout_s,
                                resume=self.settings.auto_resume)  # fmt: skip
                for entry_id in reaped:
                    log.warning("run.reaped", queue_id=str(entry_id),
                                resumed=self.settings.auto_resume)  # fmt: skip
                    audit.record(conn, "api.runs.reaped", target=str(entry_id), actor=self.id,
                                 arguments={"auto_resume": self.settings.auto_resume})  # fmt: skip
                self._fire_schedules(conn)
        except Bq2pgError as exc:  # the database is away: try again at the next tick
            log.warning("worker.heartbeat_failed", error=redact(str(exc)))

    def _fire_schedules(self, conn: Any) -> None:
        if not self.schedules:
            return
        state = stored_schedules.schedule_state(conn)
        now = dt.datetime.now(dt.UTC)
        for s in self.schedules:
            paused, last = state.get(s.job, (False, None))
            slot = schedules.latest_slot(s.cron, now)
            if paused or (last is not None and last >= slot):
                continue
            with conn.transaction():
                if not stored_schedules.advance_schedule(conn, s.job, s.cron, slot):
                    continue
                if last is None and s.job not in state:
                    continue  # a new schedule starts from now: its first slot is the next
                try:
                    body = submit.RunCreate(job=s.job)
                    resolved = submit.resolve(body, self.cfg, "operator")
                    entry = q.enqueue(
                        conn, job=s.job, kind=resolved.kind,
                        target=submit.target_table(resolved), request=submit.stored(body),
                        actor=f"schedule:{s.job}", schedule=s.job, slot=slot,
                    )  # fmt: skip
                except q.Duplicate as dup:
                    log.info("schedule.skipped", job=s.job, slot=slot.isoformat(), why=dup.why)
                    continue
                audit.record(
                    conn,
                    "api.schedules.fired",
                    target=s.job,
                    actor=f"schedule:{s.job}",
                    arguments={"slot": slot.isoformat(), "run": str(entry.id)},
                )
                log.info("schedule.fired", job=s.job, slot=slot.isoformat(), queue_id=str(entry.id))

    def _claim_one(self) -> bool:
        try:
            with session(self.settings.database_url, "claiming a queued run") as conn:
                entry = q.claim(conn, self.id)
        except Bq2pgError as exc:
            log.warning("worker.claim_failed", error=redact(str(exc)))
            return False
        if entry is None:
            return False
        r = _Running(entry)
        self.running[entry.id] = r
        thread = threading.Thread(
            target=context.carry(self._execute), args=(r,), name=f"bq2pg-run-{entry.id.hex[:8]}",
            daemon=True,
        )  # fmt: skip
        self.threads[entry.id] = thread
        thread.start()
        return True

    def _reap_threads(self) -> None:
        for entry_id, thread in list(self.threads.items()):
            if not thread.is_alive():
                thread.join()
                del self.threads[entry_id]
                self.running.pop(entry_id, None)

    # -- one run -------------------------------------------------------------------------

    def _execute(self, r: _Running) -> None:
        entry = r.entry
        status: q.Status = "succeeded"
        error: dict[str, Any] | None = None
        rows: int | None = None
        with context.bound(queue_id=str(entry.id)):
            log.info("run.claimed", worker=self.id, job=entry.job, resume=entry.resume)
            try:
                result = self._run(r)
                rows = result.rows_read
                r.run_id = result.run_id
            except CancelledError as exc:
                status, error = ("interrupted" if self.stopping else "cancelled"), exc.fields()
            except QualityGateError as exc:
                status, error = "failed_quality", exc.fields()
            except Bq2pgError as exc:
                status, error = "failed", exc.fields()
            except Exception as exc:  # a bug: the run fails, the worker lives on
                log.exception("run.crashed", error=redact(repr(exc)))
                status, error = "failed", {"kind": type(exc).__name__,
                                           "message": redact(str(exc))[:2000]}  # fmt: skip
            if error:
                error = {k: redact(v) if isinstance(v, str) else v for k, v in error.items()}
            self._finish(r, status, error, rows)

    def _run(self, r: _Running) -> Any:
        entry = r.entry
        body = submit.from_stored(entry.request)
        resolved = submit.resolve(body, self.cfg, "admin")  # checked when it was queued
        built = runner.build(resolved, self.cfg)
        values = resolved.values
        plan = runner.estimate_of(built, values)
        estimate.check_budget(plan, max_bytes=values.get("max_bytes"),
                              max_usd=values.get("max_usd"))  # fmt: skip
        job = dataclasses.replace(
            built.job, estimate=plan.as_dict(), name=resolved.name,
            # a new run takes the request's id; a resumed one keeps its own
            run_id=uuid.uuid4() if entry.resume else entry.id,
        )  # fmt: skip
        r.add_event("plan", {"lines": estimate.lines(plan)})
        return runner.run(dataclasses.replace(built, job=job), QueueProgress(r))

    def _finish(
        self, r: _Running, status: q.Status, error: dict[str, Any] | None, rows: int | None
    ) -> None:
        for attempt in range(30):  # the database may be restarting: the outcome must land
            try:
                self._tick_one(r)
                with session(self.settings.database_url, "recording a run's end") as conn:
                    q.finish(conn, r.entry.id, status, error=error, run_id=r.run_id, rows=rows)
                    audit.record(
                        conn, "api.runs.finished", target=r.entry.target, actor=self.id,
                        arguments={"run": str(r.entry.id), "job": r.entry.job},
                        outcome="ok" if status == "succeeded" else status,
                    )  # fmt: skip
                    if status == "interrupted" and self.settings.auto_resume:
                        q.requeue(conn, r.entry.id, reason="the worker stopped")
                log.info("run.ended", status=status, worker=self.id)
                return
            except Bq2pgError as exc:
                log.warning("worker.finish_failed", error=redact(str(exc)), attempt=attempt)
                time.sleep(min(2.0 * (attempt + 1), 10.0))

    def _tick_one(self, r: _Running) -> None:
        """The run's last progress and events, before its end is recorded."""
        with session(self.settings.database_url, "recording a run's progress") as conn:
            r.add_event("progress", r.progress_event())
            with r.lock:
                pending = [(r.entry.id, n, d) for n, d in r.events]
                r.events.clear()
            q.heartbeat(conn, self.id, [r.beat()], self.concurrency, socket.gethostname(),
                        os.getpid())  # fmt: skip
            q.events_many(conn, pending)


def run_forever(
    settings: Settings, cfg: config_jobs.Config, concurrency: int, stop: threading.Event,
    on_start: Callable[[Worker], None] | None = None,
) -> None:  # fmt: skip
    """Make a worker and run it until ``stop`` is set."""
    worker = Worker(settings, cfg, concurrency)
    if on_start is not None:
        on_start(worker)
    worker.run(stop)
