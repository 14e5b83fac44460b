"""The REST API's keys (``bq2pg.api_keys``): id, name, role and a SHA-256 hash of the key.

The key itself is shown once, when it is created (``bq2pg api-key create``), and never
stored: a key has 256 random bits, so a fast hash is enough (no dictionary to attack), and
looking it up by its hash is constant-time with respect to the key's content.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import class_row

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed (never the key)."""

    id: str
    name: str
    role: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


_COLUMNS = sql.SQL("id, name, role, created_at, revoked_at, last_used_at")


def insert(conn: psycopg.Connection, key_id: str, name: str, role: str, digest: str) -> ApiKey:
    """Store a new key's hash."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        found = cur.execute(
            sql.SQL(
                "INSERT INTO bq2pg.api_keys (id, name, role, hash) VALUES (%s, %s, %s, %s) "
                "RETURNING {}"
            ).format(_COLUMNS),
            [key_id, name, role, digest],
        ).fetchone()
    assert found is not None
    return found


def by_hash(conn: psycopg.Connection, digest: str) -> ApiKey | None:
    """The key whose hash is ``digest`` (revoked ones included; the caller checks)."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            sql.SQL("SELECT {} FROM bq2pg.api_keys WHERE hash = %s").format(_COLUMNS), [digest]
        ).fetchone()


def by_id(conn: psycopg.Connection, key_id: str) -> ApiKey | None:
    """The key ``key_id``."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            sql.SQL("SELECT {} FROM bq2pg.api_keys WHERE id = %s").format(_COLUMNS), [key_id]
        ).fetchone()


def used(conn: psycopg.Connection, key_id: str) -> None:
    """Note that a key was used (at most once a minute, to spare writes)."""
    conn.execute(
        "UPDATE bq2pg.api_keys SET last_used_at = now() WHERE id = %s AND "
        "(last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        [key_id],
    )


def revoke(conn: psycopg.Connection, key_id: str) -> bool:
    """Revoke a key (False: no such key, or already revoked)."""
    cur = conn.execute(
        "UPDATE bq2pg.api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        [key_id],
    )
    return cur.rowcount == 1


def listing(conn: psycopg.Connection) -> list[ApiKey]:
    """Every key, newest first."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            sql.SQL("SELECT {} FROM bq2pg.api_keys ORDER BY created_at DESC").format(_COLUMNS)
        ).fetchall()
