"""``bq2pg demo``, ``bq2pg emulator`` and ``bq2pg postgres``: the local, embedded default."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from bq2pg.bigquery.client import Source
from bq2pg.cli.execute import summary
from bq2pg.cli.shared import (
    RichProgress,
    err,
    out,
)
from bq2pg.config.secrets import redact
from bq2pg.config.settings import Settings

app = typer.Typer(rich_markup_mode=None)
emulator_app = typer.Typer(
    help="The local BigQuery emulator.", no_args_is_help=True, rich_markup_mode=None
)
postgres_app = typer.Typer(
    help="The embedded PostgreSQL server.", no_args_is_help=True, rich_markup_mode=None
)


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
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Serve the REST API and the dashboard with a worker (and an admin key) "
            "instead of running the job; until Ctrl-C.",
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="The API's port with --serve.", min=0)] = 8000,
) -> None:
    """Run the whole product locally: emulator, patents data, embedded PostgreSQL, patents model."""
    from bq2pg.local import demo as demo_module

    settings = Settings()
    url = (
        to or (settings.database_url.get_secret_value() if settings.database_url else None) or None
    )
    if serve:
        from bq2pg.service import demo as serve_demo

        def announce(base: str, key: str, config: Path) -> None:
            out.print(f"bq2pg is serving at {base}/ui (API docs: {base}/docs)", markup=False)
            out.print(f"configuration: {config}; stop with Ctrl-C", markup=False)
            out.print("admin API key (shown once; log in to /ui with it):", markup=False)
            out.print(key, markup=False, highlight=False, soft_wrap=True)

        err.print(f"Seeding the BigQuery emulator with {rows:,} patents publications…")
        serve_demo.run(rows=rows, database_url=url, host="127.0.0.1", port=port,
                       announce=announce)  # fmt: skip
        return
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
    summary(result.run)
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
                emulator=True,
            )
            seconds = demo_module.seed(src, seed_rows)
            err.print(f"Seeded {seed_rows:,} patents rows in {seconds:.1f} s.")
        out.print(f"BigQuery emulator running (log: {log_path}). Use it with:")
        out.print(f"  export BQ2PG_BIGQUERY_ENDPOINT={emu.rest_url}")
        out.print(f"  export BQ2PG_BIGQUERY_STORAGE_ENDPOINT={emu.grpc_endpoint}")
        out.print("  export BQ2PG_EMULATOR=true")
        out.print("or in bq2pg.yaml:")
        out.print("  sources:\n    default:")
        out.print(f"      bigquery_endpoint: {emu.rest_url}")
        out.print(f"      bigquery_storage_endpoint: {emu.grpc_endpoint}")
        out.print("      emulator: true")
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
