"""The copy job: plan -> read -> normalize -> load -> publish, one call.

:func:`copy_table` is the public entry point the CLI (and later the REST API) call. It plans
the target tables from the BigQuery schema, opens one read session, reads its streams in
parallel (one thread and one PostgreSQL connection per stream; Arrow, DuckDB, the CSV writer
and libpq release the GIL), encodes each batch column-wise and COPYs it, then publishes:

* ``replace``: load into fresh ``<table>__bq2pg_new`` tables, add keys, then swap them in
  place of the targets in one transaction (readers see the old or the new table, never half);
* ``append``: COPY straight into the targets (created when missing);
* ``merge``: COPY into UNLOGGED staging tables, then upsert on ``--key`` in one transaction,
  replacing the child rows of every merged parent.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Protocol

import psycopg
from psycopg import sql

from bq2pg import ddl, load, normalize, predicate, state
from bq2pg.config import DEFAULT_STREAMS, redact
from bq2pg.errors import Bq2pgError, ConfigError
from bq2pg.schema import Nested, TablePlan, plan_table
from bq2pg.source import ReadSession, Source, TableRef
from bq2pg.writer import Budget, Mode, Split, physical, write_batches

__all__ = [
    "CopyRequest",
    "Job",
    "Mode",
    "Nested",
    "Progress",
    "RunResult",
    "TableResult",
    "copy_table",
    "plan",
    "run_job",
    "write_batches",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyRequest:
    """What to copy, where, and how (the options of ``bq2pg copy``)."""

    source: str
    database_url: str = field(repr=False)
    table: str | None = None
    columns: tuple[str, ...] = ()
    where: str | None = None
    limit: int | None = None
    streams: int = DEFAULT_STREAMS
    mode: Mode = "replace"
    key: tuple[str, ...] = ()
    nested: Nested = "jsonb"
    drop: bool = False

    def arguments(self) -> dict[str, object]:
        """The request as stored with the run (without the database URL)."""
        args = asdict(self)
        args.pop("database_url")
        return args


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


def target_name(request: CopyRequest, ref: TableRef) -> tuple[str, str]:
    """(schema, table) of the target: ``--table`` or ``public.<source table>``."""
    if not request.table:
        return "public", ref.table
    schema, dot, name = request.table.partition(".")
    if not dot:
        return "public", schema
    if not schema or not name:
        raise ConfigError(f"--table {request.table!r} is not SCHEMA.NAME")
    return schema, name


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


def plan(source: Source, request: CopyRequest) -> tuple[TablePlan, list[str], int | None]:
    """Read the source schema and plan the target tables (no PostgreSQL needed).

    Returns the plan, the selected source field names and the source's row count.
    """
    ref = TableRef.parse(request.source)
    info = source.table(ref)
    fields = info.fields
    if request.columns:
        by_name = {f.name.lower(): f for f in fields}
        unknown = [c for c in request.columns if c.lower() not in by_name]
        if unknown:
            raise ConfigError(
                f"--columns names {', '.join(unknown)}, not in {ref}; its columns are "
                + ", ".join(f.name for f in fields)
            )
        wanted = {c.lower() for c in request.columns}
        fields = [f for f in fields if f.name.lower() in wanted]
    if request.mode == "merge" and not request.key:
        raise ConfigError("--mode merge needs --key COLUMN[,COLUMN] to match rows on")
    schema, name = target_name(request, ref)
    table_plan = plan_table(
        fields, source=str(ref), schema=schema, name=name, key=request.key, nested=request.nested
    )
    if request.where:
        predicate.validate(request.where, [f.name for f in info.fields])
    return table_plan, [f.name for f in fields], info.num_rows


def copy_table(source: Source, request: CopyRequest, progress: Progress | None = None) -> RunResult:
    """Copy one BigQuery table (or the filtered, projected part of it) into PostgreSQL.

    Raises:
        ConfigError: bad options, unmappable types, colliding names, incompatible target.
        SourceError: BigQuery refused or failed.
        TargetError: PostgreSQL refused or failed.
    """
    if request.limit is not None and request.limit < 0:
        raise ConfigError("--limit must be 0 or more")
    table_plan, selected, num_rows = plan(source, request)
    job = Job(
        ref=TableRef.parse(request.source),
        database_url=request.database_url,
        plan=table_plan,
        arguments=request.arguments(),
        selected=selected if request.columns else None,
        where=request.where.strip() if request.where else None,
        limit=request.limit,
        streams=request.streams,
        mode=request.mode,
        drop=request.drop,
        total_rows=None if request.where else num_rows,
    )
    return run_job(source, job, progress)


def run_job(source: Source, job: Job, progress: Progress | None = None) -> RunResult:
    """Run a :class:`Job`: prepare the targets, read every stream, load, publish, record."""
    progress = progress or _NoProgress()
    started = time.perf_counter()
    conn = load.connect(job.database_url)
    try:
        state.ensure(conn)
        run_id = state.start_run(
            conn,
            source=str(job.ref),
            target=job.plan.qualified,
            mode=job.mode,
            arguments=job.arguments,
        )
        try:
            result = _run(source, job, conn, progress)
        except BaseException as exc:
            _cleanup(conn, job.mode, job.plan)
            message = redact(str(exc)) if isinstance(exc, Bq2pgError) else redact(repr(exc))
            state.finish_run(
                conn, run_id, status="failed", rows_read=0, rows_loaded=0, bytes_=0, error=message
            )
            raise
        result.run_id = run_id
        result.seconds = time.perf_counter() - started
        state.finish_run(
            conn,
            run_id,
            status="succeeded",
            rows_read=result.rows_read,
            rows_loaded=result.tables[0].rows if result.tables else 0,
            bytes_=result.bytes,
        )
        return result
    finally:
        conn.close()


def _prepare_targets(conn: psycopg.Connection, job: Job) -> None:
    plan_ = job.plan
    statements = [ddl.create_schema(plan_.schema)]
    tables = plan_.all_tables()
    if job.drop:  # replace drops the targets only when publishing; --drop means now
        statements += [ddl.drop_table(t.schema, t.name) for t in tables]
    if job.mode == "replace":
        for t in tables:
            side = physical("replace", t)
            statements += [ddl.drop_table(t.schema, side), ddl.create_table(t, name=side)]
        load.execute(conn, statements, f"creating the load tables of {plan_.qualified}")
        return
    load.execute(conn, statements, f"preparing {plan_.qualified}")
    create: list[sql.Composed] = []
    for t in tables:
        if not load.check_compatible(conn, t):
            create.append(ddl.create_table(t))
            if t.key:
                create.append(ddl.add_primary_key(t))
        if job.mode == "merge":
            side = physical("merge", t)
            create += [
                ddl.drop_table(t.schema, side),
                ddl.create_table(t, name=side, unlogged=True),
            ]
    load.execute(conn, create, f"creating {plan_.qualified}")


def _cleanup(conn: psycopg.Connection, mode: Mode, plan_: TablePlan) -> None:
    """Drop the side tables of a failed run (targets are untouched in replace and merge)."""
    if mode == "append":
        return
    try:
        load.execute(
            conn,
            [ddl.drop_table(t.schema, physical(mode, t)) for t in plan_.all_tables()],
            "dropping the side tables of a failed run",
        )
    except Bq2pgError as exc:
        log.warning("could not drop the side tables: %s", exc)


def _run(source: Source, job: Job, conn: psycopg.Connection, progress: Progress) -> RunResult:
    _prepare_targets(conn, job)
    session = source.open_session(
        job.ref,
        selected_fields=job.selected,
        row_restriction=job.where,
        max_streams=max(1, job.streams),
    )
    total = job.total_rows if job.total_rows is not None else session.estimated_rows
    if job.limit is not None:
        total = min(total, job.limit) if total is not None else job.limit
    progress.start(total, len(session.streams))
    log.info("read session %s: %d streams", session.name, len(session.streams))

    results = {t.name: TableResult(t.name) for t in job.plan.all_tables()}
    lock = threading.Lock()
    budget = Budget(job.limit)

    def counted(table: str, rows: int, nbytes: int) -> None:
        with lock:
            results[table].rows += rows
            results[table].bytes += nbytes
        progress.advance(rows if table == job.plan.name else 0, nbytes)

    load_started = time.perf_counter()
    if session.streams and not budget.exhausted:
        with ThreadPoolExecutor(len(session.streams), thread_name_prefix="bq2pg-stream") as pool:
            futures = [
                pool.submit(_load_stream, source, session, s, job, budget, counted)
                for s in session.streams
            ]
            for f in futures:
                f.result()
    load_seconds = time.perf_counter() - load_started
    for r in results.values():
        r.seconds = load_seconds

    publish_started = time.perf_counter()
    duplicates = _publish(conn, job, progress)
    publish_seconds = time.perf_counter() - publish_started
    return RunResult(
        run_id=uuid.UUID(int=0),
        source=str(job.ref),
        target=job.plan.qualified,
        mode=job.mode,
        streams=len(session.streams),
        rows_read=results[job.plan.name].rows,
        tables=list(results.values()),
        seconds=0.0,
        load_seconds=load_seconds,
        publish_seconds=publish_seconds,
        duplicates_collapsed=duplicates,
    )


def _publish(conn: psycopg.Connection, job: Job, progress: Progress) -> int:
    plan_ = job.plan
    duplicates = 0
    if job.mode == "replace":
        keys = [load.primary_key(t, physical("replace", t)) for t in plan_.all_tables() if t.key]
        if keys:
            progress.phase(f"building the primary keys of {len(keys)} table(s)")
        load.execute(conn, keys, f"adding the keys of {plan_.qualified}")
        progress.phase("swapping the new tables in")
        load.publish_replace(conn, plan_)
    elif job.mode == "merge":
        progress.phase("merging the staged rows into the targets")
        duplicates = load.publish_merge(conn, plan_)
    if job.after:
        progress.phase(f"building {len(job.after)} index(es)")
        for statement in job.after:
            load.execute(conn, [statement], f"after loading {plan_.qualified}")
    progress.phase("ANALYZE")
    for t in plan_.all_tables():
        conn.execute(sql.SQL("ANALYZE {}").format(ddl.ident(t.schema, t.name)))
    return duplicates


def _load_stream(
    source: Source,
    session: ReadSession,
    stream: str,
    job: Job,
    budget: Budget,
    counted: Callable[[str, int, int], None],
) -> None:
    """Read one stream to its end (or to the --limit) and load it."""
    split = job.splitter() if job.splitter else partial(normalize.split, plan=job.plan)
    write_batches(
        job.database_url,
        job.plan,
        source.read_stream(session, stream),
        mode=job.mode,
        split=split,
        budget=budget,
        counted=counted,
    )
