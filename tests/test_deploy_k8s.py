"""The Kubernetes manifests of deploy/k8s render, validate and keep their promises.

Both overlays (and the backfill example, which adds a Job to the prod overlay) are rendered once
with ``kubectl kustomize``. Every rendered object goes through ``kubernetes-validate --strict``
(warnings only for the custom resources it has no schema for) and ``checkov`` (one run per
overlay, with the examples; every skip carries its reason). The PrometheusRule's groups pass
promtool and alerts_test.yml, and the ConfigMap's bq2pg.yaml passes ``bq2pg config validate``.
The rest are structural checks of what the manifests promise: hardened pods, probes, the
CronJob's limits, no secret values, Workload Identity, the scrape jobs the alert rules expect.
Nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_tools import DEPLOY, ok, run, system_tool, tool

K8S = DEPLOY / "k8s"
EXAMPLES = K8S / "examples"
NAMESPACES = {"dev": "bq2pg-dev", "prod": "bq2pg"}
#: What ``kubectl kustomize`` renders: the overlays, and the backfill example's kustomization.
SOURCES = {
    "dev": K8S / "overlays" / "dev",
    "prod": K8S / "overlays" / "prod",
    "backfill": EXAMPLES / "backfill",
}
#: Custom resources: kubernetes-validate has no schema for them (it may only warn on these).
CUSTOM_KINDS = {"PrometheusRule", "ServiceMonitor", "ExternalSecret", "ClusterSecretStore"}
#: The oldest Kubernetes the manifests claim (timeZone, podFailurePolicy, matchLabelKeys), and
#: kubernetes-validate's newest schemas (None: its default).
KUBE_VERSIONS = ("1.29.0", None)
SECRET_KEYS = {"pg-password", "session-secret", "probe-key"}
UID = 10001
WORKLOADS = {"Deployment", "CronJob", "Job"}


# --- rendering ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The output of ``kubectl kustomize`` for each source, as files; ``backfill-job`` is the
    backfill example's Job alone (the rest of its output is the prod overlay again)."""
    kubectl = system_tool("kubectl", "kubernetes-client")
    out = tmp_path_factory.mktemp("k8s")
    files = {}
    for name, source in SOURCES.items():
        result = run(kubectl, "kustomize", source)
        assert result.returncode == 0, f"kubectl kustomize {source}:\n{result.stderr}"
        files[name] = out / f"{name}.yaml"
        files[name].write_text(result.stdout, encoding="utf-8")
    jobs = [d for d in _load(files["backfill"]) if d["kind"] == "Job"]
    files["backfill-job"] = out / "backfill-job.yaml"
    files["backfill-job"].write_text(yaml.safe_dump_all(jobs), encoding="utf-8")
    return files


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def docs(rendered: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    return {name: _load(path) for name, path in rendered.items()}


def _one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _workloads(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] in WORKLOADS]


