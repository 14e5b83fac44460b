"""Quality rules: their grammar (``quality:`` in bq2pg.yaml or a ``--quality`` file), and
their binding to the tables a run writes.

A rules document maps target tables to lists of rules::

    quality:
      public.items:
        - rule: not_null
          columns: [id]
          severity: error           # the default
        - rule: range
          column: price
          min: 0
          severity: warn

Every rule has a ``severity`` (``error`` keeps the run from publishing, ``warn`` reports) and
an optional tolerance (``max_failing_rows``, ``max_failing_ratio``). :func:`parse` checks the
grammar (unknown rule, unknown key, invalid regex, SQL that is not one SELECT);
:func:`bind` checks the rules against the run's tables (unknown table, unknown column) — both
before any data is read. ``quality.gate`` evaluates them; docs/quality.md is the reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bq2pg.config.file import did_you_mean
from bq2pg.errors import ConfigError
from bq2pg.plan.tables import TablePlan
from bq2pg.plan.watermark import parse_lag

Severity = Literal["error", "warn"]
#: Weights of the quality score: an ``error`` rule counts three times a ``warn`` rule.
SEVERITY_WEIGHTS: dict[str, int] = {"error": 3, "warn": 1}
#: Failing rows kept per rule as examples (``quality_samples`` changes it).
DEFAULT_SAMPLES = 10
#: Rules whose ``columns`` are checked one by one (the others take them together).
PER_COLUMN = frozenset({"not_null", "range", "pattern", "accepted_values", "freshness"})


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    severity: Severity = "error"
    max_failing_rows: int | None = Field(default=None, ge=0)
    max_failing_ratio: float | None = Field(default=None, ge=0, le=1)
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _column_alias(cls, data: Any) -> Any:
        """``column: x`` is ``columns: [x]``; a lone string in ``columns`` is a list of one."""
        if isinstance(data, dict) and "columns" in cls.model_fields:
            data = dict(data)
            if "column" in data:
                if "columns" in data:
                    raise ValueError("give column or columns, not both")
                data["columns"] = [data.pop("column")]
            if isinstance(data.get("columns"), str):
                data["columns"] = [data["columns"]]
        return data


class _Columns(_Rule):
    columns: list[str] = Field(min_length=1)


class NotNull(_Columns):
    rule: Literal["not_null"]


class Unique(_Columns):
    rule: Literal["unique"]


Bound = int | float | str


class Range(_Columns):
    rule: Literal["range"]
    min: Bound | None = None
    max: Bound | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    @model_validator(mode="after")
    def _bounded(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        return self


class Pattern(_Columns):
    rule: Literal["pattern"]
    regex: str = Field(alias="pattern")
    case_insensitive: bool = False

    @model_validator(mode="after")
    def _compiles(self) -> Pattern:
        try:  # PostgreSQL checks it again (its dialect) before the run reads anything
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        return self


class AcceptedValues(_Columns):
    rule: Literal["accepted_values"]
    values: list[Bound | bool] = Field(min_length=1)


class RowCount(_Rule):
    rule: Literal["row_count"]
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    min_ratio_of_source: float | None = Field(default=None, ge=0)
    max_ratio_of_source: float | None = Field(default=None, ge=0)
    min_ratio_of_previous: float | None = Field(default=None, ge=0)
    max_ratio_of_previous: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> RowCount:
        if all(getattr(self, k) is None for k in RowCount.model_fields if "min" in k or "max" in k):
            raise ValueError(
                "a row_count needs a bound: min, max, min/max_ratio_of_source or "
                "min/max_ratio_of_previous"
            )
        return self


class Freshness(_Columns):
    rule: Literal["freshness"]
    max_age: str | float

    @model_validator(mode="after")
    def _age(self) -> Freshness:
        try:
            parse_lag(str(self.max_age))
        except ConfigError:
            raise ValueError(f"max_age {self.max_age!r}: give seconds or like 36h, 2d") from None
        return self


class Relationships(_Columns):
    rule: Literal["relationships"]
    to: str = Field(alias="to")
    to_columns: list[str] | None = Field(default=None, alias="field")

    @model_validator(mode="before")
    @classmethod
    def _to_columns(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for alias in ("to_column", "fields", "to_columns"):
                if alias in data:
                    data["field"] = data.pop(alias)
            if isinstance(data.get("field"), str):
                data["field"] = [data["field"]]
        return data


class Custom(_Rule):
    rule: Literal["custom"]
    sql: str = Field(alias="query")

    @model_validator(mode="after")
    def _one_select(self) -> Custom:
        check_select(self.sql)
        return self


_Any = Annotated[
    NotNull
    | Unique
    | Range
    | Pattern
    | AcceptedValues
    | RowCount
    | Freshness
    | Relationships
    | Custom,
    Field(discriminator="rule"),
]
KINDS = ("not_null", "unique", "range", "pattern", "accepted_values", "row_count", "freshness",
         "relationships", "custom")  # fmt: skip


class _One(BaseModel):
    rule: _Any


def check_select(text: str) -> None:
    """Refuse SQL that is not one SELECT (or WITH … SELECT without data-modifying parts), by
    PostgreSQL's own parser (pglast). The query also runs in a READ ONLY transaction."""
    from pglast import ast, parse_sql  # PostgreSQL's parser: loaded only for custom rules
    from pglast.parser import ParseError

    try:
        statements = parse_sql(text.replace("{table}", "__bq2pg_table"))
    except ParseError as exc:
        raise ValueError(f"the SQL does not parse: {exc}") from None
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        raise ValueError("the SQL must be a single SELECT statement (the query of failing rows)")
    stmt = statements[0].stmt
    if stmt.intoClause is not None or stmt.lockingClause:
        raise ValueError("the SQL must be a plain SELECT (no INTO, no FOR UPDATE)")
    for cte in (stmt.withClause.ctes if stmt.withClause else ()) or ():
        if not isinstance(cte.ctequery, ast.SelectStmt):
            raise ValueError("the SQL's WITH queries must be SELECTs (no INSERT/UPDATE/DELETE)")


