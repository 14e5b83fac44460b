"""The ``bq2pg`` command line: a thin adapter over the library.

Each command parses its options, calls one library function, and shows the result; errors
become exit codes in one place (:func:`main`). Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from bq2pg import __version__
from bq2pg.bigquery.client import Source
from bq2pg.cli import state as cli_state
from bq2pg.cli.shared import (
    DEAD_LETTER_EXIT_CODE,
    ChecksumOpt,
    ColumnsOpt,
    EndpointOpt,
    ExecutorOpt,
    KeyOpt,
    NestedOpt,
    ProjectOpt,
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
from bq2pg.config.settings import Settings, redact
from bq2pg.engine import copy as pipeline
from bq2pg.errors import Bq2pgError, ConfigError
from bq2pg.plan import ddl, typemap

app = typer.Typer(
    help="Copy BigQuery tables into PostgreSQL: fast, lossless, nested data as child tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
emulator_app = typer.Typer(help="The local BigQuery emulator.", no_args_is_help=True)
export_app = typer.Typer(help="Export analysis data from a loaded model.", no_args_is_help=True)
postgres_app = typer.Typer(help="The embedded PostgreSQL server.", no_args_is_help=True)
app.add_typer(emulator_app, name="emulator")
app.add_typer(postgres_app, name="postgres")
app.add_typer(export_app, name="export")


def _run(label: str, job: Callable[[RichProgress], pipeline.RunResult]) -> None:
    """Run ``job`` with a progress bar on stderr, then print its summary."""
    progress = RichProgress(label)
    try:
        result = job(progress)
    finally:
        progress.stop()
    _summary(result)
    if result.dead_letters:
        raise typer.Exit(DEAD_LETTER_EXIT_CODE)


def _summary(result: pipeline.RunResult) -> None:
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


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="Generated patents rows to seed.", min=0)] = 10_000,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Target PostgreSQL URL [env: BQ2PG_DATABASE_URL; default: the embedded server].",
        ),
    ] = None,
    streams: Annotated[int | None, typer.Option(help="Parallel read streams.", min=1)] = None,
    full_text: Annotated[
        bool, typer.Option("--full-text", help="Also load claims and descriptions.")
    ] = False,
) -> None:
    """Run the whole product locally: emulator, patents data, embedded PostgreSQL, patents model."""
    from bq2pg.local import demo as demo_module

    settings = Settings()
    url = (
        to or (settings.database_url.get_secret_value() if settings.database_url else None) or None
    )
    err.print(f"Seeding the BigQuery emulator with {rows:,} patents publications…")
    progress = RichProgress("patents patents-public-data.patents.publications")
    try:
        result = demo_module.run(
            rows=rows,
            database_url=url,
            streams=streams or settings.streams,
            full_text=full_text,
            progress=progress,
        )
    finally:
        progress.stop()
    err.print(f"Seeded {rows:,} rows in {result.seed_seconds:.1f} s (Parquet load job).")
    _summary(result.run)
    if result.psql_command:
        out.print("\nLook at the result:")
        out.print(f"  {result.psql_command}", markup=False, highlight=False, soft_wrap=True)
        out.print(
            "  e.g. SELECT code, count(*) FROM patents.publication_cpc GROUP BY 1 "
            "ORDER BY 2 DESC LIMIT 10;",
            markup=False,
            soft_wrap=True,
        )
        out.print("Stop the embedded PostgreSQL with: bq2pg postgres stop")
    else:
        out.print(f"\nLoaded into {redact(result.database_url)}", markup=False)


@export_app.command("features")
def export_features(
    to: Annotated[Path, typer.Option("--to", help="Output file: FILE.parquet or FILE.csv.")],
    database: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL holding the patents model [env: BQ2PG_DATABASE_URL]."),
    ] = None,
    schema_name: Annotated[str, typer.Option("--schema", help="Schema of the model.")] = "patents",
    where: Annotated[
        str | None,
        typer.Option(help="Condition on publications columns, e.g. \"country_code = 'US'\"."),
    ] = None,
) -> None:
    """One row of ML features per publication (see docs/features.md), streamed to a file."""
    from bq2pg.patents import features

    bar = Progress(
        TextColumn("[bold]export features"), _RowsColumn(), TimeElapsedColumn(), console=err,
        disable=not err.is_terminal,
    )  # fmt: skip
    with bar:
        task = bar.add_task("export", total=None)
        rows = features.export(
            database_url(database),
            to,
            schema=schema_name,
            where=where,
            progress=lambda n: bar.update(task, advance=n),
        )
    out.print(f"{rows:,} publications → {to}", markup=False, highlight=False)


class _RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{int(task.completed):,} rows", "cyan")


@emulator_app.command("start")
def emulator_start(
    rest_port: Annotated[int, typer.Option(help="REST port (0: a free one).")] = 9050,
    grpc_port: Annotated[int, typer.Option(help="Storage Read gRPC port (0: a free one).")] = 9060,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the emulator's data here (default: in memory).")
    ] = None,
    seed_rows: Annotated[
        int, typer.Option(help="Seed patents-public-data.patents.publications with N rows.")
    ] = 0,
) -> None:
    """Run the BigQuery emulator in the foreground until Ctrl-C."""
    from bq2pg.local import demo as demo_module
    from bq2pg.local import emulator

    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bq2pg-emulator-{os.getpid()}.log"
    emu = emulator.start(
        data_dir=data_dir, log_path=log_path, rest_port=rest_port or None,
        grpc_port=grpc_port or None,
    )  # fmt: skip
    try:
        if seed_rows:
            src = Source(
                project="patents-public-data",
                rest_endpoint=emu.rest_url,
                storage_endpoint=emu.grpc_endpoint,
            )
            seconds = demo_module.seed(src, seed_rows)
            err.print(f"Seeded {seed_rows:,} patents rows in {seconds:.1f} s.")
        out.print(f"BigQuery emulator running (log: {log_path}). Use it with:")
        out.print(f"  export BQ2PG_BIGQUERY_ENDPOINT={emu.rest_url}")
        out.print(f"  export BQ2PG_BIGQUERY_STORAGE_ENDPOINT={emu.grpc_endpoint}")
        out.print("Press Ctrl-C to stop.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while emu.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


@postgres_app.command("start")
def postgres_start() -> None:
    """Start the embedded PostgreSQL (or show the running one) and print its URL."""
    from bq2pg.local import embedded

    server = embedded.start()
    out.print(server.url, markup=False, highlight=False)
    err.print(f"psql: {server.psql_command}", markup=False, highlight=False)


@postgres_app.command("stop")
def postgres_stop() -> None:
    """Stop the embedded PostgreSQL."""
    from bq2pg.local import embedded

    if embedded.stop():
        out.print("Stopped the embedded PostgreSQL.")
    else:
        out.print("The embedded PostgreSQL was not running.")


app.command()(cli_state.verify)
app.add_typer(cli_state.dlq_app, name="dlq")
app.add_typer(cli_state.state_app, name="state")


def _version(value: bool) -> None:
    if value:
        out.print(f"bq2pg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Entry point of the ``bq2pg`` script: errors become messages and exit codes."""
    try:
        code = app(standalone_mode=False)  # a typer.Exit comes back as its code
        if isinstance(code, int) and code:
            sys.exit(code)
    except Bq2pgError as exc:
        err.print(Text.assemble(("error: ", "bold red"), redact(str(exc))), highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors and the unexpected
        # typer >= 0.22 raises its own copy of click's exceptions (typer._click), older ones
        # click's: both have show() and exit_code
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
