"""bq2pg's Prometheus alert rules (``deploy/prometheus``) are valid, tested and documented.

``promtool check rules`` and ``promtool test rules`` run when promtool is installed (Debian's
``prometheus`` package); the rest is plain Python: every alert has ``for``, a severity, a
summary, a description and a runbook that exists in docs/operations.md, every alert is tested
firing and not firing in alerts_test.yml, and the rules use only documented metrics.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from promql import (
    BQ2PG_METRICS,
    EXPORTER_METRICS,
    EXTERNAL_METRICS,
    HISTOGRAMS,
    metric_names,
    rule_exprs,
)

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOK_BASE = "https://github.com/bq2pg/bq2pg/blob/main/docs/operations.md#"

EXPECTED_ALERTS = {
    "Bq2pgApiDown",
    "Bq2pgApiLatencyHigh",
    "PostgresUnreachable",
    "DiskUsageHigh",
    "MemoryHigh",
    "CpuHigh",
    "Bq2pgPipelineStalled",
    "Bq2pgErrorRateHigh",
    "Bq2pgNoRecentSuccess",
    "Bq2pgDeadLettersGrowing",
    "Bq2pgWatermarkLagHigh",
    "Bq2pgCircuitBreakerOpen",
    "Bq2pgVerificationMismatch",
    "Bq2pgRunTooLong",
}


def _alerts() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


ALERTS = _alerts()


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool is not installed (Debian's prometheus package: "
            "apt-get install -y prometheus; .ci/run installs it)"
        )
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules():
    done = _run("check", "rules", str(RULES))
    assert done.returncode == 0, f"promtool check rules failed:\n{done.stdout}\n{done.stderr}"


def test_promtool_test_rules():
    done = _run("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, f"promtool test rules failed:\n{done.stdout}\n{done.stderr}"


# --- the rules, without promtool -------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading's text: lowercase, punctuation removed
    (hyphens and underscores stay), spaces to hyphens."""
    text = re.sub(r"`|\*\*?|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str, str]]:
    """(level, text, anchor) of every heading outside fenced code, with GitHub's ``-1``,
    ``-2`` … suffixes for repeated anchors."""
    prose = re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.DOTALL | re.MULTILINE)
    seen: dict[str, int] = {}
    found = []
    for hashes, text in re.findall(r"^(#{1,6})\s+(.+?)\s*#*\s*$", prose, flags=re.MULTILINE):
        anchor = github_anchor(text)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.append((len(hashes), text, anchor if count == 0 else f"{anchor}-{count}"))
    return found


def _section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section (up to the next ``##`` heading)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"docs/operations.md has no '## {title}' section"
    return match.group(1)


def test_github_anchor():
    assert github_anchor("Bq2pgApiDown") == "bq2pgapidown"
    assert github_anchor("Operating bq2pg: alerts, runbooks") == "operating-bq2pg-alerts-runbooks"
    assert github_anchor("`bq2pg_state_up` is 0") == "bq2pg_state_up-is-0"
    assert [a for _, _, a in headings("# A\n```\n# not a heading\n```\n## A\n")] == ["a", "a-1"]


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_alert_is_complete(alert):
    name = alert["alert"]
    assert "for" in alert, f"{name}: no 'for' (write 'for: 0m' for an instant alert)"
    assert alert.get("labels", {}).get("severity") in {"critical", "warning"}, name
    annotations = alert.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{name}: no annotations.{key}"
    url = annotations["runbook_url"]
    assert url.startswith(RUNBOOK_BASE), f"{name}: runbook_url {url} is not in {RUNBOOK_BASE}"


def test_runbooks_exist():
    markdown = OPERATIONS.read_text(encoding="utf-8")
    runbook_anchors = {anchor for level, _, anchor in headings(markdown) if level == 3}
    for alert in ALERTS:
        anchor = alert["annotations"]["runbook_url"].removeprefix(RUNBOOK_BASE)
        assert anchor in runbook_anchors, (
            f"{alert['alert']}: docs/operations.md has no ### heading with anchor #{anchor}"
        )
    runbooks = _section(markdown, "Runbooks")
    titles = {text for level, text, _ in headings(runbooks) if level == 3}
    table = _section(markdown, "Alerts")
    for alert in ALERTS:
        assert alert["alert"] in titles, f"no '### {alert['alert']}' under ## Runbooks"
        assert f"`{alert['alert']}`" in table, f"{alert['alert']} is not in the ## Alerts table"


def test_every_expected_alert_is_defined():
    assert {a["alert"] for a in ALERTS} >= EXPECTED_ALERTS
    names = [a["alert"] for a in ALERTS]
    assert len(names) == len(set(names)), "an alert name is defined twice"


def test_every_alert_is_tested_firing_and_not_firing():
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert document["rule_files"] == ["alerts.yml"]
    firing, quiet = set(), set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    for alert in ALERTS:
        assert alert["alert"] in firing, f"{alert['alert']}: no test case where it fires"
        assert alert["alert"] in quiet, f"{alert['alert']}: no test case with exp_alerts: []"


def _family(name: str) -> str:
    """A histogram's series (``x_bucket``, ``x_sum``, ``x_count``) → its family ``x``."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def test_rules_use_only_documented_metrics():
    documented = BQ2PG_METRICS | EXPORTER_METRICS | EXTERNAL_METRICS
    used = {_family(name) for expr in rule_exprs(RULES) for name in metric_names(expr)}
    assert used, "no metric found in the rules"
    assert used <= documented, f"undocumented metrics in alerts.yml: {sorted(used - documented)}"
    assert used >= EXTERNAL_METRICS, f"unused: {sorted(EXTERNAL_METRICS - used)}"
    markdown = OPERATIONS.read_text(encoding="utf-8")
    for name in sorted(used):
        assert f"`{name}`" in markdown, f"docs/operations.md does not name `{name}`"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="bq2pg-api"} == 0', {"up"}),
        ("pg_up == 0 or bq2pg_state_up == 0", {"pg_up", "bq2pg_state_up"}),
        (
            "histogram_quantile(0.95, sum by (job, le) "
            '(rate(bq2pg_http_request_duration_seconds_bucket{job="bq2pg-api"}[5m]))) > 1',
            {"bq2pg_http_request_duration_seconds_bucket"},
        ),
        (
            "(time() - bq2pg_last_progress_timestamp_seconds > 900)\n"
            "  and on (job, target_table) (bq2pg_run_in_progress == 1)",
            {"bq2pg_last_progress_timestamp_seconds", "bq2pg_run_in_progress"},
        ),
        (
            "sum(rate(bq2pg_chunks_total{status=~\"failed|isolated\", job!='x'}[10m])) "
            "by (job, target_table) / ignoring(status) group_left(kind) "
            "bq2pg_retries_total offset 1h",
            {"bq2pg_chunks_total", "bq2pg_retries_total"},
        ),
        (
            "x - min_over_time(x[1h:5m]) > bool 0 unless x @ start() # a comment: not_a_metric",
            {"x"},
        ),
        ('{__name__="node_cpu_seconds_total", mode="idle"} > Inf', {"node_cpu_seconds_total"}),
        (
            'label_replace(job:bq2pg_rows:rate5m, "dst", "$1", "src", "(.*)") * 1e3 + 0x1F',
            {"job:bq2pg_rows:rate5m"},
        ),
        (
            "count without (cpu) (node_cpu_seconds_total) atan2 vector(1)",
            {"node_cpu_seconds_total"},
        ),
        ("time() - 3600", set()),
    ],
)
def test_metric_names(expr, expected):
    assert metric_names(expr) == expected
