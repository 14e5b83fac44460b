"""The target tables: what exists, whether it fits the source, and the side tables a run loads.

A run never COPYs into a target directly: ``replace`` loads fresh ``<table>__bq2pg_new`` tables
and swaps them in; ``append`` and ``merge`` load ``<table>__bq2pg_stage`` tables and move their
rows in when publishing (``publish``). :func:`prepare` creates them, after the run took its
target's lock.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from psycopg import sql

from bq2pg.errors import TargetMismatchError
from bq2pg.observe.log import get_logger
from bq2pg.plan import ddl, typemap
from bq2pg.plan.tables import Column, TablePlan, normalize_identifier
from bq2pg.postgres.connection import ensure_schema, execute
from bq2pg.postgres.errors import translate

log = get_logger(__name__)

Mode = Literal["replace", "append", "merge"]
LOAD_SUFFIX = "__bq2pg_new"
STAGE_SUFFIX = "__bq2pg_stage"


def side_name(table: TablePlan, suffix: str) -> str:
    """The name of a side table (load or staging) of ``table``."""
    return normalize_identifier(table.name + suffix)


def physical(mode: Mode, table: TablePlan) -> str:
    """The side table that COPY writes to in ``mode``: a fresh load table (``replace``) or a
    staging table (``append``, ``merge``); publishing moves its rows into the target."""
    return side_name(table, LOAD_SUFFIX if mode == "replace" else STAGE_SUFFIX)


def existing_columns(conn: psycopg.Connection, schema: str, name: str) -> dict[str, str] | None:
    """Column name -> formatted type of an existing table, or None when it does not exist."""
    regclass = sql.Identifier(schema, name).as_string(conn)
    try:
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            [regclass],
        ).fetchall()
        if rows:
            return {r[0]: r[1] for r in rows}
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [regclass]).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, f"reading the columns of {schema}.{name}") from exc
    return {} if exists and exists[0] else None


def exists(conn: psycopg.Connection, table: TablePlan) -> bool:
    """Whether ``table`` exists in the target database."""
    return existing_columns(conn, table.schema, table.name) is not None


def check_rls(conn: psycopg.Connection, plan: TablePlan) -> None:
    """Refuse a target with row-level security: COPY cannot load it (PostgreSQL refuses), and
    replacing it would drop its policies."""
    rls = conn.execute(
        "SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(%s)",
        [sql.Identifier(plan.schema, plan.name).as_string(conn)],
    ).fetchone()
    if rls and rls[0]:
        raise TargetMismatchError(
            f"target table {plan.qualified} has row-level security enabled: COPY cannot load "
            "it, and replacing it would drop its policies; load into another table, or "
            "disable RLS for the load",
            table=plan.qualified,
        )


def check_compatible(conn: psycopg.Connection, plan: TablePlan) -> list[Column] | None:
    """How the existing target fits ``plan``: None when it does not exist, else the source's
    new columns it lacks (nullable ones, to add: RELIABILITY.md b.34).

    Columns the target has and the source no longer sends are kept (new rows get NULL);
    a renamed column looks like one dropped and one added.

    Raises:
        TargetMismatchError: a column has another type, a missing column is NOT NULL, or the
            table has row-level security.
    """
    check_rls(conn, plan)
    found = existing_columns(conn, plan.schema, plan.name)
    if found is None:
        return None
    problems, added = [], []
    for c in plan.columns:
        pg_type = typemap.spelled(c.pg_type)
        if c.name not in found:
            if c.not_null:
                problems.append(f"column {c.name!r} ({pg_type} NOT NULL) is missing")
            else:
                added.append(c)
        elif found[c.name].replace(", ", ",") != pg_type.replace(", ", ","):
            problems.append(f"column {c.name!r} is {found[c.name]}, the source needs {pg_type}")
    if problems:
        raise TargetMismatchError(
            f"target table {plan.qualified} does not match the source: "
            + "; ".join(problems)
            + ". Use --drop to recreate it, or --mode replace",
            table=plan.qualified,
        )
    return added


def add_columns(plan: TablePlan, columns: list[Column]) -> sql.Composed:
    """``ALTER TABLE ... ADD COLUMN`` for the source's new (nullable) columns."""
    return sql.SQL("ALTER TABLE {} {}").format(
        ddl.ident(plan.schema, plan.name),
        sql.SQL(", ").join(
            sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
            for c in columns
        ),
    )