def _config_map(documents: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    found = [
        d
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(prefix + "-")
    ]
    assert len(found) == 1, f"expected one ConfigMap {prefix}-<hash>"
    return found[0]


EXPECTED_OBJECTS = {
    ("Namespace", None),
    ("ServiceAccount", "bq2pg"),
    ("Deployment", "bq2pg-api"),
    ("Deployment", "bq2pg-worker"),
    ("Deployment", "bq2pg-exporter"),
    ("Service", "bq2pg-api"),
    ("Service", "bq2pg-exporter"),
    ("CronJob", "bq2pg-patents"),
    ("PodDisruptionBudget", "bq2pg-api"),
    ("PodDisruptionBudget", "bq2pg-worker"),
    ("NetworkPolicy", "default-deny"),
    ("NetworkPolicy", "bq2pg-api-ingress"),
    ("NetworkPolicy", "bq2pg-exporter-ingress"),
    ("NetworkPolicy", "bq2pg-egress"),
    ("ServiceMonitor", "bq2pg-api"),
    ("ServiceMonitor", "bq2pg-exporter"),
    ("PrometheusRule", "bq2pg"),
}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_every_object_in_its_namespace(docs, overlay):
    documents = docs[overlay]
    found = {
        (d["kind"], None if d["kind"] == "Namespace" else d["metadata"]["name"]) for d in documents
    }
    assert found >= EXPECTED_OBJECTS
    namespace = NAMESPACES[overlay]
    assert _one(documents, "Namespace", namespace)["metadata"]["labels"] == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    for d in documents:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == namespace, (d["kind"], d["metadata"])
    externals = {d["kind"] for d in documents} & {"ExternalSecret", "Secret"}
    # prod syncs the Secret from Secret Manager; dev's is created by hand, never rendered.
    assert externals == ({"ExternalSecret"} if overlay == "prod" else set())
    env = _config_map(documents, "bq2pg-env")["data"]
    assert env["BQ2PG_ENV"] == overlay
    assert env["BQ2PG_CONFIG"] == "/etc/bq2pg/bq2pg.yaml"


# --- kubernetes-validate --------------------------------------------------------------------------


def _validated_files(rendered: dict[str, Path]) -> list[Path]:
    return [
        rendered["dev"],
        rendered["prod"],
        rendered["backfill-job"],
        EXAMPLES / "secret.example.yaml",
        EXAMPLES / "cluster-secret-store.yaml",
    ]


@pytest.mark.parametrize("version", KUBE_VERSIONS, ids=lambda v: v or "newest")
def test_kubernetes_validate_strict_accepts_every_object(rendered, version):
    files = _validated_files(rendered)
    flags = ["-k", version] if version else []
    output = ok(run(tool("kubernetes-validate"), "--strict", *flags, *files))
    assert "ERROR" not in output
    warned = re.findall(r"^WARN .*Couldn't find schema for kind (\w+)", output, re.M)
    assert set(warned) <= CUSTOM_KINDS, output
    assert len(warned) == len(re.findall(r"^WARN", output, re.M)), output
    objects = [d for f in files for d in _load(f)]
    passed = re.findall(r"^INFO .* passed for resource", output, re.M)
    assert len(passed) == sum(d["kind"] not in CUSTOM_KINDS for d in objects), output


def test_kubernetes_validate_rejects_an_unknown_field(docs, tmp_path):
    broken = copy.deepcopy(_one(docs["dev"], "Deployment", "bq2pg-api"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRot"] = True
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = run(tool("kubernetes-validate"), "--strict", path)
    assert result.returncode != 0
    assert "runAsNonRot" in result.stdout + result.stderr


# --- checkov ------------------------------------------------------------------------------------


def _checkov(*files: Path, cwd: Path) -> dict[str, Any]:
    """checkov's JSON report on ``files`` (Kubernetes checks only, no network)."""
    result = run(
        tool("checkov"),
        "--framework",
        "kubernetes",
        "--skip-download",
        "--compact",
        "--output",
        "json",
        *(arg for f in files for arg in ("--file", f)),
        cwd=cwd,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report, dict) and report["check_type"] == "kubernetes", report
    return report


@pytest.fixture(scope="module", params=["dev", "prod"])
def checkov_report(request, rendered, tmp_path_factory) -> tuple[str, dict[str, Any]]:
    """checkov on one overlay's output and the examples that go with it (run once each)."""
    overlay = request.param
    files = {
        "dev": [rendered["dev"], EXAMPLES / "secret.example.yaml"],
        "prod": [
            rendered["prod"],
            rendered["backfill-job"],
            EXAMPLES / "cluster-secret-store.yaml",
        ],
    }[overlay]
    return overlay, _checkov(*files, cwd=tmp_path_factory.mktemp("checkov"))


SKIP = re.compile(r"^(CKV2?_K8S_\d+)=(.+)$", re.S)


def _skips(documents: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(check, checkov's resource id) of every ``checkov.io/skipN`` annotation; each must give
    a reason of some words."""
    found = set()
    for d in documents:
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if not key.startswith("checkov.io/skip"):
                continue
            match = SKIP.match(value.strip())
            assert match, f"{d['kind']} {d['metadata']['name']}: {key} is not CHECK=reason"
            reason = match.group(2)
            assert len(reason.split()) >= 8, f"{key} of {d['metadata']['name']}: {reason!r}"
            resource = f"{d['kind']}.{d['metadata']['namespace']}.{d['metadata']['name']}"
            found.add((match.group(1), resource))
    return found


def test_checkov_passes_and_every_skip_has_its_reason(checkov_report, docs):
    overlay, report = checkov_report
    summary = report["summary"]
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 300  # the container checks ran on every workload
    documents = docs[overlay] + (docs["backfill-job"] if overlay == "prod" else [])
    skipped = {(c["check_id"], c["resource"]) for c in results["skipped_checks"]}
    assert skipped == _skips(documents)
    for check in results["skipped_checks"]:
        assert check["check_result"]["suppress_comment"].strip(), check
    # Only the reasons the manifests give: probes of the port-less worker, secrets as
    # variables (bq2pg refuses world-readable secret files), the tag until a digest exists.
    assert {check for check, _ in skipped} <= {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_35", "CKV_K8S_43"}
    # Every Deployment's and Job's pods are selected by a NetworkPolicy (a graph check; checkov
    # does not follow a CronJob's template that far).
    covered = {
        c["resource"].split(".")[2]
        for c in results["passed_checks"]
        if c["check_id"] == "CKV2_K8S_6"
    }
    pods = {"bq2pg-api", "bq2pg-worker", "bq2pg-exporter"}
    assert covered == (pods | {"bq2pg-backfill-2020"} if overlay == "prod" else pods)


def test_checkov_rejects_a_privileged_container_and_one_without_limits(docs, tmp_path):
    api = _one(docs["dev"], "Deployment", "bq2pg-api")
    privileged = copy.deepcopy(api)
    privileged["metadata"]["name"] = "privileged"
    container = privileged["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"].update(privileged=True, allowPrivilegeEscalation=True)
    unlimited = copy.deepcopy(api)
    unlimited["metadata"]["name"] = "unlimited"
    del unlimited["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all([privileged, unlimited]), encoding="utf-8")
    report = _checkov(path, cwd=tmp_path)
    failed = {(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]}
    assert ("CKV_K8S_16", "Deployment.bq2pg-dev.privileged") in failed
    assert ("CKV_K8S_20", "Deployment.bq2pg-dev.privileged") in failed
    assert ("CKV_K8S_11", "Deployment.bq2pg-dev.unlimited") in failed  # CPU limits
    assert ("CKV_K8S_13", "Deployment.bq2pg-dev.unlimited") in failed  # memory limits


# --- the PrometheusRule ---------------------------------------------------------------------------


def test_prometheusrule_groups_pass_promtool_and_the_alert_tests(docs, tmp_path):
    promtool = system_tool("promtool", "prometheus")
    rule = _one(docs["prod"], "PrometheusRule", "bq2pg")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == alerts["groups"]
    # The groups as a rule file named like the original, beside its unit tests.
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    shutil.copy(DEPLOY / "prometheus" / "alerts_test.yml", tmp_path / "alerts_test.yml")
    assert "SUCCESS" in ok(run(promtool, "check", "rules", "alerts.yml", cwd=tmp_path))
    assert "SUCCESS" in ok(run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path))


def _generator():
    spec = importlib.util.spec_from_file_location("prometheusrule", K8S / "prometheusrule.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_generated_from_alerts_yml_and_current():
    ok(run(sys.executable, K8S / "prometheusrule.py", "--check"))
    text = (K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert text.startswith("# GENERATED from deploy/prometheus/alerts.yml")
    assert "# threshold:" in text  # the rules' comments are kept


def test_prometheusrule_check_fails_when_the_file_is_stale(tmp_path, monkeypatch, capsys):
    generator = _generator()
    stale = tmp_path / "prometheusrule.yaml"
    current = (K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    stale.write_text(current.replace("for: 2m", "for: 3m", 1), encoding="utf-8")
    monkeypatch.setattr(generator, "OUTPUT", stale)
    assert generator.main(["--check"]) == 1
    assert "is out of date with deploy/prometheus/alerts.yml" in capsys.readouterr().err
    assert generator.main([]) == 0  # regenerating fixes it
    assert stale.read_text(encoding="utf-8") == current
    with pytest.raises(ValueError, match="groups"):
        generator.render("rules: []\n")


# --- bq2pg.yaml in the ConfigMap ------------------------------------------------------------------


def test_configmap_holds_a_valid_bq2pg_yaml_with_each_overlays_environment(docs, tmp_path):
    text = (K8S / "base" / "bq2pg.yaml").read_text(encoding="utf-8")
    for overlay in ("dev", "prod"):
        assert _config_map(docs[overlay], "bq2pg-config")["data"]["bq2pg.yaml"] == text
        env = _config_map(docs[overlay], "bq2pg-env")["data"]["BQ2PG_ENV"]
        assert env in yaml.safe_load(text)["environments"]
    path = tmp_path / "bq2pg.yaml"
    path.write_text(text, encoding="utf-8")
    validated = ok(run(sys.executable, "-m", "bq2pg", "config", "validate", path))
    assert "environments: dev, prod" in validated
    config = yaml.safe_load(text)
    assert config["jobs"]["patents"]["recent_days"] > 0  # the nightly job is incremental
    assert "recent_days" not in config["jobs"]["patents-backfill"]
    assert config["targets"]["warehouse"]["password"] == "${env:BQ2PG_PG_PASSWORD}"
    assert config["service"]["session_secret"] == "${env:BQ2PG_SESSION_SECRET}"
    assert config["service"]["port"] == 8000 and config["service"]["metrics_open"] is False


# --- pods -----------------------------------------------------------------------------------------


HARDENED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("overlay", ["dev", "prod", "backfill-job"])
def test_every_pod_is_hardened_and_bounded(docs, overlay):
    workloads = _workloads(docs[overlay])
    assert len(workloads) == (1 if overlay == "backfill-job" else 4)
    for workload in workloads:
        pod = _pod_spec(workload)
        name = workload["metadata"]["name"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        assert pod["serviceAccountName"] == "bq2pg"
        assert pod["automountServiceAccountToken"] is False
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"], name
        config, ca = volumes["config"]["projected"]["sources"]
        assert config["configMap"]["name"].startswith("bq2pg-config-"), name
        # The Cloud SQL CA is created by hand (README): the pods must start without it.
        assert ca["configMap"] == {"name": "bq2pg-cloudsql-ca", "optional": True}, name
        for container in pod["containers"]:
            assert container["securityContext"] == HARDENED_CONTAINER, name
            assert re.fullmatch(r"ghcr\.io/bq2pg/bq2pg:\d+\.\d+\.\d+", container["image"])
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, name
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/tmp"]["name"] == "tmp"
            assert mounts["/etc/bq2pg"] == {
                "name": "config",
                "mountPath": "/etc/bq2pg",
                "readOnly": True,
            }
            env_from = container["envFrom"][0]["configMapRef"]["name"]
            assert env_from.startswith("bq2pg-env-"), name


def _container(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (container,) = _pod_spec(_one(documents, kind, name))["containers"]
    return container


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_probes_use_healthz_and_an_authorised_readyz(docs, overlay):
    api = _container(docs[overlay], "Deployment", "bq2pg-api")
    assert api["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe"):
        assert api[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    command = api["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8000/readyz" in command[2]
    assert "os.environ['BQ2PG_PROBE_KEY']" in command[2]
    assert api["readinessProbe"]["timeoutSeconds"] > 4  # urlopen's own timeout
    key = {e["name"]: e for e in api["env"]}["BQ2PG_PROBE_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "bq2pg", "key": "probe-key"}
    exporter = _container(docs[overlay], "Deployment", "bq2pg-exporter")
    assert exporter["args"][:3] == ["exporter", "--port", "9187"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert exporter[probe]["tcpSocket"] == {"port": "metrics"}
    worker = _container(docs[overlay], "Deployment", "bq2pg-worker")
    assert "ports" not in worker and "livenessProbe" not in worker


class _Readyz(http.server.BaseHTTPRequestHandler):
    """/readyz of a stub API: 401 without the right key, else the status the test sets."""

    key = "bq2pg_probe"
    status = 200

    def do_GET(self) -> None:
        if self.path != "/readyz":
            code = 404
        elif self.headers.get("Authorization") != f"Bearer {self.key}":
            code = 401
        else:
            code = self.status
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[tuple[str, type[_Readyz]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/readyz", _Readyz
    server.shutdown()
    _Readyz.status = 200


def test_readiness_probe_sends_the_key_and_fails_unless_ready(docs, readyz):
    url, handler = readyz
    code = _container(docs["prod"], "Deployment", "bq2pg-api")["readinessProbe"]["exec"]
    code = code["command"][2].replace("http://127.0.0.1:8000/readyz", url)

    def probe(key: str) -> int:
        env = {**os.environ, "BQ2PG_PROBE_KEY": key}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode

    assert probe(handler.key) == 0
    assert probe("bq2pg_wrong") != 0  # 401
    handler.status = 503  # not ready: no worker seen, database away
    assert probe(handler.key) != 0


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_cronjob_runs_the_incremental_job_once_at_a_time_within_deadlines(docs, overlay):
    cron = _one(docs[overlay], "CronJob", "bq2pg-patents")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    assert 0 < spec["startingDeadlineSeconds"] <= 6 * 3600
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 24 * 3600
    assert 0 < job["backoffLimit"] <= 6
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    fail_fast = job["podFailurePolicy"]["rules"][0]
    assert fail_fast["action"] == "FailJob"
    assert {2, 9, 10} <= set(fail_fast["onExitCodes"]["values"])  # config, budget, secret
    assert 6 not in fail_fast["onExitCodes"]["values"]  # target busy: worth a retry
    assert _container(docs[overlay], "CronJob", "bq2pg-patents")["args"] == ["run", "patents"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_worker_has_time_to_finish_its_chunk_and_requeue(docs, overlay):
    worker = _pod_spec(_one(docs[overlay], "Deployment", "bq2pg-worker"))
    # The worker waits up to 60 s for its runs to reach a chunk boundary, then deregisters.
    assert worker["terminationGracePeriodSeconds"] >= 120
    assert worker["containers"][0]["args"][0] == "worker"


def test_prod_scales_out_and_dev_stays_small(docs):
    def replicas(overlay: str, name: str) -> int:
        return _one(docs[overlay], "Deployment", name)["spec"]["replicas"]

    assert replicas("prod", "bq2pg-api") >= 2 and replicas("prod", "bq2pg-worker") == 2
    assert all(replicas("dev", n) == 1 for n in ("bq2pg-api", "bq2pg-worker", "bq2pg-exporter"))
    spread = _pod_spec(_one(docs["prod"], "Deployment", "bq2pg-api"))["topologySpreadConstraints"]
    by_node = [c for c in spread if c["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node and by_node[0]["whenUnsatisfiable"] == "DoNotSchedule"
    worker = _container(docs["prod"], "Deployment", "bq2pg-worker")
    assert worker["args"] == ["worker", "--concurrency", "2"]
    dev_worker = _container(docs["dev"], "Deployment", "bq2pg-worker")
    assert _gib(worker["resources"]["limits"]["memory"]) > _gib(
        dev_worker["resources"]["limits"]["memory"]
    )
    for overlay in ("dev", "prod"):
        for name in ("bq2pg-api", "bq2pg-worker"):
            budget = _one(docs[overlay], "PodDisruptionBudget", name)["spec"]
            assert budget["maxUnavailable"] == 1  # never blocks a drain with one replica


def _gib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) / (1024 if unit == "Mi" else 1)


# --- secrets, identity, network, monitoring ---------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod", "backfill-job"])
def test_no_secret_value_is_written_in_the_manifests(docs, overlay):
    documents = docs[overlay]
    for d in documents:
        if d["kind"] == "Secret":
            assert not any((d.get("data") or {}).values()), d["metadata"]["name"]
            assert not any((d.get("stringData") or {}).values()), d["metadata"]["name"]
    for workload in _workloads(documents):
        for container in _pod_spec(workload)["containers"]:
            for env in container.get("env", []):
                assert "value" not in env, f"{workload['metadata']['name']}: {env['name']}"
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "bq2pg" and ref["key"] in SECRET_KEYS
    example = _load(EXAMPLES / "secret.example.yaml")[0]
    assert set(example["stringData"]) == SECRET_KEYS
    assert not any(example["stringData"].values())


def test_prod_external_secret_provides_every_key_the_pods_read(docs):
    external = _one(docs["prod"], "ExternalSecret", "bq2pg")
    assert external["apiVersion"] == "external-secrets.io/v1"
    spec = external["spec"]
    assert spec["target"]["name"] == "bq2pg"
    assert spec["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "bq2pg-secret-manager"}
    assert {d["secretKey"] for d in spec["data"]} == SECRET_KEYS
    remote = {d["secretKey"]: d["remoteRef"]["key"] for d in spec["data"]}
    assert remote["pg-password"] == "bq2pg-db-password"  # the secret deploy/terraform makes
    store = _load(EXAMPLES / "cluster-secret-store.yaml")[0]
    assert store["metadata"]["name"] == "bq2pg-secret-manager"
    assert store["spec"]["conditions"] == [{"namespaces": ["bq2pg"]}]
    read = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for w in _workloads(docs["prod"])
        for c in _pod_spec(w)["containers"]
        for env in c.get("env", [])
    }
    assert read == SECRET_KEYS


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_service_account_uses_workload_identity_without_a_token(docs, overlay):
    account = _one(docs[overlay], "ServiceAccount", "bq2pg")
    email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    # deploy/terraform's account bq2pg-app (an account id has 6 to 30 characters).
    assert re.fullmatch(r"bq2pg-app@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com", email)
    assert account["automountServiceAccountToken"] is False
    config = yaml.safe_load(_config_map(docs[overlay], "bq2pg-config")["data"]["bq2pg.yaml"])
    assert email.split("@")[1].split(".")[0] == config["sources"]["default"]["project"]
    assert "credentials" not in config["sources"]["default"]  # ADC: Workload Identity


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_network_policies_deny_by_default_and_cover_every_pod(docs, overlay):
    documents = docs[overlay]
    deny = _one(documents, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress = _one(documents, "NetworkPolicy", "bq2pg-egress")["spec"]
    ports = {p["port"] for rule in egress["egress"] for p in rule["ports"]}
    assert ports == {53, 5432, 443, 80, 988}
    for workload in _workloads(documents):
        labels = (
            workload["spec"].get("template", {}).get("metadata", {}).get("labels")
            or (workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
        )
        assert egress["podSelector"]["matchLabels"].items() <= labels.items()
    for name, port in (("bq2pg-api-ingress", 8000), ("bq2pg-exporter-ingress", 9187)):
        ingress = _one(documents, "NetworkPolicy", name)["spec"]["ingress"]
        assert [p["port"] for rule in ingress for p in rule["ports"]] == [port]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_service_monitors_scrape_as_the_jobs_the_alert_rules_expect(docs, overlay):
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    documents = docs[overlay]
    for name, port_name, port in (("bq2pg-api", "http", 8000), ("bq2pg-exporter", "metrics", 9187)):
        assert f'job="{name}"' in alerts or f"  {name} " in alerts
        monitor = _one(documents, "ServiceMonitor", name)
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == port_name and endpoint["path"] == "/metrics"
        assert {"action": "replace", "targetLabel": "job", "replacement": name} in endpoint[
            "relabelings"
        ]
        service = _one(documents, "Service", name)
        assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [(port_name, port)]
    api = _one(documents, "ServiceMonitor", "bq2pg-api")["spec"]["endpoints"][0]
    assert api["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "bq2pg", "key": "probe-key"},
    }
    assert not api.get("honorLabels")
    exporter = _one(documents, "ServiceMonitor", "bq2pg-exporter")["spec"]["endpoints"][0]
    assert exporter["honorLabels"] is True


def test_backfill_job_runs_with_the_prod_overlays_image_and_config(docs):
    (job,) = docs["backfill-job"]
    assert job["metadata"]["namespace"] == "bq2pg"
    container = _pod_spec(job)["containers"][0]
    assert container["args"][:2] == ["run", "patents-backfill"]
    api = _container(docs["prod"], "Deployment", "bq2pg-api")
    assert container["image"] == api["image"]  # the example's images: keeps up with prod's
    config = _pod_spec(job)["volumes"][0]["projected"]["sources"][0]["configMap"]["name"]
    assert config == _config_map(docs["prod"], "bq2pg-config")["metadata"]["name"]
    env = container["envFrom"][0]["configMapRef"]["name"]
    assert env == _config_map(docs["prod"], "bq2pg-env")["metadata"]["name"]
    assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["backoffLimit"] > 0
