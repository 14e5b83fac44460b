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
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

import psycopg
import pyarrow as pa

from bq2pg import ddl, load, normalize, predicate, state
from bq2pg.config import DEFAULT_STREAMS, redact
from bq2pg.encode import Encoder
from bq2pg.errors import Bq2pgError, ConfigError
from bq2pg.schema import Nested, TablePlan, plan_table

__all__ = [
    "CopyRequest",
    "Mode",
    "Nested",
    "Progress",
    "RunResult",
    "TableResult",
    "copy_table",
    "plan",
    "write_batches",
]
from bq2pg.source import ReadSession, Source, TableInfo, TableRef

log = logging.getLogger(__name__)

Mode = Literal["replace", "append", "merge"]

#: Encoded bytes buffered per stream before one COPY transaction. Large enough to amortise
#: the per-transaction round trips, small enough to keep memory flat (bench/ measures it).
COPY_CHUNK_BYTES = 32 * 1024 * 1024
#: Arrow bytes encoded at a time: a 50,000-row message of wide rows is sliced to this size so
#: that memory stays bounded however wide the rows are.
ENCODE_SLICE_BYTES = 16 * 1024 * 1024
#: Encoded chunks waiting per stream for the writer thread: one being encoded, one queued,
#: one being sent bounds a stream's memory to about 3 x COPY_CHUNK_BYTES.
CHUNKS_IN_FLIGHT = 1


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


class _Budget:
    """The rows still allowed by ``--limit``, shared by the stream threads."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        if self.left is None:
            return wanted
        with self._lock:
            granted = min(wanted, self.left)
            self.left -= granted
            return granted

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0


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


def plan(source: Source, request: CopyRequest) -> tuple[TableInfo, TablePlan, list[str]]:
    """Read the source schema and plan the target tables (no PostgreSQL needed).

    Returns the table info, the plan and the selected source field names.
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
    return info, table_plan, [f.name for f in fields]


def copy_table(source: Source, request: CopyRequest, progress: Progress | None = None) -> RunResult:
    """Copy one BigQuery table (or the filtered, projected part of it) into PostgreSQL.

    Raises:
        ConfigError: bad options, unmappable types, colliding names, incompatible target.
        SourceError: BigQuery refused or failed.
        TargetError: PostgreSQL refused or failed.
    """
    progress = progress or _NoProgress()
    started = time.perf_counter()
    info, table_plan, selected = plan(source, request)
    where = (
        predicate.validate(request.where, [f.name for f in info.fields]) if request.where else None
    )
    if request.limit is not None and request.limit < 0:
        raise ConfigError("--limit must be 0 or more")

    conn = load.connect(request.database_url)
    try:
        state.ensure(conn)
        run_id = state.start_run(
            conn,
            source=str(info.ref),
            target=table_plan.qualified,
            mode=request.mode,
            arguments=request.arguments(),
        )
        try:
            result = _run(source, request, info, table_plan, selected, where, conn, progress)
        except BaseException as exc:
            _cleanup(conn, request.mode, table_plan)
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


def _physical(mode: Mode, table: TablePlan) -> str:
    """The table that COPY writes to in ``mode``."""
    if mode == "replace":
        return load.side_name(table, load.LOAD_SUFFIX)
    if mode == "merge":
        return load.side_name(table, load.STAGE_SUFFIX)
    return table.name


