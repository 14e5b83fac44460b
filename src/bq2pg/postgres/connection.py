"""Connections to PostgreSQL: pinned settings, deadlines, and the run's own connection.

Connections run in autocommit mode with explicit ``conn.transaction()`` blocks, so a block is a
real transaction and never a savepoint (RELIABILITY.md c.6), and pin ``TimeZone``,
``DateStyle``, ``IntervalStyle`` and the client encoding so that values are stored the same
whatever the server's defaults. Every blocking call on the load path runs under a deadline
(:func:`with_deadline`): a half-open connection would otherwise hang a run forever.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bq2pg.config.secrets import redact
from bq2pg.errors import ConfigError, TargetError, TransientTargetError
from bq2pg.plan import ddl
from bq2pg.postgres.errors import translate

T = TypeVar("T")
#: The connection type the layers above pass around (they never import psycopg).
Connection = psycopg.Connection

#: Settings pinned on every connection (RELIABILITY.md invariant 8).
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres"
#: Seconds to wait for a connection; a black-holed server must not hang a run forever.
CONNECT_TIMEOUT_S = 15
#: TCP keepalives and a user timeout, so that a peer that vanished (not one a middlebox keeps
#: ACKing) breaks the connection within about a minute instead of hanging a run; a URL's own
#: settings win. Ignored on Unix sockets.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
#: URL schemes libpq reads (https://www.postgresql.org/docs/current/libpq-connect.html).
POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"^\s*(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


#: libpq's variables that say where to connect when no URL does (an empty URL then works:
#: libpq reads them, ``pg_service.conf`` and ``~/.pgpass`` itself).
LIBPQ_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


def libpq_environment() -> bool:
    """Whether libpq's environment names a server (``PGHOST``, ``PGSERVICE``, …)."""
    return any(os.environ.get(v) for v in LIBPQ_VARIABLES)


def compose(url: str | None, params: dict[str, str]) -> str:
    """A conninfo string: ``url`` (a URL, a conninfo, or nothing: libpq's environment) with
    ``params`` (libpq keywords such as ``password``) overriding its own."""
    try:
        return make_conninfo(url or "", **params)
    except psycopg.Error as exc:
        raise translate(exc, "reading the PostgreSQL URL") from None


def check_url(url: str) -> None:
    """Refuse a URL that is not for PostgreSQL, before libpq answers with its parser message.

    Raises:
        ConfigError: a URL of another scheme (``mysql://…``), or an empty one while libpq's
            environment (``PGHOST``, ``PGSERVICE``, …) names no server either.
    """
    if not url.strip() and libpq_environment():
        return
    if not url.strip():
        raise ConfigError(
            "no PostgreSQL URL: give --to, set BQ2PG_DATABASE_URL, name a target in bq2pg.yaml, "
            "or set libpq's PGHOST/PGDATABASE/PGSERVICE"
        )
    found = _SCHEME.match(url)
    if found and found["scheme"].lower() not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"{redact(url.strip())} is not a PostgreSQL URL: give postgresql://USER@HOST:PORT/"
            "DATABASE or a conninfo string such as 'host=HOST dbname=DATABASE user=USER'",
            value=found["scheme"],
        )


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection with pinned session settings and a UTF8 server check.

    The URL's own ``options`` are kept; the pinned settings come after them, so they win.
    """
    check_url(url)
    try:
        own = conninfo_to_dict(url).get("options")
    except psycopg.Error as exc:
        raise translate(exc, "reading the PostgreSQL URL") from None
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            options=f"{own} {SESSION_OPTIONS}" if own else SESSION_OPTIONS,
            client_encoding="UTF8",
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="bq2pg",
            **{k: v for k, v in KEEPALIVES.items() if f"{k}=" not in url},
        )
    except psycopg.Error as exc:
        raise translate(exc, "connecting to PostgreSQL") from None
    try:
        encoding = conn.execute("SHOW server_encoding").fetchone()
    except psycopg.Error as exc:
        conn.close()
        raise translate(exc, "connecting to PostgreSQL") from None
    if not encoding or encoding[0] != "UTF8":
        conn.close()
        raise TargetError(
            f"the PostgreSQL database uses encoding {encoding[0] if encoding else '?'}; bq2pg "
            "needs UTF8 so that text is stored as BigQuery sent it (create the database with "
            "ENCODING 'UTF8')",
            value=encoding[0] if encoding else None,
        )
    return conn


@contextlib.contextmanager
def session(url: str, what: str) -> Iterator[psycopg.Connection]:
    """A connection for one piece of work; any psycopg error inside becomes a bq2pg error
    saying ``what`` failed (the boundary the library functions of the commands go through)."""
    conn = connect(url)
    try:
        yield conn
    except psycopg.Error as exc:
        raise translate(exc, what) from exc
    finally:
        conn.close()


def with_deadline(conn: psycopg.Connection, seconds: float, what: str, call: Callable[[], T]) -> T:
    """``call()``, abandoning ``conn`` if it takes longer than ``seconds``.

    A half-open connection (a middlebox that keeps ACKing, a peer gone silent) blocks libpq
    forever, and neither ``statement_timeout`` (its error never arrives) nor keepalives help
    (RELIABILITY.md c.5). A timer shuts the socket down from outside, which makes the blocked
    call fail; the caller then reconnects. psycopg errors raised by ``call`` are translated.
    """
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        with contextlib.suppress(OSError, psycopg.Error):
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        return call()
    except (psycopg.Error, TargetError) as exc:
        if fired.is_set():
            raise TransientTargetError(
                f"{what}: no answer from PostgreSQL for {seconds:.0f} s; connection abandoned"
            ) from exc
        if isinstance(exc, psycopg.Error):
            raise translate(exc, what) from exc
        raise
    finally:
        timer.cancel()


def execute(conn: psycopg.Connection, statements: Iterable[sql.Composed], what: str) -> None:
    """Run ``statements`` in one transaction."""
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    except psycopg.Error as exc:
        raise translate(exc, what) from exc


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    """``CREATE SCHEMA`` only when ``schema`` is missing: PostgreSQL checks the CREATE
    privilege on the database even for ``IF NOT EXISTS``."""
    try:
        row = conn.execute(
            "SELECT to_regnamespace(%s) IS NULL", [sql.Identifier(schema).as_string(conn)]
        ).fetchone()
        if row and row[0]:
            conn.execute(ddl.create_schema(schema))
    except psycopg.Error as exc:
        raise translate(exc, f"creating the schema {schema}") from exc
