"""The Grafana provisioning and dashboards in deploy/grafana, checked statically (no Grafana):
their JSON model, their variables, and their PromQL, parsed by promtool."""

from __future__ import annotations

import re

import pytest
import yaml

from grafana import (
    DASHBOARDS_DIR,
    PROVISIONING_DIR,
    Selector,
    dashboards,
    metric_names,
    panel_exprs,
    panels,
    promql_parses,
    promtool,
    selectors,
    substitute,
)

EXPECTED = {
    "bq2pg-overview.json",
    "bq2pg-run.json",
    "bq2pg-postgres.json",
    "bq2pg-quality.json",
}
PROVISIONED_UID = "prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DASHBOARDS_PATH = "/var/lib/grafana/dashboards/bq2pg"

_RUN = {"job", "target_table"}
#: The metrics bq2pg serves (bq2pg copy --metrics-port, bq2pg exporter) and their labels.
BQ2PG_METRICS: dict[str, set[str]] = {
    "bq2pg_build_info": {"version", "python_version"},
    "bq2pg_runs_total": _RUN | {"status"},
    "bq2pg_run_in_progress": _RUN,
    "bq2pg_run_started_timestamp_seconds": _RUN,
    "bq2pg_run_last_success_timestamp_seconds": _RUN,
    "bq2pg_run_duration_seconds": _RUN,
    "bq2pg_last_progress_timestamp_seconds": _RUN,
    "bq2pg_rows_read_total": _RUN,
    "bq2pg_rows_committed_total": _RUN | {"table"},
    "bq2pg_rows_dead_lettered_total": _RUN,
    "bq2pg_bigquery_read_bytes_total": _RUN,
    "bq2pg_copy_bytes_total": _RUN,
    "bq2pg_chunks_total": _RUN | {"status"},
    "bq2pg_chunk_duration_seconds": _RUN,
    "bq2pg_copy_duration_seconds": _RUN,
    "bq2pg_retries_total": {"kind"},
    "bq2pg_circuit_breaker_state": {"target_table"},
    "bq2pg_circuit_breaker_openings_total": {"target_table"},
    "bq2pg_read_streams_active": _RUN,
    "bq2pg_watermark_value": {"target_table"},
    "bq2pg_verification_mismatches_total": {"target_table"},
    "bq2pg_quality_score_ratio": _RUN | {"table"},
    "bq2pg_quality_rules_failing": _RUN | {"table", "severity"},
    "bq2pg_anomalies_total": _RUN | {"metric", "severity"},
    "bq2pg_lineage_events_total": {"status"},
    "bq2pg_state_up": set(),
    "bq2pg_state_last_success_timestamp_seconds": _RUN,
    "bq2pg_state_last_run_duration_seconds": _RUN,
    "bq2pg_state_run_duration_usual_seconds": _RUN,
    "bq2pg_state_last_run_rows": _RUN,
    "bq2pg_state_last_run_failed": _RUN,
    "bq2pg_state_runs_in_progress": {"target_table"},
    "bq2pg_state_run_in_progress_seconds": _RUN,
    "bq2pg_state_last_chunk_timestamp_seconds": _RUN,
    "bq2pg_state_dead_letters_pending": {"target_table"},
    "bq2pg_state_watermark_lag_seconds": {"target_table"},
}
#: The other metrics the dashboards may use: the process's, node_exporter's, postgres_exporter's.
OTHER_METRICS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_cpu_seconds_total",
    "pg_up",
    "pg_stat_database_xact_commit",
    "pg_stat_database_tup_inserted",
    "pg_database_size_bytes",
    "pg_stat_activity_count",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

ALL = dashboards()
NAMES = sorted(ALL)


def base_name(metric: str) -> str:
    """A histogram's series name → the histogram's name."""
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix) and metric.removesuffix(suffix) in BQ2PG_METRICS:
            return metric.removesuffix(suffix)
    return metric


def variable(dashboard: dict, name: str) -> dict:
    found = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"{dashboard['title']}: variable {name!r} x{len(found)}"
    return found[0]


def variable_query(var: dict) -> str:
    query = var["query"]
    return query if isinstance(query, str) else query["query"]


def content_panels(dashboard: dict) -> list[dict]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def test_the_four_dashboards_exist():
    assert DASHBOARDS_DIR.is_dir()
    assert set(ALL) >= EXPECTED, f"missing: {sorted(EXPECTED - set(ALL))}"


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_model(name: str):
    d = ALL[name]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", d["uid"]), d["uid"]
    assert d["uid"] == name.removesuffix(".json"), "uid: the file name, stable across edits"
    assert d["title"].strip()
    assert d["schemaVersion"] == 39
    assert d["editable"] is True
    assert d["time"] == {"from": "now-6h", "to": "now"}
    assert d["refresh"] == "30s"
    assert "bq2pg" in d["tags"]
    assert d.get("id") is None, "provisioned dashboards carry no database id"


def test_uids_and_titles_are_unique():
    assert len({d["uid"] for d in ALL.values()}) == len(ALL)
    assert len({d["title"] for d in ALL.values()}) == len(ALL)


