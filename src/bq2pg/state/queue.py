"""The service's queue of requested runs (``bq2pg.queue``), their live events
(``bq2pg.queue_events``), the workers' heartbeats (``bq2pg.workers``) and the schedules' state
(``bq2pg.schedules``).

A request is one row, ``queued`` until a worker claims it with ``SELECT … FOR UPDATE SKIP
LOCKED``. Two partial unique indexes make the queue's promises hold whatever the number of
API processes and workers: one ``queued`` request per job (a second request while one waits
joins it) and one ``running`` request per target table (the queue's lock, consistent with the
run's advisory lock, which stays the last word). ``UNIQUE (schedule, slot)`` makes a schedule
fire once per slot, and ``idempotency_key`` makes a retried POST start one run.

A worker writes ``heartbeat_at`` of its running requests every few seconds; one whose heartbeat
is older than the timeout belonged to a dead worker, and :func:`reap` marks it ``interrupted``
(and queues it again to resume when asked to).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

Status = Literal[
    "queued", "running", "succeeded", "failed", "failed_quality", "cancelled", "interrupted"
]
#: Statuses a request ends in (a resume queues it again).
FINAL = ("succeeded", "failed", "failed_quality", "cancelled", "interrupted")
#: Statuses from which a request may be resumed.
RESUMABLE = ("failed", "cancelled", "interrupted")
#: The channel ``NOTIFY``-ed when a request is queued (workers ``LISTEN`` on it).
CHANNEL = "bq2pg_queue"


@dataclass(frozen=True)
class Entry:
    """One requested run."""

    id: uuid.UUID
    job: str | None
    kind: str
    target: str
    request: dict[str, Any]
    status: str
    resume: bool
    run_id: uuid.UUID | None
    actor: str
    idempotency_key: str | None
    schedule: str | None
    slot: dt.datetime | None
    worker: str | None
    heartbeat_at: dt.datetime | None
    cancel_requested: bool
    phase: str | None
    rows: int
    bytes: int
    total_rows: int | None
    streams: int | None
    attempts: int
    error: dict[str, Any] | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


_COLUMNS = sql.SQL(", ").join(sql.Identifier(f) for f in Entry.__dataclass_fields__)


class Duplicate(Exception):
    """A request joined an equal one: ``entry`` is the one that already exists."""

    def __init__(self, entry: Entry, why: str) -> None:
        super().__init__(why)
        self.entry = entry
        self.why = why


def enqueue(
    conn: psycopg.Connection,
    *,
    job: str | None,
    kind: str,
    target: str,
    request: dict[str, Any],
    actor: str,
    idempotency_key: str | None = None,
    schedule: str | None = None,
    slot: dt.datetime | None = None,
) -> Entry:
    """Queue a run and notify the workers; in the caller's transaction when one is open.

    Raises:
        Duplicate: a request with the same ``idempotency_key`` exists, or one of the same job
            (same job and options) is still queued, or the schedule's slot already fired.
    """
    dedupe = json.dumps([job, kind, target, request], sort_keys=True, default=str)
    entry_id = uuid.uuid4()
    with conn.transaction():
        if idempotency_key is not None:
            found = _one(conn, sql.SQL("idempotency_key = %s"), [idempotency_key])
            if found is not None:
                raise Duplicate(found, "a request with this Idempotency-Key exists")
        found = _one(conn, sql.SQL("dedupe = %s AND status = 'queued'"), [dedupe])
        if found is not None:
            raise Duplicate(found, "the same job is already queued")
        if schedule is not None:
            found = _one(conn, sql.SQL("schedule = %s AND slot = %s"), [schedule, slot])
            if found is not None:
                raise Duplicate(found, "this schedule's slot already ran")
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO bq2pg.queue (id, job, kind, target, request, dedupe, status, "
                    "run_id, actor, idempotency_key, schedule, slot) "
                    "VALUES (%s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s, %s, %s)",
                    [entry_id, job, kind, target, Jsonb(request), dedupe, entry_id, actor,
                     idempotency_key, schedule, slot],
                )  # fmt: skip
        except psycopg.errors.UniqueViolation:  # a concurrent equal request won the race
            found = _one(
                conn,
                sql.SQL(
                    "idempotency_key = %s OR (dedupe = %s AND status = 'queued') "
                    "OR (schedule = %s AND slot = %s)"
                ),
                [idempotency_key, dedupe, schedule, slot],
            )
            if found is None:
                raise
            raise Duplicate(found, "an equal request was made at the same time") from None
        conn.execute(sql.SQL("SELECT pg_notify({}, %s)").format(sql.Literal(CHANNEL)),
                     [str(entry_id)])  # fmt: skip
        event(conn, entry_id, "status", {"status": "queued", "actor": actor})
    entry = get(conn, entry_id)
    assert entry is not None
    return entry


def _one(conn: psycopg.Connection, where: sql.Composable, params: Sequence[Any]) -> Entry | None:
    query = sql.SQL("SELECT {} FROM bq2pg.queue WHERE {} LIMIT 1").format(_COLUMNS, where)
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, params).fetchone()


def get(conn: psycopg.Connection, entry_id: uuid.UUID) -> Entry | None:
    """The request ``entry_id`` (None: no such request)."""
    return _one(conn, sql.SQL("id = %s"), [entry_id])


def claim(conn: psycopg.Connection, worker: str) -> Entry | None:
    """Take the oldest queued request whose target has no running request (None: none).

    ``FOR UPDATE SKIP LOCKED`` lets workers claim side by side; the partial unique index on
    running targets refuses a second claim of the same target made at the same moment.
    """
    try:
        with conn.transaction():
            query = sql.SQL(
                "SELECT {} FROM bq2pg.queue q WHERE status = 'queued' AND NOT EXISTS "
                "(SELECT FROM bq2pg.queue r WHERE r.target = q.target AND r.status = 'running') "
                "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
            ).format(_COLUMNS)
            with conn.cursor(row_factory=class_row(Entry)) as cur:
                found = cur.execute(query).fetchone()
            if found is None:
                return None
            conn.execute(
                "UPDATE bq2pg.queue SET status = 'running', worker = %s, heartbeat_at = now(), "
                "started_at = coalesce(started_at, now()), attempts = attempts + 1, "
                "finished_at = NULL, phase = 'starting' WHERE id = %s",
                [worker, found.id],
            )
            event(conn, found.id, "status", {"status": "running", "worker": worker})
    except psycopg.errors.UniqueViolation:
        return None  # another worker started a run of this target just now
    return get(conn, found.id)


@dataclass(frozen=True)
class Beat:
    """What a worker reports of one running request."""

    id: uuid.UUID
    rows: int
    bytes: int
    phase: str | None
    total_rows: int | None
    streams: int | None
    run_id: uuid.UUID | None


def heartbeat(
    conn: psycopg.Connection, worker: str, beats: Sequence[Beat], concurrency: int, host: str,
    pid: int,
) -> set[uuid.UUID]:  # fmt: skip
    """Record the worker's heartbeat and its runs' progress; the ids whose cancel was asked."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO bq2pg.workers (id, host, pid, concurrency) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET seen_at = now(), concurrency = excluded.concurrency",
            [worker, host, pid, concurrency],
        )
        cancelled: set[uuid.UUID] = set()
        for b in beats:
            row = conn.execute(
                "UPDATE bq2pg.queue SET heartbeat_at = now(), rows = %s, bytes = %s, "
                "phase = coalesce(%s, phase), total_rows = coalesce(%s, total_rows), "
                "streams = coalesce(%s, streams), run_id = coalesce(%s, run_id) "
                "WHERE id = %s AND worker = %s AND status = 'running' RETURNING cancel_requested",
                [b.rows, b.bytes, b.phase, b.total_rows, b.streams, b.run_id, b.id, worker],
            ).fetchone()
            if row and row[0]:
                cancelled.add(b.id)
    return cancelled


