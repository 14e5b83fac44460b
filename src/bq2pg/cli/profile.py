"""``bq2pg profile``: column statistics of PostgreSQL tables from ANALYZE's sample (no scan),
stored in ``bq2pg.profiles``."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from rich.table import Table
from rich.text import Text

from bq2pg.cli import configured
from bq2pg.cli.shared import DatabaseOpt, out
from bq2pg.postgres.connection import session
from bq2pg.quality import profile as profiles
from bq2pg.state import schema

app = typer.Typer(rich_markup_mode=None)

#: Characters of a value shown in a table cell (values up to 1 kB reach pg_stats).
CELL_CHARS = 40
_NUMBERS = ("null %", "distinct", "width")


@app.command()
def profile(
    tables: Annotated[list[str], typer.Argument(help="SCHEMA.TABLE (public when bare).")],
    analyze: Annotated[
        bool, typer.Option("--analyze", help="Run ANALYZE first (a fresh sample).")
    ] = False,
    store: Annotated[
        bool,
        typer.Option("--store/--no-store", help="Store the profiles in bq2pg.profiles."),
    ] = True,
    output: Annotated[
        Literal["table", "json"], typer.Option("--format", help="Tables, or a JSON list.")
    ] = "table",
    database: DatabaseOpt = None,
) -> None:
    """Per column: NULL fraction, distinct values, min/max, most common values and average
    width, estimated from ANALYZE's statistics (pg_stats)."""
    url = configured.adhoc_database_url(database)
    with session(url, "profiling " + ", ".join(tables)) as conn:
        found = profiles.profile(conn, tables, analyze=analyze)
        if store:
            schema.ensure(conn)
            profiles.store(conn, None, found)
    if output == "json":
        typer.echo(json.dumps([p.as_dict() for p in found], indent=2, ensure_ascii=False))
        return
    for p in found:
        _print(p)


def _print(p: profiles.TableProfile) -> None:
    """One table's profile; cells are plain text (values may hold brackets)."""
    rows = "?" if p.row_estimate is None else f"{p.row_estimate:,}"
    analyzed = p.analyzed_at.isoformat(sep=" ", timespec="seconds") if p.analyzed_at else "never"
    table = Table(title=f"{p.table}: ~{rows} rows (analyzed {analyzed})", title_justify="left")
    for name in ("column", "type", "null %", "distinct", "min", "max", "most common", "width"):
        table.add_column(name, justify="right" if name in _NUMBERS else "left")
    for c in p.columns:
        common = ", ".join(f"{_short(v)} ({f:.0%})" for v, f in c.most_common)
        cells = (
            c.column,
            c.data_type,
            None if c.null_frac is None else f"{c.null_frac:.1%}",
            None if c.distinct_estimate is None else f"{c.distinct_estimate:,.0f}",
            _short(c.min_value),
            _short(c.max_value),
            common,
            c.avg_width,
        )
        table.add_row(*(Text("" if v is None else str(v)) for v in cells))
    out.print(table)


def _short(value: str | None) -> str | None:
    """``value`` cut to :data:`CELL_CHARS` characters."""
    if value is None or len(value) <= CELL_CHARS:
        return value
    return value[: CELL_CHARS - 1] + "…"
