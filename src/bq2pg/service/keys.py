"""API keys: made with 256 random bits, shown once, stored as a SHA-256 hash
(:mod:`bq2pg.state.keys`), sent as ``Authorization: Bearer <key>``.

Roles are ordered: ``viewer`` reads; ``operator`` also starts, cancels and resumes runs,
replays dead letters and verifies; ``admin`` also manages keys and schedules and purges.
"""

from __future__ import annotations

import hashlib
import secrets

from bq2pg.errors import ConfigError
from bq2pg.postgres.connection import session
from bq2pg.state import audit, schema
from bq2pg.state import keys as stored
from bq2pg.state.keys import ROLES, ApiKey

__all__ = ["PREFIX", "ROLES", "ApiKey", "allows", "authenticate", "create", "digest", "listing",
           "revoke"]  # fmt: skip

#: Every key starts with this (secret scanners can recognise a leaked one).
PREFIX = "bq2pg_"


def digest(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what needs ``needed``."""
    return ROLES.index(role) >= ROLES.index(needed)


def create(
    database_url: str, name: str, role: str, *, actor: str | None = None
) -> tuple[ApiKey, str]:
    """A new key: its record and the key itself (shown once, never stored)."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}", value=role)
    if not name.strip() or len(name) > 200:
        raise ConfigError("a key needs a name (1 to 200 characters)")
    key = PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(6)
    with session(database_url, "creating an API key") as conn:
        schema.ensure(conn)
        with conn.transaction():
            found = stored.insert(conn, key_id, name.strip(), role, digest(key))
            audit.record(conn, "api.keys.created", target=key_id,
                         arguments={"name": found.name, "role": role}, actor=actor)  # fmt: skip
    return found, key


def authenticate(database_url: str, key: str) -> ApiKey | None:
    """The key's record when ``key`` is a valid, unrevoked key (None otherwise)."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    with session(database_url, "checking an API key") as conn:
        found = stored.by_hash(conn, digest(key))
        if found is None or found.revoked_at is not None:
            return None
        stored.used(conn, found.id)
    return found


def revoke(database_url: str, key_id: str, *, actor: str | None = None) -> bool:
    """Revoke a key (False: no such key, or revoked already)."""
    with session(database_url, "revoking an API key") as conn:
        schema.ensure(conn)
        with conn.transaction():
            done = stored.revoke(conn, key_id)
            if done:
                audit.record(conn, "api.keys.revoked", target=key_id, actor=actor)
    return done


def listing(database_url: str) -> list[ApiKey]:
    """Every key (never the keys themselves)."""
    with session(database_url, "listing the API keys") as conn:
        schema.ensure(conn)
        return stored.listing(conn)
