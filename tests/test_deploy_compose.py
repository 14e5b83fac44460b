"""compose.yaml and compose.monitoring.yaml, and the files they mount, checked without a
container engine: `podman-compose config` merges them, the Compose Specification's JSON schema
(tests/data/compose-spec.json) validates them, every mounted file must exist, every service
must have a health check (or a stated reason), no password may be literal, every image tag is
pinned; `promtool`, `amtool` and `bq2pg config validate` check the configurations they mount.
Nothing is started: the machines that run these tests pull no image."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bq2pg.doctor import SETTING_RULES
from bq2pg.postgres.settings_probe import Setting, quantity
from deploy_tools import ROOT, ok, run, system_tool, tool

COMPOSE = ROOT / "compose.yaml"
MONITORING = ROOT / "compose.monitoring.yaml"
FILES = (COMPOSE, MONITORING)
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
BQ2PG_CONFIG = ROOT / "deploy" / "compose" / "bq2pg.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
LOKI = ROOT / "deploy" / "loki" / "loki.yaml"
ALLOY = ROOT / "deploy" / "alloy" / "config.alloy"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"

BQ2PG_SERVICES = {"api", "worker", "exporter"}
SERVICES = BQ2PG_SERVICES | {
    "postgres",
    "prometheus",
    "alertmanager",
    "pushgateway",
    "postgres-exporter",
    "node-exporter",
    "grafana",
    "loki",
    "alloy",
    "jaeger",
}
#: Services without a container health check, and why (compose.monitoring.yaml says the same).
NO_HEALTHCHECK = {
    "worker": "no port; its heartbeats in the database and the reaper cover it",
    "loki": "distroless image: no shell, wget or curl to run a check with",
}
#: Stateful services and the named volume each keeps its data in.
STATEFUL = {
    "postgres": "postgres-data",
    "prometheus": "prometheus-data",
    "alertmanager": "alertmanager-data",
    "pushgateway": "pushgateway-data",
    "grafana": "grafana-data",
    "loki": "loki-data",
    "alloy": "alloy-data",
}
#: Mounted paths that are not in the repository: the user or the host provides them.
NOT_IN_REPO = {
    "${GCP_KEY_FILE:?": "the service-account key the user creates (.env: GCP_KEY_FILE)",
    "${CONTAINER_SOCKET:-/var/run/docker.sock}": "the container engine's API socket (Alloy)",
    "/": "the host's root file system (node_exporter, read-only)",
}
#: Values for the required variables, as a user's .env would give them.
TEST_ENV = {
    "BQ2PG_PG_PASSWORD": "test-pg-password",
    "BQ2PG_SESSION_SECRET": "test-session-secret",
    "BQ2PG_GCP_PROJECT": "test-project",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY", re.IGNORECASE)
#: The scrape jobs alerts.yml and the dashboards assume (docs/operations.md).
SCRAPE_JOBS = {"bq2pg-api", "bq2pg-exporter", "bq2pg", "postgres", "node"}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def strings(node: Any) -> list[str]:
    """Every string value (and key) of a parsed YAML document: comments left out."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [*strings(k), *strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def variables(pattern: str = r"\$\{(\w+)[:}]") -> set[str]:
    """The variables the compose files interpolate (``${NAME:?…}`` ones with the default)."""
    return {
        m.group(1)
        for path in FILES
        for text in strings(load(path))
        for m in re.finditer(pattern, text)
    }


def required_variables() -> set[str]:
    return variables(r"\$\{(\w+):\?")


def write_env(tmp: Path, values: dict[str, str]) -> Path:
    key = tmp / "gcp-key.json"
    key.write_text("{}\n")
    env = tmp / "test.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in {**values, "GCP_KEY_FILE": key}.items()))
    return env


