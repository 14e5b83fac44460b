"""Where the commands meet the configuration: the file and environment chosen, the flags a
user gave, and the connections a resolved job makes (secret references resolved here, at
run time, and never stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from bq2pg.bigquery.client import Source
from bq2pg.config import jobs as config_jobs
from bq2pg.runner import database_url, source

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        help="The configuration file [env: BQ2PG_CONFIG; default: ./bq2pg.yaml if present].",
        show_default=False,
    ),
]
EnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env", help="The environment of the configuration file to use [env: BQ2PG_ENV]."
    ),
]


@dataclass
class _Chosen:
    config: str | None = None
    env: str | None = None


#: The file and environment chosen before the command (``bq2pg --env production run …``).
chosen = _Chosen()
_loaded: dict[tuple[str | None, str | None], config_jobs.Config] = {}


def configuration(config: str | None = None, env: str | None = None) -> config_jobs.Config:
    """The configuration (read once per file and environment)."""
    key = (config or chosen.config, env or chosen.env)
    if key not in _loaded:
        _loaded[key] = config_jobs.load(*key)
    return _loaded[key]


def given(ctx: typer.Context, rename: dict[str, str] | None = None) -> dict[str, Any]:
    """The options given on the command line (not their defaults), by configuration key."""
    rename = rename or {}
    found: dict[str, Any] = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            found[rename.get(name, name)] = value
    return {k: v for k, v in found.items() if k not in ("config", "env")}


def adhoc_database_url(to: str | None) -> str:
    """The database of a command that takes ``--to`` alone (state, dlq, verify, export)."""
    cfg = configuration()
    return database_url(cfg.adhoc("copy", {"target": to}), cfg)


def adhoc_source(project: str | None, endpoint: str | None, storage_endpoint: str | None) -> Source:
    """The source of a command that takes the BigQuery options alone (schema, dlq replay)."""
    flags = {
        "project": project,
        "bigquery_endpoint": endpoint,
        "bigquery_storage_endpoint": storage_endpoint,
    }
    return source(configuration().adhoc("copy", flags))
