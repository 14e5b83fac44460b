"""The quality rules' outcomes in ``bq2pg.quality_results``, their scores, and what the rules
compare with (the previous run's rows).

A table's **score** is the severity-weighted share of its rules that passed, 0–100
(:func:`bq2pg.quality.rules.score`: an ``error`` rule weighs 3, a ``warn`` rule 1); a run's
score is the same over all of its tables' rules.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from bq2pg.quality.gate import Outcome
from bq2pg.quality.rules import score


def store(
    conn: psycopg.Connection, run_id: uuid.UUID, target: str, outcomes: Sequence[Outcome]
) -> None:
    """Record a run's outcomes (in the caller's transaction)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO bq2pg.quality_results (run_id, target, table_name, rule, name, "
            "severity, evaluated, failing, ratio, samples, passed, definition) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (run_id, target, o.rule.table, o.rule.kind, o.rule.name, o.rule.severity,
                 o.evaluated, o.failing, o.ratio, Jsonb(o.samples), o.passed,
                 Jsonb({**o.rule.definition(), **({"detail": o.detail} if o.detail else {})}))
                for o in outcomes
            ],
        )  # fmt: skip


def previous_rows(conn: psycopg.Connection, target: str, tables: list[str]) -> dict[str, int]:
    """Rows per table that the target's latest succeeded run loaded (its ledger's counts)."""
    row = conn.execute(
        "SELECT run_id FROM bq2pg.runs WHERE target = %s AND status = 'succeeded' "
        "ORDER BY started_at DESC LIMIT 1",
        [target],
    ).fetchone()
    if row is None:
        return {}
    found = conn.execute(
        "SELECT t, sum((rows ->> t)::bigint) FROM bq2pg.chunks, unnest(%s::text[]) AS t "
        "WHERE run_id = %s GROUP BY t",
        [tables, row[0]],
    ).fetchall()
    return {t: int(n or 0) for t, n in found}


@dataclass(frozen=True)
class Result:
    """One stored outcome, as ``bq2pg quality show`` lists it."""

    run_id: uuid.UUID | None
    target: str
    table_name: str
    rule: str
    name: str
    severity: str
    evaluated: int
    failing: int
    ratio: float | None
    samples: list[Any]
    passed: bool
    definition: dict[str, Any]
    checked_at: dt.datetime


def listing(
    conn: psycopg.Connection,
    *,
    run_id: uuid.UUID | None = None,
    table: str | None = None,
    latest: bool = True,
) -> list[Result]:
    """The outcomes of run ``run_id``, or of the latest run that checked ``table`` (a target or
    one of its tables; ``latest=False``: of every run), or of the latest checked run."""
    fields = sql.SQL(
        "run_id, target, table_name, rule, name, severity, evaluated, failing, ratio, samples, "
        "passed, definition, checked_at"
    )
    where: sql.Composable
    if run_id is not None:
        where = sql.SQL("run_id = {}").format(sql.Literal(run_id))
    else:
        named = sql.Literal(table)
        match: sql.Composable = (
            sql.SQL("(table_name = {} OR target = {})").format(named, named)
            if table
            else sql.SQL("TRUE")
        )
        where = match
        if latest:
            where = sql.SQL(
                "{} AND run_id = (SELECT run_id FROM bq2pg.quality_results WHERE {} "
                "ORDER BY checked_at DESC, id DESC LIMIT 1)"
            ).format(match, match)
    query = sql.SQL("SELECT {} FROM bq2pg.quality_results WHERE {} ORDER BY checked_at, id").format(
        fields, where
    )
    with conn.cursor(row_factory=class_row(Result)) as cur:
        return list(cur.execute(query).fetchall())


def scores(results: Sequence[Result]) -> dict[str, float | None]:
    """The score of each table of ``results`` (by table name)."""
    tables: dict[str, list[tuple[str, bool]]] = {}
    for r in results:
        tables.setdefault(r.table_name, []).append((r.severity, r.passed))
    return {t: score(found) for t, found in tables.items()}
