"""``bq2pg export``: analysis data from a loaded model."""

from __future__ import annotations

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
from rich.text import Text

from bq2pg.cli import configured
from bq2pg.cli.shared import (
    err,
    out,
)

export_app = typer.Typer(
    help="Export analysis data from a loaded model.", no_args_is_help=True, rich_markup_mode=None
)


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
    from bq2pg.patents import lineage as patents_lineage

    bar = Progress(
        TextColumn("[bold]export features"), _RowsColumn(), TimeElapsedColumn(), console=err,
        disable=not err.is_terminal,
    )  # fmt: skip
    with bar:
        task = bar.add_task("export", total=None)
        url = configured.adhoc_database_url(database)
        rows = features.export(
            url,
            to,
            schema=schema_name,
            where=where,
            progress=lambda n: bar.update(task, advance=n),
        )
    patents_lineage.record_features_export(url, to, schema_name)  # bq2pg lineage shows the file
    out.print(f"{rows:,} publications → {to}", markup=False, highlight=False)


class _RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{int(task.completed):,} rows", "cyan")