def _prepare_targets(conn: psycopg.Connection, request: CopyRequest, plan_: TablePlan) -> None:
    statements = [ddl.create_schema(plan_.schema)]
    tables = plan_.all_tables()
    if request.drop:  # replace drops the targets only when publishing; --drop means now
        statements += [ddl.drop_table(t.schema, t.name) for t in tables]
    if request.mode == "replace":
        for t in tables:
            side = _physical("replace", t)
            statements += [ddl.drop_table(t.schema, side), ddl.create_table(t, name=side)]
        load.execute(conn, statements, f"creating the load tables of {plan_.qualified}")
        return
    load.execute(conn, statements, f"preparing {plan_.qualified}")
    create: list[psycopg.sql.Composed] = []
    for t in tables:
        if not load.check_compatible(conn, t):
            create.append(ddl.create_table(t))
            if t.key:
                create.append(ddl.add_primary_key(t))
        if request.mode == "merge":
            side = _physical("merge", t)
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
            [ddl.drop_table(t.schema, _physical(mode, t)) for t in plan_.all_tables()],
            "dropping the side tables of a failed run",
        )
    except Bq2pgError as exc:
        log.warning("could not drop the side tables: %s", exc)


def _run(
    source: Source,
    request: CopyRequest,
    info: TableInfo,
    plan_: TablePlan,
    selected: list[str],
    where: str | None,
    conn: psycopg.Connection,
    progress: Progress,
) -> RunResult:
    _prepare_targets(conn, request, plan_)
    session = source.open_session(
        info.ref,
        selected_fields=selected if request.columns else None,
        row_restriction=where,
        max_streams=max(1, request.streams),
    )
    total = session.estimated_rows if where else (info.num_rows or session.estimated_rows)
    if request.limit is not None:
        total = min(total, request.limit) if total is not None else request.limit
    progress.start(total, len(session.streams))
    log.info("read session %s: %d streams", session.name, len(session.streams))

    results = {t.name: TableResult(t.name) for t in plan_.all_tables()}
    lock = threading.Lock()
    budget = _Budget(request.limit)

    def counted(table: str, rows: int, nbytes: int) -> None:
        with lock:
            results[table].rows += rows
            results[table].bytes += nbytes
        if table == plan_.name:
            progress.advance(rows, 0)
        progress.advance(0, nbytes)

    load_started = time.perf_counter()
    if session.streams and not budget.exhausted:
        with ThreadPoolExecutor(len(session.streams), thread_name_prefix="bq2pg-stream") as pool:
            futures = [
                pool.submit(_load_stream, source, session, s, request, plan_, budget, counted)
                for s in session.streams
            ]
            for f in futures:
                f.result()
    load_seconds = time.perf_counter() - load_started
    for r in results.values():
        r.seconds = load_seconds

    publish_started = time.perf_counter()
    duplicates = _publish(conn, request, plan_, progress)
    publish_seconds = time.perf_counter() - publish_started
    return RunResult(
        run_id=uuid.UUID(int=0),
        source=str(info.ref),
        target=plan_.qualified,
        mode=request.mode,
        streams=len(session.streams),
        rows_read=results[plan_.name].rows,
        tables=list(results.values()),
        seconds=0.0,
        load_seconds=load_seconds,
        publish_seconds=publish_seconds,
        duplicates_collapsed=duplicates,
    )


def _publish(
    conn: psycopg.Connection, request: CopyRequest, plan_: TablePlan, progress: Progress
) -> int:
    duplicates = 0
    if request.mode == "replace":
        keys = [load.primary_key(t, _physical("replace", t)) for t in plan_.all_tables() if t.key]
        if keys:
            progress.phase(f"building the primary keys of {len(keys)} table(s)")
        load.execute(conn, keys, f"adding the keys of {plan_.qualified}")
        progress.phase("swapping the new tables in")
        load.publish_replace(conn, plan_)
    elif request.mode == "merge":
        progress.phase("merging the staged rows into the targets")
        duplicates = load.publish_merge(conn, plan_)
    progress.phase("ANALYZE")
    for t in plan_.all_tables():
        conn.execute(psycopg.sql.SQL("ANALYZE {}").format(ddl.ident(t.schema, t.name)))
    return duplicates


def _load_stream(
    source: Source,
    session: ReadSession,
    stream: str,
    request: CopyRequest,
    plan_: TablePlan,
    budget: _Budget,
    counted: Callable[[str, int, int], None],
) -> None:
    """Read one stream to its end (or to the --limit) and COPY it in chunks."""
    write_batches(
        request.database_url,
        plan_,
        source.read_stream(session, stream),
        mode=request.mode,
        budget=budget,
        counted=counted,
    )


