"""Evaluating quality rules on a run's side tables, before anything is published.

The rules of one table that look at single rows (``not_null``, ``range``, ``pattern``,
``accepted_values``, ``freshness``, ``row_count``) are answered by one scan: one aggregate per
rule with ``FILTER``. ``unique`` (a hash aggregate), ``relationships`` (an anti-join) and
``custom`` (the user's query, in a READ ONLY transaction with a statement timeout) take one
query each. The queries run on up to ``lanes`` connections at once (``postgres.postload``),
and only a failing rule costs a second, ``LIMIT``-ed query for its examples.

The rules see the rows the run loads: the fresh ``__bq2pg_new`` tables of ``replace``, the
staging tables of ``append`` and ``merge``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bq2pg.observe.log import get_logger
from bq2pg.plan import ddl
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import postload
from bq2pg.postgres.target import Mode, physical
from bq2pg.quality.rules import Rule

log = get_logger(__name__)

#: Statement timeout of a ``custom`` rule's query (``quality_timeout`` changes it).
CUSTOM_TIMEOUT_S = 300.0
#: Characters of a value kept in an example row.
SAMPLE_WIDTH = 200
_SCANNED = frozenset({"not_null", "range", "pattern", "accepted_values", "freshness", "row_count"})


@dataclass(frozen=True)
class Outcome:
    """What one rule found: rows evaluated, rows failing, examples, and whether it passed."""

    rule: Rule
    evaluated: int
    failing: int
    passed: bool
    samples: list[Any] = field(default_factory=list)
    #: What the numbers mean when they are not rows (row_count, freshness).
    detail: str = ""

    @property
    def ratio(self) -> float:
        return self.failing / self.evaluated if self.evaluated else 0.0

    @property
    def blocking(self) -> bool:
        """A failed rule of severity ``error``: the run must not publish."""
        return not self.passed and self.rule.severity == "error"


@dataclass(frozen=True)
class Context:
    """What the rules compare with: the run's mode, the rows it read from the source, the rows
    each table holds (the ledger's verified counts), and the previous run's."""

    mode: Mode
    rows_read: int
    table_rows: dict[str, int]
    previous_rows: dict[str, int] = field(default_factory=dict)
    samples: int = 10
    custom_timeout_s: float = CUSTOM_TIMEOUT_S


def evaluate(
    database_url: str,
    plan: TablePlan,
    rules: Sequence[Rule],
    ctx: Context,
    *,
    lanes: int,
    deadline: float,
) -> list[Outcome]:
    """Every rule's outcome (in the order given), evaluated on the run's side tables."""
    tables = {t.qualified: t for t in plan.all_tables()}
    tasks: list[tuple[float, Callable[[psycopg.Connection], list[Outcome]]]] = []
    for name, table in tables.items():
        scanned = [r for r in rules if r.table == name and r.kind in _SCANNED]
        if scanned:
            weight = ctx.table_rows.get(table.name, 0)
            tasks.append((weight, _bind(_scan, table, scanned, ctx)))
    for rule in rules:
        if rule.kind in _SCANNED:
            continue
        table = tables[rule.table]
        check = {"unique": _unique, "relationships": _relationships, "custom": _custom}[rule.kind]
        tasks.append((ctx.table_rows.get(table.name, 0), _bind(check, table, [rule], ctx, tables)))
    tasks.sort(key=lambda t: -t[0])  # the largest first
    started = time.perf_counter()
    found = postload.spread(
        database_url, [work for _, work in tasks], lambda conn, work: work(conn),
        lanes=max(1, min(lanes, len(tasks))), what="evaluating the quality rules",
        deadline=deadline,
    )  # fmt: skip
    by_rule = {(o.rule.table, o.rule.name): o for batch in found for o in batch}
    seconds = round(time.perf_counter() - started, 3)
    log.debug("quality.evaluated", rules=len(rules), seconds=seconds)
    return [by_rule[(r.table, r.name)] for r in rules]


def _bind(
    check: Callable[..., list[Outcome]], table: TablePlan, rules: list[Rule], ctx: Context,
    tables: dict[str, TablePlan] | None = None,
) -> Callable[[psycopg.Connection], list[Outcome]]:  # fmt: skip
    if tables is None:
        return lambda conn: check(conn, table, rules, ctx)
    return lambda conn: check(conn, table, rules, ctx, tables)


def _side(ctx: Context, table: TablePlan) -> sql.Identifier:
    return ddl.ident(table.schema, physical(ctx.mode, table))


def _types(table: TablePlan) -> dict[str, str]:
    return {c.name: c.pg_type for c in table.columns}


def _failing(rule: Rule, table: TablePlan) -> sql.Composable | None:
    """The condition a failing row meets (None: a rule on the table, not on rows)."""
    if not rule.columns:
        return None
    column = rule.columns[0]
    col = sql.Identifier(column)
    pg_type = _types(table)[column]
    p = rule.params
    if rule.kind == "not_null":
        return sql.SQL("{} IS NULL").format(col)
    if rule.kind == "range":
        parts: list[sql.Composable] = []
        for bound, op, strict in (("min", "<", "min_inclusive"), ("max", ">", "max_inclusive")):
            if p.get(bound) is not None:
                use = op if p.get(strict, True) else op + "="
                literal = sql.SQL("{}::{}").format(sql.Literal(str(p[bound])), sql.SQL(pg_type))
                parts.append(sql.SQL("{} {} {}").format(col, sql.SQL(use), literal))
        return sql.SQL("({})").format(sql.SQL(" OR ").join(parts))
    if rule.kind == "pattern":
        negate = sql.SQL("!~*" if p.get("case_insensitive") else "!~")
        regex = sql.Literal(p["regex"])
        if pg_type.endswith("[]"):
            return sql.SQL("EXISTS (SELECT FROM unnest({}) e WHERE e::text {} {})").format(
                col, negate, regex
            )
        return sql.SQL("{}::text {} {}").format(col, negate, regex)
    if rule.kind == "accepted_values":
        values = sql.Literal([_text(v) for v in p["values"]])
        if pg_type.endswith("[]"):
            return sql.SQL(
                "EXISTS (SELECT FROM unnest({}) e WHERE e::text <> ALL ({}::text[]))"
            ).format(col, values)
        return sql.SQL("{}::text <> ALL ({}::text[])").format(col, values)
    return None  # freshness: on the table's newest value


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _scan(
    conn: psycopg.Connection, table: TablePlan, rules: list[Rule], ctx: Context
) -> list[Outcome]:
    """The row-level rules of one table in one scan, then examples of the failing ones."""
    side = _side(ctx, table)
    aggregates: list[sql.Composable] = [sql.SQL("count(*)")]
    for rule in rules:
        condition = _failing(rule, table)
        if condition is not None:
            aggregates.append(sql.SQL("count(*) FILTER (WHERE {})").format(condition))
        elif rule.kind == "freshness":
            aggregates.append(
                sql.SQL("extract(epoch FROM now() - max({})::timestamptz)").format(
                    sql.Identifier(rule.columns[0])
                )
            )
        else:
            aggregates.append(sql.SQL("NULL"))
    row = conn.execute(
        sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(aggregates), side)
    ).fetchone()
    assert row is not None
    total = int(row[0])
    outcomes = []
    for rule, value in zip(rules, row[1:], strict=True):
        if rule.kind == "row_count":
            outcomes.append(_row_count(rule, table, total, ctx))
        elif rule.kind == "freshness":
            outcomes.append(_freshness(rule, value))
        else:
            failing = int(value)
            samples = _samples(conn, table, side, rule, ctx) if failing else []
            outcomes.append(Outcome(rule, total, failing, rule.passes(failing, total), samples))
    return outcomes


def _samples(
    conn: psycopg.Connection, table: TablePlan, side: sql.Identifier, rule: Rule, ctx: Context
) -> list[Any]:
    """Up to ``ctx.samples`` failing rows: the table's key (else its first column) and the
    rule's columns, as text."""
    condition = _failing(rule, table)
    if condition is None or not ctx.samples:
        return []
    shown = list(dict.fromkeys([*(table.key or table.column_names[:1]), *rule.columns]))
    columns = sql.SQL(", ").join(
        sql.SQL("left({}::text, {}) AS {}").format(
            sql.Identifier(c), sql.Literal(SAMPLE_WIDTH), sql.Identifier(c)
        )
        for c in shown
    )
    query = sql.SQL("SELECT to_jsonb(s) FROM (SELECT {} FROM {} WHERE {} LIMIT {}) s").format(
        columns, side, condition, sql.Literal(ctx.samples)
    )
    return [r[0] for r in conn.execute(query).fetchall()]


def _row_count(rule: Rule, table: TablePlan, rows: int, ctx: Context) -> Outcome:
    """The table's rows against absolute bounds, the source's rows and the previous run's."""
    p = rule.params
    bounds: list[tuple[str, float | None, float | None]] = [("", p.get("min"), p.get("max"))]
    notes: list[str] = []
    if p.get("min_ratio_of_source") is not None or p.get("max_ratio_of_source") is not None:
        bounds.append(
            (f" ({ctx.rows_read:,} source rows × ratio)",
             _times(p.get("min_ratio_of_source"), ctx.rows_read),
             _times(p.get("max_ratio_of_source"), ctx.rows_read))
        )  # fmt: skip
    if p.get("min_ratio_of_previous") is not None or p.get("max_ratio_of_previous") is not None:
        previous = ctx.previous_rows.get(table.name)
        if previous is None:
            notes.append("no previous run: the bound relative to it is not checked")
        else:
            bounds.append(
                (f" (the previous run's {previous:,} rows × ratio)",
                 _times(p.get("min_ratio_of_previous"), previous),
                 _times(p.get("max_ratio_of_previous"), previous))
            )  # fmt: skip
    problems: list[str] = []
    for what, low, high in bounds:
        if low is not None and rows < low:
            problems.append(f"{rows:,} rows < min {low:,.0f}{what}")
        if high is not None and rows > high:
            problems.append(f"{rows:,} rows > max {high:,.0f}{what}")
    detail = "; ".join(problems or [f"{rows:,} rows within bounds", *notes])
    samples = [{"rows": rows}] if problems else []
    return Outcome(rule, 1, int(bool(problems)), not problems, samples, detail)


def _times(ratio: float | None, base: int) -> float | None:
    return None if ratio is None else ratio * base


def _freshness(rule: Rule, age: float | None) -> Outcome:
    limit = float(rule.params["max_age_s"])
    if age is None:
        empty = f"{rule.columns[0]} has no value: no rows, or all NULL"
        return Outcome(rule, 1, 1, False, [], empty)
    stale = age > limit
    detail = f"newest {rule.columns[0]} is {age / 3600:,.1f} h old (max {limit / 3600:,.1f} h)"
    return Outcome(rule, 1, int(stale), not stale, [{"age_seconds": round(age)}] if stale else [],
                   detail)  # fmt: skip


def _unique(
    conn: psycopg.Connection, table: TablePlan, rules: list[Rule], ctx: Context,
    tables: dict[str, TablePlan],
) -> list[Outcome]:  # fmt: skip
    """Rows whose columns' values occur more than once (rows with a NULL in them are not
    compared, as in a UNIQUE constraint)."""
    (rule,) = rules
    side = _side(ctx, table)
    cols = sql.SQL(", ").join(map(sql.Identifier, rule.columns))
    not_null = sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in rule.columns
    )
    row = conn.execute(
        sql.SQL(
            "SELECT coalesce(sum(n), 0), coalesce(sum(n) FILTER (WHERE n > 1), 0) "
            "FROM (SELECT count(*) AS n FROM {} WHERE {} GROUP BY {}) g"
        ).format(side, not_null, cols)
    ).fetchone()
    assert row is not None
    evaluated, failing = int(row[0]), int(row[1])
    samples: list[Any] = []
    if failing and ctx.samples:
        shown = sql.SQL(", ").join(
            sql.SQL("left({}::text, {}) AS {}").format(
                sql.Identifier(c), sql.Literal(SAMPLE_WIDTH), sql.Identifier(c)
            )
            for c in rule.columns
        )
        samples = [
            r[0]
            for r in conn.execute(
                sql.SQL(
                    "SELECT to_jsonb(s) FROM (SELECT {}, count(*) AS occurrences FROM {} "
                    "WHERE {} GROUP BY {} HAVING count(*) > 1 ORDER BY count(*) DESC, {} "
                    "LIMIT {}) s"
                ).format(shown, side, not_null, cols, cols, sql.Literal(ctx.samples))
            ).fetchall()
        ]
    return [Outcome(rule, evaluated, failing, rule.passes(failing, evaluated), samples)]


