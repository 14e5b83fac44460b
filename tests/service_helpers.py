"""Helpers of the service's tests: a database of its own per test (the queue is global to a
database), a bq2pg.yaml, the API and workers as real processes on free ports, API keys, and
a reader of Server-Sent Events."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from psycopg import conninfo, sql

from bq2pg.local.emulator import free_port
from bq2pg.service import keys

ROOT = Path(__file__).resolve().parents[1]


def fresh_database(pg_url: str) -> str:
    """A new, empty database on the test server; its URL."""
    name = f"svc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo.conninfo_to_dict(pg_url)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def write_config(
    path: Path, database_url: str, emu: Any, jobs: dict[str, Any],
    service: dict[str, Any] | None = None, project: str = "bq2pg-test",
    targets: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """A bq2pg.yaml with one target (``main``, and ``targets``: more names → URLs), the
    emulator as the source, and ``jobs``."""
    document = {
        "targets": {"main": {"url": database_url},
                    **{n: {"url": u} for n, u in (targets or {}).items()}},
        "sources": {"emu": {"project": project, "bigquery_endpoint": emu.rest_url,
                            "bigquery_storage_endpoint": emu.grpc_endpoint, "emulator": True}},
        "defaults": {"to": "main", "bigquery": "emu", "streams": 2},
        "jobs": jobs,
        "service": {"database": "main", "heartbeat_s": 0.5, "reaper_timeout_s": 5,
                    **(service or {})},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def key(database_url: str, role: str = "operator") -> str:
    """A new API key of ``role``."""
    return keys.create(database_url, f"test {role}", role)[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BQ2PG_DATABASE_URL", None)
    env["BQ2PG_LOG_FORMAT"] = "json"
    return env


class Process:
    """A bq2pg process (``serve`` or ``worker``) with its output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bq2pg", *args], stdout=self.handle,
            stderr=subprocess.STDOUT, env={**_env(), **(env or {})}, cwd=ROOT,
        )  # fmt: skip

    def kill(self) -> None:
        """``kill -9``."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Api(Process):
    """``bq2pg serve`` on a free port, ready when ``/healthz`` answers."""

    def __init__(self, config: Path, log: Path, *, with_worker: bool = False,
                 concurrency: int = 1, env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.port = free_port()
        args = ["--config", str(config), "serve", "--port", str(self.port)]
        if with_worker:
            args += ["--with-worker", "--concurrency", str(concurrency)]
        super().__init__(args, log, env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bq2pg serve stopped:\n{self.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"bq2pg serve did not answer:\n{self.output()[-3000:]}")

    def client(self, api_key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def worker(config: Path, log: Path, concurrency: int = 1,
           env: dict[str, str] | None = None) -> Process:  # fmt: skip
    """``bq2pg worker``."""
    args = ["--config", str(config), "worker", "--concurrency", str(concurrency)]
    return Process(args, log, env)


@contextlib.contextmanager
def running(proc: Process) -> Iterator[Process]:
    try:
        yield proc
    finally:
        proc.stop()


def events(url: str, api_key: str, run_id: str, timeout: float = 240,
           last_event_id: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every Server-Sent Event of a run until its stream ends (``end``)."""
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with httpx.stream("GET", f"{url}/api/v1/runs/{run_id}/events", headers=headers,
                      timeout=httpx.Timeout(timeout, read=timeout)) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if current:
                    found.append(current)
                    if current.get("event") == "end":
                        return found
                current = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                current["data"] = json.loads(value)
            elif field in ("event", "id"):
                current[field] = value
    return found


def wait_status(client: httpx.Client, run_id: str, statuses: tuple[str, ...],
                timeout: float = 240) -> dict[str, Any]:  # fmt: skip
    """Poll a run until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = client.get(f"/api/v1/runs/{run_id}").json()
        if found.get("status") in statuses:
            return found
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never reached {statuses}: {found}")
