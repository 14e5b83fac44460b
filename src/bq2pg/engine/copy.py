"""``bq2pg copy``: plan a BigQuery table's PostgreSQL tables and run the copy as a job.

:func:`copy_table` is the public entry point the CLI (and later the REST API) call: it reads
the source schema, plans the target tables (``schema``), validates the filters, adds the
incremental watermark, and runs the job (``job.run_job``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bq2pg.bigquery.client import Source, TableRef
from bq2pg.config.settings import DEFAULT_STREAMS
from bq2pg.engine import dask as executor
from bq2pg.engine.job import Incremental, Job
from bq2pg.engine.result import RunResult
from bq2pg.engine.run import run_job
from bq2pg.errors import ConfigError
from bq2pg.observe.progress import Progress
from bq2pg.plan import filters as predicate
from bq2pg.plan import watermark
from bq2pg.plan.tables import Nested, TablePlan, plan_table
from bq2pg.postgres.target import Mode


@dataclass(frozen=True)
class CopyRequest:
    """What to copy, where, and how (the options of ``bq2pg copy``)."""

    source: str
    database_url: str = field(repr=False)
    table: str | None = None
    columns: tuple[str, ...] = ()
    where: str | None = None
    limit: int | None = None
    streams: int = DEFAULT_STREAMS
    mode: Mode = "replace"
    key: tuple[str, ...] = ()
    nested: Nested = "jsonb"
    drop: bool = False
    #: Read only rows at or above the last run's maximum of this column (needs merge + key).
    incremental: str | None = None
    #: Re-read this much below the watermark for late rows (seconds like 2h, or an amount).
    lag: str | None = None
    #: Verify content checksums besides row counts.
    checksum: bool = True
    #: Where the streams run: ``local`` or ``dask://HOST:PORT`` (``executor``).
    executor: str = "local"
    #: Only resume the interrupted run of this job (fail when there is none).
    resume: bool = False

    def arguments(self) -> dict[str, object]:
        """The request as stored with the run (without the database URL, nor ``resume``,
        which says how to run it, not what)."""
        args = asdict(self)
        args.pop("database_url")
        args.pop("resume")
        return args


def target_name(request: CopyRequest, ref: TableRef) -> tuple[str, str]:
    """(schema, table) of the target: ``--table`` or ``public.<source table>``."""
    if not request.table:
        return "public", ref.table
    parts = request.table.split(".")
    if len(parts) == 1 and parts[0]:
        return "public", parts[0]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"--table {request.table!r} is not SCHEMA.NAME or NAME (a PostgreSQL table lives in "
            "a schema of the database --to names; quote nothing)",
            value=request.table,
        )
    return parts[0], parts[1]


def plan(source: Source, request: CopyRequest) -> tuple[TablePlan, list[str], int | None]:
    """Read the source schema and plan the target tables (no PostgreSQL needed).

    Returns the plan, the selected source field names and the source's row count.
    """
    ref = TableRef.parse(request.source)
    info = source.table(ref)
    fields = info.fields
    if request.columns:
        by_name = {f.name.lower(): f for f in fields}
        unknown = [c for c in request.columns if c.lower() not in by_name]
        if unknown:
            raise ConfigError(
                f"--columns names {', '.join(unknown)}, not in {ref}; its columns are "
                + ", ".join(f.name for f in fields)
            )
        wanted = {c.lower() for c in request.columns}
        fields = [f for f in fields if f.name.lower() in wanted]
    if request.mode == "merge" and not request.key:
        raise ConfigError("--mode merge needs --key COLUMN[,COLUMN] to match rows on")
    schema, name = target_name(request, ref)
    table_plan = plan_table(
        fields, source=str(ref), schema=schema, name=name, key=request.key, nested=request.nested
    )
    if request.where:
        predicate.validate(request.where, [f.name for f in info.fields])
    return table_plan, [f.name for f in fields], info.num_rows


def copy_table(source: Source, request: CopyRequest, progress: Progress | None = None) -> RunResult:
    """Copy one BigQuery table (or the filtered, projected part of it) into PostgreSQL.

    Raises:
        ConfigError: bad options, unmappable types, colliding names, incompatible target.
        SourceError: BigQuery refused or failed.
        TargetError: PostgreSQL refused or failed.
    """
    return run_job(source, build_job(source, request), progress)


def build_job(source: Source, request: CopyRequest) -> Job:
    """The job ``copy_table`` runs: reads the source schema, loads nothing (``bq2pg plan``
    estimates it, the run runs it)."""
    if request.limit is not None and request.limit < 0:
        raise ConfigError("--limit must be 0 or more")
    executor.check(request.executor)
    table_plan, selected, num_rows = plan(source, request)
    where = request.where.strip() if request.where else None
    return Job(
        ref=TableRef.parse(request.source),
        database_url=request.database_url,
        plan=table_plan,
        kind="copy",
        request=request.arguments(),
        selected=selected if request.columns else None,
        where=where,
        limit=request.limit,
        streams=request.streams,
        mode=request.mode,
        drop=request.drop,
        total_rows=None if where or request.incremental else num_rows,
        incremental=_incremental(request, table_plan),
        checksum=request.checksum,
        executor=request.executor,
        resume_only=request.resume,
    )


def _incremental(request: CopyRequest, table_plan: TablePlan) -> Incremental | None:
    """The watermark column of an incremental run (its value is read under the run's lock)."""
    if not request.incremental:
        return None
    if request.mode != "merge" or not request.key:
        raise ConfigError(
            "--incremental needs --mode merge and --key: rows at the boundary are read again "
            "and the merge on the key keeps them once"
        )
    by_name = {c.field.name.lower(): c for c in table_plan.columns}
    column = by_name.get(request.incremental.lower())
    if column is None:
        raise ConfigError(f"--incremental {request.incremental!r} is not a copied column")
    watermark.check(column.field, request.source)
    return Incremental(column.name, column.field, watermark.parse_lag(request.lag))
