"""The retry policies retry what is Transient, whatever raised it, and nothing else."""

from __future__ import annotations

import dataclasses

import pytest

from bq2pg import retry
from bq2pg.errors import TargetError, TransientSourceError, TransientTargetError

FAST = dataclasses.replace(retry.CHUNK, attempts=3, initial_s=0.001, max_wait_s=0.002)


@pytest.mark.parametrize("error", [TransientTargetError, TransientSourceError])
def test_transient_errors_are_retried_until_the_policy_is_spent(error):
    calls = []
    with pytest.raises(error):
        for attempt in FAST.retrying():
            with attempt:
                calls.append(1)
                raise error("lost")
    assert len(calls) == 3


def test_terminal_errors_are_not_retried():
    calls = []
    with pytest.raises(TargetError):
        for attempt in FAST.retrying():
            with attempt:
                calls.append(1)
                raise TargetError("refused")
    assert len(calls) == 1


def test_a_success_after_a_failure_ends_the_retries():
    calls = []
    for attempt in FAST.retrying():
        with attempt:
            calls.append(1)
            if len(calls) == 1:
                raise TransientTargetError("lost")
    assert len(calls) == 2


def test_waits_double_up_to_the_cap_with_bounded_jitter():
    policy = retry.READ
    for failures in range(1, 12):
        wait = policy.wait_s(failures)
        base = min(policy.initial_s * 2 ** (failures - 1), policy.max_wait_s)
        assert base <= wait <= base + policy.initial_s
