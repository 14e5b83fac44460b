"""Logs and metrics of real runs: JSON log lines with the run's fields and stable events, no
secret at any level, and the metrics seen by a real Prometheus — scraping a running
``bq2pg copy --metrics-port`` and ``bq2pg exporter``, and a real Pushgateway pushed to — equal
to the rows in PostgreSQL. Every metric the alert rules and dashboards use exists in a real
scrape (or is a documented node/postgres exporter metric)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

import grafana
import promql
from bq2pg.observe import context
from bq2pg.observe import log as logs
from bq2pg.plan.tables import Field
from conftest import bq2pg_cmd, make_table
from secret_servers import free_port

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
CANARY = "Canary-Pw-7f3a9c"
FIELDS = [Field("id", "INT64"), Field("name", "STRING")]


def json_lines(text: str) -> list[dict]:
    """The JSON log lines of a stderr (other lines, e.g. the summary, are left out)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def items(source, dataset: str, n: int) -> str:
    return make_table(
        source, dataset, "items", FIELDS, [{"id": i, "name": f"n{i}"} for i in range(n)]
    )


# --- logs ---------------------------------------------------------------------------------------


def test_json_logs_carry_the_run_and_stable_events(
    source, dataset, pg_url, pg_schema, emulator_env
):
    table_id = items(source, dataset, 300)
    target = f"{pg_schema}.items"
    env = {**emulator_env, "BQ2PG_COPY_CHUNK_BYTES": "2000"}
    done = bq2pg_cmd(
        "-v", "--log-format", "json", "copy", table_id, "--to", pg_url, "--table", target,
        "--streams", "2", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    events = [line["event"] for line in lines]
    for name in ("run.started", "session.opened", "chunk.committed", "run.verified"):
        assert name in events, events
    assert (
        events.index("run.started") < events.index("run.published") < events.index("run.succeeded")
    )
    for line in lines:
        assert {"timestamp", "level", "logger", "event"} <= line.keys(), line
    run_lines = [line for line in lines if line["logger"].startswith("bq2pg.engine")]
    run_ids = {line.get("run_id") for line in run_lines}
    assert len(run_ids) == 1 and None not in run_ids, run_ids
    assert {line["job"] for line in run_lines} == {"copy"}
    assert {line["target_table"] for line in run_lines} == {target}
    chunks = [line for line in lines if line["event"] == "chunk.committed"]
    assert len(chunks) >= 2  # small chunks: several per stream
    assert sum(c["rows"] for c in chunks) == 300
    for c in chunks:
        assert c["stream"] and isinstance(c["chunk"], int) and c["offset"] == c["chunk"]
        assert c["seconds"] >= 0 and c["level"] == "debug"
    assert {c["stream"] for c in chunks} == {
        line["stream"] for line in lines if line["event"] == "chunk.committed"
    }
    # SQL statements without values in debug mode
    statements = [line["statement"] for line in lines if line["event"] == "sql.statement"]
    assert statements and all(s.startswith("COPY ") for s in statements)
    # the summary stays on stdout
    assert "rows read" in done.stdout


def test_default_level_is_info_and_json_off_a_terminal(
    source, dataset, pg_url, pg_schema, emulator_env
):
    table_id = items(source, dataset, 20)
    done = bq2pg_cmd("copy", table_id, "--to", pg_url, "--table", f"{pg_schema}.items",
                     env=emulator_env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    levels = {line["level"] for line in json_lines(done.stderr)}
    assert "info" in levels and "debug" not in levels
    quiet = bq2pg_cmd("--log-level", "warning", "copy", table_id, "--to", pg_url, "--table",
                      f"{pg_schema}.items", env=emulator_env)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in json_lines(quiet.stderr) if line["level"] == "info"]


LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_secret_at_any_level_nor_in_tracebacks(fmt, tmp_path):
    """Every level, bq2pg's events and a library's records, fields, messages and tracebacks:
    the canary never shows, while the text around it does (the check can fail)."""
    from bq2pg.config import secrets

    out = tmp_path / "log.txt"
    with out.open("w") as stream:
        logs.configure(fmt=fmt, level="debug", verbose=2, redact=secrets.redact, stream=stream,
                       console=_file_console(stream) if fmt == "console" else None)  # fmt: skip
        try:
            url = f"postgresql://loader:{CANARY}@db.example:5432/x"
            resolved = secrets.resolve("${env:BQ2PG_TEST_CANARY}", what="test")
            assert resolved == CANARY + "-ref"
            event_log = logs.get_logger("bq2pg.test")
            library = logging.getLogger("psycopg")
            with context.bound(run_id="r-1", job="canary", target_table="public.t"):
                for level in LEVELS:
                    event_log.log(level, "canary.event", url=url, secret=resolved, n=level)
                    library.log(level, "connecting to %s with %s", url, resolved)
                    try:
                        raise RuntimeError(f"failed at {url} ({resolved})")
                    except RuntimeError:
                        event_log.log(level, "canary.failed", exc_info=True)
                        library.log(level, "library failure", exc_info=True)
        finally:
            _reset_logging()
    text = out.read_text()
    assert CANARY not in text
    assert "loader:***@db.example" in text
    assert text.count("RuntimeError") >= 2 * len(LEVELS)
    assert "Traceback" in text and "canary.event" in text


def _file_console(stream):
    from rich.console import Console

    return Console(file=stream, width=200, force_terminal=False)


def _reset_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _canary_env(monkeypatch):
    monkeypatch.setenv("BQ2PG_TEST_CANARY", CANARY + "-ref")


def test_no_secret_in_a_failed_runs_output_at_debug(source, dataset, emulator_env, tmp_path):
    """A run that fails to connect (a password in its URL), at -vv: nothing shows it."""
    table_id = items(source, dataset, 5)
    port = free_port()  # nobody listens
    url = f"postgresql://loader:{CANARY}@127.0.0.1:{port}/x?connect_timeout=2"
    for fmt in ("json", "console"):
        done = bq2pg_cmd("-vv", "--log-format", fmt, "copy", table_id, "--to", url,
                         env=emulator_env)  # fmt: skip
        assert done.returncode != 0
        assert "127.0.0.1" in done.stderr + done.stdout  # the error is told ...
        assert CANARY not in done.stderr + done.stdout  # ... without the password


# --- metrics: a real Prometheus, Pushgateway and exporter ---------------------------------------

PROMETHEUS = shutil.which("prometheus")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PUSHGATEWAY is None,
    reason="Debian's prometheus and prometheus-pushgateway are not installed (.ci/run installs "
    "them: apt-get install -y prometheus prometheus-pushgateway)",
)


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            http_get(url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def servers(tmp_path) -> Iterator[dict[str, int]]:
    """Prometheus (scraping a bq2pg run, the exporter and the Pushgateway every second) and a
    Pushgateway, on free ports; stopped afterwards."""
    ports = {name: free_port() for name in ("prometheus", "pushgateway", "run", "exporter")}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": name, "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{ports[port]}"]}]}
            for name, port in (("bq2pg", "run"), ("bq2pg-exporter", "exporter"),
                               ("pushgateway", "pushgateway"))
        ],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs = [
        subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
        ),
        subprocess.Popen(
            [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{ports['pushgateway']}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "pushgateway.log").open("w"),
        ),
    ]  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready")
        wait_http(f"http://127.0.0.1:{ports['pushgateway']}/-/ready")
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = json.loads(http_get(url))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def wait_value(port: int, expr: str, timeout: float = 45.0) -> float:
    """The value of ``expr`` once Prometheus has one."""
    deadline = time.monotonic() + timeout
    while True:
        found = query(port, expr)
        if found:
            return float(found[0]["value"][1])
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus has no value for {expr}")
        time.sleep(0.5)


