"""The load engine: Arrow batches in, rows committed in PostgreSQL out, on one connection.

:func:`write_batches` takes batches shaped like the source, splits them into the plan's tables
(``normalize.split`` or a job's own splitter), encodes each table column-wise (``encode``) and
COPYs the chunks (``load.copy_chunk``). Two threads: the caller's normalizes and encodes while a
writer thread sends the previous chunk, so the client's work overlaps the server's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import psycopg
import pyarrow as pa
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from bq2pg.arrow import split as normalize
from bq2pg.arrow.encode import Encoder
from bq2pg.engine.breaker import CircuitBreaker
from bq2pg.errors import TransientTargetError
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import connection as load
from bq2pg.quality.checksum import Checksummer
from bq2pg.state import deadletters as deadletter

Mode = Literal["replace", "append", "merge"]
T = TypeVar("T")
#: Turns one source batch into rows of each table of a plan, by table name.
Split = Callable[[pa.Table], dict[str, pa.Table]]
#: Rows and encoded bytes committed into one table (called after each commit).
Counted = Callable[[str, int, int], None]
#: The name under which ``counted`` hears of dead-lettered source rows.
DEAD_LETTERS = "bq2pg.dead_letters"

#: Encoded bytes buffered per stream before one COPY transaction. Large enough to amortise
#: the per-transaction round trips, small enough to keep memory flat (bench/ measures it).
#: ``BQ2PG_COPY_CHUNK_BYTES`` overrides it (the fault-injection tests use small chunks).
COPY_CHUNK_BYTES = int(os.environ.get("BQ2PG_COPY_CHUNK_BYTES", 32 * 1024 * 1024))
#: Arrow bytes encoded at a time: a 50,000-row message of wide rows is sliced to this size so
#: that memory stays bounded however wide the rows are.
ENCODE_SLICE_BYTES = 16 * 1024 * 1024
#: Encoded chunks waiting between the encoding thread and the writer thread: with one being
#: encoded and one being sent, a stream holds about 3 x COPY_CHUNK_BYTES of encoded data.
CHUNKS_IN_FLIGHT = 1
#: Attempts and seconds for one chunk when PostgreSQL drops the connection or restarts (a
#: crash restart with WAL redo takes seconds; a longer outage fails the run, which the next
#: run resumes from the ledger).
WRITE_RETRY_ATTEMPTS = 8
WRITE_RETRY_SECONDS = 120.0

log = logging.getLogger(__name__)


def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (``malloc_trim`` and ``mallopt``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # musl, macOS
        return None
    return libc


_LIBC = _libc()
#: glibc's ``M_MMAP_THRESHOLD`` and the size from which allocations get their own mapping.
_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES = -3, 128 * 1024
_tuned = threading.Event()


def _tune_malloc() -> None:
    """Fix glibc's mmap threshold (once per process). By default glibc raises it to the size
    of each large block freed, up to 32 MB, after which the encoders' buffers come from the heap
    and stay there: the loader's peak RSS for 1,000,000 publications varied between 0.77 and
    1.05 GiB from run to run; 0.65-0.66 GiB with the threshold fixed, for ~5 % of its speed."""
    if _LIBC is not None and not _tuned.is_set():
        _tuned.set()
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def give_back_memory() -> None:
    """Return the C heap's free pages to the system. Splitting and encoding a batch allocate
    and free hundreds of MB across threads (numpy, DuckDB results, Arrow kernels); glibc keeps
    the freed pages in its arenas, and the loader's RSS climbed ~400 MB above its working set
    (peak 1.0-1.1 GiB for 250,000 publications, 0.77 GiB with a trim after each batch)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _log_retry(state: RetryCallState) -> None:
    """Say why a chunk is retried, and when."""
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "%s; reconnecting to PostgreSQL to retry the chunk in %.1f s (attempt %d of %d)",
        error, wait, state.attempt_number + 1, WRITE_RETRY_ATTEMPTS,
    )  # fmt: skip


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


def physical(mode: Mode, table: TablePlan) -> str:
    """The side table that COPY writes to in ``mode``: a fresh load table (``replace``) or a
    staging table (``append``, ``merge``); publishing moves its rows into the target."""
    if mode == "replace":
        return load.side_name(table, load.LOAD_SUFFIX)
    return load.side_name(table, load.STAGE_SUFFIX)


