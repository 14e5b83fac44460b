"""What the lineage of one run says, in plain values: the run, its job, its source and
targets and their column edges (:class:`LineageRun`), its read session, and what it did
(:class:`Outcome`, with the quality rules' results as :class:`Check`).

The engine builds a :class:`LineageRun` with :func:`describe` when a run starts; ``events``
turns it into OpenLineage events, ``state.lineage.record`` stores its edges.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bq2pg.lineage import naming
from bq2pg.lineage.columns import ColumnEdge
from bq2pg.plan.tables import Field, TablePlan


@dataclass(frozen=True)
class Target:
    """A PostgreSQL table the run writes: ``schema.table`` and its columns (name, type)."""

    table: str
    columns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LineageRun:
    """What every event of one run says: the run, the job, the source and the targets."""

    run_id: str
    job_name: str
    #: ``project.dataset.table``.
    source: str
    source_fields: tuple[Field, ...]
    #: ``postgres://host:port`` (:func:`naming.namespace`).
    pg_namespace: str
    database: str
    targets: tuple[Target, ...]
    edges: tuple[ColumnEdge, ...]
    kind: str = "copy"
    version: str = ""
    #: Source fields the run's row filter reads (``--where``, the watermark), if known.
    filter_fields: tuple[str, ...] = ()

    @property
    def producer(self) -> str:
        return f"{naming.PRODUCER}/tree/{self.version}" if self.version else naming.PRODUCER

    def output_name(self, table: str) -> str:
        """The OpenLineage name of target ``schema.table``: ``database.schema.table``."""
        return f"{self.database}.{table}"


@dataclass(frozen=True)
class ReadSession:
    """The BigQuery read session of the run, once it is open."""

    snapshot_time: dt.datetime | None
    name: str | None = None
    streams: int | None = None


@dataclass(frozen=True)
class Check:
    """One quality rule's result on one target table (``quality.gate.Outcome``, flattened)."""

    #: ``table`` or ``schema.table``.
    table: str
    #: The rule's kind: ``not_null``, ``unique``, ``row_count``, ...
    kind: str
    name: str
    passed: bool
    columns: tuple[str, ...] = ()
    severity: str = "error"
    evaluated: int | None = None
    failing: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Outcome:
    """What the run did, as far as it got; tables keyed ``table`` or ``schema.table``."""

    rows: Mapping[str, int] = field(default_factory=dict)
    bytes: Mapping[str, int] = field(default_factory=dict)
    rows_read: int | None = None
    bytes_read: int | None = None
    checks: tuple[Check, ...] = ()
    #: NULLs per column of each table, when profiled.
    null_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def describe(
    run_id: uuid.UUID | str,
    *,
    source: str,
    fields: Sequence[Field],
    database_url: str,
    plan: TablePlan,
    edges: Sequence[ColumnEdge],
    job: str | None = None,
    kind: str = "copy",
    version: str = "",
    filter_fields: Sequence[str] = (),
) -> LineageRun:
    """The :class:`LineageRun` of a run of ``plan`` (all its tables) from ``source``.

    ``job`` is the configured job's name; without one, it is derived from source and target.
    """
    return LineageRun(
        run_id=str(run_id),
        job_name=job or naming.job_name(kind, source, plan.qualified),
        source=source,
        source_fields=tuple(fields),
        pg_namespace=naming.namespace(database_url),
        database=naming.database(database_url),
        targets=tuple(
            Target(t.qualified, tuple((c.name, c.pg_type) for c in t.columns))
            for t in plan.all_tables()
        ),
        edges=tuple(edges),
        kind=kind,
        version=version,
        filter_fields=tuple(filter_fields),
    )
