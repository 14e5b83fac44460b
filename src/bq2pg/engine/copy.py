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
from bq2pg.engine.run import Job, Progress, RunResult, TableResult, run_job
from bq2pg.engine.stream import Mode, write_batches
from bq2pg.errors import ConfigError
from bq2pg.plan import filters as predicate
from bq2pg.plan import watermark
from bq2pg.plan.tables import Nested, TablePlan, plan_table
from bq2pg.postgres import connection as load
from bq2pg.state import runs as state

__all__ = [
    "CopyRequest",
    "Job",
    "Mode",
    "Nested",
    "Progress",
    "RunResult",
    "TableResult",
    "copy_table",
    "plan",
    "run_job",
    "write_batches",
]


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

    def arguments(self) -> dict[str, object]:
        """The request as stored with the run (without the database URL)."""
        args = asdict(self)
        args.pop("database_url")
        return args


def target_name(request: CopyRequest, ref: TableRef) -> tuple[str, str]:
    """(schema, table) of the target: ``--table`` or ``public.<source table>``."""
    if not request.table:
        return "public", ref.table
    schema, dot, name = request.table.partition(".")
    if not dot:
        return "public", schema
    if not schema or not name:
        raise ConfigError(f"--table {request.table!r} is not SCHEMA.NAME")
    return schema, name


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
    if request.limit is not None and request.limit < 0:
        raise ConfigError("--limit must be 0 or more")
    executor.check(request.executor)
    table_plan, selected, num_rows = plan(source, request)
    where = request.where.strip() if request.where else None
    column = None
    if request.incremental:
        bound, column = _incremental(source, request, table_plan)
        if bound:
            where = f"({where}) AND {bound}" if where else bound
    job = Job(
        ref=TableRef.parse(request.source),
        database_url=request.database_url,
        plan=table_plan,
        arguments=request.arguments(),
        selected=selected if request.columns else None,
        where=where,
        watermark=column,
        limit=request.limit,
        streams=request.streams,
        mode=request.mode,
        drop=request.drop,
        total_rows=None if where else num_rows,
        checksum=request.checksum,
        executor=request.executor,
    )
    return run_job(source, job, progress)


def _incremental(
    source: Source, request: CopyRequest, table_plan: TablePlan
) -> tuple[str | None, str]:
    """The watermark filter of an incremental run and the PostgreSQL name of its column."""
    assert request.incremental
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
    lag = watermark.parse_lag(request.lag)
    with load.connect(request.database_url) as conn:
        state.ensure(conn)
        found = state.watermark(conn, table_plan.qualified)
    value = found[1] if found and found[0] == column.name else None
    return watermark.restriction(column.field, value, lag), column.name
