"""The REST API's routes over a target's records: dead letters (list, show, replay, purge),
verification, plans, quality results, profiles, anomalies, lineage and the audit trail. Helpers
and the run routes are in :mod:`bq2pg.service.api`."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from bq2pg import admin, runner
from bq2pg.config.secrets import redact
from bq2pg.engine import estimate
from bq2pg.errors import Bq2pgError, ConfigError
from bq2pg.lineage import graph as lineage_graph
from bq2pg.quality import profile as profiles
from bq2pg.quality import results as quality_results
from bq2pg.service import submit
from bq2pg.service.api import Database, _database, _jsonable, _page, _record
from bq2pg.service.app import Caller, operator, service, viewer
from bq2pg.service.app import admin as admin_role
from bq2pg.service.problems import Problem
from bq2pg.state import anomalies as stored_anomalies
from bq2pg.state import audit, schema

router = APIRouter(prefix="/api/v1")


# -- dead letters -------------------------------------------------------------------------


@router.get("/dead-letters", tags=["dead letters"], summary="Dead letters (without rows)")
def list_dead_letters(
    request: Request, _: Caller = Depends(viewer), database: Database = None,
    table: Annotated[str | None, Query(max_length=200)] = None,
    run: uuid.UUID | None = None, limit: Annotated[int, Query(ge=1)] = 100,
) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    found = admin.list_dead_letters(_database(svc, database), target=table,
                                    run_id=str(run) if run else None)  # fmt: skip
    return {"dead_letters": _jsonable(found[: _page(svc, limit)])}


@router.get(
    "/dead-letters/{letter_id}",
    tags=["dead letters"],
    summary="A dead letter with its raw row (operator: rows may be personal data)",
)
def show_dead_letter(letter_id: int, request: Request, _: Caller = Depends(operator),
                     database: Database = None) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    try:
        return _jsonable(admin.show_dead_letter(_database(svc, database), letter_id))
    except ConfigError as exc:
        raise Problem(404, "NotFound", str(exc)) from None


class Replay(BaseModel):
    """Which dead letters to load again."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(max_length=200, description="The run's target table (schema.table)")
    ids: list[int] | None = Field(default=None, max_length=10_000)
    database: str | None = Field(default=None, max_length=200)


@router.post("/dead-letters/replay", tags=["dead letters"], summary="Load dead letters again")
def replay_dead_letters(body: Replay, request: Request,
                        caller: Caller = Depends(operator)) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    url = _database(svc, body.database)
    done = admin.replay_dead_letters(url, body.table, lambda: runner.source(
        svc.cfg.adhoc("copy", {})), body.ids)  # fmt: skip
    _record(svc, caller, "api.dlq.replayed", body.table,
            {"ids": body.ids, "loaded": len(done.loaded), "failed": len(done.failed)})  # fmt: skip
    return _jsonable(done)


class Purge(BaseModel):
    """Which dead letters to delete (both None: every one)."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = Field(default=None, max_length=200)
    run: uuid.UUID | None = None
    database: str | None = Field(default=None, max_length=200)


@router.post("/dead-letters/purge", tags=["dead letters"], summary="Delete dead letters (admin)")
def purge_dead_letters(body: Purge, request: Request,
                       caller: Caller = Depends(admin_role)) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    deleted = admin.purge_dead_letters(_database(svc, body.database), target=body.table,
                                       run_id=str(body.run) if body.run else None)  # fmt: skip
    _record(svc, caller, "api.dlq.purged", body.table, {"run": str(body.run) if body.run else None,
                                                         "deleted": deleted})  # fmt: skip
    return {"deleted": deleted}


# -- verify, plan -------------------------------------------------------------------------


class Verify(BaseModel):
    """What to verify: a target table of a run (``schema.table``)."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(max_length=200)
    database: str | None = Field(default=None, max_length=200)


