"""A pool of connections for the REST API (psycopg_pool), with bq2pg's session settings and
psycopg's errors translated at the boundary, as :func:`bq2pg.postgres.connection.session`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from bq2pg.errors import TransientTargetError
from bq2pg.postgres.connection import CONNECT_TIMEOUT_S, SESSION_OPTIONS, check_url
from bq2pg.postgres.errors import translate


class Pool:
    """Autocommit connections to one database, opened on demand, at most ``size``."""

    def __init__(self, url: str, size: int = 10, timeout_s: float = 10.0) -> None:
        if url:
            check_url(url)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=size,
            timeout=timeout_s,
            open=False,
            kwargs={
                "autocommit": True,
                "options": SESSION_OPTIONS,
                "client_encoding": "UTF8",
                "connect_timeout": min(CONNECT_TIMEOUT_S, 5),
                "application_name": "bq2pg-api",
            },
            check=ConnectionPool.check_connection,
            reconnect_timeout=0,
        )

    def open(self) -> None:
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def connection(self, what: str) -> Iterator[psycopg.Connection]:
        """A connection for one piece of work; psycopg's errors become bq2pg's."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise TransientTargetError(
                f"{what}: no connection to PostgreSQL available (the server is unreachable or busy)"
            ) from exc
        except psycopg.Error as exc:
            raise translate(exc, what) from exc
