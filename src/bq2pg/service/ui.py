"""The web dashboard (``/ui``): server-rendered pages (Jinja2, htmx and a little JavaScript of
its own, all in the package: no CDN, no build step).

Pages: runs (progress bars fed by Server-Sent Events), a run (per-stream throughput, chunks,
phase timeline, quality results, anomalies, lineage), jobs ("run now"), dead letters
(replay) and schedules. They read through the JSON API's route functions, and their forms
call them too, so a page can do nothing the API would refuse.

Sessions: logging in with an API key sets a signed cookie (HttpOnly, SameSite=Strict, Secure
over TLS) that names the key and never holds it. Every form carries a CSRF token bound to the
session; the login form's is bound to a pre-session cookie (double submit). Live updates are
GETs (htmx polling, ``EventSource``). Pages are sent with a Content-Security-Policy that
allows this server's scripts and styles only (no inline script, no eval).
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader

from bq2pg import admin
from bq2pg.config.secrets import redact
from bq2pg.errors import Bq2pgError
from bq2pg.postgres.connection import session
from bq2pg.quality import results as quality_results
from bq2pg.service import api, api_admin, api_records, charts, keys, problems, submit
from bq2pg.service.app import SESSION_COOKIE, SESSION_TTL_S, Caller, client_of, service, version
from bq2pg.service.problems import Problem
from bq2pg.state import anomalies as stored_anomalies
from bq2pg.state import queue as q
from bq2pg.state import schema

#: The login form's pre-session CSRF nonce (double submit: cookie and a field bound to it).
LOGIN_COOKIE = "bq2pg_login"
#: The outcome of the last form, shown once by the next page (signed, a minute long).
FLASH_COOKIE = "bq2pg_flash"
FLASH_MAX_CHARS = 600
#: Seconds between two refreshes of a page's live part by htmx; progress bars also move in
#: between, over Server-Sent Events.
REFRESH_S = 2
#: Runs listed, chunks shown and charted, events read for a run's timeline: enough for a
#: long run (a 100 GB copy commits about 3,000 chunks of 32 MB) without a slow page.
PAGE_RUNS = 50
PAGE_CHUNKS = 500
EVENTS_MAX = 5_000
LOG_LINES = 30
#: A form is a few fields; the app's own limit (service.max_body_bytes) is for JSON bodies.
FORM_MAX_BYTES = 64 * 1024
#: The files of ``static/``, with their types (nothing else is served).
STATIC = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
#: A day: the pages name the files with the version (``?v=``), so an upgrade is seen at once.
STATIC_MAX_AGE_S = 86_400
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: Line colours of the charts (readable on light and dark backgrounds).
STATUSES: tuple[str, ...] = get_args(api.Status)


class Refused(Exception):
    """A page that is not shown: its status and why, or where to go instead."""

    def __init__(self, status: int, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.location = status, message, location


class _PageRoute(APIRoute):
    """A route whose refusals are pages (the API's are problem+json): errors map to a status
    here, in one place."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as exc:
                return _refused(request, exc)
            except Problem as exc:
                return _refused(request, Refused(exc.status, exc.detail))
            except Bq2pgError as exc:
                return _refused(request, Refused(problems.status_of(exc), _why(exc)))
            except RequestValidationError as exc:
                fields = ", ".join(str(e.get("loc", ["?"])[-1]) for e in exc.errors())
                return _refused(request, Refused(422, f"not a valid value: {fields}"))

        return page


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_PageRoute)


# -- rendering --------------------------------------------------------------------------------


def _when(value: str | dt.datetime | None) -> str:
    if not value:
        return "—"
    at = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 90:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 90 else f"{minutes} min {rest} s"


