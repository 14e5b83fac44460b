"""The incremental cursor of each target (``bq2pg.watermarks``).

The new maximum is computed from the staged rows and stored in the same transaction as the
publish, and never moves backwards (``plan.watermark`` holds the pure logic).
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from bq2pg.plan.tables import TablePlan


def read(conn: psycopg.Connection, target: str) -> tuple[str, str] | None:
    """(column, value) of ``target``'s watermark, or None before its first incremental run."""
    row = conn.execute(
        "SELECT column_name, value FROM bq2pg.watermarks WHERE target = %s", [target]
    ).fetchone()
    return (row[0], row[1]) if row else None


def advance(
    conn: psycopg.Connection, plan: TablePlan, column: str, stage: str, run_id: uuid.UUID
) -> None:
    """Store the staged rows' maximum as the target's watermark, never moving it backwards
    (in the caller's transaction, before the staging table goes)."""
    pg_type = next(c.pg_type for c in plan.columns if c.name == column)
    conn.execute(
        sql.SQL(
            "INSERT INTO bq2pg.watermarks (target, column_name, value, run_id, updated_at) "
            "SELECT {target}, {column_name}, max({column})::text, {run}, now() FROM {stage} "
            "HAVING max({column}) IS NOT NULL "
            "ON CONFLICT (target) DO UPDATE SET value = GREATEST(bq2pg.watermarks.value::{type}, "
            "EXCLUDED.value::{type})::text, column_name = EXCLUDED.column_name, "
            "run_id = EXCLUDED.run_id, updated_at = now()"
        ).format(
            target=sql.Literal(plan.qualified),
            column_name=sql.Literal(column),
            column=sql.Identifier(column),
            run=sql.Literal(str(run_id)),
            stage=sql.Identifier(plan.schema, stage),
            type=sql.SQL(pg_type),
        )
    )


def forget(conn: psycopg.Connection, target: str) -> None:
    """Delete ``target``'s watermark (the next incremental run reads everything)."""
    conn.execute("DELETE FROM bq2pg.watermarks WHERE target = %s", [target])
