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
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from bq2pg import __version__, ddl, pipeline, typemap
from bq2pg.config import Settings, redact
from bq2pg.errors import Bq2pgError, ConfigError, VerificationError
from bq2pg.source import Source

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
dlq_app = typer.Typer(help="Rows PostgreSQL rejected (bq2pg.dead_letters).", no_args_is_help=True)
state_app = typer.Typer(help="Runs and their ledger (schema bq2pg).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(state_app, name="state")
DatabaseOpt = Annotated[
    str | None, typer.Option("--database", help="PostgreSQL URL [env: BQ2PG_DATABASE_URL].")
]


def _table(rows: list[dict], columns: list[str], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r[c]) for c in columns))
    out.print(table)


@dlq_app.command("list")
def dlq_list(
    database: DatabaseOpt = None,
    target: Annotated[str | None, typer.Option(help="SCHEMA.TABLE")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
) -> None:
    """List dead letters (without their rows)."""
    from bq2pg import deadletter, load

    with load.connect(_database_url(database)) as conn:
        rows = deadletter.listing(conn, target=target, run_id=run)
    cols = ["id", "run_id", "target", "row_offset", "sqlstate", "error", "created_at"]
    _table(rows, cols, f"{len(rows)} dead letter(s)")


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[int, typer.Argument(help="Dead letter id.")], database: DatabaseOpt = None
) -> None:
    """Show one dead letter, its error context and its raw row."""
    from bq2pg import deadletter, load

    with load.connect(_database_url(database)) as conn:
        row = deadletter.show(conn, letter_id)
    if row is None:
        raise ConfigError(f"no dead letter {letter_id}")
    for key, value in row.items():
        out.print(f"{key}: {value}", markup=False, highlight=False, soft_wrap=True)


@dlq_app.command("replay")
def dlq_replay(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE whose dead letters to replay.")],
    database: DatabaseOpt = None,
    letter_ids: Annotated[
        list[int] | None, typer.Option("--id", help="Only this dead letter (repeatable).")
    ] = None,
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
) -> None:
    """Load dead-lettered rows again, once the target or the mapping is fixed."""
    from bq2pg import load, replay, state

    with load.connect(_database_url(database)) as conn:
        state.ensure(conn)
        done = replay.replay(
            conn,
            target,
            lambda: _source(project, bigquery_endpoint, bigquery_storage_endpoint),
            letter_ids or None,
        )
    out.print(f"{len(done.loaded):,} dead letter(s) replayed into {target}")
    for letter_id, error in sorted(done.failed.items()):
        err.print(f"[yellow]dead letter {letter_id} failed again: {error}", markup=True)
    if done.failed:
        raise typer.Exit(DEAD_LETTER_EXIT_CODE)


