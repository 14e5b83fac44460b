"""The work after the bulk load, spread over several connections.

Verification scans, primary-key builds, index builds and ANALYZE each keep one server process
busy; PostgreSQL parallelises a large B-tree build by itself, but not the many smaller
statements a model of several tables needs. :func:`spread` runs independent statements on up
to ``lanes`` connections at once, largest first, each under a deadline (a half-open connection
cannot hang it), reconnecting and retrying one that a lost connection interrupted.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import psycopg
from psycopg import sql
from tenacity import stop_after_attempt

from bq2pg import retry
from bq2pg.errors import Bq2pgError, TransientTargetError
from bq2pg.observe.log import get_logger
from bq2pg.plan import ddl
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres.connection import connect, execute, with_deadline

T = TypeVar("T")
R = TypeVar("R")

log = get_logger(__name__)

#: Connections at most for the post-load work (a server with more cores still gains little
#: beyond this, and each lane is a backend running a sort).
MAX_LANES = 4


def lanes_for(streams: int, items: int) -> int:
    """How many connections the post-load work of ``items`` statements uses."""
    return max(1, min(streams, MAX_LANES, items))


def spread(
    database_url: str,
    items: Sequence[T],
    work: Callable[[psycopg.Connection, T], R],
    *,
    lanes: int,
    what: str,
    deadline: float,
    attempts: int = retry.POSTLOAD.attempts,
) -> list[R]:
    """``work(conn, item)`` for every item, on up to ``lanes`` connections at once.

    Items are taken in the order given (put the largest first). An item interrupted by a lost
    connection is retried on a new connection, ``attempts`` times in all. The first other error
    stops the lanes (items not started are left) and is raised. Results come in item order.
    """
    results: dict[int, R] = {}
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(items)):
        todo.put(index)
    failures: list[BaseException] = []
    stop = threading.Event()

    local = threading.local()  # each lane's connection, opened again after a loss

    def attempt(index: int) -> R:
        conn = getattr(local, "conn", None)
        if conn is None or conn.closed:
            conn = local.conn = connect(database_url)
        try:
            return with_deadline(conn, deadline, what, partial(work, conn, items[index]))
        except TransientTargetError:
            conn.close()  # the next attempt connects again
            raise

    def lane() -> None:
        try:
            while not stop.is_set():
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                policy = retry.POSTLOAD.retrying()
                policy.stop = stop_after_attempt(attempts)
                for tried in policy:
                    with tried:
                        results[index] = attempt(index)
        except BaseException as exc:
            failures.append(exc)
            stop.set()
        finally:
            if getattr(local, "conn", None) is not None:
                local.conn.close()

    threads = [
        threading.Thread(target=lane, name=f"bq2pg-postload-{i}", daemon=True)
        for i in range(max(1, min(lanes, len(items))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [results[i] for i in range(len(items))]


def add_primary_keys(
    database_url: str, tables: Sequence[tuple[TablePlan, str]], *, lanes: int, deadline: float
) -> None:
    """The primary key of each (table, physical name) load table, unless it has one already (a
    resumed run whose earlier attempt built some keys before it was interrupted)."""

    def build(conn: psycopg.Connection, item: tuple[TablePlan, str]) -> None:
        table, name = item
        regclass = sql.Identifier(table.schema, name).as_string(conn)
        found = conn.execute(
            "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
            [regclass],
        ).fetchone()
        if found is None:
            execute(conn, [ddl.add_primary_key(table, name=name)], f"adding the key of {regclass}")

    spread(database_url, tables, build, lanes=lanes, what="adding keys", deadline=deadline)


def after_publish(
    database_url: str,
    statements: Sequence[sql.Composed],
    *,
    lanes: int,
    attempts: int,
    deadline: float,
) -> list[sql.Composed]:
    """Run post-publish statements (index builds, ANALYZE) across ``lanes`` connections; a
    statement that fails is logged and skipped, never raised: the data is already published.
    Returns the statements that did not run."""
    ran: set[int] = set()

    def run(conn: psycopg.Connection, statement: sql.Composed) -> None:
        try:
            execute(conn, [statement], "after publishing")
            ran.add(id(statement))
        except TransientTargetError:
            raise  # spread reconnects and retries it
        except Bq2pgError as exc:
            log.warning("postload.failed", error=str(exc))

    try:
        spread(
            database_url, statements, run, lanes=lanes, what="after publishing",
            deadline=deadline, attempts=attempts,
        )  # fmt: skip
    except Bq2pgError as exc:
        log.warning("postload.failed", error=str(exc))
    missed = [s for s in statements if id(s) not in ran]
    if missed:
        log.warning(
            "postload.missed", statements=[s.as_string(None) for s in missed],
            detail="the data is published; run these statements later",
        )  # fmt: skip
    return missed
