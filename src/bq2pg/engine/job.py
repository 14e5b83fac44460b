"""A job: one read session's worth of work, as ``copy`` and ``patents`` describe it to the engine.

The job says what to read, which tables to write and how to publish. What depends on the
target's current state (whether the model exists, the watermark, what to drop) is *not*
decided here: the run decides it after it took the target's lock (``engine.run``), so that two
runs never act on a state that the other is changing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bq2pg.bigquery.client import TableRef
from bq2pg.config.settings import DEFAULT_STREAMS
from bq2pg.engine import dask as executor_module
from bq2pg.engine.stream import Split
from bq2pg.lineage.columns import ColumnEdge
from bq2pg.plan.tables import Field, Index, TablePlan
from bq2pg.postgres.target import Mode
from bq2pg.quality.rules import DEFAULT_SAMPLES, Rule
from bq2pg.state.runs import Kind

#: ``auto``: ``replace`` when the target does not exist yet, else ``merge`` (the patents model).
JobMode = Mode | Literal["auto"]


@dataclass(frozen=True)
class Incremental:
    """An incremental run: read rows at or above the target's watermark on ``column`` (less
    ``lag``); the watermark is read under the run's lock and advanced when it publishes."""

    #: The PostgreSQL name of the column.
    column: str
    #: Its source field (type, for the BigQuery literal of the bound).
    field: Field
    #: Seconds (or an amount, for numbers) to read again below the watermark.
    lag: float = 0.0


@dataclass(frozen=True)
class Job:
    """One read session's worth of work: what to read, the tables to write, how to publish.

    ``copy_table`` builds a job from a ``CopyRequest``; ``patents`` builds its own, with its
    model's tables and splitter, and the same engine runs both.
    """

    ref: TableRef
    database_url: str = field(repr=False)
    plan: TablePlan
    #: What kind of job, and the request as asked (stored with the run, versioned).
    kind: Kind
    request: dict[str, Any]
    selected: list[str] | None = None
    where: str | None = None
    limit: int | None = None
    streams: int = DEFAULT_STREAMS
    mode: JobMode = "replace"
    #: Drop the targets before loading (``copy --drop``).
    drop: bool = False
    #: Tables to drop before loading, after which the run replaces (``patents --drop-tables``).
    drop_tables: tuple[TablePlan, ...] = ()
    #: Makes one splitter per stream thread (a splitter may own a DuckDB connection).
    splitter: Callable[[], Split] | None = None
    #: Indexes built after publishing, each in its own transaction.
    indexes: tuple[Index, ...] = ()
    #: Rows the source holds, for the progress bar (None: ask the read session).
    total_rows: int | None = None
    #: Read from the target's watermark on (needs merge and a key).
    incremental: Incremental | None = None
    #: Verify content checksums besides row counts (``quality.checksum``).
    checksum: bool = True
    #: Where the streams run: ``local`` threads, or ``dask://HOST:PORT`` (``engine.dask``).
    executor: str = executor_module.LOCAL
    #: Only resume an interrupted run of this job; fail when there is none (``--resume``).
    resume_only: bool = False
    #: The plan's estimates (``engine.estimate``), recorded with the run beside its actuals.
    estimate: dict[str, Any] | None = None
    #: The job's name in bq2pg.yaml (None: an ad-hoc ``copy``/``patents``; its kind names it).
    name: str | None = None
    #: Quality rules evaluated on the side tables before publishing (``quality.rules.bind``).
    quality: tuple[Rule, ...] = ()
    #: Publish without evaluating the rules (``--skip-quality``, recorded with the run).
    skip_quality: bool = False
    #: Failing rows kept per rule as examples.
    quality_samples: int = DEFAULT_SAMPLES
    #: Profile the tables (from ANALYZE's statistics) after publishing, into bq2pg.profiles.
    profile: bool = True
    #: Severity of an anomaly: ``warn`` reports it, ``error`` keeps the run from publishing.
    anomaly_severity: Literal["warn", "error"] = "warn"
    #: Each column's source fields and transformation (None: derived from the plan).
    lineage: tuple[ColumnEdge, ...] | None = None
    #: Where OpenLineage events go (bq2pg.yaml's ``lineage:``; None: OPENLINEAGE_* or off).
    lineage_settings: Mapping[str, Any] | None = field(default=None, repr=False)
    #: The source's fields the run reads (None: those of the plan's columns).
    source_fields: tuple[Field, ...] = ()
    #: The id a new run is recorded under (None: a fresh one); the REST API names its runs
    #: before they start. A resumed run keeps the id of the run it resumes.
    run_id: uuid.UUID | None = None

    @property
    def label(self) -> str:
        """What logs and metrics call the job: its name, else its kind."""
        return self.name or self.kind


@dataclass(frozen=True)
class Resolved:
    """What a job became once the run held the target's lock: its mode and its filter."""

    mode: Mode
    where: str | None
    fingerprint: str


def fingerprint(job: Job, mode: Mode, where: str | None) -> str:
    """What makes two runs the same job (an interrupted one resumes only into the same job)."""
    tables = [(t.name, [(c.name, c.pg_type) for c in t.columns]) for t in job.plan.all_tables()]
    blob = [str(job.ref), job.plan.qualified, mode, job.selected, where, job.limit, tables]
    return hashlib.sha256(json.dumps(blob, default=str).encode()).hexdigest()[:32]
