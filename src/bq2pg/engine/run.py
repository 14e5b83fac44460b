"""Running a job: lock the target, read every stream, load, verify, publish, record.

:func:`run_job` is the engine under ``copy`` and ``patents``. It reads the read session's
streams in parallel (one thread and one PostgreSQL connection per stream; Arrow, DuckDB, the
CSV writer and libpq release the GIL) through ``writer.write_batches``, then publishes:

* ``replace``: load into fresh ``<table>__bq2pg_new`` tables, add keys, then swap them in
  place of the targets in one transaction (readers see the old or the new table, never half);
* ``append``: load into staging tables, then move their rows into the targets (created when
  missing) in one transaction;
* ``merge``: COPY into staging tables, then upsert on the key in one transaction, replacing the
  child rows of every merged parent.

Exactly once: each chunk commits with its ledger row; an interrupted run resumes from the
ledger; publishing commits with the run's status; one run per target at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import psycopg
import pyarrow as pa
from psycopg import sql

from bq2pg.bigquery.client import ReadSession, Source, TableRef
from bq2pg.config.settings import DEFAULT_STREAMS, redact
from bq2pg.engine import dask as executor_module
from bq2pg.engine.breaker import CircuitBreaker
from bq2pg.engine.stream import DEAD_LETTERS, Budget, Ledger, Mode, Split, physical, write_batches
from bq2pg.errors import (
    Bq2pgError,
    ConfigError,
    SessionExpiredError,
    VerificationError,
)
from bq2pg.plan import ddl, watermark
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import connection as load
from bq2pg.postgres import postload
from bq2pg.quality import checksum
from bq2pg.state import runs as state

log = logging.getLogger(__name__)

#: Seconds the run's own connection may take to answer before publishing.
PING_TIMEOUT_S = 15.0
#: Seconds a publishing step (key builds, swap, merge) may take before the run's connection
#: counts as dead; key builds on 100M rows take many minutes, so this is generous.
PUBLISH_TIMEOUT_S = float(os.environ.get("BQ2PG_PUBLISH_TIMEOUT_S", 4 * 3600))
#: Seconds a new run's snapshot lies in the past, for a client clock running ahead of BigQuery's.
SNAPSHOT_MARGIN_S = 1.0
_VERIFYING = "verifying row counts and checksums against the ledger"
#: Attempts at the post-publish statements (indexes, ANALYZE) across reconnections.
AFTER_PUBLISH_ATTEMPTS = 5


@dataclass
class TableResult:
    """Rows and bytes loaded into one table."""

    name: str
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class RunResult:
    """The summary of one run."""

    run_id: uuid.UUID
    source: str
    target: str
    mode: str
    streams: int
    rows_read: int
    tables: list[TableResult]
    seconds: float
    load_seconds: float
    publish_seconds: float
    duplicates_collapsed: int = 0
    resumed: bool = False
    #: Tables whose content checksum was verified (the others: row counts only).
    checksummed: list[str] = field(default_factory=list)
    #: Source rows PostgreSQL rejected, kept in ``bq2pg.dead_letters`` (rows_read counts them).
    dead_letters: int = 0

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


class Progress(Protocol):
    """Receives progress from a run (the CLI draws it; the library never prints)."""

    def start(self, total_rows: int | None, streams: int) -> None: ...

    def advance(self, rows: int, nbytes: int) -> None: ...

    def phase(self, description: str) -> None: ...


class _NoProgress:
    def start(self, total_rows: int | None, streams: int) -> None:
        pass

    def advance(self, rows: int, nbytes: int) -> None:
        pass

    def phase(self, description: str) -> None:
        pass


@dataclass
class Job:
    """One read session's worth of work: what to read, the tables to write, how to publish.

    ``copy_table`` builds a job from a :class:`CopyRequest`; ``patents`` builds its own, with
    its model's tables and splitter, and the same engine runs both.
    """

    ref: TableRef
    database_url: str = field(repr=False)
    plan: TablePlan
    arguments: dict[str, object]
    selected: list[str] | None = None
    where: str | None = None
    limit: int | None = None
    streams: int = DEFAULT_STREAMS
    mode: Mode = "replace"
    drop: bool = False
    #: Makes one splitter per stream thread (a splitter may own a DuckDB connection).
    splitter: Callable[[], Split] | None = None
    #: Statements run after publishing, such as index builds, each in its own transaction.
    after: list[sql.Composed] = field(default_factory=list)
    #: Rows the source holds, for the progress bar (None: ask the read session).
    total_rows: int | None = None
    #: The column whose staged maximum becomes the target's watermark when publishing.
    watermark: str | None = None
    #: Verify content checksums besides row counts (``checksum``).
    checksum: bool = True
    #: Where the streams run: ``local`` threads, or ``dask://HOST:PORT`` (``executor``).
    executor: str = executor_module.LOCAL


def fingerprint(job: Job) -> str:
    """What makes two runs the same job (an interrupted one resumes only into the same job)."""
    tables = [(t.name, [(c.name, c.pg_type) for c in t.columns]) for t in job.plan.all_tables()]
    blob = [str(job.ref), job.plan.qualified, job.mode, job.selected, job.where, job.limit, tables]
    return hashlib.sha256(json.dumps(blob, default=str).encode()).hexdigest()[:32]


@dataclass
class _Resume:
    """An interrupted run this run continues: its id, session, and what the ledger holds."""

    run_id: uuid.UUID
    session: str
    streams: list[str]
    schema: bytes
    offsets: dict[str, int]
    rows: dict[str, int]
    snapshot_time: dt.datetime | None


def run_job(source: Source, job: Job, progress: Progress | None = None) -> RunResult:
    """Run a :class:`Job`: lock the target, prepare it, read every stream, load, publish.

    Exactly once: each chunk commits with its ledger row; a run interrupted at any moment
    (``kill -9``, a lost server) is resumed by the next run of the same job, which reads each
    stream from the first row the ledger does not hold. Publishing commits with the run's
    status. One run per target at a time (advisory lock).
    """
    progress = progress or _NoProgress()
    started = time.perf_counter()
    conn = load.connect(job.database_url)
    try:
        state.ensure(conn)
        state.lock_target(conn, job.plan.qualified)
        resume = _find_resume(conn, job)
        if resume is None:
            state.abandon_runs(conn, job.plan.qualified)
            run_id = state.start_run(
                conn,
                source=str(job.ref),
                target=job.plan.qualified,
                mode=job.mode,
                arguments=job.arguments,
                fingerprint=fingerprint(job),
            )
        else:
            run_id = resume.run_id
            log.warning("resuming interrupted run %s from its ledger", run_id)
        try:
            result = _run(source, job, conn, progress, run_id, resume)
        except BaseException as exc:
            # the side tables and the ledger stay: the next run of this job resumes from them
            message = redact(str(exc)) if isinstance(exc, Bq2pgError) else redact(repr(exc))
            with contextlib.suppress(Bq2pgError, psycopg.Error):
                state.finish_run(
                    conn, run_id, status="failed", rows_read=0, rows_loaded=0, bytes_=0,
                    error=message,
                )  # fmt: skip
            raise
        result.run_id = run_id
        result.resumed = resume is not None
        result.seconds = time.perf_counter() - started
        return result
    finally:
        conn.close()


def _find_resume(conn: psycopg.Connection, job: Job) -> _Resume | None:
    found = state.interrupted_run(conn, job.plan.qualified, fingerprint(job))
    if found is None:
        return None
    run_id, session, streams, schema, snapshot_time = found
    for t in job.plan.all_tables():  # the side tables must have survived
        if load.existing_columns(conn, t.schema, physical(job.mode, t)) is None:
            return None
    offsets, rows = state.committed(conn, run_id)
    return _Resume(run_id, session, streams, schema, offsets, rows, snapshot_time)


def _prepare_targets(conn: psycopg.Connection, job: Job) -> None:
    plan_ = job.plan
    try:
        state.ensure_schema(conn, plan_.schema)
    except psycopg.Error as exc:
        raise load.translate(exc, f"creating the schema {plan_.schema}") from exc
    statements: list[sql.Composed] = []
    tables = plan_.all_tables()
    if job.drop:  # replace drops the targets only when publishing; --drop means now
        statements += [ddl.drop_table(t.schema, t.name) for t in tables]
    if job.mode == "replace":
        for t in tables:
            load.check_rls(conn, t)
            side = physical("replace", t)
            statements += [ddl.drop_table(t.schema, side), ddl.create_table(t, name=side)]
        load.execute(conn, statements, f"creating the load tables of {plan_.qualified}")
        return
    load.execute(conn, statements, f"preparing {plan_.qualified}")
    create: list[sql.Composed] = []
    for t in tables:
        added = load.check_compatible(conn, t)
        if added is None:
            create.append(ddl.create_table(t))
            if t.key:
                create.append(ddl.add_primary_key(t))
        elif added:
            log.warning(
                "%s.%s: the source has new column(s) %s: adding them (earlier rows get NULL)",
                t.schema, t.name, ", ".join(c.name for c in added),
            )  # fmt: skip
            create.append(load.add_columns(t, added))
        # Staging is logged: crash recovery empties UNLOGGED tables, and the ledger would then
        # count rows that are gone.
        side = physical(job.mode, t)
        create.append(ddl.drop_table(t.schema, side))
        if job.mode == "append":
            # the target's CHECK and NOT NULL constraints too, so that a row they reject is
            # dead-lettered at COPY time instead of failing the whole publish
            create.append(
                sql.SQL(
                    "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(ddl.ident(t.schema, side), ddl.ident(t.schema, t.name))
            )
        else:
            create.append(ddl.create_table(t, name=side))
    load.execute(conn, create, f"creating {plan_.qualified}")


def _open_session(
    source: Source,
    job: Job,
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    snapshot_time: dt.datetime,
) -> ReadSession:
    """Open the run's read session at ``snapshot_time`` and record it (for resuming)."""
    session = source.open_session(
        job.ref,
        selected_fields=job.selected,
        row_restriction=job.where,
        max_streams=max(1, job.streams),
        snapshot_time=snapshot_time,
    )
    schema_bytes = session.arrow_schema.serialize().to_pybytes()
    state.record_session(conn, run_id, session.name, session.streams, schema_bytes, snapshot_time)
    return session