def finish(
    conn: psycopg.Connection,
    entry_id: uuid.UUID,
    status: Status,
    *,
    error: dict[str, Any] | None = None,
    run_id: uuid.UUID | None = None,
    rows: int | None = None,
) -> None:
    """A running request ended with ``status``."""
    with conn.transaction():
        conn.execute(
            "UPDATE bq2pg.queue SET status = %s, finished_at = now(), error = %s, "
            "run_id = coalesce(%s, run_id), rows = coalesce(%s, rows), phase = %s "
            "WHERE id = %s AND status = 'running'",
            [status, Jsonb(error) if error else None, run_id, rows, status, entry_id],
        )
        event(conn, entry_id, "status", {"status": status, **({"error": error} if error else {})})


def request_cancel(conn: psycopg.Connection, entry_id: uuid.UUID) -> Entry | None:
    """Ask a request to stop: a queued one is cancelled at once, a running one at its next
    chunk boundary (its worker sees the flag with its next heartbeat). None: no such request."""
    with conn.transaction():
        entry = get(conn, entry_id)
        if entry is None:
            return None
        if entry.status == "queued":
            conn.execute(
                "UPDATE bq2pg.queue SET status = 'cancelled', finished_at = now(), "
                "phase = 'cancelled' WHERE id = %s AND status = 'queued'",
                [entry_id],
            )
            event(conn, entry_id, "status", {"status": "cancelled"})
        elif entry.status == "running":
            conn.execute("UPDATE bq2pg.queue SET cancel_requested = true WHERE id = %s", [entry_id])
            event(conn, entry_id, "cancel_requested", {})
    return get(conn, entry_id)


