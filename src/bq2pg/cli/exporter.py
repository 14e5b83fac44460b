"""``bq2pg exporter``: serve Prometheus metrics read from the state tables at scrape time."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from bq2pg import __version__
from bq2pg import exporter as state_exporter
from bq2pg.cli import configured
from bq2pg.cli.shared import DatabaseOpt, err
from bq2pg.errors import ConfigError
from bq2pg.observe import metrics
from bq2pg.plan.watermark import parse_lag

app = typer.Typer(rich_markup_mode=None)


def expectations(values: list[str] | None) -> dict[str, float]:
    """``--expect NAME=DURATION`` options as seconds by job name or target table."""
    found: dict[str, float] = {}
    for value in values or []:
        name, sep, duration = value.partition("=")
        if not sep or not name or not duration:
            raise ConfigError(f"--expect {value!r}: give JOB=DURATION, e.g. nightly=1d")
        try:
            found[name] = parse_lag(duration)
        except ConfigError:
            raise ConfigError(
                f"--expect {value!r}: the duration is a number of seconds or like 30m, 2h, 1d"
            ) from None
    return found


@app.command()
def exporter(
    to: DatabaseOpt = None,
    port: Annotated[
        int, typer.Option(help="Port to serve /metrics on.", min=1, max=65535)
    ] = state_exporter.DEFAULT_PORT,
    addr: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    expect: Annotated[
        list[str] | None,
        typer.Option(
            help="JOB=DURATION (or TABLE=DURATION): the job should succeed at least this often "
            "(exported for the Bq2pgNoRecentSuccess alert); repeatable.",
        ),
    ] = None,
) -> None:
    """Serve Prometheus metrics read from bq2pg's state tables at scrape time, until stopped.

    Last success, duration and rows per job and table, runs in progress, dead letters pending
    and watermark lag, as bq2pg_state_* (see docs/operations.md).
    """
    url = configured.adhoc_database_url(to)
    metrics.set_version(__version__)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = state_exporter.serve(url, port=port, addr=addr, expected=expectations(expect))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {addr}:{port}: {exc}") from exc
    err.print(
        f"bq2pg exporter: serving http://{addr}:{port}/metrics (Ctrl-C stops)",
        markup=False,
        highlight=False,
    )
    stop.wait()
    shutdown = getattr(server, "shutdown", None)
    if callable(shutdown):
        shutdown()
