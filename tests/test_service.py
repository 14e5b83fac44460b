"""The service end to end, against the real app on a real port, real workers (processes), the
embedded PostgreSQL and the emulator: a run started through the API and followed over SSE,
deduplication and Idempotency-Key, cancel then resume, ``kill -9`` of a worker → reaper →
resume exactly once, two workers and two requests for one target, and schedules.

Runs that must be caught mid-load go through a proxy that delays PostgreSQL's answers, with
small COPY chunks, so that they take seconds and commit many chunks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from faults.proxy import FaultProxy
from psycopg import conninfo
from tests import service_helpers as sh
from tests.conftest import make_table

from bq2pg.plan.tables import Field

pytestmark = pytest.mark.slow

ROWS = 4000
FIELDS = [Field("id", "INT64"), Field("name", "STRING")]
SLOW_ENV = {"BQ2PG_COPY_CHUNK_BYTES": "2048"}


class SlowProxy(FaultProxy):
    """A proxy that delays every answer of PostgreSQL by ``delay`` seconds."""

    delay = 0.01

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        upstream = src not in [c for c, _ in self.pairs]
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    time.sleep(self.delay)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def table(source, dataset) -> str:
    rows = [{"id": i, "name": f"name {i}"} for i in range(ROWS)]
    return make_table(source, dataset, "items", FIELDS, rows)


@pytest.fixture
def db(pg_url: str) -> str:
    return sh.fresh_database(pg_url)


@pytest.fixture
def slow_url(db: str) -> Iterator[str]:
    params = conninfo.conninfo_to_dict(db)
    host = str(params.get("host") or "127.0.0.1")
    port = int(params.get("port") or 5432)
    proxy = SlowProxy((host, port) if not host.startswith("/") else f"{host}/.s.PGSQL.{port}")
    params.update(host="127.0.0.1", port=str(proxy.port))
    yield conninfo.make_conninfo(**params)  # type: ignore[arg-type]
    proxy.close()


def count(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_a_run_started_through_the_api_is_followed_over_sse(
    db: str, emu, table: str, tmp_path: Path
) -> None:
    config = sh.write_config(tmp_path / "bq2pg.yaml", db, emu,
                             {"items": {"kind": "copy", "source": table}})  # fmt: skip
    api = sh.Api(config, tmp_path / "api.log", with_worker=True)
    try:
        key = sh.key(db, "operator")
        client = api.client(key)
        created = client.post("/api/v1/runs", json={"job": "items"})
        assert created.status_code == 202, created.text
        assert created.headers["location"] == f"/api/v1/runs/{created.json()['id']}"
        run_id = created.json()["id"]
        found = sh.events(api.url, key, run_id)
        kinds = [e.get("event") for e in found]
        assert kinds[-1] == "end" and found[-1]["data"]["status"] == "succeeded", found[-5:]
        progress = [e["data"] for e in found if e.get("event") == "progress"]
        assert progress and progress[-1]["rows"] == ROWS == progress[-1]["total_rows"]
        assert "log" in kinds and "phase" in kinds
        ids = [int(e["id"]) for e in found if "id" in e]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # a client reconnecting with Last-Event-ID gets only what followed
        again = sh.events(api.url, key, run_id, last_event_id=str(ids[-3]))
        assert [int(e["id"]) for e in again if "id" in e] == ids[-2:]

        shown = client.get(f"/api/v1/runs/{run_id}").json()
        assert shown["status"] == "succeeded" and shown["percent"] == 100.0
        assert shown["ledger"]["rows_loaded"] == ROWS
        assert sum(s["rows"] for s in shown["streams_progress"]) == ROWS
        assert count(db, "SELECT count(DISTINCT id) FROM public.items") == ROWS
        chunks = client.get(f"/api/v1/runs/{run_id}/chunks").json()["chunks"]
        assert sum(c["rows"]["items"] for c in chunks) == ROWS
        actor = client.get("/api/v1/audit", params={"action": "api.runs.created"}).json()
        assert actor["entries"][-1]["actor"].startswith("key_")
    finally:
        api.stop()


def test_a_queued_job_is_deduplicated_and_idempotency_keys_start_one_run(
    db: str, emu, table: str, tmp_path: Path
) -> None:
    config = sh.write_config(tmp_path / "bq2pg.yaml", db, emu,
                             {"items": {"kind": "copy", "source": table}})  # fmt: skip
    api = sh.Api(config, tmp_path / "api.log")  # no worker: requests stay queued
    try:
        client = api.client(sh.key(db, "operator"))
        first = client.post("/api/v1/runs", json={"job": "items"})
        second = client.post("/api/v1/runs", json={"job": "items"})
        assert (first.status_code, second.status_code) == (202, 200)
        assert second.json()["id"] == first.json()["id"] and second.json()["duplicate"]
        body = {"job": "items", "options": {"streams": 1}}
        headers = {"Idempotency-Key": "retry-42"}
        made = [client.post("/api/v1/runs", json=body, headers=headers) for _ in range(3)]
        assert [r.status_code for r in made] == [202, 200, 200]
        assert len({r.json()["id"] for r in made}) == 1
        assert len(client.get("/api/v1/runs").json()["runs"]) == 2
        # pagination: one per page, then none
        page = client.get("/api/v1/runs", params={"limit": 1}).json()
        rest = client.get("/api/v1/runs", params={"limit": 1, "cursor": page["next_cursor"]})
        assert rest.json()["next_cursor"] is None
        assert {page["runs"][0]["id"], rest.json()["runs"][0]["id"]} == {
            first.json()["id"],
            made[0].json()["id"],
        }
        cancelled = client.post(f"/api/v1/runs/{first.json()['id']}/cancel")
        assert cancelled.json()["status"] == "cancelled"  # a queued run stops at once
    finally:
        api.stop()


def test_cancel_stops_at_a_chunk_boundary_and_resume_finishes_exactly_once(
    db: str, slow_url: str, emu, table: str, tmp_path: Path
) -> None:
    config = sh.write_config(
        tmp_path / "bq2pg.yaml", db, emu,
        {"items": {"kind": "copy", "source": table, "to": "slow", "streams": 1}},
        targets={"slow": slow_url},
    )  # fmt: skip
    api = sh.Api(config, tmp_path / "api.log")
    work = sh.worker(config, tmp_path / "worker.log", env=SLOW_ENV)
    try:
        client = api.client(sh.key(db, "operator"))
        run_id = client.post("/api/v1/runs", json={"job": "items"}).json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/api/v1/runs/{run_id}").json()["rows"] == 0:
            assert time.monotonic() < deadline, work.output()[-2000:]
            time.sleep(0.1)
        assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 202
        stopped = sh.wait_status(client, run_id, ("cancelled", "succeeded", "failed"))
        assert stopped["status"] == "cancelled", stopped
        assert stopped["error"]["kind"] == "CancelledError"
        assert 0 < stopped["rows"] < ROWS
        committed = count(db, f"SELECT count(*) FROM bq2pg.chunks WHERE run_id = '{run_id}'")
        assert committed > 0
        assert count(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'items'") == 0
        assert count(db, f"SELECT count(*) FROM bq2pg.runs WHERE run_id = '{run_id}' "
                         "AND status = 'cancelled'") == 1  # fmt: skip

        assert client.post(f"/api/v1/runs/{run_id}/resume").status_code == 202
        done = sh.wait_status(client, run_id, ("succeeded", "failed", "cancelled"))
        assert done["status"] == "succeeded", done
        assert done["run_id"] == run_id  # resumed, not started over
        assert count(db, "SELECT count(*) FROM public.items") == ROWS
        assert count(db, "SELECT count(DISTINCT id) FROM public.items") == ROWS
        # the chunks committed before the cancel were not loaded again
        assert count(db, f"SELECT count(*) FROM bq2pg.chunks WHERE run_id = '{run_id}'") > (
            committed
        )
    finally:
        work.stop()
        api.stop()


def test_a_worker_killed_mid_run_is_reaped_and_its_run_resumed_exactly_once(
    db: str, slow_url: str, emu, table: str, tmp_path: Path
) -> None:
    config = sh.write_config(
        tmp_path / "bq2pg.yaml", db, emu,
        {"items": {"kind": "copy", "source": table, "to": "slow", "streams": 1}},
        targets={"slow": slow_url}, service={"reaper_timeout_s": 4, "auto_resume": True},
    )  # fmt: skip
    api = sh.Api(config, tmp_path / "api.log")
    first = sh.worker(config, tmp_path / "worker1.log", env=SLOW_ENV)
    second = None
    try:
        key = sh.key(db, "operator")
        client = api.client(key)
        run_id = client.post("/api/v1/runs", json={"job": "items"}).json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/api/v1/runs/{run_id}").json()["rows"] < 200:
            assert time.monotonic() < deadline, first.output()[-2000:]
            time.sleep(0.1)
        first.kill()  # kill -9: no goodbye, its heartbeat stops
        second = sh.worker(config, tmp_path / "worker2.log", env=SLOW_ENV)
        done = sh.wait_status(client, run_id, ("succeeded", "failed", "failed_quality"), 240)
        assert done["status"] == "succeeded", (done, second.output()[-3000:])
        assert done["attempts"] == 2 and done["run_id"] == run_id
        statuses = [e["data"]["status"] for e in sh.events(api.url, key, run_id)
                    if e.get("event") == "status"]  # fmt: skip
        assert statuses == ["queued", "running", "interrupted", "queued", "running", "succeeded"]
        assert count(db, "SELECT count(*) FROM public.items") == ROWS
        assert count(db, "SELECT count(DISTINCT id) FROM public.items") == ROWS
        reaped = client.get("/api/v1/audit", params={"action": "api.runs.reaped"}).json()
        assert [e["target"] for e in reaped["entries"]] == [run_id]
    finally:
        if second is not None:
            second.stop()
        first.stop()
        api.stop()


def test_two_workers_run_one_run_per_target_at_a_time(
    db: str, slow_url: str, emu, table: str, tmp_path: Path
) -> None:
    job = {"kind": "copy", "source": table, "to": "slow", "mode": "append"}
    config = sh.write_config(
        tmp_path / "bq2pg.yaml", db, emu,
        {"items": {**job, "streams": 1}, "items2": {**job, "streams": 2}},
        targets={"slow": slow_url},
    )  # fmt: skip
    api = sh.Api(config, tmp_path / "api.log")
    workers = [sh.worker(config, tmp_path / f"w{i}.log", env=SLOW_ENV) for i in (1, 2)]
    try:
        client = api.client(sh.key(db, "operator"))
        ids = [
            client.post("/api/v1/runs", json={"job": j}).json()["id"] for j in ("items", "items2")
        ]
        overlap = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                found = client.get("/api/v1/runs", params={"status": "running"}).json()
                if len(found["runs"]) > 1:
                    overlap.set()
                time.sleep(0.05)

        stop = threading.Event()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        done = [sh.wait_status(client, i, ("succeeded", "failed", "failed_quality")) for i in ids]
        stop.set()
        watcher.join()
        assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
        assert not overlap.is_set()
        first, second = sorted(done, key=lambda d: d["started_at"])
        assert first["finished_at"] <= second["started_at"]
        assert count(db, "SELECT count(*) FROM public.items") == 2 * ROWS
    finally:
        for w in workers:
            w.stop()
        api.stop()


def test_a_schedule_fires_once_per_slot_and_missed_slots_run_once(
    db: str, emu, table: str, tmp_path: Path
) -> None:
    config = sh.write_config(
        tmp_path / "bq2pg.yaml", db, emu,
        {"items": {"kind": "copy", "source": table, "schedule": "* * * * * */4"}},
    )  # fmt: skip
    api = sh.Api(config, tmp_path / "api.log")
    workers = [sh.worker(config, tmp_path / f"w{i}.log") for i in (1, 2)]
    try:
        admin = api.client(sh.key(db, "admin"))
        time.sleep(14)
        runs = admin.get("/api/v1/runs", params={"job": "items"}).json()["runs"]
        slots = [r["slot"] for r in runs]
        assert 2 <= len(slots) <= 4, slots  # every 4 s, the first slot skipped, two workers
        assert len(set(slots)) == len(slots)
        assert all(r["schedule"] == "items" and r["actor"] == "schedule:items" for r in runs)
        listed = admin.get("/api/v1/schedules").json()["schedules"]
        assert listed[0]["job"] == "items" and listed[0]["paused"] is False

        for w in workers:  # downtime: a minute of slots is missed
            w.stop()
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE bq2pg.schedules SET last_slot = last_slot - interval '60 s'")
        before = len(admin.get("/api/v1/runs", params={"job": "items"}).json()["runs"])
        workers = [sh.worker(config, tmp_path / "w3.log")]
        deadline = time.monotonic() + 30
        after = []
        while len(after) <= before and time.monotonic() < deadline:
            time.sleep(0.2)
            after = admin.get("/api/v1/runs", params={"job": "items"}).json()["runs"]
        # 15 slots were missed: the latest runs, once (not 15 runs); at most the next slot too
        assert len(after) - before in (1, 2), [r["slot"] for r in after]
        newest = dt.datetime.fromisoformat(after[0]["slot"])
        assert newest > dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)

        assert admin.post("/api/v1/schedules/items/pause").json()["paused"] is True
        time.sleep(1)
        paused_at = len(admin.get("/api/v1/runs", params={"job": "items"}).json()["runs"])
        time.sleep(9)
        assert len(admin.get("/api/v1/runs", params={"job": "items"}).json()["runs"]) == paused_at
    finally:
        for w in workers:
            w.stop()
        api.stop()
