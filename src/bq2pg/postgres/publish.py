"""Publishing a run's side tables into its targets: swap, append or merge.

Each function runs its statements on the connection it is given and commits nothing: the run
calls it inside the transaction that also records the run's end (and advances the watermark),
so that readers see the old content or the new one, with its record, never half.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from bq2pg.plan import ddl
from bq2pg.plan.tables import TablePlan, normalize_identifier
from bq2pg.postgres.target import LOAD_SUFFIX, STAGE_SUFFIX, Mode, physical, side_name


def replace(conn: psycopg.Connection, plan: TablePlan) -> None:
    """Swap the freshly loaded tables in place of the targets (and their keys' names)."""
    for table in plan.all_tables():
        conn.execute(ddl.drop_table(table.schema, table.name))
    for table in plan.all_tables():
        new = side_name(table, LOAD_SUFFIX)
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                ddl.ident(table.schema, new), sql.Identifier(table.name)
            )
        )
        if table.key:
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    ddl.ident(table.schema, table.name),
                    sql.Identifier(normalize_identifier(new + "_pkey")),
                    sql.Identifier(normalize_identifier(table.name + "_pkey")),
                )
            )


def append(conn: psycopg.Connection, plan: TablePlan) -> None:
    """Move the staged rows into the targets (the staging tables are dropped by
    :func:`drop_side_tables`, after the run's record is written)."""
    for table in plan.all_tables():
        stage = side_name(table, STAGE_SUFFIX)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                ddl.ident(table.schema, table.name), cols, cols, ddl.ident(table.schema, stage)
            )
        )


def merge(conn: psycopg.Connection, plan: TablePlan) -> int:
    """Upsert the staged rows into the targets on the key.

    Rows sharing a key inside the staged data collapse to one (BigQuery keys are not
    enforced); child rows of every merged parent are replaced. Returns the number of
    duplicate keys collapsed.
    """
    stage = side_name(plan, STAGE_SUFFIX)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in plan.key)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in plan.column_names)
    updates = [c for c in plan.column_names if c not in plan.key]
    on_conflict = (
        sql.SQL("DO UPDATE SET {}").format(
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
            )
        )
        if updates
        else sql.SQL("DO NOTHING")
    )
    row = conn.execute(
        sql.SQL("SELECT count(*) - count(DISTINCT ({})) FROM {}").format(
            keys, ddl.ident(plan.schema, stage)
        )
    ).fetchone()
    duplicates = int(row[0]) if row else 0
    conn.execute(
        sql.SQL(
            "INSERT INTO {target} ({cols}) SELECT DISTINCT ON ({keys}) {cols} "
            "FROM {stage} ORDER BY {keys} ON CONFLICT ({keys}) {action}"
        ).format(
            target=ddl.ident(plan.schema, plan.name),
            cols=cols,
            keys=keys,
            stage=ddl.ident(plan.schema, stage),
            action=on_conflict,
        )
    )
    for child in plan.children:
        _merge_child(conn, plan, child, stage)
    return duplicates


def drop_side_tables(conn: psycopg.Connection, plan: TablePlan, mode: Mode) -> None:
    """Drop the side tables of a run of ``mode`` (``replace`` renamed its own away)."""
    for table in plan.all_tables():
        conn.execute(ddl.drop_table(table.schema, physical(mode, table)))


def _merge_child(conn: psycopg.Connection, plan: TablePlan, child: TablePlan, stage: str) -> None:
    match = sql.SQL(" AND ").join(
        sql.SQL("c.{} = s.{}").format(sql.Identifier(ck), sql.Identifier(pk))
        for ck, pk in zip(child.parent_key, plan.key, strict=True)
    )
    conn.execute(
        sql.SQL("DELETE FROM {child} c USING {stage} s WHERE {match}").format(
            child=ddl.ident(child.schema, child.name),
            stage=ddl.ident(plan.schema, stage),
            match=match,
        )
    )
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in child.column_names)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in child.key)
    conn.execute(
        sql.SQL(
            "INSERT INTO {child} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {stage} "
            "ORDER BY {keys}"
        ).format(
            child=ddl.ident(child.schema, child.name),
            cols=cols,
            keys=keys,
            stage=ddl.ident(child.schema, side_name(child, STAGE_SUFFIX)),
        )
    )