@dataclass(frozen=True)
class Rule:
    """One parsed rule on one table (a per-column rule with several columns became several)."""

    #: The table as configured (``schema.table`` or ``table``), then as bound (``schema.table``).
    table: str
    kind: str
    name: str
    severity: Severity
    columns: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    max_failing_rows: int | None = None
    max_failing_ratio: float | None = None
    #: Where it was written (file:line, ``built-in``), for messages.
    origin: str = ""

    def passes(self, failing: int, evaluated: int) -> bool:
        """Whether ``failing`` of ``evaluated`` is within the tolerance (none by default)."""
        if self.max_failing_rows is None and self.max_failing_ratio is None:
            return failing == 0
        ok = self.max_failing_rows is None or failing <= self.max_failing_rows
        ratio = failing / evaluated if evaluated else 0.0
        return ok and (self.max_failing_ratio is None or ratio <= self.max_failing_ratio)

    def definition(self) -> dict[str, Any]:
        """The rule as stored beside its result."""
        found: dict[str, Any] = {"rule": self.kind, "severity": self.severity}
        if self.columns:
            found["columns"] = list(self.columns)
        found.update(self.params)
        for k in ("max_failing_rows", "max_failing_ratio"):
            if getattr(self, k) is not None:
                found[k] = getattr(self, k)
        return found


