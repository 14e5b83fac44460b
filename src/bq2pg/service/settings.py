"""The service's settings: bq2pg.yaml's ``service:`` section with its defaults, and the
database that holds the queue and the API keys."""

from __future__ import annotations

import secrets as random
from dataclasses import dataclass, field

from bq2pg.config import jobs as config_jobs
from bq2pg.config import secrets
from bq2pg.errors import ConfigError
from bq2pg.postgres.connection import check_url
from bq2pg.runner import database_url

DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8000,
    "metrics_open": False,
    "cors_origins": [],
    "heartbeat_s": 2.0,
    "reaper_timeout_s": 60.0,
    "auto_resume": True,
    "max_body_bytes": 1 << 20,
    "max_page": 500,
    "max_event_streams": 64,
    "max_auth_failures": 10,
}


@dataclass(frozen=True)
class Settings:
    """What ``serve`` and ``worker`` run with."""

    database_url: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_open: bool = False
    cors_origins: tuple[str, ...] = ()
    heartbeat_s: float = 2.0
    reaper_timeout_s: float = 60.0
    auto_resume: bool = True
    max_body_bytes: int = 1 << 20
    max_page: int = 500
    max_event_streams: int = 64
    max_auth_failures: int = 10
    session_secret: bytes = field(default=b"", repr=False)


def load(cfg: config_jobs.Config, **overrides: object) -> Settings:
    """The settings of ``cfg``'s ``service:`` section (then ``overrides`` that are not None).

    Raises:
        ConfigError: no database for the queue.
    """
    values, _ = cfg.section("service", "")
    merged = {**DEFAULTS, **values, **{k: v for k, v in overrides.items() if v is not None}}
    url = _database(cfg, merged.get("database"))
    secret = merged.get("session_secret")
    key = (
        secrets.resolve(str(secret), what="service.session_secret").encode()
        if secret
        else random.token_bytes(32)
    )
    return Settings(
        database_url=url,
        host=str(merged["host"]),
        port=int(merged["port"]),
        metrics_open=bool(merged["metrics_open"]),
        cors_origins=tuple(merged["cors_origins"] or ()),
        heartbeat_s=float(merged["heartbeat_s"]),
        reaper_timeout_s=float(merged["reaper_timeout_s"]),
        auto_resume=bool(merged["auto_resume"]),
        max_body_bytes=int(merged["max_body_bytes"]),
        max_page=int(merged["max_page"]),
        max_event_streams=int(merged["max_event_streams"]),
        max_auth_failures=int(merged["max_auth_failures"]),
        session_secret=key,
    )


def _database(cfg: config_jobs.Config, name: object) -> str:
    """The queue's database: ``service.database`` (a target's name or a URL), else the
    ``defaults`` target, else ``BQ2PG_DATABASE_URL``."""
    flags = {"target": str(name)} if name else {}
    try:
        url = database_url(cfg.adhoc("copy", flags), cfg)
    except ConfigError as exc:
        raise ConfigError(
            "the service needs a database for its queue: set service.database (a target's "
            "name) or defaults.target in bq2pg.yaml, or BQ2PG_DATABASE_URL",
            hint=str(exc),
        ) from None
    if url:
        check_url(url)
    return url
