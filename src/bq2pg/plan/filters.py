"""Validate user filters (``--where``) before they reach BigQuery.

A filter becomes the read session's ``row_restriction`` and nothing else: it never reaches
PostgreSQL. It is parsed with sqlglot in the BigQuery dialect first, so that a typo, a second
statement or a subquery is a clear error here rather than a failed or surprising read.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from bq2pg.errors import FilterError

#: The Storage Read API limits ``row_restriction`` to 1 MB (stream.proto, TableReadOptions).
ROW_RESTRICTION_MAX_BYTES = 1_000_000

_NOT_A_PREDICATE = (
    exp.Query,
    exp.Command,
    exp.Create,
    exp.Drop,
    exp.Insert,
    exp.Update,
    exp.Delete,
)


def validate(where: str, columns: list[str] | None = None, *, dialect: str = "bigquery") -> str:
    """Check that ``where`` is one boolean expression (BigQuery by default) over known columns.

    Args:
        where: the filter text, as the user wrote it.
        columns: the source table's top-level column names, to catch unknown columns early.

    Returns:
        The filter, stripped, to pass as ``row_restriction``.

    Raises:
        FilterError: empty, too long, not parseable, several statements, a query or DDL, a
            subquery, or a column the table does not have.
    """
    text = where.strip()
    if not text:
        raise FilterError("--where is empty; leave it out to read every row")
    if len(text.encode()) > ROW_RESTRICTION_MAX_BYTES:
        raise FilterError(
            f"--where is {len(text.encode()):,} bytes; BigQuery accepts at most "
            f"{ROW_RESTRICTION_MAX_BYTES:,}"
        )
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0]
        raise FilterError(
            f"--where {text!r} is not a valid {dialect} expression: {first}"
        ) from None
    if len(statements) != 1:
        raise FilterError(
            f"--where {text!r} holds {len(statements)} statements; give one predicate"
        )
    tree = statements[0]
    if isinstance(tree, _NOT_A_PREDICATE):
        raise FilterError(
            f"--where {text!r} is a statement, not a predicate; write only the condition, "
            "for example: country_code = 'US' AND publication_date >= 20200101"
        )
    if tree.find(exp.Query) is not None:
        raise FilterError(f"--where {text!r} contains a subquery; give a plain condition")
    if columns is not None:
        known = {c.lower() for c in columns}
        # the first part of a dotted name (record.field) is the column
        roots = {c.parts[0].name for c in tree.find_all(exp.Column) if c.parts}
        unknown = sorted(r for r in roots if r.lower() not in known)
        if unknown:
            raise FilterError(
                f"--where {text!r} names {', '.join(unknown)}, not a column of the source table"
            )
    return text


def to_postgres(where: str, columns: list[str]) -> str:
    """A user filter over ``columns`` checked as above, then re-rendered by sqlglot.

    Used by ``bq2pg export`` (the only place a user predicate meets PostgreSQL, inside a
    read-only transaction): what runs is sqlglot's rendering of the parsed tree, so text that
    does not parse as one condition never reaches the server.
    """
    validate(where, columns, dialect="postgres")
    tree = sqlglot.parse_one(where, read="postgres")
    if tree.find(exp.Anonymous) is not None:
        raise FilterError(f"--where {where!r} calls an unknown function; use plain conditions")
    return tree.sql(dialect="postgres")
