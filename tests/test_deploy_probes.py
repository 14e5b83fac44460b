"""The deployment files' health checks, run for real against bq2pg's own servers.

A probe that names the wrong path, port or header only shows when a cluster marks every pod
unready. So the commands are taken from the files themselves — the Kubernetes manifests as
kustomize renders them, compose.yaml, the Containerfile's HEALTHCHECK — and run against a real
``bq2pg serve --with-worker`` and ``bq2pg exporter`` on free ports (the fixed ports of the files
rewritten to those), each with a negative case.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from tests import service_helpers as sh
from tests.deploy_tools import ROOT, ok, run, system_tool

from bq2pg.local.emulator import free_port

pytestmark = pytest.mark.slow


def rendered(overlay: str) -> list[dict[str, Any]]:
    kubectl = system_tool("kubectl", "kubernetes-client")
    output = ok(run(kubectl, "kustomize", ROOT / "deploy" / "k8s" / "overlays" / overlay))
    return [doc for doc in yaml.safe_load_all(output) if doc]


def container(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    workload = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    (found,) = workload["spec"]["template"]["spec"]["containers"]
    return found


def compose_check(service: str) -> list[str]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    test = document["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    return test[1:]


def image_check() -> list[str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Containerfile").read_text())
    line = next(x for x in text.splitlines() if x.startswith("HEALTHCHECK"))
    return json.loads(line[line.index("CMD") + 3 :].strip())


def probe(command: list[str], ports: dict[int, int], env: dict[str, str]) -> int:
    """Run a probe's command here (the image's ``python`` is this one) with the files' fixed
    ports rewritten to the test servers'; its exit status."""
    args = list(command)
    if args[0] == "python":
        args[0] = sys.executable
    for fixed, actual in ports.items():
        args = [a.replace(f":{fixed}/", f":{actual}/") for a in args]
    done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, timeout=30)
    return done.returncode


@pytest.fixture(scope="module")
def servers(pg_url: str, emu: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("probes")
    database = sh.fresh_database(pg_url)
    config = sh.write_config(tmp / "bq2pg.yaml", database, emu, jobs={})
    exporter_port = free_port()
    with sh.running(sh.Api(config, tmp / "api.log", with_worker=True)) as api:
        exporter = sh.Process(
            ["exporter", "--to", database, "--port", str(exporter_port)], tmp / "exporter.log"
        )
        with sh.running(exporter):
            viewer = sh.key(database, "viewer")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # ready once the worker's heartbeat is seen
                with contextlib.suppress(httpx.HTTPError):
                    response = api.client(viewer).get("/readyz")
                    if response.status_code == 200:
                        break
                time.sleep(0.5)
            else:
                pytest.fail(f"/readyz never answered 200:\n{api.output()[-3000:]}")
            while time.monotonic() < deadline:  # the exporter listens once it has started
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", exporter_port), timeout=2).close()
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"the exporter never listened:\n{exporter.output()[-3000:]}")
            yield {
                "ports": {8000: api.port, 9187: exporter_port},
                "viewer": viewer,
                "url": api.url,
            }


def test_kubernetes_api_probes_pass_with_the_probe_key_and_fail_without(servers: dict):
    api = container(rendered("prod"), "Deployment", "bq2pg-api")
    ports = servers["ports"]
    readiness = api["readinessProbe"]["exec"]["command"]
    assert probe(readiness, ports, {"BQ2PG_PROBE_KEY": servers["viewer"]}) == 0
    assert probe(readiness, ports, {"BQ2PG_PROBE_KEY": "bq2pg_not-a-key"}) != 0
    for kind in ("livenessProbe", "startupProbe"):
        get = api[kind]["httpGet"]
        port = next(p for p in api["ports"] if get["port"] in (p["name"], p["containerPort"]))
        assert port["containerPort"] == 8000
        response = httpx.get(servers["url"] + get["path"], timeout=10)
        assert response.status_code == 200, (kind, get, response.text)
    # the Secret holds what the probe reads
    variables = {e["name"]: e for e in api["env"]}
    assert variables["BQ2PG_PROBE_KEY"]["valueFrom"]["secretKeyRef"]["name"]


def test_kubernetes_exporter_probes_pass(servers: dict):
    exporter = container(rendered("prod"), "Deployment", "bq2pg-exporter")
    port = next(p for p in exporter["ports"] if p["containerPort"] == 9187)
    for kind in ("livenessProbe", "readinessProbe"):
        check = exporter[kind]
        # a TCP check: an HTTP one would run the state queries of a scrape at every probe
        assert check["tcpSocket"]["port"] in (port["name"], 9187), check
        with socket.create_connection(("127.0.0.1", servers["ports"][9187]), timeout=5):
            pass
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", free_port()), timeout=5).close()


def test_compose_health_checks_pass_and_fail_when_the_server_is_gone(servers: dict):
    ports = servers["ports"]
    for service in ("api", "exporter"):
        assert probe(compose_check(service), ports, {}) == 0, service
        assert probe(compose_check(service), {8000: free_port(), 9187: free_port()}, {}) != 0


def test_the_image_healthcheck_passes_against_serve(servers: dict):
    command = image_check()
    env = {"BQ2PG_HEALTHCHECK_URL": f"http://127.0.0.1:{servers['ports'][8000]}/healthz"}
    assert probe(command, {}, env) == 0
    env = {"BQ2PG_HEALTHCHECK_URL": f"http://127.0.0.1:{free_port()}/healthz"}
    assert probe(command, {}, env) != 0
    # the default the image sets is serve's port and path
    containerfile = (ROOT / "Containerfile").read_text()
    assert "BQ2PG_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz" in containerfile


def test_the_configs_serve_on_the_port_the_probes_use():
    """The ConfigMap's and compose's bq2pg.yaml put the API where the probes look."""
    for path in (ROOT / "deploy" / "k8s" / "base" / "bq2pg.yaml",
                 ROOT / "deploy" / "compose" / "bq2pg.yaml"):  # fmt: skip
        service = yaml.safe_load(path.read_text())["service"]
        assert service["port"] == 8000 and service["host"] == "0.0.0.0", path
