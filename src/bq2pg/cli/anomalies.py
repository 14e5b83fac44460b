"""``bq2pg anomalies [JOB]``: the unusual runs found (``bq2pg.anomalies``), newest first."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, Literal

import typer
from rich.table import Table
from rich.text import Text

from bq2pg.cli import configured
from bq2pg.cli.shared import DatabaseOpt, out
from bq2pg.postgres.connection import session
from bq2pg.state import anomalies as stored
from bq2pg.state import schema

app = typer.Typer(rich_markup_mode=None)
_COLUMNS = ("detected", "run", "job", "target", "metric", "method", "severity", "message")


@app.command()
def anomalies(
    job: Annotated[
        str | None, typer.Argument(help="Only this job, or target SCHEMA.TABLE (default: all).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most N findings (the latest).", min=1)] = 50,
    output: Annotated[
        Literal["table", "json"], typer.Option("--format", help="A table, or a JSON list.")
    ] = "table",
    database: DatabaseOpt = None,
) -> None:
    """Runs that were unusual for their job: volume, speed, size, dead letters, retries,
    quality score or a column's null rate far from the job's history."""
    url = configured.adhoc_database_url(database)
    with session(url, "reading anomalies") as conn:
        schema.ensure(conn)
        found = stored.listing(conn, job, limit)
    if output == "json":
        typer.echo(json.dumps([_as_dict(a) for a in found], indent=2, ensure_ascii=False))
        return
    _print(found, job)


def _as_dict(row: stored.AnomalyRow) -> dict[str, Any]:
    values = dataclasses.asdict(row)
    values["run_id"] = None if row.run_id is None else str(row.run_id)
    values["detected_at"] = row.detected_at.isoformat()
    return values


def _print(found: list[stored.AnomalyRow], job: str | None) -> None:
    """The findings as a table; cells are plain text (a message may hold brackets)."""
    title = f"{len(found)} anomal{'y' if len(found) == 1 else 'ies'}" + (
        f" of {job}" if job else ""
    )
    table = Table(title=title, title_justify="left")
    for name in _COLUMNS:
        table.add_column(name, overflow="fold" if name == "message" else "ellipsis")
    for a in found:
        cells = (
            a.detected_at.isoformat(sep=" ", timespec="seconds"),
            "" if a.run_id is None else str(a.run_id)[:8],
            a.job or "",
            a.target,
            a.metric,
            a.method,
            a.severity,
            a.message,
        )
        table.add_row(*(Text(c) for c in cells))
    out.print(table)
