"""One stream's load: Arrow batches in, chunks committed in PostgreSQL with their ledger rows.

:func:`write_batches` takes batches shaped like the source, splits them into the plan's tables
(``arrow.split`` or a job's own splitter), encodes each table column-wise (``arrow.encode``)
and commits the chunks (``state.ledger.commit_chunk``: COPY and ledger row in one
transaction). Two threads: the caller's splits and encodes while a writer thread sends the
previous chunk, so the client's work overlaps the server's. A chunk whose COPY PostgreSQL
rejects for a row's data is loaded again with the bad rows isolated into the dead letters
(``state.deadletters.isolate``).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import pyarrow as pa

from bq2pg import retry
from bq2pg.arrow import split as normalize
from bq2pg.arrow.encode import Encoder
from bq2pg.config.settings import tuning
from bq2pg.engine.breaker import CircuitBreaker
from bq2pg.engine.memory import give_back_memory, tune_malloc
from bq2pg.errors import RowRejectedError, TransientTargetError
from bq2pg.observe import context, metrics, tracing
from bq2pg.observe.log import get_logger
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import copy
from bq2pg.postgres.connection import Connection, connect, with_deadline
from bq2pg.quality.checksum import Checksummer
from bq2pg.state import deadletters, ledger
from bq2pg.state.ledger import DEAD_LETTERS

T = TypeVar("T")
#: Turns one source batch into rows of each table of a plan, by table name.
Split = Callable[[pa.Table], dict[str, pa.Table]]
#: Rows and encoded bytes committed into one table (called after each commit).
Counted = Callable[[str, int, int], None]
#: Arrow bytes encoded at a time: a 50,000-row message of wide rows is sliced to this size so
#: that memory stays bounded however wide the rows are.
ENCODE_SLICE_BYTES = 16 * 1024 * 1024
#: Encoded chunks waiting between the encoding thread and the writer thread: with one being
#: encoded and one being sent, a stream holds about 3 x ``copy_chunk_bytes`` of encoded data.
CHUNKS_IN_FLIGHT = 1
log = get_logger(__name__)


class Budget:
    """The rows still allowed by ``--limit``, shared by the stream threads."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        """Grant up to ``wanted`` rows."""
        if self.left is None:
            return wanted
        with self._lock:
            granted = min(wanted, self.left)
            self.left -= granted
            return granted

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0


@dataclass
class Stream:
    """Where a stream's chunks are recorded: the run, the stream, its first uncommitted row."""

    run_id: uuid.UUID
    stream: str
    offset: int = 0


class _Chunk:
    """Encoded payloads and row counts per table, committed together in one transaction."""

    def __init__(self, tables: list[TablePlan], start: int) -> None:
        self.payloads: dict[str, list[pa.Buffer]] = {t.name: [] for t in tables}
        self.rows = dict.fromkeys(self.payloads, 0)
        #: Content checksum per table (None once a piece could not be checksummed).
        self.checksums: dict[str, int | None] = dict.fromkeys(self.payloads, 0)
        self.nbytes = 0
        self.start = self.end = start  # source-row offsets in the stream
        self.sources: list[tuple[int, pa.Table]] = []  # kept to isolate rejected rows
        self.opened = time.perf_counter()  # when its first source row was read

    def add(self, table: str, payload: pa.Buffer, rows: int, checksum: int | None) -> None:
        self.payloads[table].append(payload)
        self.rows[table] += rows
        self.nbytes += payload.size
        total = self.checksums[table]
        self.checksums[table] = None if total is None or checksum is None else total + checksum


