"""``bq2pg copy``, ``bq2pg patents``, ``bq2pg schema`` and ``bq2pg types``: loading, and what a
load would create."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.table import Table

from bq2pg.cli.shared import (
    ChecksumOpt,
    ColumnsOpt,
    EndpointOpt,
    ExecutorOpt,
    KeyOpt,
    NestedOpt,
    ProjectOpt,
    ResumeOpt,
    RichProgress,
    StorageEndpointOpt,
    TableOpt,
    database_url,
    err,
    make_source,
    nested_choice,
    out,
    split_list,
)
from bq2pg.config.settings import Settings
from bq2pg.engine import copy as pipeline
from bq2pg.engine.result import RunResult
from bq2pg.errors import EXIT_DEAD_LETTERS, ConfigError
from bq2pg.plan import ddl, typemap

app = typer.Typer(rich_markup_mode=None)


def _run(label: str, job: Callable[[RichProgress], RunResult]) -> None:
    """Run ``job`` with a progress bar on stderr, then print its summary."""
    progress = RichProgress(label)
    try:
        result = job(progress)
    finally:
        progress.stop()
    summary(result)
    if result.dead_letters:
        raise typer.Exit(EXIT_DEAD_LETTERS)


def summary(result: RunResult) -> None:
    """Print a run's summary: rows, bytes and rates per table, verification, dead letters."""
    table = Table(title=f"{result.source} → {result.target} ({result.mode})", title_justify="left")
    for name in ("table", "rows", "MB", "seconds", "rows/s"):
        table.add_column(name, justify="left" if name == "table" else "right")
    for t in result.tables:
        table.add_row(
            t.name, f"{t.rows:,}", f"{t.bytes / 1e6:,.1f}", f"{t.seconds:,.2f}",
            f"{t.rows_per_second:,.0f}",
        )  # fmt: skip
    out.print(table)
    out.print(
        f"{result.rows_read:,} rows read in {result.seconds:,.2f} s "
        f"({result.rows_per_second:,.0f} rows/s end to end; load {result.load_seconds:,.2f} s, "
        f"publish {result.publish_seconds:,.2f} s; {result.bytes / 1e6:,.1f} MB via COPY, "
        f"{result.streams} stream{'s' if result.streams != 1 else ''}); run {result.run_id}"
    )
    counted = len(result.tables) - len(result.checksummed)
    out.print(
        f"verified against the ledger: row counts of {len(result.tables)} table(s)"
        + (f", content checksums of {len(result.checksummed)}" if result.checksummed else "")
        + (f" ({counted} without checksummable columns)" if result.checksummed and counted else "")
    )
    if result.duplicates_collapsed:
        out.print(f"[yellow]{result.duplicates_collapsed:,} duplicate keys collapsed by merge")
    if result.dead_letters:
        err.print(
            f"[yellow]{result.dead_letters:,} row(s) rejected by PostgreSQL are in "
            f"bq2pg.dead_letters (run {result.run_id}); the other rows loaded"
        )


@app.command()
def copy(
    source: Annotated[str, typer.Argument(help="PROJECT.DATASET.TABLE to copy.")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="Target PostgreSQL URL [env: BQ2PG_DATABASE_URL]."),
    ] = None,
    table: TableOpt = None,
    columns: ColumnsOpt = None,
    where: Annotated[
        str | None, typer.Option(help="BigQuery SQL predicate pushed down as row_restriction.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Copy at most N rows.", min=0)] = None,
    streams: Annotated[
        int | None, typer.Option(help="Parallel read streams [default: CPU cores].", min=1)
    ] = None,
    mode: Annotated[str, typer.Option(help="replace, append or merge (needs --key).")] = "replace",
    key: KeyOpt = None,
    nested: NestedOpt = "jsonb",
    drop: Annotated[bool, typer.Option(help="Drop and recreate the target tables first.")] = False,
    incremental: Annotated[
        str | None,
        typer.Option(help="Read only rows at or above the last run's maximum of COLUMN."),
    ] = None,
    lag: Annotated[
        str | None, typer.Option(help="With --incremental: re-read this far back (2h, 1d, 100).")
    ] = None,
    checksum: ChecksumOpt = True,
    executor: ExecutorOpt = "local",
    resume: ResumeOpt = False,
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
) -> None:
    """Copy a BigQuery table into PostgreSQL."""
    if mode not in ("replace", "append", "merge"):
        raise ConfigError(f"--mode must be replace, append or merge, not {mode!r}")
    request = pipeline.CopyRequest(
        source=source,
        database_url=database_url(to),
        table=table,
        columns=split_list(columns),
        where=where,
        limit=limit,
        streams=streams or Settings().streams,
        mode=mode,  # type: ignore[arg-type]
        key=split_list(key),
        nested=nested_choice(nested),
        drop=drop,
        incremental=incremental,
        lag=lag,
        checksum=checksum,
        executor=executor,
        resume=resume,
    )
    src = make_source(project, bigquery_endpoint, bigquery_storage_endpoint)
    _run(f"copy {source}", lambda progress: pipeline.copy_table(src, request, progress))


