"""Recorded lineage (``bq2pg.lineage``): the edges from sources to targets that runs and
feature exports wrote, which ``bq2pg lineage`` draws as a graph.

One row per target column (``target_column`` = its name) and one per target table (``''``),
each naming its source dataset and the source fields it is made from. Names follow OpenLineage:
``bigquery`` / ``project.dataset.table``, ``postgres://host:port`` / ``database.schema.table``,
``file`` / an absolute path.

When a table's lineage is read back, the latest recording of that table wins (its columns may
have changed since an older run), and runs that did not publish (``failed``, ``abandoned``,
``failed_quality``) are left out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg
from psycopg.rows import class_row


class EdgeLike(Protocol):
    """A column's (or a table's) edge as ``bq2pg.lineage.columns.ColumnEdge`` describes it.

    A protocol, as the state layer sits below ``bq2pg.lineage`` and cannot import it.
    """

    @property
    def target_table(self) -> str: ...

    @property
    def target_column(self) -> str: ...

    @property
    def source_fields(self) -> tuple[str, ...]: ...

    @property
    def transformation(self) -> str: ...

    @property
    def description(self) -> str: ...


@dataclass(frozen=True)
class ExportColumn:
    """A column of an exported file and the PostgreSQL columns it is computed from."""

    name: str
    #: (``schema.table``, column) pairs it reads.
    sources: tuple[tuple[str, str], ...]
    transformation: str = "derived"
    description: str = ""


@dataclass(frozen=True)
class Edge:
    """One recorded row of ``bq2pg.lineage``."""

    run_id: uuid.UUID | None
    source_namespace: str
    source_name: str
    source_fields: list[str]
    target_namespace: str
    target_name: str
    target_column: str
    transformation: str
    description: str | None
    recorded_at: dt.datetime


_INSERT = (
    "INSERT INTO bq2pg.lineage (run_id, source_namespace, source_name, source_fields, "
    "target_namespace, target_name, target_column, transformation, description) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def record(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    *,
    source_namespace: str,
    source_name: str,
    target_namespace: str,
    target_database: str,
    edges: Sequence[EdgeLike],
) -> int:
    """Record a run's edges (``columns.for_plan`` or the patents model's), replacing any the
    run recorded before; returns the rows written.

    Args:
        run_id: the run (a row of ``bq2pg.runs``).
        source_namespace: ``bigquery``.
        source_name: ``project.dataset.table``.
        target_namespace: ``postgres://host:port`` (``lineage.events.namespace``).
        target_database: the database name; a target is named ``database.schema.table``.
        edges: column and table-level edges, their ``target_table`` as ``schema.table``.
    """
    rows = [
        (run_id, source_namespace, source_name, list(e.source_fields), target_namespace,
         f"{target_database}.{e.target_table}", e.target_column, e.transformation,
         e.description or None)
        for e in edges
    ]  # fmt: skip
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM bq2pg.lineage WHERE run_id = %s", [run_id])
        cur.executemany(_INSERT, rows)
    return len(rows)


def record_export(
    conn: psycopg.Connection,
    *,
    source_namespace: str,
    source_database: str,
    target_namespace: str,
    target_name: str,
    columns: Sequence[ExportColumn],
) -> int:
    """Record that the file (or URI) ``target_name`` was exported from PostgreSQL tables,
    replacing what an earlier export to the same target recorded; returns the rows written.

    Exports are not runs: their rows have no ``run_id``. Each exported column gets one row per
    source table it reads, and each source table one table-level row.

    Args:
        source_namespace: ``postgres://host:port`` of the database read.
        source_database: its name; sources are named ``database.schema.table``.
        target_namespace: ``file`` for a local file (OpenLineage's naming), or a URI's
            ``scheme://authority``.
        target_name: the file's absolute path (or the URI's path).
        columns: the exported columns and what they read.
    """
    rows = []
    tables: dict[str, set[str]] = {}
    for column in columns:
        by_table: dict[str, list[str]] = {}
        for table, source in column.sources:
            by_table.setdefault(table, []).append(source)
            tables.setdefault(table, set()).add(source)
        rows += [
            (None, source_namespace, f"{source_database}.{table}", fields, target_namespace,
             target_name, column.name, column.transformation, column.description or None)
            for table, fields in by_table.items()
        ]  # fmt: skip
    rows += [
        (None, source_namespace, f"{source_database}.{table}", sorted(fields), target_namespace,
         target_name, "", "derived", "exported")
        for table, fields in tables.items()
    ]  # fmt: skip
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM bq2pg.lineage WHERE run_id IS NULL AND target_namespace = %s "
            "AND target_name = %s",
            [target_namespace, target_name],
        )
        cur.executemany(_INSERT, rows)
    return len(rows)


def edges(conn: psycopg.Connection) -> list[Edge]:
    """Every recorded edge that is current: for each target table, the rows of its latest
    recording by a run that published (or by an export), in the order they were recorded
    (the table's column order)."""
    with conn.cursor(row_factory=class_row(Edge)) as cur:
        cur.execute(
            "SELECT run_id, source_namespace, source_name, source_fields, target_namespace, "
            "target_name, target_column, transformation, description, recorded_at FROM ("
            "  SELECT l.*, rank() OVER (PARTITION BY l.target_namespace, l.target_name "
            "                           ORDER BY l.recorded_at DESC) AS latest"
            "  FROM bq2pg.lineage l LEFT JOIN bq2pg.runs r ON r.run_id = l.run_id"
            "  WHERE l.run_id IS NULL"
            "     OR r.status NOT IN ('failed', 'abandoned', 'failed_quality')"
            ") current WHERE latest = 1 "
            "ORDER BY target_namespace, target_name, id"
        )
        return cur.fetchall()
