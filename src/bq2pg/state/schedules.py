"""The state of the jobs' schedules (``bq2pg.schedules``): paused or not, and the last slot
fired (advanced in the transaction that queues the slot's run)."""

from __future__ import annotations

import datetime as dt

import psycopg


def schedule_state(conn: psycopg.Connection) -> dict[str, tuple[bool, dt.datetime | None]]:
    """Each schedule's (paused, last slot fired)."""
    rows = conn.execute("SELECT job, paused, last_slot FROM bq2pg.schedules").fetchall()
    return {r[0]: (bool(r[1]), r[2]) for r in rows}


def set_paused(conn: psycopg.Connection, job: str, cron: str, paused: bool) -> None:
    """Pause or resume a job's schedule."""
    conn.execute(
        "INSERT INTO bq2pg.schedules (job, cron, paused) VALUES (%s, %s, %s) "
        "ON CONFLICT (job) DO UPDATE SET paused = excluded.paused, cron = excluded.cron, "
        "updated_at = now()",
        [job, cron, paused],
    )


def advance_schedule(conn: psycopg.Connection, job: str, cron: str, slot: dt.datetime) -> bool:
    """Record that ``job``'s schedule reached ``slot``; False when it already had (another
    worker fired it). Called in the transaction that queues the slot's run."""
    row = conn.execute(
        "INSERT INTO bq2pg.schedules (job, cron, last_slot) VALUES (%s, %s, %s) "
        "ON CONFLICT (job) DO UPDATE SET last_slot = excluded.last_slot, cron = excluded.cron, "
        "updated_at = now() WHERE bq2pg.schedules.last_slot IS NULL "
        "OR bq2pg.schedules.last_slot < excluded.last_slot RETURNING job",
        [job, cron, slot],
    ).fetchone()
    return row is not None
