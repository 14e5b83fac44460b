"""A circuit breaker shared by the streams of a run, so they stop hammering a failing target.

Each stream retries its chunk after a lost connection (``writer``). When PostgreSQL is down,
every stream would keep reconnecting on its own schedule; the breaker counts consecutive
failures across all of them and, after :data:`THRESHOLD`, opens: attempts then fail at once,
without touching the server, until :data:`COOLDOWN_S` has passed; then a single probe goes
through (half-open). Its success closes the circuit; its failure opens it again. The retry
budget of each chunk still bounds the whole (the run fails, and the next run resumes).

Why not ``pybreaker``: it holds one lock for the whole guarded call, which would turn the
run's parallel COPY streams into one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bq2pg.errors import CircuitOpenError
from bq2pg.observe import metrics

#: Consecutive failures (all streams together) that open the circuit.
THRESHOLD = 5
#: Seconds the circuit stays open before one probe may try again.
COOLDOWN_S = 15.0


class CircuitBreaker:
    """Closed, open or half-open; thread-safe; the guarded call runs outside the lock."""

    def __init__(
        self,
        threshold: int = THRESHOLD,
        cooldown_s: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        #: How many times the circuit opened (reported in logs and tests).
        self.openings = 0

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
                return "half-open"
            return "open"

    def before(self) -> None:
        """Call before an attempt; raises :class:`CircuitOpenError` while the circuit is open
        (or while another stream's probe is in flight)."""
        with self._lock:
            if self._opened_at is None:
                return
            waited = self._clock() - self._opened_at
            if self._probing or waited < self.cooldown_s:
                left = max(0.0, self.cooldown_s - waited)
                raise CircuitOpenError(
                    f"PostgreSQL failed {self._failures} times in a row; not trying again for "
                    f"{left:.0f} s (circuit open)"
                )
            self._probing = True  # this caller is the probe
        metrics.breaker_changed("half-open")

    def success(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._probing = False
        if was_open:
            metrics.breaker_changed("closed")

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            opened = self._probing or (self._opened_at is None and self._failures >= self.threshold)
            if opened:
                self.openings += 1
                self._opened_at = self._clock()
            self._probing = False
        if opened:
            metrics.breaker_changed("open", opened=True)