def _snapshot_now() -> dt.datetime:
    """The snapshot a new run reads: now, less a margin for the client's clock running ahead
    of BigQuery's, to the millisecond."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=SNAPSHOT_MARGIN_S)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class _Loaded:
    """What the streams of one read session loaded."""

    tables: dict[str, TableResult]
    dead: int
    seconds: float


def _run(
    source: Source,
    job: Job,
    conn: psycopg.Connection,
    progress: Progress,
    run_id: uuid.UUID,
    resume: _Resume | None,
) -> RunResult:
    if resume is None:
        _prepare_targets(conn, job)
        if job.checksum:
            state.record_checksum_columns(conn, run_id, _checksum_columns(job))
        snapshot = _snapshot_now()
        session = _open_session(source, job, conn, run_id, snapshot)
        offsets: dict[str, int] = {}
        done: dict[str, int] = {}
    else:
        snapshot = resume.snapshot_time or _snapshot_now()
        session = ReadSession(
            name=resume.session,
            streams=resume.streams,
            arrow_schema=pa.ipc.read_schema(pa.py_buffer(resume.schema)),
            snapshot_time=resume.snapshot_time,
            estimated_rows=None,
        )
        offsets, done = resume.offsets, resume.rows
    total = job.total_rows if job.total_rows is not None else session.estimated_rows
    if job.limit is not None:
        total = min(total, job.limit) if total is not None else job.limit
    progress.start(total, len(session.streams))
    log.info("read session %s: %d streams", session.name, len(session.streams))
    try:
        loaded = _load(source, job, session, run_id, offsets, done, progress)
    except SessionExpiredError as exc:
        # the offsets mean nothing in a new session: load again from the start, at the same
        # snapshot (the same data), once
        log.warning("%s; loading again from the start in a new session at %s", exc, snapshot)
        progress.phase("the read session expired: loading again at the same snapshot")
        sides = [ddl.ident(t.schema, physical(job.mode, t)) for t in job.plan.all_tables()]
        load.with_deadline(
            conn, PUBLISH_TIMEOUT_S, "emptying the side tables",
            lambda: state.forget_chunks(conn, run_id, sides),
        )  # fmt: skip
        session = _open_session(source, job, conn, run_id, snapshot)
        progress.start(total, len(session.streams))
        loaded = _load(source, job, session, run_id, {}, {}, progress)

    publish_started = time.perf_counter()
    # the run's connection sat idle during the load: make sure it still answers (it holds the
    # target's lock; if it is gone the run fails here and the next run resumes)
    load.with_deadline(
        conn, PING_TIMEOUT_S, "the run's connection", lambda: conn.execute("SELECT 1")
    )
    results = loaded.tables
    rows_loaded = results[job.plan.name].rows
    rows_read = rows_loaded + loaded.dead
    finished = state.finished_sql(
        run_id,
        status="succeeded",
        rows_read=rows_read,
        rows_loaded=rows_loaded,
        bytes_=sum(r.bytes for r in results.values()),
    )
    duplicates, checksummed = _publish(conn, job, progress, run_id, finished)
    publish_seconds = time.perf_counter() - publish_started
    return RunResult(
        run_id=run_id,
        source=str(job.ref),
        target=job.plan.qualified,
        mode=job.mode,
        streams=len(session.streams),
        rows_read=rows_read,
        tables=list(results.values()),
        seconds=0.0,
        load_seconds=loaded.seconds,
        publish_seconds=publish_seconds,
        duplicates_collapsed=duplicates,
        dead_letters=loaded.dead,
        checksummed=checksummed,
    )


def _load(
    source: Source,
    job: Job,
    session: ReadSession,
    run_id: uuid.UUID,
    offsets: dict[str, int],
    done: dict[str, int],
    progress: Progress,
) -> _Loaded:
    """Read every stream of ``session`` from its ``offsets`` and load it; ``done`` holds what
    the ledger already counts (a resumed run)."""
    if job.executor != executor_module.LOCAL:
        return _load_elsewhere(source, job, session, run_id, progress)
    results = {t.name: TableResult(t.name, rows=done.get(t.name, 0)) for t in job.plan.all_tables()}
    progress.advance(done.get(job.plan.name, 0), 0)
    lock = threading.Lock()
    budget = Budget(None if job.limit is None else job.limit - done.get(job.plan.name, 0))
    dead = [done.get(DEAD_LETTERS, 0)]

    def counted(table: str, rows: int, nbytes: int) -> None:
        with lock:
            if table == DEAD_LETTERS:
                dead[0] += rows
            else:
                results[table].rows += rows
                results[table].bytes += nbytes
        progress.advance(rows if table in (job.plan.name, DEAD_LETTERS) else 0, nbytes)

    breaker = CircuitBreaker()  # one for the run: its streams share one target
    started = time.perf_counter()
    if session.streams and not budget.exhausted:
        with ThreadPoolExecutor(len(session.streams), thread_name_prefix="bq2pg-stream") as pool:
            futures = [
                pool.submit(
                    _load_stream,
                    source,
                    session,
                    Ledger(run_id, s, offsets.get(s, 0)),
                    job,
                    budget,
                    counted,
                    breaker,
                )
                for s in session.streams
            ]
            for f in futures:
                f.result()
    seconds = time.perf_counter() - started
    for r in results.values():
        r.seconds = seconds
    return _Loaded(results, dead[0], seconds)


def _checksum_columns(job: Job) -> dict[str, list[tuple[str, str]]]:
    """Per table of the job, the (name, type) of the columns its checksum covers."""
    return {
        t.name: [(c.name, c.pg_type) for c in t.columns if checksum.kind(c.pg_type)]
        for t in job.plan.all_tables()
    }


def verify(conn: psycopg.Connection, job: Job, run_id: uuid.UUID) -> list[str]:
    """The load or staging tables hold, per table, the rows the ledger committed: as many,
    and (``checksum``) with the same content checksum. Returns the tables checksummed.

    Raises:
        VerificationError: a table's count or checksum differs from the ledger's.
    """
    _, ledger = state.committed(conn, run_id)
    sums: dict[str, int] = {}
    if (
        job.checksum
        and conn.info.server_version >= checksum.MIN_SERVER_VERSION
        # a run begun by an older bq2pg and resumed by this one holds checksums of two forms
        and state.checksum_form(conn, run_id) == checksum.FORM
    ):
        sums = state.ledger_checksums(conn, [run_id])
    columns = _checksum_columns(job)
    tables = sorted(job.plan.all_tables(), key=lambda t: -ledger.get(t.name, 0))

    def scan(scanner: psycopg.Connection, t: TablePlan) -> tuple[int, int | None]:
        covered = columns[t.name] if t.name in sums else []
        query = checksum.server_query(t.schema, physical(job.mode, t), covered)
        row = scanner.execute(query).fetchone()
        if row is None:
            return 0, None
        return int(row[0]), (int(row[1]) if covered and row[1] is not None else None)

    found = postload.spread(
        job.database_url, tables, scan, lanes=postload.lanes_for(job.streams, len(tables)),
        what="verifying", deadline=PUBLISH_TIMEOUT_S,
    )  # fmt: skip
    problems, checked = [], []
    for t, (count, content) in zip(tables, found, strict=True):
        wanted = ledger.get(t.name, 0)
        if count != wanted:
            problems.append(f"{t.name}: {count:,} rows, the ledger committed {wanted:,}")
        elif content is not None and content != sums[t.name]:
            problems.append(
                f"{t.name}: the content checksum of the stored rows differs from the ledger's "
                "(values changed between reading and storing)"
            )
        elif content is not None:
            checked.append(t.name)
    if problems:
        raise VerificationError(
            f"verification of {job.plan.qualified} failed, nothing was published: "
            + "; ".join(problems)
        )
    return checked


def _publish(
    conn: psycopg.Connection,
    job: Job,
    progress: Progress,
    run_id: uuid.UUID,
    finished: sql.Composed,
) -> tuple[int, list[str]]:
    """Verify, then publish with the run's status in the same transaction; index; ANALYZE.

    Every statement on the run's connection runs under a deadline, so that a connection gone
    half-open cannot hang the run (key builds and merges get a long one).
    """
    plan_ = job.plan
    duplicates = 0
    checked: list[str] = []

    def bounded(
        what: str, call: Callable[[], object], seconds: float = PUBLISH_TIMEOUT_S
    ) -> object:
        return load.with_deadline(conn, seconds, what, call)

    if job.mode == "replace":
        progress.phase(_VERIFYING)
        checked = bounded("verifying", lambda: verify(conn, job, run_id))  # type: ignore[assignment]
        keyed = [(t, physical("replace", t)) for t in plan_.all_tables() if t.key]
        if keyed:
            progress.phase(f"building the primary keys of {len(keyed)} table(s)")
        postload.add_primary_keys(
            job.database_url, keyed, lanes=postload.lanes_for(job.streams, len(keyed)),
            deadline=PUBLISH_TIMEOUT_S,
        )  # fmt: skip
        progress.phase("swapping the new tables in")
        bounded("publishing", lambda: load.publish_replace(conn, plan_, also=[finished]))
    elif job.mode == "merge":
        progress.phase(_VERIFYING)
        checked = bounded("verifying", lambda: verify(conn, job, run_id))  # type: ignore[assignment]
        progress.phase("merging the staged rows into the targets")
        also = [finished]
        if job.watermark:  # before the staging tables go, in the same transaction
            stage = physical("merge", plan_)
            also.insert(0, watermark.advance(plan_, job.watermark, stage, run_id))
        duplicates = int(bounded("merging", lambda: load.publish_merge(conn, plan_, also=also)))  # type: ignore[call-overload]
    else:
        progress.phase(_VERIFYING)
        checked = bounded("verifying", lambda: verify(conn, job, run_id))  # type: ignore[assignment]
        progress.phase("appending the staged rows to the targets")
        bounded("appending", lambda: load.publish_append(conn, plan_, also=[finished]))
    # The data and the run's status are committed: what follows improves reading (indexes,
    # statistics) and must not fail the run (a re-run of an append would load it twice).
    statements = list(job.after)
    statements += [
        sql.SQL("ANALYZE {}").format(ddl.ident(t.schema, t.name)) for t in plan_.all_tables()
    ]
    if job.after:
        progress.phase(f"building {len(job.after)} index(es)")
    postload.after_publish(
        job.database_url, statements, lanes=postload.lanes_for(job.streams, len(statements)),
        attempts=AFTER_PUBLISH_ATTEMPTS, deadline=PUBLISH_TIMEOUT_S,
    )  # fmt: skip
    return duplicates, checked


def _load_elsewhere(
    source: Source, job: Job, session: ReadSession, run_id: uuid.UUID, progress: Progress
) -> _Loaded:
    """The streams as tasks on a Dask cluster; what they loaded is read back from the ledger
    (a task run twice counts once)."""
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
            mode=job.mode,
            splitter=job.splitter,
            checksum=job.checksum,
        )
        for s in session.streams
    ]
    sizes: dict[str, int] = {}

    def finished(done: executor_module.StreamDone) -> None:
        for table, nbytes in done.bytes.items():
            sizes[table] = sizes.get(table, 0) + nbytes
        progress.advance(done.rows.get(job.plan.name, 0) + done.dead, sum(done.bytes.values()))

    started = time.perf_counter()
    if tasks:
        executor_module.run_on_dask(job.executor, tasks, finished)
    seconds = time.perf_counter() - started
    with load.connect(job.database_url) as conn:
        _, ledger = state.committed(conn, run_id)
    tables = {
        t.name: TableResult(t.name, ledger.get(t.name, 0), sizes.get(t.name, 0), seconds)
        for t in job.plan.all_tables()
    }
    return _Loaded(tables, ledger.get(DEAD_LETTERS, 0), seconds)


def _load_stream(
    source: Source,
    session: ReadSession,
    ledger: Ledger,
    job: Job,
    budget: Budget,
    counted: Callable[[str, int, int], None],
    breaker: CircuitBreaker,
) -> None:
    """Read one stream from its first uncommitted row to its end (or the --limit); load it."""
    write_batches(
        job.database_url,
        job.plan,
        source.read_stream(session, ledger.stream, ledger.offset),
        into=partial(physical, job.mode),
        splitter=job.splitter,
        budget=budget,
        counted=counted,
        ledger=ledger,
        checksum=job.checksum,
        breaker=breaker,
    )
