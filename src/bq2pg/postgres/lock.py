"""One writer per target: the advisory lock, and the run's own connection that holds it.

A run takes its target's session-level advisory lock before anything else and keeps it on its
own connection (:class:`LockedConnection`) until it ends; a killed loader's lock goes with its
connection. That connection sits idle while the streams load, so a PostgreSQL crash-restart or
a reset connection takes it (and the lock) away: it is reconnected, and the lock taken again,
by a heartbeat during the load and before every use, so that a transient fault never ends the
run (issue 10). If another run took the lock in between, this run stops (ConcurrentRunError).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg

from bq2pg import retry
from bq2pg.errors import Bq2pgError, ConcurrentRunError, TransientTargetError
from bq2pg.observe.log import get_logger
from bq2pg.postgres.connection import connect, with_deadline
from bq2pg.postgres.errors import translate

T = TypeVar("T")
log = get_logger(__name__)

#: Seconds between two heartbeats on the run's connection while its streams load: a lost
#: connection (and with it the target's lock) is noticed and taken again within this.
HEARTBEAT_S = 5.0
#: Seconds a heartbeat or a ping may take before the connection counts as dead.
PING_TIMEOUT_S = 15.0


def lock_key(target: str) -> str:
    """The text whose hash is the advisory-lock key of ``target``."""
    return f"bq2pg:{target}"


def try_lock(conn: psycopg.Connection, target: str) -> bool:
    """Take ``target``'s session-level advisory lock if it is free."""
    try:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [lock_key(target)]
        ).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, f"locking {target}", table=target) from exc
    return bool(row and row[0])


def lock(conn: psycopg.Connection, target: str) -> None:
    """Take ``target``'s advisory lock, or raise :class:`ConcurrentRunError`."""
    if not try_lock(conn, target):
        raise ConcurrentRunError(
            f"another bq2pg run is already loading {target}; wait for it to finish "
            "(one writer per target)",
            table=target,
        )


def unlock(conn: psycopg.Connection, target: str) -> None:
    """Release ``target``'s advisory lock."""
    try:
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [lock_key(target)])
    except psycopg.Error as exc:
        raise translate(exc, f"unlocking {target}", table=target) from exc


class LockedConnection:
    """The run's connection: it holds the target's lock, and comes back after a loss.

    :meth:`call` runs work on it under a deadline; when the connection turns out lost, it
    reconnects, takes the lock again, runs ``rejoin`` (the run checks that nobody took its run
    over meanwhile) and runs the work again, under the :data:`bq2pg.retry.RUN_CONNECTION`
    policy. Work given to :meth:`call` must therefore be safe to run again after a failure
    (one transaction, or a check that it already committed). One caller at a time.
    """

    def __init__(
        self,
        url: str,
        target: str,
        *,
        rejoin: Callable[[psycopg.Connection], None] | None = None,
    ) -> None:
        self.url = url
        self.target = target
        self.rejoin = rejoin
        #: How many times the connection was lost and taken again (logs and tests).
        self.reconnections = 0
        self._busy = threading.RLock()
        self._conn = connect(url)
        try:
            lock(self._conn, target)
        except BaseException:
            self._conn.close()
            raise

    def call(self, what: str, work: Callable[[psycopg.Connection], T], seconds: float) -> T:
        """``work(conn)`` under a deadline of ``seconds``, reconnecting after a lost connection."""
        with self._busy:
            for attempt in retry.RUN_CONNECTION.retrying():
                with attempt:
                    if self._conn.closed or attempt.retry_state.attempt_number > 1:
                        self._reconnect()
                    try:
                        return with_deadline(self._conn, seconds, what, lambda: work(self._conn))
                    except TransientTargetError:
                        self._conn.close()  # broken: the next attempt connects again
                        raise
            raise AssertionError("unreachable: tenacity re-raises the last error")

    def ping(self) -> None:
        """Make sure the connection (and so the lock) is there, taking both again if not."""
        self.call("the run's connection", lambda conn: conn.execute("SELECT 1"), PING_TIMEOUT_S)

    @contextlib.contextmanager
    def heartbeat(self, every_s: float = HEARTBEAT_S) -> Iterator[None]:
        """Ping every ``every_s`` seconds in the background while the body runs (the load), so
        that a lost lock is taken again within seconds, not only when the run next needs it."""
        stop = threading.Event()
        failures: list[BaseException] = []

        def beat() -> None:
            while not stop.wait(every_s):
                try:
                    self.ping()
                except BaseException as exc:  # reported when the body ends
                    failures.append(exc)
                    return

        thread = threading.Thread(target=beat, name="bq2pg-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if failures:
            raise failures[0]

    def close(self) -> None:
        """Release the lock, then close the connection.

        Closing alone releases the lock only when the server process has exited, which on a
        busy server can come after the next run of the target (in the same process, a moment
        later) asked for the lock, and was refused. A lost connection has no lock to release.
        """
        if not self._conn.closed:
            with contextlib.suppress(Bq2pgError):
                with_deadline(self._conn, PING_TIMEOUT_S, "releasing the target's lock",
                              lambda: unlock(self._conn, self.target))  # fmt: skip
        self._conn.close()

    def _reconnect(self) -> None:
        self._conn.close()
        self._conn = connect(self.url)
        self.reconnections += 1
        log.warning("connection.reconnected", reconnections=self.reconnections)
        try:
            lock(self._conn, self.target)
            if self.rejoin is not None:
                self.rejoin(self._conn)
        except BaseException:
            self._conn.close()
            raise
