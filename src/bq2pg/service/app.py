"""The REST API's application (FastAPI): its shared state, authentication, limits, errors,
and the routes that need no version prefix (``/healthz``, ``/readyz``, ``/metrics``,
``/version``). The versioned routes are in :mod:`bq2pg.service.api`, the dashboard in
:mod:`bq2pg.service.ui`.

Authentication: ``Authorization: Bearer <key>`` (:mod:`bq2pg.service.keys`), or the
dashboard's session cookie (signed, HttpOnly, SameSite=Strict, Secure over TLS). A key in a
query string is refused (proxies log query strings). Failed attempts are counted per client
address and refused with 429 beyond ``max_auth_failures`` a minute; they are logged with the
address, never the key. 401 means "no valid key", 403 "the key's role does not allow this".
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from bq2pg import exporter
from bq2pg.config import jobs as config_jobs
from bq2pg.errors import Bq2pgError
from bq2pg.observe import metrics
from bq2pg.observe.log import get_logger
from bq2pg.postgres.pool import Pool
from bq2pg.service import keys, problems
from bq2pg.service.problems import Problem
from bq2pg.service.settings import Settings
from bq2pg.state import keys as stored_keys
from bq2pg.state import queue as q
from bq2pg.state import schema

log = get_logger(__name__)

SESSION_COOKIE = "bq2pg_session"
SESSION_TTL_S = 12 * 3600
#: Seconds a checked key is trusted before it is looked up again (revocation takes effect
#: within this; the API's own revoke clears it at once).
KEY_CACHE_S = 2.0


def version() -> str:
    try:
        return metadata.version("bq2pg")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "0+unknown"


@dataclass
class Caller:
    """Who is calling: the key's id, name and role, and how it came (bearer or session)."""

    key_id: str
    name: str
    role: str
    via: str = "bearer"