@dlq_app.command("purge")
def dlq_purge(
    database: DatabaseOpt = None,
    target: Annotated[str | None, typer.Option(help="SCHEMA.TABLE")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do it (dead letters are deleted).")] = False,
) -> None:
    """Delete dead letters (of a target or a run, or all)."""
    from bq2pg import deadletter, load

    if not yes:
        raise ConfigError("dlq purge deletes rows for good: add --yes")
    with load.connect(_database_url(database)) as conn:
        deleted = deadletter.purge(conn, target=target, run_id=run)
    out.print(f"{deleted:,} dead letter(s) deleted")


@state_app.command("show")
def state_show(
    target: Annotated[str | None, typer.Argument(help="SCHEMA.TABLE (default: all).")] = None,
    database: DatabaseOpt = None,
) -> None:
    """The latest runs, their status and their ledger."""
    from bq2pg import load, state

    with load.connect(_database_url(database)) as conn:
        state.ensure(conn)
        rows = state.runs(conn, target)
    cols = ["run_id", "target", "mode", "status", "started_at", "rows_read", "rows_loaded"]
    _table(rows, [*cols, "dead_letters", "chunks", "error"], "runs")
    if target:
        with load.connect(_database_url(database)) as conn:
            mark = state.watermark(conn, target)
        if mark:
            out.print(f"watermark: {mark[0]} >= {mark[1]}", markup=False, highlight=False)


@app.command()
def verify(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE loaded by bq2pg.")],
    database: DatabaseOpt = None,
) -> None:
    """Re-check a loaded table's row counts against the ledger of the runs that wrote it."""
    from bq2pg import load, state

    with load.connect(_database_url(database)) as conn:
        state.ensure(conn)
        report = state.verify_target(conn, target)
    _table(report, ["table", "ledger", "rows", "status"], f"verify {target}")
    if any(str(r["status"]).startswith("MISMATCH") for r in report):
        raise VerificationError(f"{target} does not hold the rows its runs committed")


@state_app.command("reset")
def state_reset(
    target: Annotated[str, typer.Argument(help="SCHEMA.TABLE")], database: DatabaseOpt = None
) -> None:
    """Forget a target's unfinished runs, so that the next run starts over."""
    from bq2pg import load, state

    with load.connect(_database_url(database)) as conn:
        state.ensure(conn)
        count = state.reset(conn, target)
    out.print(f"{count} unfinished run(s) of {target} forgotten")


#: Exit code of a run that loaded everything except rows now in bq2pg.dead_letters.
DEAD_LETTER_EXIT_CODE = 8

#: Width of tables when output goes to a file or a pipe (rich assumes 80 columns there).
PIPE_WIDTH = 160

out = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)

# Options shared by the commands that read BigQuery.
ProjectOpt = Annotated[
    str | None,
    typer.Option(help="Billing project for the read session (reading public data bills it)."),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--bigquery-endpoint",
        help="BigQuery REST endpoint of an emulator, e.g. http://127.0.0.1:9050 "
        "[env: BQ2PG_BIGQUERY_ENDPOINT]",
    ),
]
StorageEndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--bigquery-storage-endpoint",
        help="Storage Read API gRPC endpoint of an emulator, e.g. 127.0.0.1:9060 "
        "[env: BQ2PG_BIGQUERY_STORAGE_ENDPOINT]",
    ),
]
TableOpt = Annotated[
    str | None,
    typer.Option("--table", help="Target SCHEMA.NAME [default: public.<source table>]."),
]
ColumnsOpt = Annotated[
    str | None, typer.Option(help="Comma-separated source columns to copy (selected_fields).")
]
KeyOpt = Annotated[
    str | None,
    typer.Option(help="Key column(s), comma-separated: primary key, merge key, child-table key."),
]
NestedOpt = Annotated[
    str,
    typer.Option(help="REPEATED RECORD columns as 'jsonb' columns or as child 'tables'."),
]


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _nested(value: str) -> pipeline.Nested:
    if value not in ("jsonb", "tables"):
        raise ConfigError(f"--nested must be jsonb or tables, not {value!r}")
    return value  # type: ignore[return-value]


def _source(project: str | None, endpoint: str | None, storage_endpoint: str | None) -> Source:
    settings = Settings()
    return Source(
        project=project or settings.project,
        rest_endpoint=endpoint or settings.bigquery_endpoint,
        storage_endpoint=storage_endpoint or settings.bigquery_storage_endpoint,
    )


def _database_url(to: str | None) -> str:
    if to:
        return to
    settings = Settings()
    if settings.database_url is not None and settings.database_url.get_secret_value():
        return settings.database_url.get_secret_value()
    raise ConfigError("no target database: give --to postgresql://... or set BQ2PG_DATABASE_URL")


class _RateColumn(ProgressColumn):
    """Rows, megabytes and rows per second of the copy."""

    def render(self, task: Task) -> Text:
        mb = task.fields.get("nbytes", 0) / 1e6
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed else 0.0
        return Text(f"{int(task.completed):,} rows  {mb:,.1f} MB  {rate:,.0f} rows/s", "cyan")


