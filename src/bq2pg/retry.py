"""The retry policies of bq2pg, in one place: what is retried, how often, how long, how fast.

Only :class:`~bq2pg.errors.Transient` errors are retried, whatever the subsystem raised them.
Each policy bounds a retry by attempts *and* by seconds, waits with exponential backoff and
jitter, and says in the log why and when it tries again. A failure that outlasts its policy
fails the run, which the next run resumes from its ledger.

It sits below the BigQuery, PostgreSQL and engine layers, which all use it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from bq2pg.errors import Transient
from bq2pg.observe import metrics
from bq2pg.observe.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of operation is retried after a :class:`~bq2pg.errors.Transient` error.

    Attributes:
        what: what is retried, for the log ("the chunk", "the stream").
        attempts: attempts in all, the first included.
        seconds: seconds after which no new attempt starts.
        initial_s: the first wait; each later wait doubles, up to ``max_wait_s``.
        max_wait_s: the longest wait between two attempts.
        kind: what the ``bq2pg_retries_total`` metric calls it; its log event is
            ``<kind>.retried``.
    """

    what: str
    attempts: int
    seconds: float
    initial_s: float
    max_wait_s: float
    kind: str = "other"

    def wait_s(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row: doubling, capped, plus jitter of up
        to ``initial_s`` (so that parallel streams do not retry in step)."""
        backoff = min(self.initial_s * 2 ** max(0, failures - 1), self.max_wait_s)
        return backoff + random.uniform(0, self.initial_s)

    def retrying(self) -> Retrying:
        """A tenacity ``Retrying`` that retries :class:`Transient` errors under this policy and
        re-raises the last error when the policy is spent."""
        return Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, Transient)),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.seconds),
            wait=wait_exponential_jitter(
                multiplier=self.initial_s, max=self.max_wait_s, jitter=self.initial_s
            ),
            before_sleep=self._log,
            reraise=True,
        )

    def _log(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        metrics.RETRIES.labels(self.kind).inc()
        log.warning(
            f"{self.kind}.retried", error=str(error), what=self.what, wait_s=round(wait, 2),
            attempt=state.attempt_number + 1, attempts=self.attempts,
        )  # fmt: skip


#: A chunk's COPY (and the isolation of its rejected rows) after a lost connection, a server
#: restart or a full disk. A crash restart with WAL redo takes seconds; the fault suite's
#: disk-full trials grow the disk after ~4 s (docs/faults.md).
CHUNK = RetryPolicy(
    "the chunk", attempts=8, seconds=120.0, initial_s=0.5, max_wait_s=10.0, kind="chunk"
)
#: The run's own connection (it holds the target's lock) when it was lost while idle.
RUN_CONNECTION = RetryPolicy(
    "the run's connection",
    attempts=8,
    seconds=120.0,
    initial_s=0.5,
    max_wait_s=10.0,
    kind="run_connection",
)
#: Verification scans, key and index builds after the load, on a lost connection: each may
#: take minutes, so few attempts with long waits.
POSTLOAD = RetryPolicy(
    "the post-load statement",
    attempts=5,
    seconds=4 * 3600.0,
    initial_s=2.0,
    max_wait_s=30.0,
    kind="postload",
)
#: Reopening a Storage Read stream; counted in a row *without a new row* (a reopen that brings
#: rows starts the count again), so a long stream survives occasional resets.
READ = RetryPolicy(
    "the stream", attempts=8, seconds=300.0, initial_s=0.5, max_wait_s=30.0, kind="read"
)
#: The longest wait honoured from a RESOURCE_EXHAUSTED's RetryInfo (seconds): the server's
#: delay is respected, but a run never sleeps unboundedly on one answer.
RETRY_INFO_MAX_S = 60.0