@app.command()
def patents(
    to: Annotated[
        str | None,
        typer.Option("--to", help="Target PostgreSQL URL [env: BQ2PG_DATABASE_URL]."),
    ] = None,
    source: Annotated[
        str, typer.Option(help="The publications table (or a dated snapshot of it).")
    ] = "patents-public-data.patents.publications",
    schema_name: Annotated[str, typer.Option("--schema", help="Target schema.")] = "patents",
    test: Annotated[bool, typer.Option("--test", help="Load 100 rows.")] = False,
    limit: Annotated[int | None, typer.Option(help="Load at most N rows.", min=0)] = None,
    year: Annotated[int | None, typer.Option(help="Publication year.")] = None,
    recent_days: Annotated[
        int | None, typer.Option(help="Published within the last N days.", min=0)
    ] = None,
    country: Annotated[str | None, typer.Option(help="Country codes, e.g. US,DE.")] = None,
    kind: Annotated[str | None, typer.Option(help="Kind codes, e.g. B1,B2.")] = None,
    full_text: Annotated[
        bool, typer.Option("--full-text", help="Also load claims and descriptions.")
    ] = False,
    drop_tables: Annotated[
        bool, typer.Option("--drop-tables", help="Drop the model's tables first.")
    ] = False,
    with_cpc_definitions: Annotated[
        bool,
        typer.Option(
            "--with-cpc-definitions", help="Also load the CPC scheme into cpc_definitions."
        ),
    ] = False,
    cpc_source: Annotated[
        str, typer.Option(help="The CPC scheme table.")
    ] = "patents-public-data.cpc.definition",
    streams: Annotated[int | None, typer.Option(help="Parallel read streams.", min=1)] = None,
    checksum: ChecksumOpt = True,
    executor: ExecutorOpt = "local",
    resume: ResumeOpt = False,
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
) -> None:
    """Load Google Patents publications into an indexed relational model."""
    from bq2pg.patents import pipeline as patents_module

    request = patents_module.PatentsRequest(
        database_url=database_url(to),
        source=source,
        schema=schema_name,
        test=test,
        limit=limit,
        year=year,
        recent_days=recent_days,
        country=split_list(country),
        kind=split_list(kind),
        full_text=full_text,
        drop_tables=drop_tables,
        with_cpc_definitions=with_cpc_definitions,
        cpc_source=cpc_source,
        streams=streams or Settings().streams,
        checksum=checksum,
        executor=executor,
        resume=resume,
    )
    src = make_source(project, bigquery_endpoint, bigquery_storage_endpoint)
    _run(f"patents {source}", lambda progress: patents_module.run(src, request, progress))


@app.command()
def schema(
    source: Annotated[str, typer.Argument(help="PROJECT.DATASET.TABLE to describe.")],
    table: TableOpt = None,
    columns: ColumnsOpt = None,
    key: KeyOpt = None,
    nested: NestedOpt = "jsonb",
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
) -> None:
    """Print the PostgreSQL DDL that copy would create, without loading anything."""
    request = pipeline.CopyRequest(
        source=source,
        database_url="",
        table=table,
        columns=split_list(columns),
        key=split_list(key),
        nested=nested_choice(nested),
    )
    src = make_source(project, bigquery_endpoint, bigquery_storage_endpoint)
    plan, _, _ = pipeline.plan(src, request)
    out.print(ddl.render(plan), markup=False, highlight=False, soft_wrap=True)


@app.command()
def types() -> None:
    """Print how each BigQuery type is stored in PostgreSQL."""
    table = Table(title="BigQuery → PostgreSQL", title_justify="left")
    for name in ("BigQuery", "PostgreSQL", "Arrow (Storage Read API)", "note"):
        table.add_column(name)
    for rule in typemap.TYPES.values():
        table.add_row(rule.bigquery, rule.pg, rule.arrow, rule.note)
    table.add_row("REPEATED <scalar>", "<type>[]", "list<...>", "an empty array is '{}'")
    out.print(table)