def scraped_names(text: str) -> set[str]:
    """Family names of an exposition (``# TYPE`` lines, so families without samples count),
    with the samples' names (``_bucket``, ``_count``, ``_total``)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split()[0])
    return names


def _family(name: str) -> str:
    """The family of a histogram's or summary's sample name."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


@needs_prometheus
def test_prometheus_sees_a_runs_metrics_equal_to_postgresql(
    source, dataset, pg_url, pg_schema, emulator_env, servers
):
    n = 2000
    table_id = items(source, dataset, n)
    target = f"{pg_schema}.items"
    exporter = subprocess.Popen(
        [sys.executable, "-m", "bq2pg", "exporter", "--to", pg_url, "--port",
         str(servers["exporter"]), "--addr", "127.0.0.1", "--expect", "copy=1d"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run = subprocess.Popen(
        [sys.executable, "-m", "bq2pg", "--log-format", "json", "copy", table_id, "--to", pg_url,
         "--table", target, "--streams", "2", "--metrics-port", str(servers["run"]),
         "--metrics-linger", "8", "--pushgateway", f"http://127.0.0.1:{servers['pushgateway']}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**__import__("os").environ, **emulator_env, "BQ2PG_COPY_CHUNK_BYTES": "20000"},
    )  # fmt: skip
    try:
        # while the run lingers: its exposition, for the names the rules and dashboards use
        exposition = ""
        deadline = time.monotonic() + 120
        while 'status="succeeded"' not in exposition and time.monotonic() < deadline:
            try:
                exposition = http_get(f"http://127.0.0.1:{servers['run']}/metrics")
            except OSError:
                time.sleep(0.2)
        _stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
        assert any(line["event"] == "metrics.pushed" for line in json_lines(stderr))
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
        assert rows == n

        prom = servers["prometheus"]
        run_target = f"127.0.0.1:{servers['run']}"
        committed = f'bq2pg_rows_committed_total{{target_table="{target}",table="items"'
        # scraped from the running copy (the last scrape before it ended)
        assert (
            wait_value(prom, f'max_over_time({committed},instance="{run_target}"}}[10m])') == rows
        )
        assert wait_value(
            prom, f'max_over_time(bq2pg_runs_total{{instance="{run_target}",status="succeeded",'
            f'target_table="{target}"}}[10m])'
        ) == 1  # fmt: skip
        assert wait_value(
            prom, f'max_over_time(bq2pg_rows_read_total{{instance="{run_target}",'
            f'target_table="{target}"}}[10m])'
        ) == rows  # fmt: skip
        # pushed when it ended (the Pushgateway's series have instance="")
        assert wait_value(prom, f'{committed},instance="",job="copy"}}') == rows
        # read from the state tables by the exporter
        assert wait_value(prom, f'bq2pg_state_last_run_rows{{target_table="{target}"}}') == rows
        assert wait_value(prom, "bq2pg_state_up") == 1
        assert wait_value(
            prom, f'bq2pg_state_expected_interval_seconds{{target_table="{target}"}}'
        ) == 86400  # fmt: skip
        last = wait_value(
            prom, f'bq2pg_state_last_success_timestamp_seconds{{target_table="{target}"}}'
        )
        assert abs(last - time.time()) < 300

        # every metric the alert rules and the dashboards use is in a real scrape of bq2pg
        state = http_get(f"http://127.0.0.1:{servers['exporter']}/metrics")
        scraped = scraped_names(exposition) | scraped_names(state)
        assert "process_resident_memory_bytes" in scraped and "bq2pg_build_info" in scraped
        used = set()
        for expr in promql.rule_exprs(ALERTS):
            used |= promql.metric_names(expr)
        for dashboard in grafana.dashboards().values():
            for _, expr in grafana.panel_exprs(dashboard):
                used |= grafana.metric_names(expr)
        ours = {name for name in used if name.startswith("bq2pg_") or name.startswith("process_")}
        missing = {name for name in ours if name not in scraped and _family(name) not in scraped}
        assert not missing, f"used by rules or dashboards, absent from bq2pg's scrape: {missing}"
        # the others come from node_exporter, postgres_exporter or Prometheus, as documented
        operations = (ROOT / "docs" / "operations.md").read_text()
        undocumented = {name for name in used - ours if f"`{name}`" not in operations}
        assert not undocumented, f"external metrics not named in docs/operations.md: {undocumented}"
    finally:
        run.kill()
        exporter.terminate()
        exporter.wait(30)


@needs_prometheus
def test_a_failed_run_pushes_its_failure(source, dataset, pg_url, emulator_env, servers):
    """The push happens when the run fails too (here: its target schema cannot be created)."""
    table_id = items(source, dataset, 5)
    gateway = f"http://127.0.0.1:{servers['pushgateway']}"
    done = bq2pg_cmd("copy", table_id, "--to", pg_url, "--table", "pg_catalog.items",
                     "--pushgateway", gateway, env=emulator_env)  # fmt: skip
    assert done.returncode != 0
    pushed = [
        line for line in http_get(f"{gateway}/metrics").splitlines()
        if line.startswith("bq2pg_runs_total{") and 'target_table="pg_catalog.items"' in line
    ]  # fmt: skip
    assert len(pushed) == 1 and 'status="failed"' in pushed[0] and 'job="copy"' in pushed[0]
    assert pushed[0].split()[-1] == "1"


def test_exporter_reports_the_database_down(tmp_path):
    """A database that does not answer is bq2pg_state_up 0, not a failed scrape."""
    from prometheus_client import generate_latest

    from bq2pg import exporter

    url = f"postgresql://nobody@127.0.0.1:{free_port()}/x?connect_timeout=2"
    text = generate_latest(exporter.registry(url)).decode()
    assert "bq2pg_state_up 0.0" in text
    assert "bq2pg_state_scrape_duration_seconds" in text