def drop(conn: psycopg.Connection, tables: list[TablePlan], what: str) -> None:
    """Drop ``tables`` (those that exist) in one transaction."""
    execute(conn, [ddl.drop_table(t.schema, t.name) for t in tables], what)


def prepare(conn: psycopg.Connection, plan: TablePlan, mode: Mode, *, drop_first: bool) -> None:
    """Create the side tables a run of ``mode`` loads into (and, for append and merge, the
    targets when missing, with the source's new columns added), in the schema of ``plan``.

    ``drop_first`` drops the targets now (``--drop``); ``replace`` otherwise drops them only
    when it publishes.
    """
    ensure_schema(conn, plan.schema)
    statements: list[sql.Composed] = []
    tables = plan.all_tables()
    if drop_first:
        statements += [ddl.drop_table(t.schema, t.name) for t in tables]
    if mode == "replace":
        for t in tables:
            check_rls(conn, t)
            side = physical("replace", t)
            statements += [ddl.drop_table(t.schema, side), ddl.create_table(t, name=side)]
        execute(conn, statements, f"creating the load tables of {plan.qualified}")
        return
    execute(conn, statements, f"preparing {plan.qualified}")
    create: list[sql.Composed] = []
    for t in tables:
        added = check_compatible(conn, t)
        if added is None:
            create.append(ddl.create_table(t))
            if t.key:
                create.append(ddl.add_primary_key(t))
        elif added:
            log.warning(
                "schema.columns_added", table=f"{t.schema}.{t.name}",
                columns=[c.name for c in added], detail="earlier rows get NULL",
            )  # fmt: skip
            create.append(add_columns(t, added))
        # Staging is logged: crash recovery empties UNLOGGED tables, and the ledger would then
        # count rows that are gone.
        side = physical(mode, t)
        create.append(ddl.drop_table(t.schema, side))
        if mode == "append":
            # the target's CHECK and NOT NULL constraints too, so that a row they reject is
            # dead-lettered at COPY time instead of failing the whole publish
            create.append(
                sql.SQL(
                    "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(ddl.ident(t.schema, side), ddl.ident(t.schema, t.name))
            )
        else:
            create.append(ddl.create_table(t, name=side))
    execute(conn, create, f"creating {plan.qualified}")


def side_tables_exist(conn: psycopg.Connection, plan: TablePlan, mode: Mode) -> bool:
    """Whether every side table of a run of ``mode`` survived (a resumed run needs them)."""
    return all(
        existing_columns(conn, t.schema, physical(mode, t)) is not None for t in plan.all_tables()
    )


def truncate_side_tables(conn: psycopg.Connection, plan: TablePlan, mode: Mode) -> None:
    """Empty the side tables of a run of ``mode`` (in the caller's transaction)."""
    for t in plan.all_tables():
        conn.execute(sql.SQL("TRUNCATE {}").format(ddl.ident(t.schema, physical(mode, t))))


def size(conn: psycopg.Connection, plan: TablePlan) -> int:
    """Bytes the target tables of ``plan`` take in PostgreSQL (with indexes and TOAST)."""
    names = [ddl.ident(t.schema, t.name).as_string(conn) for t in plan.all_tables()]
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(to_regclass(n))), 0) FROM unnest(%s::text[]) "
        "AS n",
        [names],
    ).fetchone()
    return int(row[0]) if row else 0