@dataclass
class Ledger:
    """Where a stream's chunks are recorded: the run, the stream, the first uncommitted row."""

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
    pieces = max(1, -(-size // min(ENCODE_SLICE_BYTES, COPY_CHUNK_BYTES // 2)))
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
    ledger: Ledger | None = None,
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
            :func:`physical`); the tables themselves by default.
        batches: source batches.
        splitter: makes a splitter (source batch -> rows per table; ``normalize.split`` by
            default); one is made per thread.
        budget: shared ``--limit``; reading stops when it is exhausted.
        counted: told of the rows and bytes of each table after each commit; dead-lettered
            rows are told as the table ``DEAD_LETTERS``.
        allow_binary: False forces CSV COPY (benchmarks and tests compare the two).
        ledger: record each chunk in ``bq2pg.chunks``, in the chunk's own transaction;
            ``batches`` then start at ``ledger.offset``.
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
    _tune_malloc()
    summer = Checksummer(tables) if checksum else None
    chunks: queue.Queue[_Chunk | None] = queue.Queue(maxsize=CHUNKS_IN_FLIGHT)
    failed = threading.Event()
    conn = load.connect(database_url)

    def guarded(
        what: str, seconds: float, start: int, action: Callable[[psycopg.Connection], T]
    ) -> tuple[bool, T | None]:
        """``action(conn)`` under a deadline, reconnecting and retrying after transient errors
        (bounded, and through the run's circuit breaker): (True, its result), or (False, None)
        when the ledger shows that the chunk starting at ``start`` committed already.

        A connection lost around COMMIT leaves it unknown whether the chunk committed: the
        ledger says, so the chunk is never loaded twice.
        """
        nonlocal conn
        for attempt in Retrying(
            retry=retry_if_exception_type(TransientTargetError),
            stop=stop_after_attempt(WRITE_RETRY_ATTEMPTS) | stop_after_delay(WRITE_RETRY_SECONDS),
            wait=wait_exponential_jitter(multiplier=0.5, max=10),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                breaker.before()  # fails at once while the target keeps failing
                try:
                    if attempt.retry_state.attempt_number > 1:
                        conn.close()
                        conn = load.connect(database_url)
                        if ledger is not None and load.chunk_committed(
                            conn, ledger.run_id, ledger.stream, start
                        ):
                            breaker.success()
                            return False, None
                    result = load.with_deadline(conn, seconds, what, partial(action, conn))
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
                parts = [
                    (t, into(t), chunk.payloads[t.name], encoders[t.name].format) for t in tables
                ]
                entry = None
                if ledger is not None:
                    sums = {k: v for k, v in chunk.checksums.items() if v is not None}
                    entry = (
                        ledger.run_id,
                        ledger.stream,
                        chunk.start,
                        chunk.end,
                        chunk.rows,
                        chunk.nbytes,
                        sums if summer else {},
                    )
                sizes = {t.name: sum(b.size for b in chunk.payloads[t.name]) for t in tables}
                rows, dead = chunk.rows, 0
                try:
                    sent = [p for p in parts if p[2]]
                    copy = partial(load.copy_chunk, parts=sent, ledger=entry)
                    guarded("COPY of a chunk", load.WRITE_TIMEOUT_S, chunk.start, copy)
                except load.RowRejectedError:
                    isolation.setdefault("split", make_split())
                    isolate = partial(
                        deadletter.isolate,
                        plan=plan,
                        physical=into,
                        pieces=chunk.sources,
                        split=isolation["split"],
                        encoders=isolation_encoders,
                        ledger=entry,
                        run_id=ledger.run_id if ledger else None,
                        stream=ledger.stream if ledger else "",
                        summer=isolation_summer,
                    )
                    # bisection re-sends the chunk about log2(rows) times: a longer deadline
                    done, outcome = guarded(
                        "isolating rejected rows", load.WRITE_TIMEOUT_S * 4, chunk.start, isolate
                    )
                    if done and outcome is not None:
                        rows, sizes, dead = outcome.rows, outcome.nbytes, outcome.dead
                    elif ledger is not None:  # committed before the connection was lost
                        rows, dead = load.committed_chunk(
                            conn, ledger.run_id, ledger.stream, chunk.start
                        )
                        rows = {t.name: rows.get(t.name, 0) for t in tables}
                if counted is not None:
                    for t in tables:
                        counted(t.name, rows[t.name], sizes[t.name])
                    if dead:
                        counted(DEAD_LETTERS, dead, 0)
        except BaseException:
            failed.set()  # the reader stops at its next batch
            while chunks.get() is not None:  # keep taking, so the reader never blocks
                pass
            raise

    with ThreadPoolExecutor(1, thread_name_prefix="bq2pg-copy") as writer_pool:
        writer = writer_pool.submit(write)
        try:
            position = ledger.offset if ledger else 0
            chunk = _Chunk(tables, position)
            for batch in batches:
                if failed.is_set():
                    break
                granted = budget.take(batch.num_rows)
                if granted < batch.num_rows:
                    batch = batch.slice(0, granted)
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
                    if chunk.nbytes >= COPY_CHUNK_BYTES:
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
