"""The service's API under load: a ``bq2pg patents`` run queued through the REST API and
executed by a worker, while 50 clients poll the run's status and one reads its Server-Sent
Events, against the same run with the API idle, alternated run by run (idle, busy, idle, busy).

The API (``bq2pg serve``) and the worker (``bq2pg worker``) are separate processes, as in a
deployment with dedicated workers: the load then pays only what the API's work takes from the
machine (CPU, PostgreSQL connections), not a share of the API's interpreter lock as it would
under ``serve --with-worker``. The clients are threads of this process, each with its own
keep-alive connection, polling ``GET /api/v1/runs/{id}`` every ``poll_s`` seconds (a watching
dashboard or CLI, not a flood); a request's latency is its wall time seen by the client.

The load's rate is the run's own: publications / (finished_at - started_at) of its queue
entry, so it covers the whole run (read, load, verification, quality rules, publishing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import yaml
from psycopg import conninfo, sql

from bench.common import ROOT, Sample
from bench.e2e import STREAMS, seeded
from bq2pg.local.emulator import free_port
from bq2pg.service import keys

IDLE = "bq2pg patents via the API, API idle"
BUSY = "bq2pg patents via the API, API busy (clients polling + 1 SSE stream)"
CLIENTS = 50
#: Seconds each client waits between the end of one poll and its next request.
POLL_S = 0.5
SCHEMA = "bench_service"
FINAL = ("succeeded", "failed", "failed_quality", "cancelled", "interrupted")


@dataclass
class ServiceBench:
    """Runs idle and busy, the poll latencies of the busy runs, and what the API spent."""

    samples: list[Sample] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, every busy poll
    errors: int = 0
    sse_events: list[int] = field(default_factory=list)  # per busy run
    sse_ended: list[bool] = field(default_factory=list)
    #: CPU seconds per run, by process: the API, the worker, the clients, everything else.
    cpu: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    poll_s: float = POLL_S
    clients: int = CLIENTS


class _Process:
    """``python -m bq2pg ARGS`` with its output in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "BQ2PG_DATABASE_URL"}
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bq2pg", *args], stdout=self.handle,
            stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _database(url: str) -> str:
    """A new database on the server, for the queue and the model (the queue is per database)."""
    name = f"bench_service_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def _drop(url: str, database_url: str) -> None:
    name = conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(str(name))))  # fmt: skip


