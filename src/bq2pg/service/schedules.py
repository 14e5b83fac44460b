"""Schedules: ``schedule: "0 3 * * *"`` on a job of bq2pg.yaml (cron, UTC), fired by the
workers.

Each tick, a worker computes every schedule's latest slot at or before now. A slot newer than
the last one fired queues one run; the slot is recorded in the same transaction
(``bq2pg.schedules.last_slot``), and ``UNIQUE (schedule, slot)`` on the queue makes two workers
fire it once. Slots missed while no worker ran are not caught up one by one: only the latest
runs, once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from croniter import croniter

from bq2pg.config import jobs as config_jobs
from bq2pg.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """A job's schedule."""

    job: str
    cron: str


def check(cron: str, job: str) -> None:
    """Raise ConfigError unless ``cron`` is a cron expression."""
    if not croniter.is_valid(cron):
        raise ConfigError(
            f"jobs.{job}.schedule: {cron!r} is not a cron expression (five fields, e.g. "
            "'0 3 * * *' for 03:00 UTC every day)",
            value=cron,
        )


def configured(cfg: config_jobs.Config) -> list[Schedule]:
    """The schedules of ``cfg``'s jobs (each checked)."""
    found = []
    for name in cfg.names("jobs"):
        cron = cfg.job(name).values.get("schedule")
        if cron:
            check(str(cron), name)
            found.append(Schedule(name, str(cron)))
    return found


def latest_slot(cron: str, now: dt.datetime) -> dt.datetime:
    """The latest time at or before ``now`` that ``cron`` names."""
    base = now.astimezone(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    slot = croniter(cron, base).get_prev(dt.datetime)
    return slot if slot.tzinfo else slot.replace(tzinfo=dt.UTC)


def next_slot(cron: str, now: dt.datetime) -> dt.datetime:
    """The next time after ``now`` that ``cron`` names."""
    slot = croniter(cron, now.astimezone(dt.UTC)).get_next(dt.datetime)
    return slot if slot.tzinfo else slot.replace(tzinfo=dt.UTC)
