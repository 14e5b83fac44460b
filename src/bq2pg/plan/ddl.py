"""PostgreSQL statements for a :class:`~bq2pg.schema.TablePlan`, composed with ``psycopg.sql``.

Every identifier goes through :class:`psycopg.sql.Identifier`; type names come only from the
type table in ``typemap`` (trusted constants), never from user input.
"""

from __future__ import annotations

from psycopg import sql

from bq2pg.plan.tables import Index, TablePlan, normalize_identifier


def ident(schema: str, name: str) -> sql.Identifier:
    """``"schema"."name"``."""
    return sql.Identifier(schema, name)


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def create_table(
    plan: TablePlan,
    *,
    name: str | None = None,
    unlogged: bool = False,
    if_not_exists: bool = False,
) -> sql.Composed:
    """``CREATE TABLE`` for ``plan`` (optionally under another ``name``), without keys.

    Keys are added after the bulk load (:func:`add_primary_key`): building the index once is
    cheaper than maintaining it row by row.
    """
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name),
            sql.SQL(c.pg_type),
            sql.SQL(" NOT NULL") if c.not_null else sql.SQL(""),
        )
        for c in plan.columns
    )
    return sql.SQL("CREATE {}TABLE {}{} ({})").format(
        sql.SQL("UNLOGGED ") if unlogged else sql.SQL(""),
        sql.SQL("IF NOT EXISTS ") if if_not_exists else sql.SQL(""),
        ident(plan.schema, name or plan.name),
        columns,
    )


def add_primary_key(plan: TablePlan, *, name: str | None = None) -> sql.Composed:
    """``ALTER TABLE ... ADD PRIMARY KEY`` on the plan's key; on a side table ``name`` the
    constraint is named ``<name>_pkey``, so that publishing can rename it with the table."""
    constraint = (
        sql.SQL("CONSTRAINT {} ").format(sql.Identifier(normalize_identifier(name + "_pkey")))
        if name
        else sql.SQL("")
    )
    return sql.SQL("ALTER TABLE {} ADD {}PRIMARY KEY ({})").format(
        ident(plan.schema, name or plan.name),
        constraint,
        sql.SQL(", ").join(sql.Identifier(k) for k in plan.key),
    )


#: Index methods bq2pg builds (a trusted list: the method is spliced as SQL).
INDEX_METHODS = ("btree", "gin", "gist", "brin", "hash")


def create_index(schema: str, index: Index) -> sql.Composed:
    """``CREATE INDEX IF NOT EXISTS`` for ``index`` on a table of ``schema``."""
    if index.method not in INDEX_METHODS:
        raise ValueError(f"index method {index.method!r} is not one of {INDEX_METHODS}")
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING {} ({})").format(
        sql.Identifier(index.name),
        ident(schema, index.table),
        sql.SQL(index.method),
        sql.SQL(", ").join(sql.Identifier(c) for c in index.columns),
    )


def analyze(schema: str, name: str) -> sql.Composed:
    """``ANALYZE`` a table (planner statistics after a load)."""
    return sql.SQL("ANALYZE {}").format(ident(schema, name))


def drop_table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("DROP TABLE IF EXISTS {}").format(ident(schema, name))


def copy_from_stdin(
    plan: TablePlan, *, name: str | None = None, format: str = "csv"
) -> sql.Composed:
    """``COPY ... FROM STDIN`` in the format ``encode`` wrote (``csv`` or ``binary``)."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        ident(plan.schema, name or plan.name),
        sql.SQL(", ").join(sql.Identifier(c) for c in plan.column_names),
        sql.SQL("binary" if format == "binary" else "csv"),
    )


def render(plan: TablePlan) -> str:
    """The DDL that ``bq2pg copy`` would run for ``plan``, as text (``bq2pg schema``)."""
    statements: list[sql.Composed] = [create_schema(plan.schema)]
    for table in plan.all_tables():
        statements.append(create_table(table))
        if table.key:
            statements.append(add_primary_key(table))
    return "\n".join(_pretty(s.as_string(None)) + ";" for s in statements)


def _pretty(statement: str) -> str:
    """Put each column of a CREATE TABLE on its own line."""
    if not statement.startswith("CREATE") or "(" not in statement:
        return statement
    head, _, body = statement.partition(" (")
    body = body[:-1]
    parts, depth, quoted, current = [], 0, False, ""
    for ch in body:
        if ch == '"':
            quoted = not quoted  # a doubled quote toggles twice: still right
        if ch == "," and depth == 0 and not quoted:
            parts.append(current.strip())
            current = ""
            continue
        if not quoted:
            depth += ch == "("
            depth -= ch == ")"
        current += ch
    parts.append(current.strip())
    return head + " (\n    " + ",\n    ".join(parts) + "\n)"
