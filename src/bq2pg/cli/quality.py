"""``bq2pg quality show [RUN|TABLE]``: the quality rules' outcomes of a run, with its score."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Literal

import typer
from rich.table import Table

from bq2pg.cli import configured
from bq2pg.cli.shared import DatabaseOpt, out
from bq2pg.postgres.connection import session
from bq2pg.quality import results
from bq2pg.quality.rules import score
from bq2pg.state import schema

quality_app = typer.Typer(
    help="Quality rules' outcomes (bq2pg.quality_results).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _run_id(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@quality_app.command("show")
def show(
    which: Annotated[
        str | None,
        typer.Argument(
            help="A run id, or a table (schema.table: the latest run that checked it); "
            "default: the latest checked run.",
            show_default=False,
        ),
    ] = None,
    database: DatabaseOpt = None,
    history: Annotated[
        bool, typer.Option("--all", help="Every checked run of TABLE, not only the latest.")
    ] = False,
    fmt: Annotated[Literal["table", "json"], typer.Option("--format")] = "table",
) -> None:
    """Show the quality rules' outcomes of a run: each rule, its failing rows, examples, and
    the score per table (0–100, severity-weighted share of rules passed)."""
    url = configured.adhoc_database_url(database)
    run_id = _run_id(which)
    with session(url, "reading the quality results") as conn:
        schema.ensure(conn)
        found = results.listing(
            conn, run_id=run_id, table=None if run_id else which, latest=not history
        )
        statuses = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT run_id, status FROM bq2pg.runs WHERE run_id = ANY(%s)",
                [list({r.run_id for r in found if r.run_id})],
            ).fetchall()
        }
    if not found:
        out.print(f"no quality results{f' for {which}' if which else ''}", markup=False)
        raise typer.Exit(1 if which else 0)
    runs = list(dict.fromkeys(r.run_id for r in found))
    if fmt == "json":
        shown = [_as_json(rid, [r for r in found if r.run_id == rid], statuses) for rid in runs]
        out.print_json(json.dumps(shown if history else shown[0], default=str))
        return
    for rid in runs:
        _table(rid, [r for r in found if r.run_id == rid], statuses.get(rid, "?"))


def _as_json(
    run_id: uuid.UUID | None, found: list[results.Result], statuses: dict[uuid.UUID, str]
) -> dict[str, object]:
    return {
        "run_id": str(run_id),
        "status": statuses.get(run_id) if run_id else None,
        "score": score([(r.severity, r.passed) for r in found]),
        "scores": results.scores(found),
        "results": [
            {
                "table": r.table_name,
                "rule": r.rule,
                "name": r.name,
                "severity": r.severity,
                "evaluated": r.evaluated,
                "failing": r.failing,
                "ratio": r.ratio,
                "passed": r.passed,
                "samples": r.samples,
                "definition": r.definition,
                "checked_at": r.checked_at.isoformat(),
            }
            for r in found
        ],
    }


def _table(run_id: uuid.UUID | None, found: list[results.Result], status: str) -> None:
    total = score([(r.severity, r.passed) for r in found])
    title = f"run {run_id} ({status}): quality score " + (
        f"{total:.1f}/100" if total is not None else "-"
    )
    table = Table(title=title, title_justify="left")
    for name in ("table", "rule", "severity", "evaluated", "failing", "ratio", "passed"):
        table.add_column(name, justify="right" if name in ("evaluated", "failing") else "left")
    for r in found:
        table.add_row(
            r.table_name, r.name, r.severity, f"{r.evaluated:,}", f"{r.failing:,}",
            f"{(r.ratio or 0):.2%}", "yes" if r.passed else "NO",
        )  # fmt: skip
    out.print(table)
    for table_name, value in results.scores(found).items():
        out.print(f"  {table_name}: score {value:.1f}/100" if value is not None else "")
    for r in found:
        if not r.passed:
            detail = r.definition.get("detail") or ""
            examples = json.dumps(r.samples[:3], default=str) if r.samples else ""
            out.print(f"  {r.table_name} {r.name}: {detail} {examples}".rstrip(), markup=False,
                      highlight=False, soft_wrap=True)  # fmt: skip