def _rules_of(table: str, entries: Any, origin: str) -> list[Rule]:
    if isinstance(entries, Mapping):
        entries = [entries]
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise ConfigError(f"{origin}: quality.{table}: give a list of rules")
    found: list[Rule] = []
    for number, entry in enumerate(entries, 1):
        where = f"{origin}: quality.{table} rule {number}"
        if not isinstance(entry, Mapping) or "rule" not in entry:
            raise ConfigError(f"{where}: each rule is a mapping with `rule:` ({', '.join(KINDS)})")
        kind = str(entry["rule"])
        if kind not in KINDS:
            raise ConfigError(
                f"{where}: unknown rule {kind!r}; rules: {', '.join(KINDS)}"
                + did_you_mean(kind, list(KINDS))
            )
        try:
            parsed = _One.model_validate({"rule": dict(entry)}).rule
        except ValidationError as exc:
            problems = "; ".join(
                (".".join(str(p) for p in e["loc"][2:]) + ": " if e["loc"][2:] else "")
                + e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise ConfigError(f"{where} ({kind}): {problems}") from None
        found += _expand(table, parsed, origin)
    return found


def _expand(table: str, parsed: Any, origin: str) -> list[Rule]:
    kind = parsed.rule
    common = dict(
        table=table, kind=kind, severity=parsed.severity, origin=origin,
        max_failing_rows=parsed.max_failing_rows, max_failing_ratio=parsed.max_failing_ratio,
    )  # fmt: skip
    skip = {"rule", "name", "severity", "max_failing_rows", "max_failing_ratio", "columns"}
    params = {k: v for k, v in parsed.model_dump().items() if k not in skip and v is not None}
    if kind == "freshness":
        params["max_age_s"] = parse_lag(str(parsed.max_age))
    columns: list[str] = list(getattr(parsed, "columns", []) or [])
    groups = [[c] for c in columns] if kind in PER_COLUMN else [columns]
    rules = []
    for group in groups:
        name = parsed.name or (f"{kind}({','.join(group)})" if group else kind)
        if parsed.name and len(groups) > 1:
            name = f"{parsed.name}({group[0]})"
        rules.append(Rule(name=name, columns=tuple(group), params=params, **common))
    return rules


def parse(document: Any, origin: str) -> list[Rule]:
    """The rules of a ``quality:`` mapping (table → rules), or of a whole rules file (a mapping
    with ``quality:``). Raises ConfigError naming the place and the problem."""
    if isinstance(document, Mapping) and set(document) == {"quality"}:
        document = document["quality"]
    if document is None:
        return []
    if not isinstance(document, Mapping):
        raise ConfigError(f"{origin}: quality: give a mapping of target tables to lists of rules")
    rules: list[Rule] = []
    for table, entries in document.items():
        rules += _rules_of(str(table), entries, origin)
    return rules


def parse_file(path: str) -> list[Rule]:
    """The rules of a ``--quality`` file (YAML: ``quality: {table: [rules]}``)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"--quality {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--quality {path}: not valid YAML ({exc})") from None
    return parse(document, path)


def merge(*layers: list[Rule]) -> list[Rule]:
    """The rules of several places, later ones replacing earlier ones of the same table and
    name (so a user's rule overrides a built-in one)."""
    found: dict[tuple[str, str], Rule] = {}
    for layer in layers:
        for rule in layer:
            found[(rule.table, rule.name)] = rule
    return list(found.values())


def bind(rules: list[Rule], plan: TablePlan) -> tuple[list[Rule], list[str]]:
    """The rules on the tables ``plan`` writes, with their table as ``schema.table``, checked
    against the tables' columns; and the tables named that the run does not write (ignored:
    one rules file may serve several jobs).

    Raises ConfigError for an unknown column (with a "did you mean").
    """
    tables = {t.qualified: t for t in plan.all_tables()}
    bare = {t.name: t for t in plan.all_tables() if t.schema == plan.schema}
    bound: list[Rule] = []
    ignored: list[str] = []
    for rule in rules:
        table = tables.get(rule.table) or bare.get(rule.table)
        if table is None:
            if rule.table not in ignored:
                ignored.append(rule.table)
            continue
        known = table.column_names
        for column in rule.columns:
            if column not in known:
                raise ConfigError(
                    f"{rule.origin}: quality.{rule.table} {rule.name}: unknown column "
                    f"{column!r} of {table.qualified}" + did_you_mean(column, known),
                    table=table.qualified,
                    column=column,
                )
        if rule.kind == "relationships":
            _check_reference(rule, tables, bare)
        bound.append(_replace_table(rule, table.qualified))
    return bound, ignored


def _check_reference(rule: Rule, tables: dict[str, TablePlan], bare: dict[str, TablePlan]) -> None:
    parent = tables.get(rule.params["to"]) or bare.get(rule.params["to"])
    to_columns = rule.params.get("to_columns") or list(rule.columns)
    if len(to_columns) != len(rule.columns):
        raise ConfigError(
            f"{rule.origin}: quality.{rule.table} {rule.name}: {len(rule.columns)} column(s) "
            f"reference {len(to_columns)} column(s) of {rule.params['to']}"
        )
    if parent is not None:
        for column in to_columns:
            if column not in parent.column_names:
                raise ConfigError(
                    f"{rule.origin}: quality.{rule.table} {rule.name}: unknown column "
                    f"{column!r} of {parent.qualified}" + did_you_mean(column, parent.column_names),
                    table=parent.qualified,
                    column=column,
                )


def _replace_table(rule: Rule, table: str) -> Rule:
    from dataclasses import replace

    return replace(rule, table=table)


def score(results: Sequence[tuple[str, bool]]) -> float | None:
    """The quality score 0–100 of (severity, passed) results: the severity-weighted share of
    rules passed (None: no rules)."""
    total = sum(SEVERITY_WEIGHTS[s] for s, _ in results)
    if not total:
        return None
    return 100.0 * sum(SEVERITY_WEIGHTS[s] for s, ok in results if ok) / total
