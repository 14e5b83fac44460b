"""Free disk space where PostgreSQL stores a database, where the server can tell.

PostgreSQL has no SQL function for free disk space. When the server runs on this machine (a
Unix socket or a loopback address) and tells this role its data directory (superusers and
members of ``pg_read_all_settings``), the free space of the file system holding the
database's tablespace is read with ``statvfs``; otherwise it is unknown, and said so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class FreeSpace:
    """Free bytes for the database's tables (None: unknown) and how that was found."""

    bytes: int | None
    how: str


def free_space(conn: psycopg.Connection) -> FreeSpace:
    """Free space of the file system holding the current database's default tablespace."""
    host = conn.info.host or ""
    if not (host.startswith("/") or host in _LOOPBACK):
        return FreeSpace(None, f"unknown: the server runs on {host}, not on this machine")
    try:
        row = conn.execute(
            "SELECT current_setting('data_directory'), coalesce(nullif("
            "pg_tablespace_location(t.oid), ''), '') FROM pg_database d "
            "JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = current_database()"
        ).fetchone()
    except psycopg.Error:
        return FreeSpace(
            None,
            "unknown: this role may not read data_directory (grant pg_read_all_settings)",
        )
    assert row is not None
    path = row[1] or row[0]
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return FreeSpace(None, f"unknown: {path}: {exc.strerror}")
    return FreeSpace(st.f_bavail * st.f_frsize, f"statvfs of {path} (the server is local)")
