"""``bq2pg dlq replay``: load dead-lettered rows again, after the user fixed the cause.

A dead letter keeps its source row exactly as read (Arrow IPC) and the run that read it keeps
its arguments, so the rows can go through the same splitter and encoder into the same tables:
the plan is rebuilt from the run's arguments (a ``copy`` run reads its table's schema from
BigQuery again; a ``patents`` run needs nothing but its arguments). Rows that load leave
``bq2pg.dead_letters``; rows that fail again stay there with their new error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import psycopg
import pyarrow as pa

from bq2pg.arrow import split as normalize
from bq2pg.bigquery.client import Source
from bq2pg.engine import copy as pipeline
from bq2pg.errors import ConfigError
from bq2pg.plan.tables import TablePlan
from bq2pg.state import deadletters as deadletter

Split = Callable[[pa.Table], dict[str, pa.Table]]


def plan_of(arguments: dict, source: Callable[[], Source]) -> tuple[TablePlan, Split]:
    """The plan and splitter of the run that had ``arguments`` (``source`` is called only for
    ``copy`` runs, whose plan comes from the table's schema)."""
    if "full_text" in arguments:  # a patents run
        from bq2pg.patents import model, transform

        full_text = bool(arguments["full_text"])
        plan = model.model(str(arguments["schema"]), full_text=full_text)
        return plan, transform.Splitter(plan, full_text=full_text)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
    request = pipeline.CopyRequest(**fields, database_url="")  # type: ignore[arg-type]
    plan, _, _ = pipeline.plan(source(), request)
    return plan, partial(normalize.split, plan=plan)


def replay(
    conn: psycopg.Connection,
    target: str,
    source: Callable[[], Source],
    ids: list[int] | None = None,
) -> deadletter.Replayed:
    """Replay the dead letters of ``target`` (or only ``ids``), grouped by the run arguments
    that produced them."""
    letters = deadletter.pending(conn, target, ids)
    if ids and len(letters) != len(set(ids)):
        missing = sorted(set(ids) - {letter["id"] for letter in letters})
        raise ConfigError(f"no dead letter {missing} of {target}")
    groups: dict[str, list[dict]] = {}
    for letter in letters:
        if letter["arguments"] is None:
            raise ConfigError(
                f"dead letter {letter['id']} has lost its run (deleted): replay cannot rebuild "
                "its tables; see it with `bq2pg dlq show`"
            )
        groups.setdefault(json.dumps(letter["arguments"], sort_keys=True), []).append(letter)
    done = deadletter.Replayed()
    for group in groups.values():
        plan, split = plan_of(group[0]["arguments"], source)
        if plan.qualified != target:
            raise ConfigError(f"the run of dead letter {group[0]['id']} loaded {plan.qualified}")
        result = deadletter.replay(conn, plan, split, group)
        done.loaded += result.loaded
        done.failed.update(result.failed)
    return done