@dataclass
class Service:
    """What the routes share."""

    settings: Settings
    cfg: config_jobs.Config
    pool: Pool
    failures: dict[str, collections.deque[float]] = field(default_factory=dict)
    failures_lock: threading.Lock = field(default_factory=threading.Lock)
    key_cache: dict[str, tuple[float, Caller]] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    entry_urls: dict[str, str] = field(default_factory=dict)
    streams_open: int = 0
    streams_lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.time)

    def pool_for(self, url: str) -> Pool:
        """A pool of connections to ``url`` (the queue's own pool for the queue's database):
        the routes that read a run's database poll it often."""
        if not url or url == self.settings.database_url:
            return self.pool
        with self.failures_lock:
            found = self.pools.get(url)
            if found is None:
                found = self.pools[url] = Pool(url, size=5)
                found.open()
        return found

    def close(self) -> None:
        for p in self.pools.values():
            p.close()
        self.pool.close()

    # -- failed attempts -----------------------------------------------------------------

    def limited(self, client: str) -> bool:
        with self.failures_lock:
            seen = self.failures.get(client)
            now = time.monotonic()
            while seen and seen[0] < now - 60:
                seen.popleft()
            return seen is not None and len(seen) >= self.settings.max_auth_failures

    def failed(self, client: str, why: str, path: str) -> None:
        with self.failures_lock:
            self.failures.setdefault(client, collections.deque()).append(time.monotonic())
            if len(self.failures) > 10_000:  # bounded: forget the oldest clients
                self.failures.pop(next(iter(self.failures)))
        log.warning("api.auth_failed", client=client, why=why, path=path)

    # -- sessions (the dashboard) --------------------------------------------------------

    def sign(self, payload: dict[str, Any]) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(payload, sort_keys=True).encode()).decode()
        mac = hmac.new(self.settings.session_secret, raw.encode(), hashlib.sha256).hexdigest()
        return f"{raw}.{mac}"

    def unsign(self, token: str) -> dict[str, Any] | None:
        raw, _, mac = token.rpartition(".")
        good = hmac.new(self.settings.session_secret, raw.encode(), hashlib.sha256).hexdigest()
        if not raw or not hmac.compare_digest(mac, good):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(raw.encode()))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("exp", 0) < time.time():
            return None
        return payload

    def csrf_token(self, session_token: str) -> str:
        return hmac.new(self.settings.session_secret, b"csrf:" + session_token.encode(),
                        hashlib.sha256).hexdigest()  # fmt: skip

    # -- keys ----------------------------------------------------------------------------

    def by_key(self, key: str) -> Caller | None:
        digest = keys.digest(key)
        cached = self.key_cache.get(digest)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        if not key.startswith(keys.PREFIX) or len(key) > 200:
            return None
        with self.pool.connection("checking an API key") as conn:
            found = stored_keys.by_hash(conn, digest)
            if found is None or found.revoked_at is not None:
                return None
            stored_keys.used(conn, found.id)
        caller = Caller(found.id, found.name, found.role)
        self.key_cache[digest] = (time.monotonic() + KEY_CACHE_S, caller)
        if len(self.key_cache) > 10_000:
            self.key_cache.clear()
        return caller

    def by_id(self, key_id: str) -> Caller | None:
        cached = self.key_cache.get("id:" + key_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        with self.pool.connection("checking a session") as conn:
            found = stored_keys.by_id(conn, key_id)
        if found is None or found.revoked_at is not None:
            return None
        caller = Caller(found.id, found.name, found.role, via="session")
        self.key_cache["id:" + key_id] = (time.monotonic() + KEY_CACHE_S, caller)
        return caller


def service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def refuse(svc: Service, client: str, why: str, path: str, detail: str) -> Problem:
    """The problem of a failed attempt: 401, or 429 once the client failed too often (a
    valid key still works: only failures are limited)."""
    if svc.limited(client):
        return Problem(429, "TooManyAttempts", "too many failed attempts; wait a minute",
                       headers={"Retry-After": "60"})  # fmt: skip
    svc.failed(client, why, path)
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request) -> Caller:
    """The caller of a request (401 when there is no valid key)."""
    svc = service(request)
    client = client_of(request)
    for name in ("api_key", "key", "token", "access_token"):
        if name in request.query_params:
            raise refuse(
                svc,
                client,
                "key in the query string",
                request.url.path,
                "send the API key in the Authorization header (Bearer), never in the URL",
            )
    header = request.headers.get("authorization")
    if header:
        scheme, _, key = header.partition(" ")
        caller = svc.by_key(key.strip()) if scheme.lower() == "bearer" else None
        if caller is None:
            raise refuse(
                svc,
                client,
                "invalid or revoked key",
                request.url.path,
                "the API key is not valid (or was revoked)",
            )
        request.state.caller = caller
        return caller
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        payload = svc.unsign(token)
        caller = svc.by_id(str(payload.get("key"))) if payload else None
        if caller is not None:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                sent = request.headers.get("x-csrf-token") or ""
                if not hmac.compare_digest(sent, svc.csrf_token(token)):
                    raise Problem(403, "CsrfFailed", "the form's CSRF token is missing or wrong")
            request.state.caller = caller
            return caller
    raise Problem(401, "Unauthorized", "an API key is needed: Authorization: Bearer <key>",
                  headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def need(role: str) -> Callable[[Request], Caller]:
    """A dependency: the caller, who must have at least ``role``."""

    def check(request: Request) -> Caller:
        caller = authenticate(request)
        if not keys.allows(caller.role, role):
            raise Problem(403, "Forbidden", f"this needs the {role} role; the key "
                          f"{caller.key_id} is a {caller.role}")  # fmt: skip
        return caller

    check.__name__ = f"need_{role}"
    return check


viewer = need("viewer")
operator = need("operator")
admin = need("admin")


def create_app(settings: Settings, cfg: config_jobs.Config) -> FastAPI:
    """The application, its pool not yet open (uvicorn's lifespan opens it)."""
    from contextlib import asynccontextmanager

    pool = Pool(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool.open()
        try:
            yield
        finally:
            app.state.service.close()

    app = FastAPI(
        title="bq2pg",
        version=version(),
        description="Copy BigQuery tables into PostgreSQL: runs, queue, schedules, dead "
        "letters, quality, lineage and audit. Every route but /healthz needs an API key "
        "(Authorization: Bearer <key>).",
        lifespan=lifespan,
        responses=problems.RESPONSES,
    )
    app.state.service = Service(settings, cfg, pool)
    metrics.set_version(version())
    _middleware(app, settings)
    _errors(app)
    _root_routes(app)
    from bq2pg.service import api, api_admin, api_records, ui

    app.include_router(api.router)
    app.include_router(api_records.router)
    app.include_router(api_admin.router)
    app.include_router(ui.router)
    return app


def _middleware(app: FastAPI, settings: Settings) -> None:
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )

    @app.middleware("http")
    async def bounded(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        if "\x00" in request.scope.get("path", "") or b"%00" in request.scope.get(
            "query_string", b""
        ):
            return problems.response(422, "ValidationError", "the request contains a NUL "
                                     "character, which no name or value may hold")  # fmt: skip
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return problems.response(413, "PayloadTooLarge", "the request body is larger than "
                                     f"{settings.max_body_bytes} bytes")  # fmt: skip
        if request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > settings.max_body_bytes:
                    return problems.response(
                        413,
                        "PayloadTooLarge",
                        f"the request body is larger than {settings.max_body_bytes} bytes",
                    )
            if b"\\u0000" in body or b"\x00" in body:
                return problems.response(422, "ValidationError", "text may not contain NUL "
                                         "(\\u0000): PostgreSQL cannot store it")  # fmt: skip
            request._body = body  # read once, bounded; the route reads it from here
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.HTTP_SECONDS.labels(request.method, template, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response


def _errors(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        headers = exc.extra.pop("headers", None)
        return problems.response(exc.status, exc.title, exc.detail, instance=request.url.path,
                                 headers=headers, **exc.extra)  # fmt: skip

    @app.exception_handler(Bq2pgError)
    async def bq2pg_error(request: Request, exc: Bq2pgError) -> JSONResponse:
        return problems.from_error(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problems.validation(list(exc.errors()), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        return problems.response(
            exc.status_code,
            title,
            str(exc.detail),
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.error", path=request.url.path, error_type=type(exc).__name__)
        return problems.response(500, "InternalError", "the server failed; its log says why",
                                 instance=request.url.path)  # fmt: skip


def _root_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: database, state schema, workers")
    def readyz(request: Request, _: Caller = Depends(viewer)) -> JSONResponse:
        return _ready(service(request))

    @app.get("/version", tags=["health"], summary="The running bq2pg")
    def version_route(_: Caller = Depends(viewer)) -> dict[str, str]:
        return {"version": version()}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (with the state's)",
             response_class=PlainTextResponse)  # fmt: skip
    def metrics_route(request: Request) -> Response:
        svc = service(request)
        if not svc.settings.metrics_open:
            need("viewer")(request)
        registry = CollectorRegistry()
        registry.register(exporter.StateCollector(svc.settings.database_url))
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _ready(svc: Service) -> JSONResponse:
    checks: dict[str, Any] = {}
    ok = True
    try:
        with svc.pool.connection("checking readiness") as conn:
            conn.execute("SELECT 1")
            checks["database"] = "ok"
            current = schema.is_current(conn)
            checks["state_schema"] = "current" if current else "missing or old"
            ok = ok and current
            seen = q.workers(conn, max(svc.settings.reaper_timeout_s, 10.0))
            checks["workers"] = len(seen)
            ok = ok and bool(seen)
    except Bq2pgError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        ok = False
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)  # fmt: skip