def _relationships(
    conn: psycopg.Connection, table: TablePlan, rules: list[Rule], ctx: Context,
    tables: dict[str, TablePlan],
) -> list[Outcome]:  # fmt: skip
    """Child rows whose reference is in none of the parent's rows: the parent's side table
    when the run writes it (and, for append and merge, its target too), else the table named."""
    (rule,) = rules
    to = rule.params["to"]
    parent = tables.get(to) or next(
        (t for t in tables.values() if t.name == to and t.schema == table.schema), None
    )
    to_columns = list(rule.params.get("to_columns") or rule.columns)
    if parent is None:
        schema, _, name = to.rpartition(".")
        candidates = [ddl.ident(schema or table.schema, name)]
    else:
        candidates = [_side(ctx, parent)]
        if ctx.mode != "replace":
            candidates.append(ddl.ident(parent.schema, parent.name))
    child = _side(ctx, table)
    present = sql.SQL(" AND ").join(
        sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in rule.columns
    )
    joins = sql.SQL(" AND ").join(
        sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(c))
        for p, c in zip(to_columns, rule.columns, strict=True)
    )
    missing = sql.SQL(" AND ").join(
        sql.SQL("NOT EXISTS (SELECT FROM {} p WHERE {})").format(t, joins) for t in candidates
    )
    failing = int(
        conn.execute(
            sql.SQL("SELECT count(*) FROM {} c WHERE {} AND {}").format(child, present, missing)
        ).fetchone()[0]  # type: ignore[index]
    )
    evaluated = ctx.table_rows.get(table.name, 0)
    samples: list[Any] = []
    if failing and ctx.samples:
        shown = sql.SQL(", ").join(
            sql.SQL("left(c.{}::text, {}) AS {}").format(
                sql.Identifier(c), sql.Literal(SAMPLE_WIDTH), sql.Identifier(c)
            )
            for c in dict.fromkeys([*table.key, *rule.columns])
        )
        samples = [
            r[0]
            for r in conn.execute(
                sql.SQL(
                    "SELECT to_jsonb(s) FROM (SELECT {} FROM {} c WHERE {} AND {} LIMIT {}) s"
                ).format(shown, child, present, missing, sql.Literal(ctx.samples))
            ).fetchall()
        ]
    return [Outcome(rule, evaluated, failing, rule.passes(failing, evaluated), samples)]


