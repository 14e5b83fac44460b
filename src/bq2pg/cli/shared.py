"""What the commands of the ``bq2pg`` command line share: consoles, option types, helpers and
the progress display."""

from __future__ import annotations

import sys
from collections.abc import Sequence
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

from bq2pg.errors import ConfigError
from bq2pg.plan.tables import Nested

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
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Only resume the interrupted run of this job; exit 2 when there is none "
        "(a plain re-run resumes one too, or starts anew).",
    ),
]
NestedOpt = Annotated[
    str,
    typer.Option(help="REPEATED RECORD columns as 'jsonb' columns or as child 'tables'."),
]


def split_list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def nested_choice(value: str) -> Nested:
    if value not in ("jsonb", "tables"):
        raise ConfigError(f"--nested must be jsonb or tables, not {value!r}")
    return value  # type: ignore[return-value]


class _RateColumn(ProgressColumn):
    """Rows, megabytes and rows per second of the copy."""

    def render(self, task: Task) -> Text:
        mb = task.fields.get("nbytes", 0) / 1e6
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed else 0.0
        return Text(f"{int(task.completed):,} rows  {mb:,.1f} MB  {rate:,.0f} rows/s", "cyan")


class RichProgress:
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


#: The database of the state, dlq and verify commands; ``--to`` too, as copy and patents say.
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database", "--to", help="PostgreSQL URL [env: BQ2PG_DATABASE_URL]."),
]


def print_table(rows: Sequence[object], columns: list[str], title: str) -> None:
    """Print the ``columns`` attributes of ``rows`` (dataclasses) as a table."""
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        values = [getattr(r, c) for c in columns]
        table.add_row(*("" if v is None else str(v) for v in values))
    out.print(table)


ExecutorOpt = Annotated[
    str,
    typer.Option(
        help="Where the streams run: local (threads here) or dask://HOST:PORT (needs bq2pg[dask]) "
        "[env: BQ2PG_EXECUTOR].",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the plan (tables, streams, rows, bytes, cost, time, space) only."
    ),
]
MaxBytesOpt = Annotated[
    int | None,
    typer.Option(
        help="Refuse the run (exit 9) when it would read more than N bytes [bq2pg.yaml: "
        "budget.max_bytes].",
        min=0,
    ),
]
MaxUsdOpt = Annotated[
    float | None,
    typer.Option(
        help="Refuse the run (exit 9) when its estimated cost exceeds N US dollars "
        "[bq2pg.yaml: budget.max_usd].",
        min=0,
    ),
]
EmulatorOpt = Annotated[
    bool | None,
    typer.Option(
        "--emulator/--no-emulator",
        help="The endpoints are an emulator that ignores read offsets [env: BQ2PG_EMULATOR; "
        "default: detected].",
        show_default=False,
    ),
]
ChecksumOpt = Annotated[
    bool,
    typer.Option(
        "--checksum/--no-checksum",
        help="Verify a content checksum of every table besides its row count.",
    ),
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        help="Serve Prometheus metrics on this port while the run runs (0: off) "
        "[bq2pg.yaml: metrics_port].",
        min=0,
        max=65535,
    ),
]
MetricsLingerOpt = Annotated[
    float | None,
    typer.Option(
        help="With --metrics-port: keep serving the metrics this many seconds after the run "
        "ends, so that Prometheus scrapes its outcome.",
        min=0,
    ),
]
PushgatewayOpt = Annotated[
    str | None,
    typer.Option(
        help="Push the run's metrics to this Prometheus Pushgateway when it ends, success or "
        "failure (grouped by job and target table).",
    ),
]
OtlpEndpointOpt = Annotated[
    str | None,
    typer.Option(
        help="Export traces over OTLP to this endpoint (http://HOST:4318 for HTTP, "
        "http://HOST:4317 for gRPC) [env: OTEL_EXPORTER_OTLP_ENDPOINT; default: off].",
    ),
]
QualityFileOpt = Annotated[
    str | None,
    typer.Option(
        "--quality",
        help="A quality rules file (YAML: quality: {TABLE: [rules]}); its rules join those of "
        "bq2pg.yaml and are evaluated before publishing [bq2pg.yaml: quality_file].",
        show_default=False,
    ),
]
SkipQualityOpt = Annotated[
    bool,
    typer.Option(
        "--skip-quality",
        help="Publish without evaluating the quality rules (recorded with the run and in the "
        "audit trail).",
    ),
]
ProfileOpt = Annotated[
    bool,
    typer.Option(
        "--profile/--no-profile",
        help="After publishing, store each column's profile (from ANALYZE's statistics: no "
        "extra scan) in bq2pg.profiles.",
    ),
]
