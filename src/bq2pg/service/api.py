"""The versioned REST API (``/api/v1``): jobs, runs (queue, progress, events, cancel,
resume), dead letters, verification, quality, profiles, anomalies, lineage, audit, plans,
schedules and API keys.

Routes call the library functions the command line calls (:mod:`bq2pg.admin`,
:mod:`bq2pg.runner`, the state modules); every route that changes something writes an
``api.*`` row to the audit trail with the caller's key id as the actor. A job's runs may live
in another database than the queue (its target's): the routes that read a run's ledger,
dead letters or quality results read them from the run's own database, found through the
configuration (``database``: a target's name; default: the queue's database).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from bq2pg import runner
from bq2pg.config.secrets import redact
from bq2pg.errors import Bq2pgError
from bq2pg.service import submit
from bq2pg.service.app import Caller, Service, operator, service, viewer
from bq2pg.service.problems import Problem
from bq2pg.state import audit, ledger, schema
from bq2pg.state import queue as q

router = APIRouter(prefix="/api/v1")

#: Seconds between two looks at a run's new events (an open event stream).
EVENTS_POLL_S = 0.5


# -- helpers ------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Values as JSON: times in ISO 8601, ids as text, integers beyond 2^53 as text (a
    JavaScript client would round them)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    return str(value)


def _page(svc: Service, limit: int) -> int:
    return max(1, min(limit, svc.settings.max_page))


def _database(svc: Service, name: str | None) -> str:
    """The URL of a target named in the configuration (None: the queue's database)."""
    if name is None:
        return svc.settings.database_url
    if name not in svc.cfg.names("targets"):
        raise Problem(400, "UnknownTarget", f"database: {name!r} is not a target of the "
                      "configuration (a request names targets, never URLs)")  # fmt: skip
    return runner.database_url(svc.cfg.adhoc("copy", {"target": name}), svc.cfg)


def _entry_database(svc: Service, entry: q.Entry) -> str:
    """The database a queued run writes its state to (its job's target)."""
    found = svc.entry_urls.get(str(entry.id))
    if found is not None:
        return found
    try:
        body = submit.from_stored(entry.request)
        resolved = submit.resolve(body, svc.cfg, "admin")
        found = runner.database_url(resolved, svc.cfg) or svc.settings.database_url
    except (Bq2pgError, ValueError):
        found = svc.settings.database_url
    if len(svc.entry_urls) > 10_000:
        svc.entry_urls.clear()
    svc.entry_urls[str(entry.id)] = found
    return found


def _entry(svc: Service, run_id: uuid.UUID) -> q.Entry:
    with svc.pool.connection("reading a run") as conn:
        found = q.get(conn, run_id)
    if found is None:
        raise Problem(404, "NotFound", f"no run {run_id}")
    return found


def _record(svc: Service, caller: Caller, action: str, target: str | None,
            arguments: dict[str, Any] | None = None, outcome: str = "ok") -> None:  # fmt: skip
    with svc.pool.connection("recording the audit trail") as conn:
        audit.record(conn, action, target=target, arguments=arguments, outcome=outcome,
                     actor=caller.key_id)  # fmt: skip


def entry_json(entry: q.Entry) -> dict[str, Any]:
    """A queued run as the API shows it (never its worker's secrets: there are none in it)."""
    total = entry.total_rows
    percent = (
        100.0 if entry.status == "succeeded"
        else round(min(100.0, 100.0 * entry.rows / total), 1) if total else None
    )  # fmt: skip
    return _jsonable({
        "id": entry.id, "job": entry.job, "kind": entry.kind, "target": entry.target,
        "status": entry.status, "phase": entry.phase, "resume": entry.resume,
        "run_id": entry.run_id, "actor": entry.actor, "schedule": entry.schedule,
        "slot": entry.slot, "worker": entry.worker, "heartbeat_at": entry.heartbeat_at,
        "cancel_requested": entry.cancel_requested, "rows": entry.rows, "bytes": entry.bytes,
        "total_rows": total, "percent": percent, "streams": entry.streams,
        "attempts": entry.attempts, "error": entry.error, "created_at": entry.created_at,
        "started_at": entry.started_at, "finished_at": entry.finished_at,
        "request": entry.request,
    })  # fmt: skip


Database = Annotated[str | None, Query(max_length=200, description="A target of bq2pg.yaml")]


# -- jobs ---------------------------------------------------------------------------------


def _job_json(svc: Service, name: str) -> dict[str, Any]:
    job = svc.cfg.job(name)
    values = job.values
    return {
        "name": name,
        "kind": job.kind,
        "source": values.get("source"),
        "target": submit.target_table(job),
        "database": values.get("target") if values.get("target") in svc.cfg.names("targets")
        else None,
        "schedule": values.get("schedule"),
        "mode": values.get("mode"),
    }  # fmt: skip


@router.get("/jobs", tags=["jobs"], summary="The jobs of bq2pg.yaml")
def list_jobs(request: Request, _: Caller = Depends(viewer)) -> dict[str, Any]:
    svc = service(request)
    return {"jobs": [_job_json(svc, n) for n in svc.cfg.names("jobs")]}


@router.get("/jobs/{name}", tags=["jobs"], summary="A job, with its last runs")
def show_job(name: str, request: Request, _: Caller = Depends(viewer)) -> dict[str, Any]:
    svc = service(request)
    if name not in svc.cfg.names("jobs"):
        raise Problem(404, "NotFound", f"no job {name!r} in the configuration")
    found = _job_json(svc, name)
    with svc.pool.connection("reading the job's runs") as conn:
        found["runs"] = [entry_json(e) for e in q.listing(conn, job=name, limit=10)]
    return found


# -- runs ---------------------------------------------------------------------------------


@router.post("/runs", status_code=202, tags=["runs"], summary="Start a run (queued)")
def create_run(
    request: Request,
    body: submit.RunCreate,
    caller: Caller = Depends(operator),
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Queue a configured job (``{"job": "NAME"}``) or an ad-hoc copy/patents; 202 with the
    run's id. A second request for a job that is still queued returns that run (200); the
    same ``Idempotency-Key`` returns the run it started (200)."""
    svc = service(request)
    resolved = submit.resolve(body, svc.cfg, caller.role)
    stored = submit.stored(body)
    with svc.pool.connection("queueing the run") as conn:
        schema.ensure(conn)
        try:
            entry = q.enqueue(
                conn, job=body.job, kind=resolved.kind, target=submit.target_table(resolved),
                request=stored, actor=caller.key_id, idempotency_key=idempotency_key,
            )  # fmt: skip
        except q.Duplicate as dup:
            found = entry_json(dup.entry)
            found["duplicate"] = dup.why
            return JSONResponse(found, status_code=200,
                                headers={"Location": f"/api/v1/runs/{dup.entry.id}"})  # fmt: skip
        audit.record(conn, "api.runs.created", target=entry.target, actor=caller.key_id,
                     arguments={"run": str(entry.id), **stored})  # fmt: skip
    return JSONResponse(entry_json(entry), status_code=202,
                        headers={"Location": f"/api/v1/runs/{entry.id}"})  # fmt: skip


Status = Literal[
    "queued", "running", "succeeded", "failed", "failed_quality", "cancelled", "interrupted"
]


@router.get("/runs", tags=["runs"], summary="Runs, newest first (cursor pagination)")
def list_runs(
    request: Request,
    _: Caller = Depends(viewer),
    job: Annotated[str | None, Query(max_length=200)] = None,
    table: Annotated[str | None, Query(max_length=200)] = None,
    status: Status | None = None,
    since: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    svc = service(request)
    size = _page(svc, limit)
    try:
        after = q.decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise Problem(422, "ValidationError", str(exc),
                      errors=[{"field": "cursor", "message": str(exc)}]) from None  # fmt: skip
    with svc.pool.connection("listing the runs") as conn:
        found = q.listing(conn, job=job, target=table, status=status, since=since, after=after,
                          limit=size + 1)  # fmt: skip
    more = len(found) > size
    found = found[:size]
    return {
        "runs": [entry_json(e) for e in found],
        "next_cursor": q.encode_cursor(found[-1]) if more and found else None,
        "limit": size,
    }


@router.get("/runs/{run_id}", tags=["runs"], summary="A run, with its progress per stream")
def show_run(run_id: uuid.UUID, request: Request, _: Caller = Depends(viewer)) -> dict[str, Any]:
    svc = service(request)
    entry = _entry(svc, run_id)
    found = entry_json(entry)
    found["streams_progress"] = []
    found["ledger"] = None
    if entry.run_id is not None and entry.status != "queued":
        try:
            with svc.pool_for(_entry_database(svc, entry)).connection(
                "reading the run's ledger"
            ) as conn:
                found["streams_progress"] = _jsonable(ledger.stream_progress(conn, entry.run_id,
                                                                        entry.target))  # fmt: skip
                found["ledger"] = _jsonable(ledger.run_row(conn, entry.run_id))
        except Bq2pgError as exc:
            found["ledger_error"] = redact(str(exc))[:300]
    elapsed = None
    if entry.started_at is not None:
        end = entry.finished_at or dt.datetime.now(dt.UTC)
        elapsed = max((end - entry.started_at).total_seconds(), 1e-3)
    rate = entry.rows / elapsed if elapsed else None
    found["rate_rows_per_s"] = round(rate, 1) if rate else None
    found["eta_s"] = (
        round((entry.total_rows - entry.rows) / rate, 1)
        if rate and entry.total_rows and entry.status == "running" and entry.rows < entry.total_rows
        else None
    )  # fmt: skip
    return found


@router.post("/runs/{run_id}/cancel", status_code=202, tags=["runs"], summary="Cancel a run")
def cancel_run(run_id: uuid.UUID, request: Request,
               caller: Caller = Depends(operator)) -> dict[str, Any]:  # fmt: skip
    """A queued run is cancelled at once; a running one stops at its next chunk boundary
    (its committed chunks stay; nothing is published; it can be resumed)."""
    svc = service(request)
    with svc.pool.connection("cancelling the run") as conn:
        before = q.get(conn, run_id)
        if before is None:
            raise Problem(404, "NotFound", f"no run {run_id}")
        if before.status not in ("queued", "running"):
            raise Problem(409, "Conflict", f"run {run_id} is {before.status}: nothing to cancel")
        entry = q.request_cancel(conn, run_id)
        audit.record(conn, "api.runs.cancelled", target=before.target, actor=caller.key_id,
                     arguments={"run": str(run_id), "was": before.status})  # fmt: skip
    assert entry is not None
    return entry_json(entry)


@router.post("/runs/{run_id}/resume", status_code=202, tags=["runs"], summary="Resume a run")
def resume_run(run_id: uuid.UUID, request: Request,
               caller: Caller = Depends(operator)) -> dict[str, Any]:  # fmt: skip
    """Queue a cancelled, interrupted or failed run again: it resumes from its ledger."""
    svc = service(request)
    with svc.pool.connection("resuming the run") as conn:
        before = q.get(conn, run_id)
        if before is None:
            raise Problem(404, "NotFound", f"no run {run_id}")
        if not q.requeue(conn, run_id):
            raise Problem(409, "Conflict", f"run {run_id} is {before.status}: only a "
                          f"{', '.join(q.RESUMABLE)} run can be resumed (and not while the same "
                          "job is queued)")  # fmt: skip
        audit.record(conn, "api.runs.resumed", target=before.target, actor=caller.key_id,
                     arguments={"run": str(run_id), "was": before.status})  # fmt: skip
        entry = q.get(conn, run_id)
    assert entry is not None
    return entry_json(entry)


@router.get("/runs/{run_id}/chunks", tags=["runs"], summary="The run's committed chunks")
def run_chunks(
    run_id: uuid.UUID, request: Request, _: Caller = Depends(viewer),
    limit: Annotated[int, Query(ge=1)] = 500,
) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    entry = _entry(svc, run_id)
    if entry.run_id is None:
        return {"chunks": []}
    with svc.pool_for(_entry_database(svc, entry)).connection("reading the run's chunks") as conn:
        return {"chunks": _jsonable(ledger.chunks(conn, entry.run_id, _page(svc, limit)))}


@router.get(
    "/runs/{run_id}/events", tags=["runs"], summary="Live progress and log events (SSE)",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                     "description": "Server-Sent Events: status, progress, phase, log"}},
)  # fmt: skip
async def run_events(
    run_id: uuid.UUID, request: Request, _: Caller = Depends(viewer),
    last_event_id: Annotated[str | None, Header(max_length=30)] = None,
) -> EventSourceResponse:  # fmt: skip
    """Server-Sent Events of a run: ``status``, ``progress``, ``phase``, ``plan``, ``log``;
    each with its id, so a client that reconnects with ``Last-Event-ID`` misses nothing. The
    stream ends after the run's final status."""
    svc = service(request)
    await to_thread.run_sync(_entry, svc, run_id)  # 404 before the stream starts
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    with svc.streams_lock:
        if svc.streams_open >= svc.settings.max_event_streams:
            raise Problem(503, "TooManyStreams", "too many open event streams; try again",
                          headers={"Retry-After": "5"})  # fmt: skip
        svc.streams_open += 1

    async def stream() -> AsyncIterator[dict[str, Any]]:
        nonlocal after
        try:
            while True:
                if await request.is_disconnected():
                    return
                found, entry = await to_thread.run_sync(_events, svc, run_id, after)
                for e in found:
                    after = e["id"]
                    yield {"id": str(e["id"]), "event": e["event"],
                           "data": json.dumps(_jsonable({**e["data"], "at": e["at"]}))}  # fmt: skip
                if not found and entry is not None and entry.status in q.FINAL:
                    yield {"event": "end", "data": json.dumps({"status": entry.status})}
                    return
                if not found:
                    await asyncio.sleep(EVENTS_POLL_S)
        finally:
            with svc.streams_lock:
                svc.streams_open -= 1

    return EventSourceResponse(stream(), ping=15)


def _events(svc: Service, run_id: uuid.UUID, after: int) -> tuple[list[dict], q.Entry | None]:
    with svc.pool.connection("reading the run's events") as conn:
        return q.events_after(conn, run_id, after), q.get(conn, run_id)