def _slices(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """``batch`` cut into pieces of about :data:`ENCODE_SLICE_BYTES` of Arrow data."""
    if batch.num_rows == 0:
        return []
    size = batch.get_total_buffer_size()
    # never more than half a chunk per piece: chunks then close at the size they are meant to
    pieces = max(1, -(-size // min(ENCODE_SLICE_BYTES, tuning().copy_chunk_bytes // 2)))
    step = -(-batch.num_rows // pieces)
    return [batch.slice(i, step) for i in range(0, batch.num_rows, step)]


def write_batches(
    database_url: str,
    plan: TablePlan,
    batches: Iterable[pa.RecordBatch],
    *,
    into: Callable[[TablePlan], str] | None = None,
    splitter: Callable[[], Split] | None = None,
    budget: Budget | None = None,
    counted: Counted | None = None,
    allow_binary: bool = True,
    stream: Stream | None = None,
    checksum: bool = False,
    breaker: CircuitBreaker | None = None,
) -> None:
    """Load ``batches`` (shaped like the source) into the tables of ``plan``.

    Each chunk's rows, parent and children, commit in one transaction; at most
    :data:`CHUNKS_IN_FLIGHT` encoded chunks wait for the writer thread (bounded memory).

    Args:
        database_url: the target PostgreSQL.
        plan: the tables to write.
        into: the physical table each table of ``plan`` is written to (a job passes
            ``postgres.target.physical``); the tables themselves by default.
        batches: source batches.
        splitter: makes a splitter (source batch -> rows per table; ``normalize.split`` by
            default); one is made per thread.
        budget: shared ``--limit``; reading stops when it is exhausted.
        counted: told of the rows and bytes of each table after each commit; dead-lettered
            rows are told as the table ``DEAD_LETTERS``.
        allow_binary: False forces CSV COPY (benchmarks and tests compare the two).
        stream: record each chunk in the ledger as this stream's, in the chunk's own
            transaction; ``batches`` then start at ``stream.offset``.
        checksum: record each chunk's content checksums in the ledger (``checksum``).
        breaker: the run's circuit breaker, shared by its streams (one of its own if None).
    """
    budget = budget or Budget(None)
    into = into or (lambda t: t.name)
    breaker = breaker or CircuitBreaker()
    make_split = splitter or (lambda: partial(normalize.split, plan=plan))
    split = make_split()
    tables = plan.all_tables()
    encoders = {t.name: Encoder(t.columns, allow_binary=allow_binary) for t in tables}
    tune_malloc()
    chunk_bytes = tuning().copy_chunk_bytes
    summer = Checksummer(tables) if checksum else None
    chunks: queue.Queue[_Chunk | None] = queue.Queue(maxsize=CHUNKS_IN_FLIGHT)
    failed = threading.Event()
    conn = connect(database_url)
    write_timeout_s = tuning().write_timeout_s
    labels = metrics.run_labels()
    rows_read = metrics.ROWS_READ.labels(*labels)
    chunk_seconds = metrics.CHUNK_SECONDS.labels(*labels)
    copy_seconds = metrics.COPY_SECONDS.labels(*labels)
    outcomes = {
        s: metrics.CHUNKS.labels(*labels, s)
        for s in ("committed", "isolated", "already_committed", "failed")
    }

    def guarded(
        what: str,
        seconds: float,
        start: int,
        action: Callable[[Connection], T],
        timed: bool = False,
    ) -> tuple[bool, T | None]:
        """``action(conn)`` under a deadline, reconnecting and retrying after transient errors
        (bounded, and through the run's circuit breaker): (True, its result), or (False, None)
        when the ledger shows that the chunk starting at ``start`` committed already.

        A connection lost around COMMIT leaves it unknown whether the chunk committed: the
        ledger says, so the chunk is never loaded twice.
        """
        nonlocal conn
        for attempt in retry.CHUNK.retrying():
            with attempt:
                breaker.before()  # fails at once while the target keeps failing
                try:
                    if attempt.retry_state.attempt_number > 1:
                        conn.close()
                        conn = connect(database_url)
                        if stream is not None and with_deadline(
                            conn, seconds, "reading the ledger",
                            partial(ledger.chunk, conn, stream.run_id, stream.stream, start),
                        ):  # fmt: skip
                            breaker.success()
                            return False, None
                    began = time.perf_counter()
                    result = with_deadline(conn, seconds, what, partial(action, conn))
                    if timed:
                        copy_seconds.observe(time.perf_counter() - began)
                except TransientTargetError:
                    breaker.failure()
                    raise
                except BaseException:
                    breaker.success()  # the server answered (a rejected row): it is up
                    raise
                breaker.success()
                return True, result
        raise AssertionError("unreachable: tenacity re-raises the last error")

    # the writer thread's own splitter and encoders, made only if rows must be isolated
    isolation: dict[str, Split] = {}
    isolation_encoders = {t.name: Encoder(t.columns, allow_binary=allow_binary) for t in tables}
    isolation_summer = Checksummer(tables) if checksum else None

    def write() -> None:
        try:
            while (chunk := chunks.get()) is not None:
                with (
                    context.bound(chunk=chunk.start, offset=chunk.start),
                    tracing.span(
                        "bq2pg.chunk",
                        **{"bq2pg.chunk.start": chunk.start, "bq2pg.chunk.end": chunk.end},
                    ) as span,
                ):
                    try:
                        write_one(chunk, span)
                    except BaseException:
                        outcomes["failed"].inc()
                        raise
        except BaseException:
            failed.set()  # the reader stops at its next batch
            while chunks.get() is not None:  # keep taking, so the reader never blocks
                pass
            raise

    def write_one(chunk: _Chunk, span: tracing.Span) -> None:
        parts = [
            copy.Part(t, into(t), chunk.payloads[t.name], encoders[t.name].format) for t in tables
        ]
        entry = None
        if stream is not None:
            sums = {k: v for k, v in chunk.checksums.items() if v is not None}
            entry = ledger.ChunkRecord(
                stream.run_id, stream.stream, chunk.start, chunk.end, chunk.rows,
                chunk.nbytes, sums if summer else {},
            )  # fmt: skip
        sizes = {t.name: sum(b.size for b in chunk.payloads[t.name]) for t in tables}
        rows, dead = chunk.rows, 0
        outcome_name = "committed"
        try:
            commit = partial(ledger.commit_chunk, parts=parts, chunk=entry)
            done, _ = guarded("COPY of a chunk", write_timeout_s, chunk.start, commit, timed=True)
            if not done:
                outcome_name = "already_committed"
        except RowRejectedError:
            outcome_name = "isolated"
            isolation.setdefault("split", make_split())
            isolate = partial(
                deadletters.isolate,
                plan=plan,
                physical=into,
                pieces=chunk.sources,
                split=isolation["split"],
                encoders=isolation_encoders,
                chunk=entry,
                run_id=stream.run_id if stream else None,
                stream=stream.stream if stream else "",
                summer=isolation_summer.of if isolation_summer else None,
            )
            # bisection re-sends the chunk about log2(rows) times: a longer deadline
            done, outcome = guarded(
                "isolating rejected rows", write_timeout_s * 4, chunk.start, isolate
            )
            if done and outcome is not None:
                rows, sizes, dead = outcome.rows, outcome.nbytes, outcome.dead
            elif stream is not None:  # committed before the connection was lost
                found = ledger.chunk(conn, stream.run_id, stream.stream, chunk.start)
                assert found is not None, "the ledger said the chunk committed"
                rows = {t.name: found.rows.get(t.name, 0) for t in tables}
                dead = found.dead_letters
            if dead:
                log.warning("row.dead_lettered", rows=dead, end=chunk.end)
        seconds = time.perf_counter() - chunk.opened
        outcomes[outcome_name].inc()
        chunk_seconds.observe(seconds)
        if span.is_recording():
            span.set_attribute("bq2pg.chunk.rows", sum(rows.values()))
            span.set_attribute("bq2pg.chunk.bytes", sum(sizes.values()))
            span.set_attribute("bq2pg.chunk.outcome", outcome_name)
        log.debug(
            "chunk.committed", end=chunk.end, outcome=outcome_name, rows=rows[plan.name],
            bytes=sum(sizes.values()), dead_letters=dead, seconds=round(seconds, 4),
        )  # fmt: skip
        if counted is not None:
            for t in tables:
                counted(t.name, rows[t.name], sizes[t.name])
            if dead:
                counted(DEAD_LETTERS, dead, 0)

    with ThreadPoolExecutor(1, thread_name_prefix="bq2pg-copy") as writer_pool:
        writer = writer_pool.submit(context.carry(write))
        try:
            position = stream.offset if stream else 0
            chunk = _Chunk(tables, position)
            for batch in batches:
                if failed.is_set():
                    break
                granted = budget.take(batch.num_rows)
                if granted < batch.num_rows:
                    batch = batch.slice(0, granted)
                rows_read.inc(batch.num_rows)
                for piece in _slices(batch):
                    source_rows = pa.Table.from_batches([piece])
                    chunk.sources.append((position, source_rows))
                    parts = split(source_rows)
                    for t in tables:
                        rows = parts[t.name]
                        payload = encoders[t.name].encode(rows)
                        chunk.add(
                            t.name,
                            payload,
                            rows.num_rows,
                            summer.of(t.name, rows) if summer else None,
                        )
                    position += piece.num_rows
                    chunk.end = position
                    if chunk.nbytes >= chunk_bytes:
                        chunks.put(chunk)
                        chunk = _Chunk(tables, position)
                give_back_memory()
                if budget.exhausted:
                    break
            if chunk.nbytes and not failed.is_set():
                chunks.put(chunk)
        finally:
            chunks.put(None)  # the writer takes every item until None, even after a failure
            try:
                writer.result()
            finally:
                for e in (*encoders.values(), *isolation_encoders.values()):
                    e.close()
                for owner in (summer, isolation_summer):
                    if owner is not None:
                        owner.close()
                conn.close()
