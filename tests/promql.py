"""The metric names a PromQL expression uses, and the expressions of a Prometheus rule file.

``metric_names(expr)`` reads PromQL well enough to list the metrics of bq2pg's alert rules
(``deploy/prometheus/alerts.yml``): it is not a parser, but it knows strings, label matchers,
ranges, ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` label lists,
``offset`` and ``@`` modifiers, functions, aggregations and keywords. Names are returned as
written: ``bq2pg_http_request_duration_seconds_bucket`` stays so (the caller maps histogram
suffixes to their family).

``EXTERNAL_METRICS`` are the metrics the rules use that bq2pg does not expose (node_exporter,
postgres_exporter, Prometheus's ``up``); ``BQ2PG_METRICS`` and ``EXPORTER_METRICS`` are the
ones bq2pg exposes (``--metrics-port``/``serve``, and ``bq2pg exporter``). docs/operations.md
documents all of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

#: Metrics of other exporters the rules use (each named in docs/operations.md).
EXTERNAL_METRICS = frozenset(
    {
        "up",  # Prometheus, for every scrape target
        "pg_up",  # postgres_exporter
        "node_filesystem_avail_bytes",  # node_exporter
        "node_filesystem_size_bytes",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_cpu_seconds_total",
    }
)

#: What ``bq2pg copy|run|patents --metrics-port N`` and ``bq2pg serve`` expose (histograms by
#: their family name: ``_bucket``, ``_sum`` and ``_count`` series).
BQ2PG_METRICS = frozenset(
    {
        "bq2pg_build_info",
        "bq2pg_runs_total",
        "bq2pg_run_in_progress",
        "bq2pg_run_started_timestamp_seconds",
        "bq2pg_run_last_success_timestamp_seconds",
        "bq2pg_run_duration_seconds",
        "bq2pg_last_progress_timestamp_seconds",
        "bq2pg_rows_read_total",
        "bq2pg_rows_committed_total",
        "bq2pg_rows_dead_lettered_total",
        "bq2pg_bigquery_read_bytes_total",
        "bq2pg_copy_bytes_total",
        "bq2pg_chunks_total",
        "bq2pg_chunk_duration_seconds",
        "bq2pg_copy_duration_seconds",
        "bq2pg_retries_total",
        "bq2pg_circuit_breaker_state",
        "bq2pg_circuit_breaker_openings_total",
        "bq2pg_read_streams_active",
        "bq2pg_watermark_value",
        "bq2pg_verification_mismatches_total",
        "bq2pg_quality_score_ratio",
        "bq2pg_quality_rules_failing",
        "bq2pg_anomalies_total",
        "bq2pg_lineage_events_total",
        "bq2pg_http_request_duration_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    }
)

#: What ``bq2pg exporter`` exposes (read from the state tables at scrape time).
EXPORTER_METRICS = frozenset(
    {
        "bq2pg_state_up",
        "bq2pg_state_last_success_timestamp_seconds",
        "bq2pg_state_last_run_duration_seconds",
        "bq2pg_state_run_duration_usual_seconds",
        "bq2pg_state_last_run_rows",
        "bq2pg_state_last_run_failed",
        "bq2pg_state_runs_in_progress",
        "bq2pg_state_run_in_progress_seconds",
        "bq2pg_state_last_chunk_timestamp_seconds",
        "bq2pg_state_dead_letters_pending",
        "bq2pg_state_watermark_lag_seconds",
        "bq2pg_state_expected_interval_seconds",
    }
)

#: Histogram families: their series are ``<family>_bucket``, ``_sum`` and ``_count``.
HISTOGRAMS = frozenset(
    {
        "bq2pg_chunk_duration_seconds",
        "bq2pg_copy_duration_seconds",
        "bq2pg_http_request_duration_seconds",
    }
)

#: Aggregation operators (``sum by (job) (x)``: not followed by a parenthesis).
AGGREGATIONS = frozenset(
    {
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    }
)

#: Keywords and literals that look like identifiers (compared in lowercase).
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "atan2",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "start",
        "end",
        "inf",
        "nan",
    }
)

#: A string literal (any quoting) or a comment: what may hold any character.
_LEXEME = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|#[^\n]*')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"(\d+)"')  # = only: not =~, !=, !~
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_TOKEN = re.compile(r"(?P<number>\d[\w.]*)|(?P<name>[A-Za-z_:][\w:]*)|(?P<other>\S)")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects, as written (``x_bucket`` stays ``x_bucket``)."""
    strings: list[str] = []

    def numbered(match: re.Match[str]) -> str:
        if match.group(0).startswith("#"):
            return ""
        strings.append(match.group(0)[1:-1])
        return f'"{len(strings) - 1}"'

    text = _LEXEME.sub(numbered, expr)  # strings are numbered, comments dropped
    names = {strings[int(m.group(1))] for m in _NAME_MATCHER.finditer(text)}  # {__name__="x"}
    text = _MATCHERS.sub(" ", text)  # label names and values
    text = _RANGE.sub(" ", text)  # [5m], [1h:1m]
    text = _LABEL_LIST.sub(r"\1 ", text)  # by (le), on (job, target_table)
    tokens = list(_TOKEN.finditer(text))
    for i, token in enumerate(tokens):
        name = token.group("name")
        if name is None:
            continue
        following = tokens[i + 1].group(0) if i + 1 < len(tokens) else ""
        if following == "(":  # a function: rate(, time(, histogram_quantile(
            continue
        if name.lower() in KEYWORDS or name in AGGREGATIONS:
            continue
        names.add(name)
    return names


def rule_exprs(path: str | Path) -> list[str]:
    """The ``expr`` of every rule (alerting and recording) of a Prometheus rule file."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return [
        str(rule["expr"])
        for group in document.get("groups") or []
        for rule in group.get("rules") or []
        if "expr" in rule
    ]
