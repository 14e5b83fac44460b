"""A run's streams, read and loaded in parallel: one thread and one connection per stream here,
or one task per stream on a Dask cluster (``engine.dask``).

Either way each stream reads from the first row its ledger does not hold and commits chunk by
chunk with its ledger rows; what the run loaded is then read from the ledger, the one count
that holds wherever the streams ran and however often a task ran.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from bq2pg.bigquery import read
from bq2pg.bigquery.client import Source
from bq2pg.bigquery.read import ReadSession
from bq2pg.engine import dask as executor_module
from bq2pg.engine.breaker import CircuitBreaker
from bq2pg.engine.job import Job
from bq2pg.engine.stream import Budget, Stream, write_batches
from bq2pg.errors import ConfigError
from bq2pg.observe import context, metrics, tracing
from bq2pg.observe.progress import Progress
from bq2pg.postgres.target import Mode, physical
from bq2pg.state.ledger import DEAD_LETTERS


def load(
    source: Source,
    job: Job,
    mode: Mode,
    session: ReadSession,
    run_id: uuid.UUID,
    offsets: dict[str, int],
    done: dict[str, int],
    progress: Progress,
) -> tuple[dict[str, int], float]:
    """Read every stream of ``session`` from its ``offsets`` and load it; ``done`` holds the
    rows per table the ledger already counts (a resumed run). Returns the COPY bytes per table
    and the seconds the load took."""
    started = time.perf_counter()
    if job.executor != executor_module.LOCAL:
        sizes = _load_on_dask(source, job, mode, session, run_id, progress)
    else:
        sizes = _load_here(source, job, mode, session, run_id, offsets, done, progress)
    return sizes, time.perf_counter() - started


def _load_here(
    source: Source,
    job: Job,
    mode: Mode,
    session: ReadSession,
    run_id: uuid.UUID,
    offsets: dict[str, int],
    done: dict[str, int],
    progress: Progress,
) -> dict[str, int]:
    sizes = {t.name: 0 for t in job.plan.all_tables()}
    progress.advance(done.get(job.plan.name, 0) + done.get(DEAD_LETTERS, 0), 0)
    lock = threading.Lock()
    budget = Budget(None if job.limit is None else job.limit - done.get(job.plan.name, 0))

    committed = Committed(job)

    def counted(table: str, rows: int, nbytes: int) -> None:
        with lock:
            if table != DEAD_LETTERS:
                sizes[table] += nbytes
        committed.count(table, rows, nbytes)
        progress.advance(rows if table in (job.plan.name, DEAD_LETTERS) else 0, nbytes)

    breaker = CircuitBreaker()  # one for the run: its streams share one target
    metrics.breaker_changed("closed")
    if session.streams and not budget.exhausted:
        with ThreadPoolExecutor(len(session.streams), thread_name_prefix="bq2pg-stream") as pool:
            futures = [
                pool.submit(
                    context.carry(in_stream),
                    s,
                    write_batches,
                    job.database_url,
                    job.plan,
                    read.read_stream(source, session, s, offsets.get(s, 0)),
                    into=partial(physical, mode),
                    splitter=job.splitter,
                    budget=budget,
                    counted=counted,
                    stream=Stream(run_id, s, offsets.get(s, 0)),
                    checksum=job.checksum,
                    breaker=breaker,
                )
                for s in session.streams
            ]
            for f in futures:
                f.result()
    return sizes


def _load_on_dask(
    source: Source,
    job: Job,
    mode: Mode,
    session: ReadSession,
    run_id: uuid.UUID,
    progress: Progress,
) -> dict[str, int]:
    """The streams as tasks on a Dask cluster (a task run twice loads once: the ledger)."""
    if job.limit is not None:
        raise ConfigError("--limit works with --executor local only (one budget for all streams)")
    tasks = [
        executor_module.StreamTask(
            endpoints=source.endpoints,
            emulated=source.emulated,
            session=session,
            stream=s,
            run_id=run_id,
            database_url=job.database_url,
            plan=job.plan,
            mode=mode,
            splitter=job.splitter,
            checksum=job.checksum,
            fields=context.fields(),
            trace=tracing.carrier(),
        )
        for s in session.streams
    ]
    sizes: dict[str, int] = {t.name: 0 for t in job.plan.all_tables()}

    committed = Committed(job)

    def finished(done: executor_module.StreamDone) -> None:
        for table, nbytes in done.bytes.items():
            sizes[table] = sizes.get(table, 0) + nbytes
        for table in set(done.rows) | set(done.bytes):
            committed.count(table, done.rows.get(table, 0), done.bytes.get(table, 0))
        if done.dead:
            committed.count(DEAD_LETTERS, done.dead, 0)
        progress.advance(done.rows.get(job.plan.name, 0) + done.dead, sum(done.bytes.values()))

    if tasks:
        executor_module.run_on_dask(job.executor, tasks, finished)
    return sizes


def short(stream: str) -> str:
    """How logs and spans name a stream: the last part of its name."""
    return stream.rsplit("/", 1)[-1]


def in_stream(name: str, fn: Callable[..., None], /, *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)`` as the load of the stream ``name``: its span, its log fields,
    and the gauge of active streams."""
    labels = metrics.run_labels()
    with (
        context.bound(stream=short(name)),
        tracing.span("bq2pg.stream", **{"bq2pg.stream": name}),
    ):
        metrics.STREAMS_ACTIVE.labels(*labels).inc()
        try:
            fn(*args, **kwargs)
        finally:
            metrics.STREAMS_ACTIVE.labels(*labels).dec()


class Committed:
    """Counts what the run's chunks committed into the run's metrics (thread-safe: the
    counters are)."""

    def __init__(self, job: Job) -> None:
        labels = metrics.run_labels()
        self.parent = job.plan.name
        self.tables = {
            t.name: metrics.ROWS_COMMITTED.labels(*labels, t.name) for t in job.plan.all_tables()
        }
        self.copy_bytes = metrics.COPY_BYTES.labels(*labels)
        self.dead = metrics.ROWS_DEAD_LETTERED.labels(*labels)

    def count(self, table: str, rows: int, nbytes: int) -> None:
        if table == DEAD_LETTERS:
            self.dead.inc(rows)
        elif table in self.tables:
            self.tables[table].inc(rows)
            self.copy_bytes.inc(nbytes)
        metrics.progressed()