def custom_query(rule: Rule, table: sql.Identifier, conn: psycopg.Connection) -> sql.Composable:
    """The rule's query with ``{table}`` standing for the table it checks."""
    text = str(rule.params["sql"]).strip().rstrip(";")
    return sql.SQL(text.replace("{table}", table.as_string(conn)).replace("%", "%%"))


def _custom(
    conn: psycopg.Connection, table: TablePlan, rules: list[Rule], ctx: Context,
    tables: dict[str, TablePlan],
) -> list[Outcome]:  # fmt: skip
    """The user's query of failing rows, read-only and under a statement timeout."""
    (rule,) = rules
    query = custom_query(rule, _side(ctx, table), conn)
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(
            sql.SQL("SET LOCAL statement_timeout = {}").format(
                sql.Literal(f"{int(ctx.custom_timeout_s * 1000)}ms")
            )
        )
        row = conn.execute(sql.SQL("SELECT count(*) FROM ({}) q").format(query)).fetchone()
        failing = int(row[0]) if row else 0
        samples: list[Any] = []
        if failing and ctx.samples:
            samples = [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT to_jsonb(q) FROM ({}) q LIMIT {}").format(
                        query, sql.Literal(ctx.samples)
                    )
                ).fetchall()
            ]
    evaluated = ctx.table_rows.get(table.name, 0)
    return [Outcome(rule, evaluated, failing, rule.passes(failing, max(evaluated, failing)),
                    samples)]  # fmt: skip


def check_in_database(conn: psycopg.Connection, rules: Sequence[Rule]) -> None:
    """What only PostgreSQL can say before the run reads anything: every ``pattern`` compiles
    in its regex dialect. Raises ConfigError naming the rule."""
    from bq2pg.errors import ConfigError

    for rule in rules:
        if rule.kind != "pattern":
            continue
        try:
            with conn.transaction():
                conn.execute("SELECT '' ~ %s", [rule.params["regex"]])
        except psycopg.errors.InvalidRegularExpression as exc:
            raise ConfigError(
                f"{rule.origin}: quality.{rule.table} {rule.name}: invalid regex "
                f"{rule.params['regex']!r} for PostgreSQL: {exc.diag.message_primary}",
                table=rule.table,
                column=rule.columns[0] if rule.columns else None,
            ) from None