def _config(path: Path, database_url: str, rest: str, storage: str) -> Path:
    document = {
        "targets": {"main": {"url": database_url}},
        "sources": {"emu": {"project": "patents-public-data", "bigquery_endpoint": rest,
                            "bigquery_storage_endpoint": storage, "emulator": True}},
        "defaults": {"to": "main", "bigquery": "emu", "streams": STREAMS},
        "jobs": {"patents": {"kind": "patents", "schema": SCHEMA, "drop_tables": True}},
        "service": {"database": "main"},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _ready(url: str, proc: _Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"bq2pg serve stopped:\n{proc.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"bq2pg serve did not answer:\n{proc.tail()}")


PARTS = ("API (bq2pg serve)", "worker (bq2pg worker)", "clients (this process)",
         "everything else (PostgreSQL, emulator, other users)")  # fmt: skip


def _cpu(api: int, worker: int) -> dict[str, float]:
    """CPU seconds so far of the API, the worker, this process, and the whole machine."""

    def busy(pid: int | None) -> float:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system

    machine = psutil.cpu_times()
    total = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return {PARTS[0]: busy(api), PARTS[1]: busy(worker), PARTS[2]: busy(None), "all": total}


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    spent = {k: after[k] - before[k] for k in before}
    spent[PARTS[3]] = spent.pop("all") - sum(spent[p] for p in PARTS[:3])
    return spent


class _Load:
    """The busy side: ``clients`` threads polling a run, and one thread reading its events."""

    def __init__(self, url: str, key: str, run_id: str, clients: int, poll_s: float) -> None:
        self.url, self.key, self.run_id, self.poll_s = url, key, run_id, poll_s
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors = 0
        self.events = 0
        self.ended = False
        self.threads = [threading.Thread(target=self._poll, daemon=True) for _ in range(clients)]
        self.threads.append(threading.Thread(target=self._sse, daemon=True))

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()  # the pollers stop; the event stream ends by itself after the run
        for t in self.threads:
            t.join(timeout=30)

    def _poll(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        mine: list[float] = []
        errors = 0
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            self.stop.wait(random.uniform(0, self.poll_s))  # spread the clients out
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.get(f"/api/v1/runs/{self.run_id}")
                    response.json()
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - started)
                errors += not ok
                self.stop.wait(self.poll_s)
        with self.lock:
            self.latencies += mine
            self.errors += errors

    def _sse(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
        timeout = httpx.Timeout(600, read=600)
        url = f"{self.url}/api/v1/runs/{self.run_id}/events"
        try:
            with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    with self.lock:
                        self.errors += 1
                    return
                for line in response.iter_lines():  # until the run's final ``end`` event
                    if line.startswith("event:"):
                        self.events += 1
                        if line.partition(":")[2].strip() == "end":
                            self.ended = True
                            return
        except httpx.HTTPError:
            with self.lock:
                self.errors += 1


def _seconds(run: dict[str, Any]) -> float:
    started = dt.datetime.fromisoformat(run["started_at"])
    finished = dt.datetime.fromisoformat(run["finished_at"])
    return (finished - started).total_seconds()


def _run(client: httpx.Client) -> dict[str, Any]:
    """Queue the patents job; its id."""
    response = client.post("/api/v1/runs", json={"job": "patents"})
    assert response.status_code == 202, response.text
    return response.json()


def _wait(client: httpx.Client, run_id: str, worker: _Process) -> dict[str, Any]:
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        found = client.get(f"/api/v1/runs/{run_id}").json()
        if found.get("status") in FINAL:
            if found["status"] != "succeeded":
                raise RuntimeError(f"run {found['status']}: {found.get('error')}\n{worker.tail()}")
            return found
        time.sleep(1.0)
    raise RuntimeError(f"run {run_id} did not finish\n{worker.tail()}")


def service_e2e(
    url: str, rows: int, rounds: int, clients: int = CLIENTS, poll_s: float = POLL_S
) -> ServiceBench:
    """``rounds`` pairs of runs, idle then busy, after one warm-up run (not counted)."""
    result = ServiceBench(poll_s=poll_s, clients=clients)
    database_url = _database(url)
    api = worker = None
    try:
        with seeded(rows, full_text=False) as (src, work):
            _, rest, storage = src.endpoints
            assert rest and storage
            cfg = _config(work / "bq2pg.yaml", database_url, rest, storage)
            port = free_port()
            api = _Process(["--config", str(cfg), "serve", "--port", str(port)], work / "api.log")
            base = f"http://127.0.0.1:{port}"
            _ready(base, api)
            worker = _Process(["--config", str(cfg), "worker"], work / "worker.log")
            key = keys.create(database_url, "bench operator", "operator")[1]
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                _wait(client, _run(client)["id"], worker)  # warm-up
                for _ in range(rounds):
                    for name in (IDLE, BUSY):
                        cpu = _cpu(api.proc.pid, worker.proc.pid)
                        run_id = _run(client)["id"]
                        if name == BUSY:
                            with _Load(base, key, run_id, clients, poll_s) as load:
                                run = _wait(client, run_id, worker)
                            result.latencies += load.latencies
                            result.errors += load.errors
                            result.sse_events.append(load.events)
                            result.sse_ended.append(load.ended)
                        else:
                            run = _wait(client, run_id, worker)
                        spent = _spent(cpu, _cpu(api.proc.pid, worker.proc.pid))
                        result.cpu.setdefault(name, []).append(spent)
                        seconds = _seconds(run)
                        result.samples.append(Sample(name, run["rows"], seconds, run["bytes"] or 0))
                        print(f"  {name}: {run['rows'] / seconds:,.0f} rows/s", flush=True)
    finally:
        for proc in (worker, api):
            if proc is not None:
                proc.stop()
        _drop(url, database_url)
    return result


def _quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary_lines(r: ServiceBench) -> str:
    """Latency of the polls, the SSE stream, the API's CPU, and the busy / idle rates."""

    def rate(name: str) -> float:
        return statistics.median(s.rows_per_second for s in r.samples if s.contender == name)

    ms = [s * 1000 for s in r.latencies]
    busy_s = sum(s.seconds for s in r.samples if s.contender == BUSY)
    ratio = rate(BUSY) / rate(IDLE)

    def cpu(name: str, part: str) -> str:
        return f"{statistics.median(c[part] for c in r.cpu.get(name, [])):.1f}"

    table = "\n".join(f"| {p} | {cpu(IDLE, p)} | {cpu(BUSY, p)} |" for p in PARTS)
    return (
        f"- API latency, `GET /api/v1/runs/{{id}}` ({len(ms):,} requests, {r.errors} errors, "
        f"{len(ms) / busy_s:,.0f} requests/s): p50 **{_quantile(ms, 50):.1f} ms**, "
        f"p95 {_quantile(ms, 95):.1f} ms, p99 **{_quantile(ms, 99):.1f} ms**, max "
        f"{max(ms):.1f} ms (target: p99 ≤ 100 ms)\n"
        f"- SSE stream: {', '.join(str(n) for n in r.sse_events)} events per busy run, "
        f"{sum(r.sse_ended)} of {len(r.sse_ended)} streams ended with the run's `end` event\n"
        f"- load rate, busy / idle: **{ratio:.3f}×** ({100 * (ratio - 1):+.1f} %; "
        "target: no more than 5 % slower)\n\n"
        f"CPU seconds per run (median; {os.cpu_count()} cores):\n\n"
        "| process | API idle | API busy |\n|---|---:|---:|\n" + table
    )


def note(rows: int, rounds: int, clients: int = CLIENTS, poll_s: float = POLL_S) -> str:
    """What the section measures."""
    return (
        f"`bq2pg patents` (no full text, {STREAMS} streams, {rows:,} publications, its "
        "defaults: built-in rules, profile) queued with `POST /api/v1/runs` and run by a "
        "`bq2pg worker` process beside a `bq2pg serve` process (separate processes: the API "
        "takes machine time from the load, not the worker's interpreter lock), "
        f"{rounds} × (API idle, API busy) after a warm-up run. Busy: {clients} clients (threads "
        f"of the bench, one keep-alive connection each) poll `GET /api/v1/runs/{{id}}` every "
        f"{poll_s:g} s and one reads `/api/v1/runs/{{id}}/events` until the run ends. Rate: "
        "publications / (finished_at − started_at) of the run, the whole run (read, load, "
        f"verification, rules, publishing). On this {os.cpu_count()}-core machine the clients, "
        "the API, the worker, the emulator and PostgreSQL share the same cores: the numbers "
        "are as measured, with that contention in them."
    )


def main() -> None:
    """``python -m bench.service [--rows N] [--rounds R]``: this section alone."""
    import argparse

    from bench.__main__ import report
    from bench.common import server

    parser = argparse.ArgumentParser(prog="python -m bench.service")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between polls")
    args = parser.parse_args()
    url, _ = server()
    r = service_e2e(url, args.rows, args.rounds, args.clients, args.poll)
    print(report(r.samples, "", note(args.rows, args.rounds, args.clients, args.poll)))
    print(summary_lines(r))


if __name__ == "__main__":
    main()
