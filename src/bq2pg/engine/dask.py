"""Where a run's streams are read and loaded: threads here, or tasks on a Dask cluster.

``local`` (the default): one thread and one PostgreSQL connection per stream in this process
(``engine.streams``). ``dask://HOST:PORT``: each stream of the read session is a task on a Dask
distributed cluster (extra ``bq2pg[dask]``). A worker makes its own BigQuery clients from the
run's endpoints, asks the ledger how far its stream has committed, then reads and COPYs from
there with the same ledger, chunk by chunk, as a local stream does. So exactly-once holds
across machines: a task that Dask runs again (its worker died) resumes where the ledger stands
instead of loading twice, and a run interrupted as a whole resumes like any other.

The run itself (session, verification, publishing, the target's lock) stays in the process
that started it; workers only need to reach BigQuery and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bq2pg.bigquery import read
from bq2pg.bigquery.client import Source
from bq2pg.bigquery.read import ReadSession
from bq2pg.engine.stream import Split, Stream, write_batches
from bq2pg.errors import ConfigError
from bq2pg.observe import context, tracing
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres.connection import session as pg_session
from bq2pg.postgres.target import Mode, physical
from bq2pg.state import ledger
from bq2pg.state.ledger import DEAD_LETTERS

LOCAL = "local"
DASK_PREFIX = "dask://"
#: Times Dask may run a stream's task again after losing its worker (each resumes from the
#: ledger).
TASK_RETRIES = 2


def check(executor: str) -> None:
    """Refuse an executor that is neither ``local`` nor ``dask://HOST:PORT``."""
    if executor != LOCAL and not (
        executor.startswith(DASK_PREFIX) and ":" in executor.removeprefix(DASK_PREFIX)
    ):
        raise ConfigError(f"--executor must be local or dask://HOST:PORT, not {executor!r}")


@dataclass(frozen=True)
class StreamTask:
    """One stream of a run, as a task a Dask worker can run (everything in it pickles)."""

    endpoints: tuple[str | None, str | None, str | None]
    emulated: bool
    session: ReadSession
    stream: str
    run_id: uuid.UUID
    database_url: str = field(repr=False)
    plan: TablePlan
    mode: Mode
    splitter: Callable[[], Split] | None
    checksum: bool
    #: The run's log fields (run_id, job, target_table) and trace context (W3C headers).
    fields: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamDone:
    """What a task loaded: rows and bytes per table, source rows dead-lettered."""

    stream: str
    rows: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    dead: int = 0


def run_task(task: StreamTask) -> StreamDone:
    """Read one stream from the first row its ledger does not hold, and load it (on a worker),
    in its run's trace and with its run's log fields."""
    with (
        context.bound(**task.fields, stream=task.stream.rsplit("/", 1)[-1]),
        tracing.continued(task.trace),
        tracing.span("bq2pg.stream", **{"bq2pg.stream": task.stream, "bq2pg.executor": "dask"}),
    ):
        return _load_stream(task)


def _load_stream(task: StreamTask) -> StreamDone:
    project, rest, storage = task.endpoints
    source = Source(
        project=project, rest_endpoint=rest, storage_endpoint=storage, emulator=task.emulated
    )
    with pg_session(task.database_url, "reading the ledger") as conn:
        offsets = ledger.committed(conn, task.run_id).offsets
    done = StreamDone(task.stream)

    def counted(table: str, rows: int, nbytes: int) -> None:
        if table == DEAD_LETTERS:
            done.dead += rows
        else:
            done.rows[table] = done.rows.get(table, 0) + rows
            done.bytes[table] = done.bytes.get(table, 0) + nbytes

    stream = Stream(task.run_id, task.stream, offsets.get(task.stream, 0))
    write_batches(
        task.database_url,
        task.plan,
        read.read_stream(source, task.session, task.stream, stream.offset),
        into=lambda t: physical(task.mode, t),
        splitter=task.splitter,
        counted=counted,
        stream=stream,
        checksum=task.checksum,
    )
    return done


def run_on_dask(
    executor: str, tasks: list[StreamTask], finished: Callable[[StreamDone], None]
) -> None:
    """Run ``tasks`` on the Dask cluster of ``executor``; ``finished`` hears of each one."""
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise ConfigError(
            "--executor dask:// needs the dask extra: pip install 'bq2pg[dask]'"
        ) from exc
    address = "tcp://" + executor.removeprefix(DASK_PREFIX)
    try:
        client = Client(address, timeout=30)
    except OSError as exc:
        raise ConfigError(f"no Dask scheduler answers at {address}: {exc}") from exc
    with client:
        futures = [
            client.submit(
                run_task, t, key=f"bq2pg-{t.run_id}-{i}", pure=False, retries=TASK_RETRIES
            )
            for i, t in enumerate(tasks)
        ]
        try:
            for future in as_completed(futures):
                finished(future.result())  # a task's error is raised here, as it was raised
        finally:
            client.cancel(futures)