class _RichProgress:
    """Draws the run's progress on stderr (a no-op when stderr is not a terminal)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
            disable=not err.is_terminal,
        )
        self.task: TaskID | None = None
        self.nbytes = 0

    def start(self, total_rows: int | None, streams: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task(
            f"{self.label} ({streams} stream{'s' if streams != 1 else ''})",
            total=total_rows,
            nbytes=0,
        )

    def advance(self, rows: int, nbytes: int) -> None:
        if self.task is None:
            return
        self.nbytes += nbytes
        self.bar.update(self.task, advance=rows, nbytes=self.nbytes)

    def phase(self, description: str) -> None:
        self.bar.stop()
        err.print(f"  {description}…", highlight=False, markup=False)

    def stop(self) -> None:
        self.bar.stop()


def _run(label: str, job: Callable[[_RichProgress], pipeline.RunResult]) -> None:
    """Run ``job`` with a progress bar on stderr, then print its summary."""
    progress = _RichProgress(label)
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


ExecutorOpt = Annotated[
    str,
    typer.Option(
        help="Where the streams run: local (threads here) or dask://HOST:PORT (needs bq2pg[dask]).",
        envvar="BQ2PG_EXECUTOR",
    ),
]
ChecksumOpt = Annotated[
    bool,
    typer.Option(
        "--checksum/--no-checksum",
        help="Verify a content checksum of every table besides its row count.",
    ),
]


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
        database_url=_database_url(to),
        table=table,
        columns=_split(columns),
        where=where,
        limit=limit,
        streams=streams or Settings().streams,
        mode=mode,  # type: ignore[arg-type]
        key=_split(key),
        nested=_nested(nested),
        drop=drop,
        incremental=incremental,
        lag=lag,
        checksum=checksum,
        executor=executor,
    )
    src = _source(project, bigquery_endpoint, bigquery_storage_endpoint)
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
    from bq2pg import patents as patents_module

    request = patents_module.PatentsRequest(
        database_url=_database_url(to),
        source=source,
        schema=schema_name,
        test=test,
        limit=limit,
        year=year,
        recent_days=recent_days,
        country=_split(country),
        kind=_split(kind),
        full_text=full_text,
        drop_tables=drop_tables,
        with_cpc_definitions=with_cpc_definitions,
        cpc_source=cpc_source,
        streams=streams or Settings().streams,
        checksum=checksum,
        executor=executor,
    )
    src = _source(project, bigquery_endpoint, bigquery_storage_endpoint)
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
        columns=_split(columns),
        key=_split(key),
        nested=_nested(nested),
    )
    src = _source(project, bigquery_endpoint, bigquery_storage_endpoint)
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
    from bq2pg import demo as demo_module

    settings = Settings()
    url = (
        to or (settings.database_url.get_secret_value() if settings.database_url else None) or None
    )
    err.print(f"Seeding the BigQuery emulator with {rows:,} patents publications…")
    progress = _RichProgress("patents patents-public-data.patents.publications")
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
    from bq2pg import features

    bar = Progress(
        TextColumn("[bold]export features"), _RowsColumn(), TimeElapsedColumn(), console=err,
        disable=not err.is_terminal,
    )  # fmt: skip
    with bar:
        task = bar.add_task("export", total=None)
        rows = features.export(
            _database_url(database),
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
    from bq2pg import demo as demo_module
    from bq2pg import emulator
    from bq2pg.source import Source

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
    from bq2pg import embedded

    server = embedded.start()
    out.print(server.url, markup=False, highlight=False)
    err.print(f"psql: {server.psql_command}", markup=False, highlight=False)


@postgres_app.command("stop")
def postgres_stop() -> None:
    """Stop the embedded PostgreSQL."""
    from bq2pg import embedded

    if embedded.stop():
        out.print("Stopped the embedded PostgreSQL.")
    else:
        out.print("The embedded PostgreSQL was not running.")


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
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