@pytest.mark.parametrize("name", NAMES)
def test_panels_have_unique_ids_and_a_grid_position(name: str):
    every = list(panels(ALL[name]))
    assert every
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in every:
        pos = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos), p["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        assert p["title"].strip(), f"panel {p['id']} has no title"


@pytest.mark.parametrize("name", NAMES)
def test_panels_do_not_overlap(name: str):
    cells: dict[tuple[int, int], str] = {}
    for p in panels(ALL[name]):
        pos = p["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize("name", NAMES)
def test_panels_query_the_prometheus_datasource_variable(name: str):
    allowed = (DATASOURCE, {"type": "prometheus", "uid": PROVISIONED_UID})
    for p in panels(ALL[name]):
        if p["type"] in ("row", "text"):
            assert p.get("datasource") in (None, *allowed), p["title"]
            continue
        assert p.get("datasource") in allowed, p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"]) in allowed, p["title"]


@pytest.mark.parametrize("name", NAMES)
def test_the_datasource_variable_selects_prometheus(name: str):
    var = variable(ALL[name], "datasource")
    assert var["type"] == "datasource"
    assert var["query"] == "prometheus"
    current = var.get("current") or {}
    assert current.get("value", PROVISIONED_UID) == PROVISIONED_UID


@pytest.mark.parametrize("name", NAMES)
def test_job_and_target_table_variables(name: str):
    d = ALL[name]
    queries = {
        "job": "label_values(bq2pg_rows_committed_total, job)",
        "target_table": 'label_values(bq2pg_rows_committed_total{job=~"$job"}, target_table)',
    }
    for var_name, query in queries.items():
        var = variable(d, var_name)
        assert var["type"] == "query"
        assert variable_query(var) == query
        assert var["includeAll"] is True and var["multi"] is True
        assert var["datasource"] in (DATASOURCE, {"type": "prometheus", "uid": PROVISIONED_UID})
    names = [v["name"] for v in d["templating"]["list"]]
    assert names.index("datasource") < names.index("job") < names.index("target_table")


@pytest.mark.parametrize("name", NAMES)
def test_bq2pg_selectors_filter_on_the_variables(name: str):
    """Every bq2pg_* selector has job=~"$job" and target_table=~"$target_table" where the
    metric has those labels."""
    missing = []
    for title, expr in panel_exprs(ALL[name]):
        for selector in selectors(expr):
            labels = BQ2PG_METRICS.get(base_name(selector.name))
            if labels is None:
                continue
            for label in sorted(labels & _RUN):
                if (label, "=~", f"${label}") not in selector.matchers:
                    missing.append(f'{title}: {selector.name} lacks {label}=~"${label}"')
    assert not missing, "\n".join(missing)
    assert any(
        '{job=~"$job", target_table=~"$target_table"' in e for _, e in panel_exprs(ALL[name])
    )


@pytest.mark.parametrize("name", NAMES)
def test_metrics_are_ones_bq2pg_and_the_exporters_serve(name: str):
    unknown = {
        f"{title}: {metric}"
        for title, expr in panel_exprs(ALL[name])
        for metric in metric_names(expr)
        if base_name(metric) not in BQ2PG_METRICS and metric not in OTHER_METRICS
    }
    assert not unknown, sorted(unknown)


@pytest.mark.parametrize("name", NAMES)
def test_every_panel_has_a_query(name: str):
    for p in content_panels(ALL[name]):
        if p["type"] == "text":
            assert p["options"]["content"].strip(), p["title"]
            continue
        assert p["type"] in ("timeseries", "stat", "table"), p["type"]
        exprs = [t.get("expr", "").strip() for t in p.get("targets", [])]
        assert any(exprs), f"{p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']!r} has no unit"


@pytest.mark.parametrize("name", NAMES)
def test_ranges_use_rate_interval_or_range(name: str):
    for title, expr in panel_exprs(ALL[name]):
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window in ("$__rate_interval", "$__range"), f"{title}: [{window}]"


@pytest.mark.skipif(
    promtool() is None,
    reason="promtool is not installed: Debian's prometheus package provides promtool; "
    ".ci/run installs it",
)
@pytest.mark.parametrize("name", NAMES)
def test_promql_parses(name: str):
    exprs = panel_exprs(ALL[name])
    ok, output = promql_parses([expr for _, expr in exprs])
    titles = "\n".join(f"check:expr_{i}: {title}" for i, (title, _) in enumerate(exprs))
    assert ok, f"{output}\n{titles}"


def test_promql_check_catches_a_broken_expression():
    if promtool() is None:
        pytest.skip("Debian's prometheus package provides promtool; .ci/run installs it")
    ok, output = promql_parses(["sum(rate(x[$__rate_interval]))", "sum by (job (x)"])
    assert not ok
    assert "check:expr_1" in output


def test_template_variables_are_substituted():
    expr = 'rate(m{job=~"$job", target_table=~"${target_table}"}[$__rate_interval]) [$__range]'
    out = substitute(expr)
    assert "$" not in out
    assert substitute('label_replace(m, "a", "$1", "b", "(.*)")').count("$1") == 1


def test_selectors_read_nested_panels_and_promql():
    nested = {
        "panels": [
            {
                "type": "row",
                "title": "r",
                "panels": [{"title": "inner", "targets": [{"expr": "a"}]}],
            },
            {"title": "outer", "targets": [{"expr": "b"}, {"refId": "B"}]},
        ]
    }
    assert panel_exprs(nested) == [("inner", "a"), ("outer", "b"), ("outer", "")]
    expr = (
        'histogram_quantile(0.95, sum by (le, job) (rate(x_bucket{job=~"$job", a="}"}'
        "[$__rate_interval]))) and on (instance) group_left () up offset 5m"
        ' / {__name__="y"} - time()'
    )
    assert selectors(expr) == [
        Selector("x_bucket", (("job", "=~", "$job"), ("a", "=", "}"))),
        Selector("up", ()),
        Selector("y", (("__name__", "=", "y"),)),
    ]


def test_provisioned_datasource():
    doc = yaml.safe_load((PROVISIONING_DIR / "datasources" / "prometheus.yaml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["uid"] == PROVISIONED_UID
    assert ds["url"] == "http://prometheus:9090"
    assert ds["access"] == "proxy"


def test_provisioned_dashboards_provider():
    doc = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "bq2pg.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "bq2pg"
    assert provider["options"]["path"] == DASHBOARDS_PATH