def write_batches(
    database_url: str,
    plan_: TablePlan,
    batches: Iterable[pa.RecordBatch],
    *,
    mode: Mode = "append",
    budget: _Budget | None = None,
    counted: Callable[[str, int, int], None] | None = None,
    allow_binary: bool = True,
) -> None:
    """The load engine: Arrow batches of the source shape -> PostgreSQL, on one connection.

    Two threads: this one normalizes and encodes; a writer thread COPYs the previous chunk
    meanwhile, so the client's work overlaps the server's. At most :data:`CHUNKS_IN_FLIGHT`
    encoded chunks wait between them (bounded memory). Each chunk's rows, parent and children,
    commit in one transaction. ``mode`` picks the tables written (``_physical``).
    """
    budget = budget or _Budget(None)
    tables = plan_.all_tables()
    encoders = {t.name: Encoder(t.columns, allow_binary=allow_binary) for t in tables}
    chunks: queue.Queue[_Chunk | None] = queue.Queue(maxsize=CHUNKS_IN_FLIGHT)
    failed = threading.Event()
    conn = load.connect(database_url)

    def write() -> None:
        try:
            while (chunk := chunks.get()) is not None:
                parts = [
                    (t, _physical(mode, t), chunk.payloads[t.name], encoders[t.name].format)
                    for t in tables
                ]
                load.copy_chunk(conn, [p for p in parts if p[2]])
                for t in tables:
                    if counted is not None:
                        nbytes = sum(b.size for b in chunk.payloads[t.name])
                        counted(t.name, chunk.rows[t.name], nbytes)
        except BaseException:
            failed.set()  # the reader stops at its next batch
            while chunks.get() is not None:  # keep taking, so the reader never blocks
                pass
            raise

    with ThreadPoolExecutor(1, thread_name_prefix="bq2pg-copy") as writer_pool:
        writer = writer_pool.submit(write)
        try:
            chunk = _Chunk(tables)
            for batch in batches:
                if failed.is_set():
                    break
                granted = budget.take(batch.num_rows)
                if granted < batch.num_rows:
                    batch = batch.slice(0, granted)
                for piece in _slices(batch):
                    parts = normalize.split(pa.Table.from_batches([piece]), plan_)
                    for t in tables:
                        chunk.add(
                            t.name, encoders[t.name].encode(parts[t.name]), parts[t.name].num_rows
                        )
                    if chunk.nbytes >= COPY_CHUNK_BYTES:
                        chunks.put(chunk)
                        chunk = _Chunk(tables)
                if budget.exhausted:
                    break
            if chunk.nbytes and not failed.is_set():
                chunks.put(chunk)
        finally:
            chunks.put(None)  # the writer takes every item until None, even after a failure
            try:
                writer.result()
            finally:
                for e in encoders.values():
                    e.close()
                conn.close()


class _Chunk:
    """Encoded payloads and row counts per table, committed together in one transaction."""

    def __init__(self, tables: list[TablePlan]) -> None:
        self.payloads: dict[str, list[pa.Buffer]] = {t.name: [] for t in tables}
        self.rows = {t.name: 0 for t in tables}
        self.nbytes = 0

    def add(self, table: str, payload: pa.Buffer, rows: int) -> None:
        self.payloads[table].append(payload)
        self.rows[table] += rows
        self.nbytes += payload.size


def _slices(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """``batch`` cut into pieces of about :data:`ENCODE_SLICE_BYTES` of Arrow data."""
    if batch.num_rows == 0:
        return []
    size = batch.get_total_buffer_size()
    pieces = max(1, -(-size // ENCODE_SLICE_BYTES))
    step = -(-batch.num_rows // pieces)
    return [batch.slice(i, step) for i in range(0, batch.num_rows, step)]
