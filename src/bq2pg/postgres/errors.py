"""The PostgreSQL boundary: psycopg errors become bq2pg errors here, once.

Each error keeps the SQLSTATE and the table as fields, says what bq2pg was doing, and adds a
hint where PostgreSQL's message alone does not say what to do. Messages are redacted (a DSN
in a libpq message keeps no password).
"""

from __future__ import annotations

import psycopg

from bq2pg.config.secrets import redact
from bq2pg.errors import RowRejectedError, TargetError, TransientTargetError

#: SQLSTATE classes worth a retry: connection exceptions (08), transaction rollback
#: (serialization failure, deadlock: 40), insufficient resources (disk full: 53), object not in
#: prerequisite state (lock not available: 55), operator intervention (server shutting down or
#: starting: 57), system error (I/O: 58). Every other SQLSTATE is terminal. The fault suite's
#: negative control (faults/diskfull.py) narrows this tuple to prove that the disk-full trials
#: can fail.
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "55", "57", "58")
#: SQLSTATE classes that name a row's data (22 data exception, 23 integrity constraint
#: violation, 54 program limit exceeded): the row goes to the dead letters, the rest loads.
ROW_SQLSTATE_CLASSES = ("22", "23", "54")
#: A failed connection carries no SQLSTATE: libpq's messages that mean the server or the
#: client refused it (wrong password, pg_hba, unknown database or role, TLS certificate), so
#: that retrying cannot help.
REFUSED_AT_CONNECT = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "certificate",
    "channel binding",
    "does not support ssl",
    "invalid sslmode",
    "invalid connection option",
    "invalid uri",
    "invalid dsn",
    'missing "="',
    "authentication method",
)
#: What to do, by SQLSTATE, where PostgreSQL's message does not say.
HINTS = {
    "53100": "free space on the PostgreSQL server's disk, then run the same command again "
    "(it resumes from its ledger)",
    "42501": "the role needs that privilege, which a DBA can grant (README, Security: what a "
    "loader role needs), e.g. GRANT USAGE ON SCHEMA bq2pg and SELECT, INSERT, UPDATE, "
    "DELETE ON ALL TABLES IN SCHEMA bq2pg",
}


def is_row_error(exc: BaseException) -> bool:
    """True when PostgreSQL rejected a row's data (SQLSTATE class 22, 23 or 54)."""
    return (getattr(exc, "sqlstate", None) or "")[:2] in ROW_SQLSTATE_CLASSES


def translate(exc: psycopg.Error, what: str, *, table: str | None = None) -> TargetError:
    """The bq2pg error for a psycopg error raised while doing ``what``.

    A connection that broke or a server that restarts is a :class:`TransientTargetError`; a
    refused connection (password, pg_hba, unknown database) and every other SQLSTATE is a
    :class:`TargetError`.
    """
    state = getattr(exc, "sqlstate", None) or ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    message = f"{what}: {redact(first)}" + (f" (SQLSTATE {state})" if state else "")
    fields = {"table": table, "sqlstate": state or None, "hint": HINTS.get(state)}
    if isinstance(exc, psycopg.OperationalError) and not state:
        # no SQLSTATE: the connection itself failed (lost, reset, refused)
        if any(m in str(exc).lower() for m in REFUSED_AT_CONNECT):
            return TargetError(message, **fields)
        return TransientTargetError(message, **fields)
    if state[:2] in TRANSIENT_SQLSTATE_CLASSES:
        return TransientTargetError(message, **fields)
    if is_row_error(exc):
        return RowRejectedError(message, **fields)
    return TargetError(message, **fields)