def compose_config(env_file: Path, *files: Path) -> subprocess.CompletedProcess:
    """`podman-compose config` of ``files`` with the variables of ``env_file`` only (none of
    the files' variables leak in from this process's environment). podman-compose runs
    `podman version` first, even for `config`, so it needs podman on PATH (no service)."""
    system_tool("podman", "podman")
    args = [str(tool("podman-compose")), "--env-file", str(env_file)]
    for path in files:
        args += ["-f", str(path)]
    environ = {k: v for k, v in os.environ.items() if k not in variables()}
    return subprocess.run(
        [*args, "config"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two files as podman-compose merges and interpolates them."""
    env = write_env(tmp_path_factory.mktemp("compose"), TEST_ENV)
    result = compose_config(env, *FILES)
    ok(result)
    return yaml.safe_load(result.stdout)


# --- podman-compose -----------------------------------------------------------------------


def test_podman_compose_merges_both_files_into_every_service(merged):
    assert merged["name"] == "bq2pg"
    assert set(merged["services"]) == SERVICES
    # compose.monitoring.yaml's worker adds to compose.yaml's, it does not replace it
    worker = merged["services"]["worker"]["environment"]
    assert worker["BQ2PG_CONFIG"] == "/etc/bq2pg/bq2pg.yaml"
    assert worker["BQ2PG_PG_PASSWORD"] == TEST_ENV["BQ2PG_PG_PASSWORD"]
    assert worker["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert worker["BQ2PG_DEFAULTS__PUSHGATEWAY"] == "http://pushgateway:9091"
    # ... and only to the worker's (compose.yaml's api and worker share one YAML anchor)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in merged["services"]["api"]["environment"]
    # the exporter reads the state tables: no session secret, no BigQuery credentials
    assert set(merged["services"]["exporter"]["environment"]) == {
        "BQ2PG_CONFIG",
        "BQ2PG_LOG_FORMAT",
        "BQ2PG_PG_PASSWORD",
    }
    assert (
        merged["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
        == (TEST_ENV["BQ2PG_PG_PASSWORD"])
    )


def test_compose_yaml_alone_has_the_bq2pg_services(tmp_path):
    result = compose_config(write_env(tmp_path, TEST_ENV), COMPOSE)
    ok(result)
    doc = yaml.safe_load(result.stdout)
    assert set(doc["services"]) == BQ2PG_SERVICES | {"postgres"}


@pytest.mark.parametrize("missing", sorted(TEST_ENV))
def test_a_missing_secret_stops_compose_naming_it(tmp_path, missing):
    env = write_env(tmp_path, {k: v for k, v in TEST_ENV.items() if k != missing})
    result = compose_config(env, *FILES)
    assert result.returncode != 0, result.stdout
    assert missing in result.stderr and ".env" in result.stderr, result.stderr


# --- the Compose Specification's schema ---------------------------------------------------


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """The schema's complaints about ``doc`` (jsonschema is in the dev extra)."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_matches_the_compose_spec_schema(path):
    assert schema_errors(load(path)) == []


def test_merged_file_matches_the_compose_spec_schema(merged):
    assert schema_errors(merged) == []


def test_schema_rejects_an_unknown_key_and_a_bad_condition():
    doc = load(COMPOSE)
    doc["services"]["api"]["healthcheck"]["intervall"] = "30s"
    doc["services"]["worker"]["depends_on"] = {"postgres": {"condition": "service_ready"}}
    errors = schema_errors(doc)
    assert any("intervall" in e for e in errors), errors
    assert any("service_ready" in e or "is not valid" in e for e in errors), errors


# --- mounted files ------------------------------------------------------------------------


def mounted_sources(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(service or section, path) of every bind mount, build context and secret/config file
    of a compose document as written (variables not interpolated)."""
    found: list[tuple[str, str]] = []
    for name, service in (doc.get("services") or {}).items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":", 1)[0]
                if source.startswith((".", "/", "$", "~")):
                    found.append((name, source))
            elif volume.get("type") == "bind":
                found.append((name, volume["source"]))
        build = service.get("build")
        if isinstance(build, dict):
            context = build.get("context", ".")
            found.append((name, context))
            found.append((name, str(Path(context) / build.get("dockerfile", "Dockerfile"))))
        elif isinstance(build, str):
            found.append((name, build))
    for section in ("secrets", "configs"):
        for name, item in (doc.get(section) or {}).items():
            if "file" in item:
                found.append((f"{section}.{name}", item["file"]))
    return found


def missing_mounts(doc: dict[str, Any], base: Path) -> list[str]:
    """Mounted paths that neither exist under ``base`` nor are listed in NOT_IN_REPO."""
    missing = []
    for owner, source in mounted_sources(doc):
        if source == "/" or any(source.startswith(p) for p in NOT_IN_REPO if p != "/"):
            continue
        if source.startswith("/") or not (base / source).exists():
            missing.append(f"{owner}: {source}")
    return missing


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_mounted_file_exists_in_the_repository(path):
    doc = load(path)
    assert mounted_sources(doc), "no mount found: the walk is broken"
    assert missing_mounts(doc, ROOT) == []


def test_a_mount_of_a_missing_file_is_caught():
    doc = load(MONITORING)
    doc["services"]["loki"]["volumes"][0]["source"] = "./deploy/loki/loki-typo.yaml"
    doc["services"]["alloy"]["volumes"].append("/etc/somewhere:/x:ro")
    assert missing_mounts(doc, ROOT) == [
        "loki: ./deploy/loki/loki-typo.yaml",
        "alloy: /etc/somewhere",
    ]


def test_the_user_provided_files_are_the_ones_listed():
    sources = {s for path in FILES for _, s in mounted_sources(load(path))}
    outside = {s for s in sources if s.startswith(("/", "$"))}
    assert outside == {
        "${GCP_KEY_FILE:?set GCP_KEY_FILE in .env to the path of a service-account key "
        "(see .env.example)}",
        "${CONTAINER_SOCKET:-/var/run/docker.sock}",
        "/",
    }


def test_bind_mounts_use_the_long_syntax_and_are_read_only():
    # the short syntax creates a missing host path as an empty directory; long syntax fails
    for path in FILES:
        for name, service in load(path)["services"].items():
            for volume in service.get("volumes", []):
                assert isinstance(volume, dict), f"{name}: {volume}"
                if volume["type"] == "bind":
                    assert volume.get("read_only") is True, f"{name}: {volume}"


# --- health checks, volumes, secrets, images ----------------------------------------------


def test_every_service_has_a_healthcheck_or_a_reason(merged):
    for name, service in merged["services"].items():
        check = service.get("healthcheck") or {}
        if name in NO_HEALTHCHECK:
            assert check.get("disable") is True, f"{name}: listed without a check, but has one"
            continue
        test = check.get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
        assert not check.get("disable"), name


def test_healthchecks_of_bq2pg_ask_the_right_port(merged):
    services = merged["services"]
    assert "http://127.0.0.1:8000/healthz" in services["api"]["healthcheck"]["test"][-1]
    assert "http://127.0.0.1:9187/metrics" in services["exporter"]["healthcheck"]["test"][-1]
    assert services["api"]["healthcheck"]["test"][1] == "python"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_stateful_services_keep_their_data_in_declared_named_volumes(merged):
    declared = set(merged["volumes"])
    used = set()
    for name, service in merged["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                assert volume["source"] in declared, f"{name}: {volume['source']} undeclared"
                used.add((name, volume["source"]))
    assert {(s, v) for s, v in STATEFUL.items()} <= used
    assert declared == {v for _, v in used}, "a declared volume no service uses"


def literal_secrets(node: Any, where: str = "") -> list[str]:
    """Keys named like a secret (PASS, SECRET, TOKEN, KEY) whose value is a literal string."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(value, str) and SECRET_NAME.search(str(key)) and "${" not in value:
                found.append(path)
            found += literal_secrets(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += literal_secrets(value, f"{where}[{i}]")
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_secret_is_written_in_a_compose_file(path):
    doc = load(path)
    assert literal_secrets(doc) == []
    secret_keys = [k for k in re.findall(r"^\s*(\w+):", path.read_text(), re.M)]
    assert any(SECRET_NAME.search(k) for k in secret_keys), "the check found nothing to check"


def test_a_literal_password_is_caught():
    doc = load(COMPOSE)
    doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    assert literal_secrets(doc) == ["services.postgres.environment.POSTGRES_PASSWORD"]


def env_example() -> dict[str, str]:
    """.env.example's variables, commented-out optional ones included (value as written)."""
    found = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_env_example_names_every_variable_and_holds_no_secret():
    example = env_example()
    used = variables()
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    assert required_variables() == set(TEST_ENV) | {"GCP_KEY_FILE"}
    for name in required_variables():
        assert example[name] == "", f"{name}: the example must leave it for the user to fill"


def image_tag(image: str) -> str | None:
    """The tag of an image reference (the default of a ${VAR:-default}), or None."""
    m = re.fullmatch(r"\$\{\w+:-(.+)\}", image)
    image = m.group(1) if m else image
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else None


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_image_tag_is_pinned(path):
    doc = load(path)
    images = {n: s["image"] for n, s in doc["services"].items() if "image" in s}
    assert images
    for name, image in images.items():
        tag = image_tag(image)
        assert tag and tag != "latest", f"{name}: {image}"
    assert image_tag("prom/prometheus") is None
    assert image_tag("grafana/grafana:latest") == "latest"


# --- the bq2pg services -------------------------------------------------------------------


def test_bq2pg_services_are_hardened_and_share_the_configuration(merged):
    services = merged["services"]
    for name in BQ2PG_SERVICES:
        s = services[name]
        assert s["image"] == "ghcr.io/bq2pg/bq2pg:0.1.0", name
        assert s["user"] == "10001:10001", name
        assert s["read_only"] is True and "/tmp" in s["tmpfs"], name
        assert s["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in s["security_opt"], name
        assert {
            "type": "bind",
            "source": "./deploy/compose/bq2pg.yaml",
            "target": "/etc/bq2pg/bq2pg.yaml",
            "read_only": True,
        } in s["volumes"], name
        assert s["environment"]["BQ2PG_CONFIG"] == "/etc/bq2pg/bq2pg.yaml", name
        assert s["environment"]["BQ2PG_LOG_FORMAT"] == "json", name
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy", name
    assert services["api"]["build"]["dockerfile"] == "Containerfile"
    assert services["api"]["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert services["worker"]["command"][0] == "worker"
    assert services["exporter"]["command"][:3] == ["exporter", "--port", "9187"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/run/secrets/gcp-key.json"
        assert {"source": "gcp-key", "target": env["GOOGLE_APPLICATION_CREDENTIALS"]} in (
            services[name]["secrets"]
        )


def test_published_ports_listen_on_the_loopback_only(merged):
    published = {}
    for name, service in merged["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
            published[name] = port
    assert published["api"] == "127.0.0.1:8000:8000"
    assert set(published) == {"api", "grafana", "prometheus", "alertmanager", "jaeger"}


def test_postgres_gets_the_bulk_load_settings_doctor_advises(merged):
    command = merged["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    settings = dict(a.split("=", 1) for a in command[2::2])
    assert all(flag == "-c" for flag in command[1::2])
    rules = {r.setting: r for r in SETTING_RULES}
    assert set(settings) <= set(rules), "a setting doctor does not advise"
    for name, value in settings.items():
        setting = Setting(name, value, quantity(value), "sighup", (value,))
        assert rules[name].test(setting), f"{name}={value}: doctor would still warn"
    # left out on purpose (compose.yaml says why)
    assert "wal_level" not in settings and "synchronous_commit" not in settings
    assert len(settings) >= 4


def test_bq2pg_config_validates():
    ok(run(ROOT / ".venv" / "bin" / "bq2pg", "config", "validate", BQ2PG_CONFIG))


def test_bq2pg_config_validate_rejects_a_typo(tmp_path):
    broken = tmp_path / "bq2pg.yaml"
    broken.write_text(BQ2PG_CONFIG.read_text().replace("recent_days:", "recent_dayz:"))
    result = run(ROOT / ".venv" / "bin" / "bq2pg", "config", "validate", broken)
    assert result.returncode != 0
    assert "recent_dayz" in result.stdout + result.stderr


def test_bq2pg_config_matches_compose(merged):
    config = load(BQ2PG_CONFIG)
    (target,) = config["targets"].values()
    assert target["url"].startswith("postgresql://bq2pg@postgres:5432/bq2pg")
    assert target["password"] == "${env:BQ2PG_PG_PASSWORD}"
    service = config["service"]
    assert service["host"] == "0.0.0.0" and service["port"] == 8000
    assert service["metrics_open"] is True  # what prometheus.yml's bq2pg-api job relies on
    assert service["session_secret"] == "${env:BQ2PG_SESSION_SECRET}"
    # the exporter's --expect names jobs of the file
    command = merged["services"]["exporter"]["command"]
    expected = [command[i + 1] for i, a in enumerate(command) if a == "--expect"]
    assert expected
    assert {e.split("=", 1)[0] for e in expected} <= set(config["jobs"])
    # every ${env:NAME} the file reads is given to the bq2pg services
    for name in re.findall(r"\$\{env:(\w+)\}", BQ2PG_CONFIG.read_text()):
        for svc in ("api", "worker"):
            assert name in merged["services"][svc]["environment"], f"{svc}: {name}"


# --- Prometheus, Alertmanager, Loki, Alloy, Grafana ----------------------------------------


def prometheus_copy(tmp_path: Path, text: str) -> Path:
    """prometheus.yml with the rule file's container path replaced by the repository's."""
    copy = tmp_path / "prometheus.yml"
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    copy.write_text(text.replace("/etc/prometheus/alerts.yml", str(rules)))
    return copy


def test_promtool_checks_the_prometheus_config(tmp_path):
    promtool = system_tool("promtool", "prometheus")
    output = ok(run(promtool, "check", "config", prometheus_copy(tmp_path, PROMETHEUS.read_text())))
    assert "1 rule files found" in output


def test_promtool_rejects_a_broken_prometheus_config(tmp_path):
    promtool = system_tool("promtool", "prometheus")
    broken = PROMETHEUS.read_text().replace("honor_labels: true", "honor_labels: maybe", 1)
    assert run(promtool, "check", "config", prometheus_copy(tmp_path, broken)).returncode != 0


def test_prometheus_scrapes_the_jobs_the_rules_expect(merged):
    config = load(PROMETHEUS)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == SCRAPE_JOBS
    assert jobs["bq2pg"]["honor_labels"] is True
    assert jobs["bq2pg-exporter"]["honor_labels"] is True
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    mounted = {v["target"] for v in merged["services"]["prometheus"]["volumes"]}
    assert {"/etc/prometheus/alerts.yml", "/etc/prometheus/prometheus.yml"} <= mounted
    # every target is a compose service on a port it serves
    targets = {
        t
        for j in config["scrape_configs"] + config["alerting"]["alertmanagers"]
        for s in j["static_configs"]
        for t in s["targets"]
    }
    assert targets == {
        "api:8000",
        "exporter:9187",
        "pushgateway:9091",
        "postgres-exporter:9187",
        "node-exporter:9100",
        "alertmanager:9093",
    }
    for target in targets:
        assert target.split(":")[0] in merged["services"], target


def uncommented_examples(text: str) -> str:
    """alertmanager.yml with its commented-out YAML examples (`  # key: …`) turned on."""
    example = re.compile(r"^(  )# (\s*(?:- )?[\w.]+:(?: |$).*)$")
    return "\n".join(example.sub(r"\1\2", line) for line in text.splitlines()) + "\n"


@pytest.mark.parametrize("examples", [False, True], ids=["as-is", "examples-on"])
def test_amtool_checks_the_alertmanager_config(tmp_path, examples):
    amtool = system_tool("amtool", "prometheus-alertmanager")
    text = ALERTMANAGER.read_text()
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(uncommented_examples(text) if examples else text)
    output = ok(run(amtool, "check-config", copy))
    assert ("3 receivers" if examples else "1 receivers") in output


def test_amtool_rejects_a_broken_alertmanager_config(tmp_path):
    amtool = system_tool("amtool", "prometheus-alertmanager")
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(ALERTMANAGER.read_text().replace('receiver: "null"', 'receiver: "nobody"'))
    assert run(amtool, "check-config", copy).returncode != 0


def test_loki_keeps_structured_metadata_in_its_volume(merged):
    config = load(LOKI)
    (period,) = config["schema_config"]["configs"]
    assert (period["store"], period["schema"]) == ("tsdb", "v13")
    assert config["limits_config"]["allow_structured_metadata"] is True
    volume = {v["target"]: v for v in merged["services"]["loki"]["volumes"]}
    assert volume["/loki"]["type"] == "volume"
    assert config["common"]["path_prefix"] == "/loki"
    assert config["server"]["http_listen_port"] == 3100
    assert "/etc/loki/loki.yaml" in volume
    assert merged["services"]["loki"]["command"] == ["-config.file=/etc/loki/loki.yaml"]


_BLOCK = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+)\s+\"([\w-]+)\"\s*\{", re.M)
_REFERENCE = re.compile(r"\b((?:discovery|loki)\.[a-z_.]+?)\.([\w-]+)\.(receiver|targets|rules)\b")


def alloy_problems(text: str) -> list[str]:
    """Unbalanced braces and references to components the configuration does not declare."""
    code = re.sub(r"(^|\s)//.*", r"\1", text)  # comments, not the // of URLs
    problems = []
    if code.count("{") != code.count("}"):
        problems.append(f"braces: {code.count('{')} open, {code.count('}')} closed")
    declared = {(kind, label) for kind, label in _BLOCK.findall(code)}
    for kind, label, _ in _REFERENCE.findall(code):
        if (kind, label) not in declared:
            problems.append(f"undeclared: {kind}.{label}")
    return problems


def test_alloy_config_references_only_declared_components(merged):
    text = ALLOY.read_text()
    assert alloy_problems(text) == []
    kinds = {kind for kind, _ in _BLOCK.findall(text)}
    assert {"discovery.docker", "loki.source.docker", "loki.process", "loki.write"} <= kinds
    assert 'url = "http://loki:3100/loki/api/v1/push"' in text
    # the compose project it filters on is compose.yaml's name, the socket the one mounted
    assert f"com.docker.compose.project={merged['name']}" in text
    mounts = {v["target"] for v in merged["services"]["alloy"]["volumes"]}
    assert "/var/run/docker.sock" in mounts and "unix:///var/run/docker.sock" in text
    # bq2pg's JSON fields: level a label, run_id structured metadata (not a label)
    labels = re.search(r"stage\.labels\s*\{(.*?)\n    \}", text, re.S)
    assert labels and "level" in labels.group(1) and "run_id" not in labels.group(1)
    assert re.search(r"stage\.structured_metadata\s*\{[^}]*run_id", text)


def test_alloy_check_catches_an_undeclared_component():
    text = ALLOY.read_text().replace("loki.write.loki.receiver", "loki.write.remote.receiver")
    assert alloy_problems(text) == ["undeclared: loki.write.remote"]
    assert alloy_problems(ALLOY.read_text() + '\nloki.echo "x" {\n') != []


def datasource(name: str) -> dict[str, Any]:
    doc = load(DATASOURCES / name)
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    return ds


def test_grafana_datasources_for_logs_and_traces(merged):
    loki, jaeger = datasource("loki.yaml"), datasource("jaeger.yaml")
    assert (loki["type"], loki["uid"], loki["url"]) == ("loki", "loki", "http://loki:3100")
    assert (jaeger["type"], jaeger["uid"], jaeger["url"]) == (
        "jaeger",
        "jaeger",
        "http://jaeger:16686",
    )
    assert jaeger["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    (field,) = loki["jsonData"]["derivedFields"]
    assert field["datasourceUid"] == "jaeger"
    # Grafana expands $NAME in provisioning files: its own ${__…} macros must be written $$
    for name in ("loki.yaml", "jaeger.yaml"):
        assert not re.search(r"(?<!\$)\$\{__", (DATASOURCES / name).read_text()), name
    # the derived field finds the trace id in a real bq2pg log line (docs/operations.md)
    line = next(
        ln
        for ln in (ROOT / "docs" / "operations.md").read_text().splitlines()
        if ln.startswith('{"timestamp"') and '"trace_id"' in ln
    )
    match = re.search(field["matcherRegex"], line)
    assert match and match.group(1) == json.loads(line)["trace_id"]
    # the provisioning folder Grafana mounts holds all three datasources
    mounted = {v["source"]: v["target"] for v in merged["services"]["grafana"]["volumes"]}
    assert mounted["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounted["./deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards/bq2pg"
    assert {p.name for p in DATASOURCES.glob("*.yaml")} >= {
        "prometheus.yaml",
        "loki.yaml",
        "jaeger.yaml",
    }
