"""The ``bq2pg`` command line: a thin adapter over the library.

Each command parses its options, calls one library function, and shows the result; errors
become exit codes in one place (:func:`main`). Progress goes to stderr, results to stdout. The
commands live in one module per group: ``load`` (copy, patents, schema, types), ``state``
(state, dlq, verify), ``local`` (demo, emulator, postgres), ``export``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer
from rich.text import Text

from bq2pg import __version__
from bq2pg.cli import anomalies as cli_anomalies
from bq2pg.cli import audit as cli_audit
from bq2pg.cli import configured, export, exporter, jobs, load, local
from bq2pg.cli import doctor as cli_doctor
from bq2pg.cli import lineage as cli_lineage
from bq2pg.cli import profile as cli_profile
from bq2pg.cli import quality as cli_quality
from bq2pg.cli import service as cli_service
from bq2pg.cli import state as cli_state
from bq2pg.cli.configured import ConfigOpt, EnvOpt
from bq2pg.cli.shared import (
    err,
    out,
)
from bq2pg.config.secrets import redact
from bq2pg.errors import Bq2pgError
from bq2pg.observe import log as logs

app = typer.Typer(
    help="Copy BigQuery tables into PostgreSQL: fast, lossless, nested data as child tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts hold [env: ...] and [default: ...]: plain text, not rich markup
    rich_markup_mode=None,
)
app.registered_commands += load.app.registered_commands
app.registered_commands += jobs.app.registered_commands
app.registered_commands += cli_doctor.app.registered_commands
app.registered_commands += exporter.app.registered_commands
app.add_typer(jobs.config_app, name="config")
app.registered_commands += local.app.registered_commands
app.add_typer(local.emulator_app, name="emulator")
app.add_typer(local.postgres_app, name="postgres")
app.add_typer(export.export_app, name="export")
app.command()(cli_state.verify)
app.add_typer(cli_state.dlq_app, name="dlq")
app.add_typer(cli_state.state_app, name="state")
app.add_typer(cli_quality.quality_app, name="quality")
app.registered_commands += cli_profile.app.registered_commands
app.registered_commands += cli_audit.app.registered_commands
app.registered_commands += cli_lineage.app.registered_commands
app.registered_commands += cli_anomalies.app.registered_commands
app.registered_commands += cli_service.app.registered_commands
app.add_typer(cli_service.keys_app, name="api-key")


def _version(value: bool) -> None:
    if value:
        out.print(f"bq2pg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="Debug mode: per-chunk timings, retries, SQL statements without values "
            "(-vv: the libraries' debug logs too).",
        ),
    ] = 0,
    log_format: Annotated[
        Literal["auto", "json", "console"],
        typer.Option(
            envvar="BQ2PG_LOG_FORMAT",
            help="Logs as JSON lines or readable lines; auto: readable on a terminal, JSON "
            "otherwise [env: BQ2PG_LOG_FORMAT].",
            show_envvar=False,
        ),
    ] = "auto",
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"],
        typer.Option(
            envvar="BQ2PG_LOG_LEVEL",
            help="The least severe level logged [env: BQ2PG_LOG_LEVEL].",
            show_envvar=False,
        ),
    ] = "info",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    configured.chosen.config, configured.chosen.env = config, env
    logs.configure(fmt=log_format, level=log_level, verbose=verbose, redact=redact, console=err)


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
        # typer >= 0.22 raises its own copy of click's exceptions (typer._click), older ones
        # click's: both have show() and exit_code
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
