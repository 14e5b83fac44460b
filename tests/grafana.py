"""Helpers to check bq2pg's Grafana dashboards without a Grafana: their JSON, their panels'
PromQL (parsed by ``promtool``, from Debian's ``prometheus`` package) and the metric selectors
in it.

``promql_parses`` writes the expressions as recording rules of a temporary rule file and runs
``promtool check rules`` on it, after replacing Grafana's template variables (``$job``,
``$__rate_interval``...) with concrete values. ``selectors`` lists the metric selectors of an
expression (name and label matchers, variables left as written), for checks of the metric
names against the metrics bq2pg serves.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"

#: What each Grafana variable becomes before promtool sees an expression.
TEMPLATE_VALUES = {
    "job": "nightly",
    "target_table": "public.example",
    "datasource": "prometheus",
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "6h",
}

_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def promtool() -> str | None:
    """Path of ``promtool``, or None when it is not installed."""
    return shutil.which("promtool")


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard of DASHBOARDS_DIR: file name → parsed JSON."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, nested panels included."""
    return [
        (panel.get("title", ""), target.get("expr", ""))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def substitute(expr: str) -> str:
    """The expression with Grafana's template variables replaced by TEMPLATE_VALUES (unknown
    ones, and ``$1`` in label_replace's strings, left as they are)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return TEMPLATE_VALUES.get(name, match.group(0))

    return _VARIABLE.sub(value, expr)


def promql_parses(exprs: list[str]) -> tuple[bool, str]:
    """Whether promtool parses every expression (variables substituted), and its output: one
    recording rule ``check:expr_N`` per expression in a temporary rule file, checked with
    ``promtool check rules``. The output names a failing rule by its index N."""
    tool = promtool()
    if tool is None:
        return False, "promtool is not installed"
    if not exprs:
        return True, "no expressions"
    substituted = [substitute(expr) for expr in exprs]
    rules = [{"record": f"check:expr_{i}", "expr": expr} for i, expr in enumerate(substituted)]
    with tempfile.TemporaryDirectory(prefix="bq2pg-promql-") as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(
            yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}, sort_keys=False),
            encoding="utf-8",
        )
        done = subprocess.run(
            [tool, "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    output = done.stdout + done.stderr
    failed = sorted({int(n) for n in re.findall(r"check:expr_(\d+)", output)})
    for n in failed:
        output += f"\ncheck:expr_{n} = {substituted[n]}"
    return done.returncode == 0, output


class Selector(NamedTuple):
    """A metric selector: its name and its label matchers (label, op, value)."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]


_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[a-zA-Z]+\d*)*)
    | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){}\[\],@])
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)

_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read {expr[pos:]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group(0)))
        pos = match.end()
    return tokens


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL expression, in order (Grafana variables as written).

    A small reader for the expressions of dashboards, not a PromQL parser: promtool checks
    that the expressions parse."""
    tokens = _tokens(expr)
    found: list[Selector] = []
    i = 0

    def skip_group(i: int, opening: str, closing: str) -> int:
        depth = 0
        while i < len(tokens):
            if tokens[i] == ("op", opening):
                depth += 1
            elif tokens[i] == ("op", closing):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return i

    def matchers(i: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
        out = []
        i += 1  # {
        while i < len(tokens) and tokens[i] != ("op", "}"):
            if tokens[i] == ("op", ","):
                i += 1
                continue
            label, op, value = tokens[i][1], tokens[i + 1][1], tokens[i + 2][1]
            out.append((label, op, value[1:-1] if value[0] in "\"'`" else value))
            i += 3
        return tuple(out), i + 1

    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "op" and text == "[":
            i = skip_group(i, "[", "]")  # a range or a subquery's duration
        elif kind == "op" and text == "{":
            found_matchers, i = matchers(i)
            names = [v for label, op, v in found_matchers if label == "__name__" and op == "="]
            found.append(Selector(names[0] if names else "", found_matchers))
        elif kind != "name":
            i += 1
        elif text in _LABEL_LISTS:
            i += 1
            if tokens[i : i + 1] == [("op", "(")]:
                i = skip_group(i, "(", ")")
        elif text in _AGGREGATIONS or text in _KEYWORDS or following == ("op", "("):
            i += 1  # an aggregation, a keyword or a function
        elif following == ("op", "{"):
            found_matchers, i = matchers(i + 1)
            found.append(Selector(text, found_matchers))
        else:
            found.append(Selector(text, ()))
            i += 1
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (``_bucket`` and such as written)."""
    return {selector.name for selector in selectors(expr) if selector.name}