@router.post("/verify", tags=["quality"], summary="Verify a target against its ledger")
def verify(body: Verify, request: Request, caller: Caller = Depends(operator)) -> dict[str, Any]:
    svc = service(request)
    checks = admin.verify_target(_database(svc, body.database), body.table)
    ok = all(c.ok for c in checks)
    _record(svc, caller, "api.verify", body.table, {}, "ok" if ok else "mismatch")
    return {"ok": ok, "tables": _jsonable(checks)}


@router.post("/plan", tags=["runs"], summary="The cost plan of a run, without running it")
def plan(body: submit.RunCreate, request: Request,
         caller: Caller = Depends(operator)) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    resolved = submit.resolve(body, svc.cfg, caller.role)
    built = runner.build(resolved, svc.cfg)
    found = runner.estimate_of(built, resolved.values)
    over = None
    try:
        estimate.check_budget(found, max_bytes=resolved.values.get("max_bytes"),
                              max_usd=resolved.values.get("max_usd"))  # fmt: skip
    except Bq2pgError as exc:
        over = redact(str(exc))
    return {"plan": _jsonable(found.as_dict()), "lines": estimate.lines(found),
            "over_budget": over}  # fmt: skip


# -- quality, profiles, anomalies, lineage, audit -----------------------------------------


@router.get("/quality", tags=["quality"], summary="Quality rule results")
def quality(
    request: Request, _: Caller = Depends(viewer), database: Database = None,
    run: uuid.UUID | None = None, table: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    with svc.pool_for(_database(svc, database)).connection("reading the quality results") as conn:
        schema.ensure(conn)
        found = quality_results.listing(conn, run_id=run, table=table)
    return {"results": _jsonable(found), "scores": quality_results.scores(found)}


@router.get("/profiles/{table}", tags=["quality"], summary="A table's column profile")
def profile(table: str, request: Request, _: Caller = Depends(viewer),
            database: Database = None) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    if len(table) > 200 or "." not in table:
        raise Problem(422, "ValidationError", "table: give schema.table",
                      errors=[{"field": "table", "message": "give schema.table"}])  # fmt: skip
    with svc.pool_for(_database(svc, database)).connection("profiling") as conn:
        found = profiles.profile(conn, [table])
    return {"profiles": _jsonable(found)}


@router.get("/anomalies", tags=["quality"], summary="Unusual runs found")
def anomalies(
    request: Request, _: Caller = Depends(viewer), database: Database = None,
    job: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    with svc.pool_for(_database(svc, database)).connection("reading the anomalies") as conn:
        schema.ensure(conn)
        found = stored_anomalies.listing(conn, job, limit=_page(svc, limit))
    return {"anomalies": _jsonable(found)}


@router.get("/lineage/{table}", tags=["lineage"], summary="Lineage of a table (both directions)")
def lineage(
    table: str, request: Request, _: Caller = Depends(viewer), database: Database = None,
    direction: Literal["upstream", "downstream", "both"] = "both",
) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    graph = lineage_graph.load(_database(svc, database))
    try:
        view = graph.around(table[:300], direction)
    except Bq2pgError as exc:
        raise Problem(404, "NotFound", str(exc)) from None
    return json.loads(lineage_graph.as_json(view))


@router.get("/audit", tags=["audit"], summary="The audit trail (filtered)")
def audit_trail(
    request: Request, _: Caller = Depends(viewer), database: Database = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    target: Annotated[str | None, Query(max_length=300)] = None,
    since: dt.datetime | None = None, limit: Annotated[int, Query(ge=1)] = 100,
) -> dict[str, Any]:  # fmt: skip
    svc = service(request)
    with svc.pool_for(_database(svc, database)).connection("reading the audit trail") as conn:
        schema.ensure(conn)
        found = audit.listing(conn, since=since, action=action, actor=actor, target=target,
                              limit=_page(svc, limit))  # fmt: skip
    return {"entries": _jsonable(found)}
