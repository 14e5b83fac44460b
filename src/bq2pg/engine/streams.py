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
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from bq2pg.bigquery import read
from bq2pg.bigquery.client import Source
from bq2pg.bigquery.read import ReadSession
from bq2pg.engine import dask as executor_module
from bq2pg.engine.breaker import CircuitBreaker
from bq2pg.engine.job import Job
from bq2pg.engine.stream import Budget, Stream, write_batches
from bq2pg.errors import ConfigError
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

    def counted(table: str, rows: int, nbytes: int) -> None:
        with lock:
            if table != DEAD_LETTERS:
                sizes[table] += nbytes
        progress.advance(rows if table in (job.plan.name, DEAD_LETTERS) else 0, nbytes)

    breaker = CircuitBreaker()  # one for the run: its streams share one target
    if session.streams and not budget.exhausted:
        with ThreadPoolExecutor(len(session.streams), thread_name_prefix="bq2pg-stream") as pool:
            futures = [
                pool.submit(
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
        )
        for s in session.streams
    ]
    sizes: dict[str, int] = {t.name: 0 for t in job.plan.all_tables()}

    def finished(done: executor_module.StreamDone) -> None:
        for table, nbytes in done.bytes.items():
            sizes[table] = sizes.get(table, 0) + nbytes
        progress.advance(done.rows.get(job.plan.name, 0) + done.dead, sum(done.bytes.values()))

    if tasks:
        executor_module.run_on_dask(job.executor, tasks, finished)
    return sizes
