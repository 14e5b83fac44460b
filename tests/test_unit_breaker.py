"""The circuit breaker's states, with a hand-driven clock (pure logic, no servers)."""

from __future__ import annotations

import threading

import pytest

from bq2pg.engine.breaker import CircuitBreaker
from bq2pg.errors import CircuitOpenError, TransientTargetError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_after_threshold_consecutive_failures_and_fails_fast():
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        b.before()
        b.failure()
    assert b.state == "closed"
    b.before()
    b.failure()
    assert (b.state, b.openings) == ("open", 1)
    with pytest.raises(CircuitOpenError, match=r"3 times in a row.*10 s"):
        b.before()
    assert isinstance(CircuitOpenError("x"), TransientTargetError)  # the retry loops wait


def test_a_success_resets_the_count():
    b = CircuitBreaker(threshold=2, clock=Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"


def test_after_the_cooldown_one_probe_passes_and_its_outcome_decides():
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown_s=10, clock=clock)
    b.failure()
    clock.now += 9.9
    with pytest.raises(CircuitOpenError):
        b.before()
    clock.now += 0.2
    b.before()  # the probe
    with pytest.raises(CircuitOpenError):  # a second stream waits for the probe's outcome
        b.before()
    b.failure()  # the probe failed: open again, for a full cooldown
    assert (b.state, b.openings) == ("open", 2)
    clock.now += 10
    b.before()
    b.success()
    assert b.state == "closed"
    b.before()


def test_many_threads_let_exactly_one_probe_through():
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown_s=1, clock=clock)
    b.failure()
    clock.now += 2
    passed, start = [], threading.Barrier(8)

    def attempt() -> None:
        start.wait()
        try:
            b.before()
            passed.append(1)
        except CircuitOpenError:
            pass

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert passed == [1]
