"""``bq2pg audit``: the audit trail of the target database (``bq2pg.audit``), as a table or as
JSONL for a log pipeline."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Literal

import typer
from rich.table import Table
from rich.text import Text

from bq2pg.cli import configured
from bq2pg.cli.shared import DatabaseOpt, out
from bq2pg.errors import ConfigError
from bq2pg.plan.watermark import parse_lag
from bq2pg.postgres.connection import session
from bq2pg.state import audit as trail
from bq2pg.state import schema

app = typer.Typer(rich_markup_mode=None)


@app.command()
def audit(
    since: Annotated[
        str | None,
        typer.Option(
            help="Only entries since this time: an ISO date or time (2026-11-01, "
            "2026-11-01T08:00+01:00; UTC when it has no offset) or a duration back from "
            "now (90s, 15m, 2h, 1d)."
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="Only this action (run.started), or a group of them (dlq.*)."),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor (OS user, API key).")] = None,
    target: Annotated[str | None, typer.Option(help="Only this target (SCHEMA.TABLE).")] = None,
    limit: Annotated[int, typer.Option(help="At most N entries (the latest).", min=1)] = 1000,
    output: Annotated[
        Literal["table", "jsonl"],
        typer.Option("--format", help="A table, or one JSON object per line."),
    ] = "table",
    database: DatabaseOpt = None,
) -> None:
    """Who did what, when and where: runs, dead-letter replays and purges, resets, skipped
    quality gates (oldest first)."""
    start = parse_since(since, dt.datetime.now(dt.UTC))
    with session(configured.adhoc_database_url(database), "reading the audit trail") as conn:
        schema.ensure(conn)
        entries = trail.listing(
            conn, since=start, action=action, actor=actor, target=target, limit=limit
        )
    if output == "jsonl":
        for entry in entries:
            typer.echo(entry.as_json())
        return
    _print(entries)


def parse_since(text: str | None, now: dt.datetime) -> dt.datetime | None:
    """``--since``: an ISO date or time (UTC when it has no offset), or a duration before
    ``now`` (``2h``; a bare number is seconds, as ``--lag`` reads it)."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        pass  # not a time: a duration, or a mistake
    else:
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    try:
        return now - dt.timedelta(seconds=parse_lag(text))
    except ConfigError:
        raise ConfigError(
            f"--since {text!r}: give an ISO date or time (2026-11-01, 2026-11-01T08:00) or a "
            "duration (30m, 2h, 1d)",
            value=text,
        ) from None


def _print(entries: list[trail.AuditEntry]) -> None:
    """The entries as a table; cells are plain text (arguments hold brackets, not markup)."""
    table = Table(title=f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}",
                  title_justify="left")  # fmt: skip
    for name in ("id", "at", "actor", "host", "action", "target", "arguments", "outcome"):
        table.add_column(name)
    for e in entries:
        arguments = json.dumps(e.arguments, ensure_ascii=False, default=str)
        cells = (e.id, e.at.isoformat(sep=" ", timespec="seconds"), e.actor, e.host, e.action,
                 e.target, arguments, e.outcome)  # fmt: skip
        table.add_row(*(Text("" if c is None else str(c)) for c in cells))
    out.print(table)