def requeue(conn: psycopg.Connection, entry_id: uuid.UUID, *, reason: str = "resume") -> bool:
    """Queue a stopped request again, to resume from its ledger (False: not resumable now:
    not stopped, or an equal request is queued)."""
    try:
        with conn.transaction():
            cur = conn.execute(
                "UPDATE bq2pg.queue SET status = 'queued', resume = true, "
                "cancel_requested = false, worker = NULL, finished_at = NULL, phase = 'queued', "
                "error = NULL WHERE id = %s AND status = ANY(%s)",
                [entry_id, list(RESUMABLE)],
            )
            if cur.rowcount != 1:
                return False
            conn.execute(sql.SQL("SELECT pg_notify({}, %s)").format(sql.Literal(CHANNEL)),
                         [str(entry_id)])  # fmt: skip
            event(conn, entry_id, "status", {"status": "queued", "reason": reason})
    except psycopg.errors.UniqueViolation:
        return False
    return True


def reap(conn: psycopg.Connection, timeout_s: float, *, resume: bool) -> list[uuid.UUID]:
    """Mark running requests whose heartbeat is older than ``timeout_s`` ``interrupted`` (their
    worker died); with ``resume``, queue them again. The ids reaped."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE bq2pg.queue SET status = 'interrupted', finished_at = now(), "
            "phase = 'interrupted', error = %s WHERE status = 'running' AND "
            "heartbeat_at < now() - make_interval(secs => %s) RETURNING id, worker",
            [Jsonb({"kind": "WorkerLost", "message": "the worker running it stopped "
                    "answering (no heartbeat); its committed chunks are in the ledger"}),
             timeout_s],
        ).fetchall()  # fmt: skip
        for entry_id, worker in rows:
            event(conn, entry_id, "status", {"status": "interrupted", "worker": worker})
    reaped = [r[0] for r in rows]
    if resume:
        for entry_id in reaped:
            requeue(conn, entry_id, reason="automatic resume after the worker was lost")
    return reaped


def event(conn: psycopg.Connection, entry_id: uuid.UUID, name: str, data: dict[str, Any]) -> None:
    """Append one event to a request's stream (``GET /runs/{id}/events``)."""
    conn.execute(
        "INSERT INTO bq2pg.queue_events (queue_id, event, data) VALUES (%s, %s, %s)",
        [entry_id, name, Jsonb(data)],
    )


def events_many(conn: psycopg.Connection, found: Iterable[tuple[uuid.UUID, str, dict]]) -> None:
    """Append several events at once (a worker's buffered log events)."""
    rows = [(i, n, Jsonb(d)) for i, n, d in found]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bq2pg.queue_events (queue_id, event, data) VALUES (%s, %s, %s)",
                rows,
            )


def events_after(
    conn: psycopg.Connection, entry_id: uuid.UUID, after: int, limit: int = 500
) -> list[dict[str, Any]]:
    """A request's events after the event id ``after``, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, at, event, data FROM bq2pg.queue_events WHERE queue_id = %s AND id > %s "
            "ORDER BY id LIMIT %s",
            [entry_id, after, limit],
        ).fetchall()


def encode_cursor(entry: Entry) -> str:
    """The opaque cursor of the page after ``entry``."""
    raw = json.dumps([entry.created_at.isoformat(), str(entry.id)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """(created_at, id) of a cursor. Raises ValueError for a malformed one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, entry_id = json.loads(raw)
        return dt.datetime.fromisoformat(created), uuid.UUID(entry_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a cursor of this API: {cursor[:40]!r}") from exc


def listing(
    conn: psycopg.Connection,
    *,
    job: str | None = None,
    target: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    after: tuple[dt.datetime, uuid.UUID] | None = None,
    limit: int = 50,
) -> list[Entry]:
    """Requests, newest first, filtered, from after the cursor ``after``."""
    where: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (("job", job), ("target", target), ("status", status)):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if since is not None:
        where.append(sql.SQL("created_at >= %s"))
        params.append(since)
    if after is not None:
        where.append(sql.SQL("(created_at, id) < (%s, %s)"))
        params += list(after)
    query = sql.SQL(
        "SELECT {} FROM bq2pg.queue {} ORDER BY created_at DESC, id DESC LIMIT %s"
    ).format(_COLUMNS, sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""))
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


def workers(conn: psycopg.Connection, seen_within_s: float) -> list[dict[str, Any]]:
    """Workers seen in the last ``seen_within_s`` seconds."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, host, pid, concurrency, started_at, seen_at FROM bq2pg.workers "
            "WHERE seen_at > now() - make_interval(secs => %s) ORDER BY id",
            [seen_within_s],
        ).fetchall()


def forget_worker(conn: psycopg.Connection, worker: str) -> None:
    """A worker that stops cleanly removes its row."""
    conn.execute("DELETE FROM bq2pg.workers WHERE id = %s", [worker])
