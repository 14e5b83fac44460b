"""The audit trail: one append-only row in ``bq2pg.audit`` per action that changes something.

Who did what, where, to which target, with which arguments, and how it ended: a run started or
finished, dead letters replayed or purged, a run's state or a watermark reset, the quality gate
skipped (``--skip-quality``). The table belongs to bq2pg's state schema
(:mod:`bq2pg.state.schema`), whose trigger refuses UPDATE, DELETE and TRUNCATE, so a row, once
written, stays as written: an operator reads the trail with ``bq2pg audit``, and a SIEM takes
it as JSONL (:meth:`AuditEntry.as_json`, the original design's audit format).

Arguments are stored with their secrets as *references*: every string is passed through
:func:`~bq2pg.config.secrets.redact` (DSN passwords, values resolved from references), and a
value under a secret-named key (``password``, ``token``, ``api_key``, …) becomes ``***``
unless it is a ``${backend:name}`` reference, which is kept as written: the trail says which
secret was used, never its value.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from bq2pg.config import secrets
from bq2pg.postgres.errors import translate

RUN_STARTED = "run.started"
RUN_FINISHED = "run.finished"
DLQ_REPLAYED = "dlq.replayed"
DLQ_PURGED = "dlq.purged"
STATE_RESET = "state.reset"
WATERMARK_RESET = "watermark.reset"
QUALITY_SKIPPED = "quality.skipped"

#: The actions bq2pg records, ``group.verb``. The REST API will add one ``api.*`` action per
#: route that changes something (``api.runs.created``, ``api.dlq.purged``, …), with the API
#: key id as the actor; :data:`API_PREFIX` admits them.
ACTIONS = (
    RUN_STARTED,
    RUN_FINISHED,
    DLQ_REPLAYED,
    DLQ_PURGED,
    STATE_RESET,
    WATERMARK_RESET,
    QUALITY_SKIPPED,
)
#: The prefix of the REST API's actions (any name under it is accepted).
API_PREFIX = "api."

#: Keys whose values are secrets however they look (matched anywhere in the key, any case):
#: ``pg_password``, ``client_secret``, ``access_token``, ``api_key``, ``credentials_json``.
SECRET_KEY = re.compile(r"passw(or)?d|secret|token|api[_-]?key|credential", re.IGNORECASE)

#: ``--action`` matches a whole name, or every name that starts with what precedes this.
WILDCARD = "*"

#: The keys of a JSONL line, in their order.
FIELDS = ("id", "at", "actor", "host", "action", "target", "arguments", "outcome")


@dataclass(frozen=True)
class AuditEntry:
    """One row of ``bq2pg.audit``."""

    id: int
    at: dt.datetime
    actor: str
    host: str | None
    action: str
    target: str | None
    arguments: dict[str, Any]
    outcome: str

    def as_json(self) -> str:
        """The entry as one JSONL line: keys in :data:`FIELDS`' order, the time in ISO 8601
        with its offset (the order is fixed so that lines diff and grep the same way)."""
        values = {name: getattr(self, name) for name in FIELDS}
        values["at"] = self.at.isoformat()
        return json.dumps(values, ensure_ascii=False, default=str)


def record(
    conn: psycopg.Connection,
    action: str,
    *,
    target: str | None,
    arguments: Mapping[str, Any] | None = None,
    outcome: str = "ok",
    actor: str | None = None,
    host: str | None = None,
) -> int:
    """Append one row to the audit trail; its id.

    The row is written in the caller's transaction when one is open (it commits, or not,
    with the action it describes), else on its own.

    Args:
        conn: a connection to the target database (the state schema exists).
        action: one of :data:`ACTIONS`, or a name under :data:`API_PREFIX`.
        target: what the action changed (``schema.table``, a run id), or None.
        arguments: the options of the action; secrets are masked (see the module's docstring).
        outcome: ``ok``, or what went wrong (an error's first line; it is redacted too).
        actor: who acted: the API key id for the REST API; default the OS user.
        host: where: default this machine's host name.

    Raises:
        ValueError: ``action`` is not a known action (a typo would hide rows from
            ``bq2pg audit --action``).
        TargetError: PostgreSQL refused the row.
    """
    if action not in ACTIONS and not action.startswith(API_PREFIX):
        raise ValueError(f"unknown audit action {action!r}: use one of {', '.join(ACTIONS)}")
    row = (
        actor or current_actor(),
        host if host is not None else current_host(),
        action,
        target,
        Jsonb(masked(dict(arguments or {}))),
        secrets.redact(outcome),
    )
    try:
        found = conn.execute(
            "INSERT INTO bq2pg.audit (actor, host, action, target, arguments, outcome) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            row,
        ).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, f"recording {action} in the audit trail") from exc
    assert found is not None  # INSERT … RETURNING returns its row
    return int(found[0])


def listing(
    conn: psycopg.Connection,
    *,
    since: dt.datetime | None = None,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    limit: int = 1000,
) -> list[AuditEntry]:
    """The latest ``limit`` entries that match every filter given, oldest first.

    Args:
        since: only entries at or after this time (a naive time is taken as UTC).
        action: an exact action, or a prefix followed by ``*`` (``dlq.*``).
        actor: exactly this actor.
        target: exactly this target.
        limit: at most this many entries: the newest ones, so that a bare ``bq2pg audit``
            shows what happened last, like ``tail``.
    """
    where, params = _filters(since, action, actor, target)
    query = sql.SQL(
        "SELECT * FROM (SELECT id, at, actor, host, action, target, arguments, outcome "
        "FROM bq2pg.audit WHERE {} ORDER BY at DESC, id DESC LIMIT %s) AS latest "
        "ORDER BY at, id"
    ).format(sql.SQL(" AND ").join(where))
    try:
        with conn.cursor(row_factory=class_row(AuditEntry)) as cur:
            return cur.execute(query, [*params, limit]).fetchall()
    except psycopg.Error as exc:
        raise translate(exc, "reading the audit trail") from exc


def _filters(
    since: dt.datetime | None, action: str | None, actor: str | None, target: str | None
) -> tuple[list[sql.Composable], list[Any]]:
    """The WHERE conditions of :func:`listing` and their parameters."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if since is not None:
        where.append(sql.SQL("at >= %s"))
        params.append(since if since.tzinfo else since.replace(tzinfo=dt.UTC))
    if action and action.endswith(WILDCARD):
        where.append(sql.SQL("starts_with(action, %s)"))
        params.append(action.removesuffix(WILDCARD))
    elif action:
        where.append(sql.SQL("action = %s"))
        params.append(action)
    for column, value in (("actor", actor), ("target", target)):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    return where, params


def current_actor() -> str:
    """The OS user running bq2pg; ``uid:N`` when the user has no name (a container started
    with an arbitrary uid has no passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # 3.11 raises KeyError from pwd, 3.13 OSError
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def current_host() -> str | None:
    """This machine's host name, or None when it has none."""
    try:
        return socket.gethostname() or None
    except OSError:
        return None


def masked(value: Any, key: str = "") -> Any:
    """``value`` as JSON-ready data with its secrets masked.

    Strings are redacted, except their secret references, which are kept as written; a value
    under a secret-named key (:data:`SECRET_KEY`) is ``***`` unless it holds a reference;
    mappings and sequences are masked item by item; anything else becomes its (redacted) text.
    """
    if isinstance(value, secrets.Secret):
        return secrets.MASK
    if isinstance(value, Mapping):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked(v, key) for v in value]
    secret_key = bool(key) and SECRET_KEY.search(key) is not None
    if isinstance(value, str):
        if secret_key and not secrets.has_reference(value):
            return secrets.MASK
        return _redact_around_references(value)
    if secret_key and value is not None:
        return secrets.MASK
    if value is None or isinstance(value, bool | int | float):
        return value
    return _redact_around_references(str(value))


def _redact_around_references(text: str) -> str:
    """``text`` redacted piece by piece between its references, so that a reference in a
    password's place (``postgresql://u:${env:PW}@db/x``) is kept, not masked as a password."""
    out, last = [], 0
    for found in secrets.REFERENCE.finditer(text):
        out += [secrets.redact(text[last : found.start()]), found[0]]
        last = found.end()
    out.append(secrets.redact(text[last:]))
    return "".join(out)
