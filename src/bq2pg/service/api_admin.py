"""The REST API's routes for schedules (list, pause, resume), workers and API keys."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from bq2pg.service import keys, schedules
from bq2pg.service.api import _jsonable
from bq2pg.service.app import Caller, Service, service, viewer
from bq2pg.service.app import admin as admin_role
from bq2pg.service.problems import Problem
from bq2pg.state import audit
from bq2pg.state import queue as q
from bq2pg.state import schedules as stored_schedules

router = APIRouter(prefix="/api/v1")


# -- schedules ------------------------------------------------------------------------------


def _schedules(svc: Service) -> list[dict[str, Any]]:
    configured = schedules.configured(svc.cfg)
    with svc.pool.connection("reading the schedules") as conn:
        state = stored_schedules.schedule_state(conn)
    now = dt.datetime.now(dt.UTC)
    return [
        _jsonable(
            {
                "job": s.job,
                "cron": s.cron,
                "paused": state.get(s.job, (False, None))[0],
                "last_slot": state.get(s.job, (False, None))[1],
                "next_slot": schedules.next_slot(s.cron, now),
            }
        )
        for s in configured
    ]


@router.get("/schedules", tags=["schedules"], summary="The jobs' schedules")
def list_schedules(request: Request, _: Caller = Depends(viewer)) -> dict[str, Any]:
    return {"schedules": _schedules(service(request))}


def _pause(request: Request, job: str, caller: Caller, paused: bool) -> dict[str, Any]:
    svc = service(request)
    found = {s.job: s for s in schedules.configured(svc.cfg)}
    if job not in found:
        raise Problem(404, "NotFound", f"no schedule on a job {job!r}")
    with svc.pool.connection("pausing a schedule") as conn:
        stored_schedules.set_paused(conn, job, found[job].cron, paused)
        audit.record(conn, "api.schedules.paused" if paused else "api.schedules.resumed",
                     target=job, actor=caller.key_id)  # fmt: skip
    return next(s for s in _schedules(svc) if s["job"] == job)


@router.post("/schedules/{job}/pause", tags=["schedules"], summary="Pause a schedule (admin)")
def pause_schedule(job: str, request: Request,
                   caller: Caller = Depends(admin_role)) -> dict[str, Any]:  # fmt: skip
    return _pause(request, job, caller, True)


@router.post("/schedules/{job}/resume", tags=["schedules"], summary="Resume a schedule (admin)")
def resume_schedule(job: str, request: Request,
                    caller: Caller = Depends(admin_role)) -> dict[str, Any]:  # fmt: skip
    return _pause(request, job, caller, False)


# -- workers, API keys --------------------------------------------------------------------


@router.get("/workers", tags=["runs"], summary="Workers seen lately")
def list_workers(request: Request, _: Caller = Depends(viewer)) -> dict[str, Any]:
    svc = service(request)
    with svc.pool.connection("reading the workers") as conn:
        return {"workers": _jsonable(q.workers(conn, svc.settings.reaper_timeout_s))}


class KeyCreate(BaseModel):
    """A new API key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Literal["viewer", "operator", "admin"]


@router.get("/api-keys", tags=["api keys"], summary="API keys (admin; never the keys)")
def list_keys(request: Request, _: Caller = Depends(admin_role)) -> dict[str, Any]:
    return {"keys": _jsonable(keys.listing(service(request).settings.database_url))}


@router.post("/api-keys", status_code=201, tags=["api keys"], summary="Create an API key (admin)")
def create_key(body: KeyCreate, request: Request,
               caller: Caller = Depends(admin_role)) -> dict[str, Any]:  # fmt: skip
    """The key is in this response only: it is stored hashed."""
    found, key = keys.create(service(request).settings.database_url, body.name, body.role,
                             actor=caller.key_id)  # fmt: skip
    return {**_jsonable(found), "key": key}


@router.delete("/api-keys/{key_id}", tags=["api keys"], summary="Revoke an API key (admin)")
def revoke_key(key_id: str, request: Request,
               caller: Caller = Depends(admin_role)) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    if not keys.revoke(svc.settings.database_url, key_id[:100], actor=caller.key_id):
        raise Problem(404, "NotFound", f"no active key {key_id[:100]!r}")
    svc.key_cache.clear()
    return {"revoked": key_id}
