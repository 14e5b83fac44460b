"""``bq2pg lineage``: where a table's columns come from and where they go, from recorded runs."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from bq2pg.cli import configured
from bq2pg.cli.shared import DatabaseOpt, out
from bq2pg.errors import ConfigError
from bq2pg.lineage import graph

app = typer.Typer(rich_markup_mode=None)


@app.command()
def lineage(
    table: Annotated[
        str,
        typer.Argument(
            help="SCHEMA.TABLE, DATABASE.SCHEMA.TABLE, a BigQuery PROJECT.DATASET.TABLE, or an "
            "exported file."
        ),
    ],
    upstream: Annotated[
        bool, typer.Option("--upstream", help="Only what the table is made from.")
    ] = False,
    downstream: Annotated[
        bool, typer.Option("--downstream", help="Only what is made from the table.")
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="text, mermaid (flowchart), dot (Graphviz) or json.")
    ] = "text",
    database: DatabaseOpt = None,
) -> None:
    """The lineage graph around TABLE: BigQuery fields -> PostgreSQL columns -> exported
    features, recorded by runs and exports (both directions unless one is asked)."""
    if fmt not in graph.FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(graph.FORMATS)}")
    direction: graph.Direction = "both"
    if upstream != downstream:
        direction = "upstream" if upstream else "downstream"
    view = graph.load(configured.adhoc_database_url(database)).around(table, direction)
    out.print(
        graph.render(view, cast(graph.Format, fmt)),
        markup=False,
        highlight=False,
        emoji=False,
        soft_wrap=True,
    )
