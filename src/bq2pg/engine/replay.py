"""``bq2pg dlq replay``: load dead-lettered rows again, after the user fixed the cause.

A dead letter keeps its source row exactly as read (Arrow IPC) and the run that read it keeps
its arguments, so the rows can go through the same splitter and encoder into the same tables:
the plan is rebuilt from the run's arguments by the caller (``bq2pg.admin``: a ``copy`` run
reads its table's schema from BigQuery again; a ``patents`` run needs nothing but its
arguments). Rows that load leave
``bq2pg.dead_letters``; rows that fail again stay there with their new error.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from bq2pg.engine.stream import Split
from bq2pg.errors import ConfigError
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres.connection import Connection
from bq2pg.quality.checksum import Checksummer
from bq2pg.state import deadletters

#: Rebuilds the plan and splitter of a run from its stored arguments (``bq2pg.admin``
#: knows every kind of job).
PlanOf = Callable[[dict], tuple[TablePlan, Split]]


def replay(
    conn: Connection,
    target: str,
    plan_of: PlanOf,
    ids: list[int] | None = None,
) -> deadletters.Replayed:
    """Replay the dead letters of ``target`` (or only ``ids``), grouped by the run arguments
    that produced them; ``plan_of`` rebuilds each group's tables from those arguments."""
    letters = deadletters.pending(conn, target, ids)
    if ids and len(letters) != len(set(ids)):
        missing = sorted(set(ids) - {letter["id"] for letter in letters})
        raise ConfigError(f"no dead letter {missing} of {target}", table=target)
    groups: dict[str, list[dict]] = {}
    for letter in letters:
        if letter["arguments"] is None:
            raise ConfigError(
                f"dead letter {letter['id']} has lost its run (deleted): replay cannot rebuild "
                "its tables; see it with `bq2pg dlq show`"
            )
        groups.setdefault(json.dumps(letter["arguments"], sort_keys=True), []).append(letter)
    done = deadletters.Replayed()
    for group in groups.values():
        plan, split = plan_of(group[0]["arguments"])
        if plan.qualified != target:
            raise ConfigError(f"the run of dead letter {group[0]['id']} loaded {plan.qualified}")
        summer = Checksummer(plan.all_tables())
        try:
            result = deadletters.replay(conn, plan, split, group, summer.of)
        finally:
            summer.close()
        done.loaded += result.loaded
        done.failed.update(result.failed)
    return done