def _size(value: Any) -> str:
    amount = float(value or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"


def _pct(value: float | None) -> str:
    # floor: a bar says 100 % only when every row is in
    return "—" if value is None else f"{math.floor(value)} %"


_templates = Environment(
    loader=PackageLoader("bq2pg.service", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters.update(
    when=_when, num=_num, seconds=_seconds, size=_size, pct=_pct, stream=charts.short_stream
)


def _tls(request: Request) -> bool:
    return request.url.scheme == "https"


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page (or, for a name starting with ``_``, a part of one that htmx swaps in)."""
    caller: Caller | None = getattr(request.state, "page_caller", None)
    flash = None if name.startswith("_") else _flash(request)
    body = _templates.get_template(name).render(
        caller=caller,
        operator=caller is not None and keys.allows(caller.role, "operator"),
        admin=caller is not None and keys.allows(caller.role, "admin"),
        csrf=getattr(request.state, "csrf", ""),
        flash=flash,
        version=version(),
        refresh_s=REFRESH_S,
        **context,
    )
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
    response = HTMLResponse(body, status_code=status, headers=headers)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/ui")
    return response


def _refused(request: Request, exc: Refused) -> Response:
    if exc.location:
        if request.headers.get("hx-request"):  # htmx: send the whole page there, not a part
            return Response(status_code=401, headers={"HX-Redirect": exc.location})
        return RedirectResponse(exc.location, status_code=303)
    return _render(request, "error.html", exc.status, code=exc.status, message=exc.message)


def _flash(request: Request) -> dict[str, Any] | None:
    token = request.cookies.get(FLASH_COOKIE)
    payload = service(request).unsign(token) if token else None
    if not payload or "flash" not in payload:
        return None
    return {"text": str(payload["flash"]), "ok": bool(payload.get("ok"))}


def _redirect(request: Request, location: str, message: str | None = None,
              ok: bool = True) -> RedirectResponse:  # fmt: skip
    """303 to ``location`` (a path of ours), which shows ``message`` once."""
    response = RedirectResponse(location, status_code=303)
    if message:
        text = message if len(message) <= FLASH_MAX_CHARS else message[: FLASH_MAX_CHARS - 1] + "…"
        token = service(request).sign({"flash": text, "ok": ok, "exp": time.time() + 60})
        response.set_cookie(FLASH_COOKIE, token, max_age=60, path="/ui", httponly=True,
                            samesite="strict", secure=_tls(request))  # fmt: skip
    return response


def _why(exc: Exception) -> str:
    if isinstance(exc, Problem):
        return redact(exc.detail)
    return redact(str(exc)).splitlines()[0][:FLASH_MAX_CHARS] if str(exc) else type(exc).__name__


# -- who is asking ------------------------------------------------------------------------------


def page_caller(request: Request) -> Caller:
    """The logged-in caller of a page (else off to the login page)."""
    svc = service(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    payload = svc.unsign(token) if token and len(token) < 4096 else None
    caller = svc.by_id(str(payload.get("key"))) if payload else None
    if caller is None:
        raise Refused(401, "log in first", location="/ui/login")
    request.state.page_caller = caller
    request.state.csrf = svc.csrf_token(token)
    return caller


async def form(request: Request) -> dict[str, str]:
    """An HTML form's fields (the last value of each)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise Refused(415, "send the form as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > FORM_MAX_BYTES:
        raise Refused(413, f"a form is at most {FORM_MAX_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


Form = Annotated[dict[str, str], Depends(form)]


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode(), expected.encode())


def acting(role: str) -> Callable[[Request, dict[str, str]], Caller]:
    """A dependency: the caller of a form, which carries the session's CSRF token, and who
    has at least ``role``."""

    def check(request: Request, fields: Form) -> Caller:
        caller = page_caller(request)
        if not _same(fields.get("csrf") or request.headers.get("x-csrf-token", ""),
                     request.state.csrf):  # fmt: skip
            raise Refused(403, "the form's CSRF token is missing or wrong: reload the page")
        if not keys.allows(caller.role, role):
            raise Refused(403, f"this needs the {role} role; you are logged in with a "
                          f"{caller.role} key")  # fmt: skip
        return caller

    return check


Viewer = Annotated[Caller, Depends(page_caller)]


# -- login ------------------------------------------------------------------------------------


def _login(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    svc = service(request)
    nonce = secrets.token_urlsafe(24)
    response = _render(request, "login.html", status, error=error,
                       login_csrf=svc.csrf_token("login:" + nonce))  # fmt: skip
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path="/ui/login", httponly=True,
                        samesite="strict", secure=_tls(request))  # fmt: skip
    return response


@router.get("/login")
def login_page(request: Request) -> Response:
    try:
        page_caller(request)
    except Refused:
        return _login(request)
    return RedirectResponse("/ui/runs", status_code=303)  # logged in already


@router.post("/login")
def login(request: Request, fields: Form) -> Response:
    """Check the key once; the session cookie then names it (by id) for SESSION_TTL_S."""
    svc = service(request)
    client = client_of(request)
    if svc.limited(client):
        return _login(request, 429, "too many failed attempts: wait a minute")
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not _same(fields.get("csrf", ""), svc.csrf_token("login:" + nonce)):
        return _login(request, 403, "the login form expired or was not sent from this page: "
                      "try again")  # fmt: skip
    caller = svc.by_key(fields.get("api_key", "").strip())
    if caller is None:  # never echo the key back
        svc.failed(client, "invalid or revoked key (dashboard login)", request.url.path)
        return _login(request, 401, "that API key is not valid (or was revoked)")
    token = svc.sign({"key": caller.key_id, "exp": int(time.time()) + SESSION_TTL_S})
    response = _redirect(request, "/ui/runs")
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_S, path="/", httponly=True,
                        samesite="strict", secure=_tls(request))  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    api._record(svc, caller, "api.ui.login", None, {"client": client})
    return response


@router.post("/logout")
def logout(request: Request, _: Annotated[Caller, Depends(acting("viewer"))]) -> Response:
    response = _redirect(request, "/ui/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/static/{name}")
def static(name: str) -> Response:
    """A file of the package's ``static/`` (a fixed list: no path ever reaches the disk)."""
    if name not in STATIC:
        raise Refused(404, f"no static file {name[:100]!r}")
    return Response(_static(name), media_type=STATIC[name],
                    headers={"Cache-Control": f"public, max-age={STATIC_MAX_AGE_S}"})  # fmt: skip


@functools.cache
def _static(name: str) -> bytes:
    return (resources.files("bq2pg.service") / "static" / name).read_bytes()


# -- runs -------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
def home(_: Viewer) -> Response:
    return RedirectResponse("/ui/runs", status_code=303)


def _runs(request: Request, status: str | None, job: str | None) -> dict[str, Any]:
    svc = service(request)
    with svc.pool.connection("listing the runs") as conn:
        found = q.listing(conn, job=job or None, status=status or None, limit=PAGE_RUNS)
    query = urlencode({k: v for k, v in (("status", status), ("job", job)) if v})
    return {"runs": [api.entry_json(e) for e in found], "chosen": {"status": status, "job": job},
            "jobs": svc.cfg.names("jobs"), "statuses": STATUSES, "query": query}  # fmt: skip


@router.get("/runs")
def runs_page(request: Request, _: Viewer, status: api.Status | None = None,
              job: str | None = None) -> Response:  # fmt: skip
    return _render(request, "runs.html", section="runs", **_runs(request, status, job))


@router.get("/runs/table")
def runs_table(request: Request, _: Viewer, status: api.Status | None = None,
               job: str | None = None) -> Response:  # fmt: skip
    return _render(request, "_runs_table.html", **_runs(request, status, job))


def _live(request: Request, caller: Caller, run_id: uuid.UUID) -> dict[str, Any]:
    """What a run's page shows while it runs: the API's view of it, its chunks, its phases."""
    svc = service(request)
    run = api.show_run(run_id, request, caller)
    chunks = api.run_chunks(run_id, request, caller, PAGE_CHUNKS)["chunks"] if run["run_id"] else []
    found: list[dict[str, Any]] = []
    with svc.pool.connection("reading the run's events") as conn:
        while len(found) < EVENTS_MAX:
            page = q.events_after(conn, run_id, found[-1]["id"] if found else 0)
            found += page
            if len(page) < 500:
                break
    plans = [e["data"].get("lines") or [] for e in found if e["event"] == "plan"]
    return {
        "run": run,
        "final": run["status"] in q.FINAL,
        "chunks": chunks,
        "chart": charts.chart(chunks, run["target"], run["started_at"]),
        "timeline": charts.timeline(found, run),
        "plan": plans[-1] if plans else [],
        "log": [e["data"] | {"at": e["at"]} for e in found if e["event"] == "log"][-LOG_LINES:],
    }


@router.get("/runs/{run_id}")
def run_page(run_id: uuid.UUID, request: Request, caller: Viewer) -> Response:
    live = _live(request, caller, run_id)
    return _render(request, "run.html", section="runs", **live, **_outcome(request, live["run"]))


@router.get("/runs/{run_id}/live")
def run_live(run_id: uuid.UUID, request: Request, caller: Viewer) -> Response:
    live = _live(request, caller, run_id)
    response = _render(request, "_run_live.html", **live)
    if live["final"]:  # once: the whole page, with the quality results the run just wrote
        response.headers["HX-Refresh"] = "true"
    return response


def _outcome(request: Request, run: dict[str, Any]) -> dict[str, Any]:
    """What a run left in its database: quality results, anomalies, dead letters, lineage."""
    found: dict[str, Any] = {"quality": [], "anomalies": [], "letters": [], "lineage": None,
                             "outcome_error": None}  # fmt: skip
    if not run["run_id"] or run["status"] == "queued":
        return found
    database = api._entry_database(service(request), api._entry(service(request),
                                                                 uuid.UUID(run["id"])))  # fmt: skip
    run_id = uuid.UUID(run["run_id"])
    try:
        with session(database, "reading the run's outcome") as conn:
            schema.ensure(conn)
            found["quality"] = quality_results.listing(conn, run_id=run_id)
            found["anomalies"] = [a for a in stored_anomalies.listing(conn, run["job"], limit=200)
                                  if a.run_id == run_id]  # fmt: skip
        found["letters"] = admin.list_dead_letters(database, run_id=str(run_id))
        found["lineage"] = charts.lineage(database, run["target"])
    except Bq2pgError as exc:
        found["outcome_error"] = _why(exc)
    return found


@router.post("/runs/{run_id}/{action}")
def run_action(run_id: uuid.UUID, action: Literal["cancel", "resume"], request: Request,
               caller: Annotated[Caller, Depends(acting("operator"))]) -> Response:  # fmt: skip
    """Cancel or resume a run (the API's routes do it)."""
    try:
        done = (api.cancel_run if action == "cancel" else api.resume_run)(run_id, request, caller)
    except (Problem, Bq2pgError) as exc:
        return _redirect(request, f"/ui/runs/{run_id}", _why(exc), ok=False)
    message = {
        "cancel": "cancelled" if done["status"] == "cancelled"
        else "cancel requested: the run stops at its next chunk boundary",
        "resume": "queued again: the run resumes from its ledger",
    }[action]  # fmt: skip
    return _redirect(request, f"/ui/runs/{run_id}", message)


# -- jobs, dead letters, schedules ------------------------------------------------------------


@router.get("/jobs")
def jobs_page(request: Request, caller: Viewer) -> Response:
    svc = service(request)
    jobs = api.list_jobs(request, caller)["jobs"]
    with svc.pool.connection("reading the jobs' last runs") as conn:
        for job in jobs:
            last = q.listing(conn, job=job["name"], limit=1)
            job["last"] = api.entry_json(last[0]) if last else None
    return _render(request, "jobs.html", section="jobs", jobs=jobs)


@router.post("/jobs/{name}/run")
def run_now(name: str, request: Request,
            caller: Annotated[Caller, Depends(acting("operator"))]) -> Response:  # fmt: skip
    """Queue a job (as ``POST /api/v1/runs {"job": name}``) and show its run."""
    try:
        answer = api.create_run(request, submit.RunCreate(job=name), caller, None)
    except (Problem, Bq2pgError, ValueError) as exc:
        return _redirect(request, "/ui/jobs", _why(exc), ok=False)
    run = json.loads(bytes(answer.body))
    message = (f"{name} was already queued ({run['duplicate']}): this is that run"
               if run.get("duplicate") else f"{name} queued")  # fmt: skip
    return _redirect(request, f"/ui/runs/{run['id']}", message)


@router.get("/dead-letters")
def dead_letters_page(request: Request, caller: Viewer, database: str | None = None,
                      run: uuid.UUID | None = None) -> Response:  # fmt: skip
    found = api_records.list_dead_letters(request, caller, database=database or None, table=None,
                                  run=run, limit=service(request).settings.max_page)  # fmt: skip
    by_target: dict[str, list[dict[str, Any]]] = {}
    for letter in found["dead_letters"]:
        by_target.setdefault(letter["target"], []).append(letter)
    targets = service(request).cfg.names("targets")
    return _render(request, "dead_letters.html", section="dead-letters", by_target=by_target,
                   database=database or "", run=run, targets=targets)  # fmt: skip


@router.post("/dead-letters/replay")
def replay(request: Request, fields: Form,
           caller: Annotated[Caller, Depends(acting("operator"))]) -> Response:  # fmt: skip
    """Load a target's dead letters again (or one of them); say what loaded and what still
    fails."""
    database = fields.get("database") or None
    back = "/ui/dead-letters" + (f"?{urlencode({'database': database})}" if database else "")
    table = fields.get("table", "")
    try:
        ids = [int(fields["id"])] if fields.get("id") else None
        body = api_records.Replay(table=table, ids=ids, database=database)
        done = api_records.replay_dead_letters(body, request, caller)
    except (Problem, Bq2pgError, ValueError) as exc:
        return _redirect(request, back, f"replay of {table} failed: {_why(exc)}", ok=False)
    loaded, failed = done["loaded"], done["failed"]
    message = f"replayed {table}: {len(loaded)} row(s) loaded"
    if failed:
        first = next(iter(failed.values()))
        message += f", {len(failed)} still failing (fix the cause, then replay): {first}"
    return _redirect(request, back, message, ok=not failed)


@router.get("/schedules")
def schedules_page(request: Request, caller: Viewer) -> Response:
    found = api_admin.list_schedules(request, caller)["schedules"]
    return _render(request, "schedules.html", section="schedules", schedules=found)


@router.post("/schedules/{job}/{action}")
def schedule_action(job: str, action: Literal["pause", "resume"], request: Request,
                    caller: Annotated[Caller, Depends(acting("admin"))]) -> Response:  # fmt: skip
    try:
        api_admin._pause(request, job, caller, action == "pause")
    except (Problem, Bq2pgError) as exc:
        return _redirect(request, "/ui/schedules", _why(exc), ok=False)
    return _redirect(request, "/ui/schedules", f"schedule of {job} {action}d")
