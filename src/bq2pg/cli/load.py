"""``bq2pg copy``, ``bq2pg patents``, ``bq2pg schema`` and ``bq2pg types``: loading, and what a
load would create."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bq2pg.cli import configured
from bq2pg.cli.configured import ConfigOpt, EnvOpt
from bq2pg.cli.execute import execute
from bq2pg.cli.shared import (
    ChecksumOpt,
    ColumnsOpt,
    DryRunOpt,
    EmulatorOpt,
    EndpointOpt,
    ExecutorOpt,
    KeyOpt,
    MaxBytesOpt,
    MaxUsdOpt,
    MetricsLingerOpt,
    MetricsPortOpt,
    NestedOpt,
    OtlpEndpointOpt,
    ProfileOpt,
    ProjectOpt,
    PushgatewayOpt,
    QualityFileOpt,
    ResumeOpt,
    SkipQualityOpt,
    StorageEndpointOpt,
    TableOpt,
    nested_choice,
    out,
    split_list,
)
from bq2pg.engine import copy as pipeline
from bq2pg.errors import ConfigError
from bq2pg.plan import ddl, typemap

app = typer.Typer(rich_markup_mode=None)


@app.command()
def copy(
    ctx: typer.Context,
    source: Annotated[
        str | None, typer.Argument(help="PROJECT.DATASET.TABLE to copy.", show_default=False)
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Target PostgreSQL URL, or the name of a target in bq2pg.yaml "
            "[env: BQ2PG_DATABASE_URL; default: libpq's PGHOST/PGDATABASE/PGSERVICE].",
        ),
    ] = None,
    table: TableOpt = None,
    columns: ColumnsOpt = None,
    where: Annotated[
        str | None, typer.Option(help="BigQuery SQL predicate pushed down as row_restriction.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Copy at most N rows.", min=0)] = None,
    streams: Annotated[
        int | None, typer.Option(help="Parallel read streams [default: CPU cores].", min=1)
    ] = None,
    mode: Annotated[str, typer.Option(help="replace, append or merge (needs --key).")] = "replace",
    key: KeyOpt = None,
    nested: NestedOpt = "jsonb",
    drop: Annotated[bool, typer.Option(help="Drop and recreate the target tables first.")] = False,
    incremental: Annotated[
        str | None,
        typer.Option(help="Read only rows at or above the last run's maximum of COLUMN."),
    ] = None,
    lag: Annotated[
        str | None, typer.Option(help="With --incremental: re-read this far back (2h, 1d, 100).")
    ] = None,
    checksum: ChecksumOpt = True,
    executor: ExecutorOpt = "local",
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    max_bytes: MaxBytesOpt = None,
    max_usd: MaxUsdOpt = None,
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
    emulator: EmulatorOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_linger: MetricsLingerOpt = None,
    pushgateway: PushgatewayOpt = None,
    otlp_endpoint: OtlpEndpointOpt = None,
    quality_file: QualityFileOpt = None,
    skip_quality: SkipQualityOpt = False,
    profile: ProfileOpt = True,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Copy a BigQuery table into PostgreSQL (options also from bq2pg.yaml's defaults)."""
    if mode not in ("replace", "append", "merge"):
        raise ConfigError(f"--mode must be replace, append or merge, not {mode!r}")
    nested_choice(nested)
    cfg = configured.configuration(config, env)
    execute(cfg.adhoc("copy", configured.given(ctx, {"to": "target"})), cfg)


@app.command()
def patents(
    ctx: typer.Context,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Target PostgreSQL URL, or the name of a target in bq2pg.yaml "
            "[env: BQ2PG_DATABASE_URL; default: libpq's PGHOST/PGDATABASE/PGSERVICE].",
        ),
    ] = None,
    source: Annotated[
        str, typer.Option(help="The publications table (or a dated snapshot of it).")
    ] = "patents-public-data.patents.publications",
    schema_name: Annotated[str, typer.Option("--schema", help="Target schema.")] = "patents",
    test: Annotated[bool, typer.Option("--test", help="Load 100 rows.")] = False,
    limit: Annotated[int | None, typer.Option(help="Load at most N rows.", min=0)] = None,
    year: Annotated[int | None, typer.Option(help="Publication year.")] = None,
    recent_days: Annotated[
        int | None, typer.Option(help="Published within the last N days.", min=0)
    ] = None,
    country: Annotated[str | None, typer.Option(help="Country codes, e.g. US,DE.")] = None,
    kind_codes: Annotated[
        str | None, typer.Option("--kind-codes", "--kind", help="Kind codes, e.g. B1,B2.")
    ] = None,
    full_text: Annotated[
        bool, typer.Option("--full-text", help="Also load claims and descriptions.")
    ] = False,
    drop_tables: Annotated[
        bool, typer.Option("--drop-tables", help="Drop the model's tables first.")
    ] = False,
    with_cpc_definitions: Annotated[
        bool,
        typer.Option(
            "--with-cpc-definitions", help="Also load the CPC scheme into cpc_definitions."
        ),
    ] = False,
    cpc_source: Annotated[
        str, typer.Option(help="The CPC scheme table.")
    ] = "patents-public-data.cpc.definition",
    streams: Annotated[int | None, typer.Option(help="Parallel read streams.", min=1)] = None,
    checksum: ChecksumOpt = True,
    executor: ExecutorOpt = "local",
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    max_bytes: MaxBytesOpt = None,
    max_usd: MaxUsdOpt = None,
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
    emulator: EmulatorOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_linger: MetricsLingerOpt = None,
    pushgateway: PushgatewayOpt = None,
    otlp_endpoint: OtlpEndpointOpt = None,
    quality_file: QualityFileOpt = None,
    skip_quality: SkipQualityOpt = False,
    profile: ProfileOpt = True,
    default_rules: Annotated[
        bool,
        typer.Option(
            "--default-rules/--no-default-rules",
            help="Evaluate the model's built-in quality rules (docs/quality.md) besides yours.",
        ),
    ] = True,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Load Google Patents publications into an indexed relational model."""
    cfg = configured.configuration(config, env)
    flags = configured.given(ctx, {"to": "target", "schema_name": "schema"})
    execute(cfg.adhoc("patents", flags), cfg)


@app.command()
def schema(
    source: Annotated[str, typer.Argument(help="PROJECT.DATASET.TABLE to describe.")],
    table: TableOpt = None,
    columns: ColumnsOpt = None,
    key: KeyOpt = None,
    nested: NestedOpt = "jsonb",
    project: ProjectOpt = None,
    bigquery_endpoint: EndpointOpt = None,
    bigquery_storage_endpoint: StorageEndpointOpt = None,
) -> None:
    """Print the PostgreSQL DDL that copy would create, without loading anything."""
    request = pipeline.CopyRequest(
        source=source,
        database_url="",
        table=table,
        columns=split_list(columns),
        key=split_list(key),
        nested=nested_choice(nested),
    )
    src = configured.adhoc_source(project, bigquery_endpoint, bigquery_storage_endpoint)
    plan, _, _ = pipeline.plan(src, request)
    out.print(ddl.render(plan), markup=False, highlight=False, soft_wrap=True)


@app.command()
def types() -> None:
    """Print how each BigQuery type is stored in PostgreSQL."""
    table = Table(title="BigQuery → PostgreSQL", title_justify="left")
    for name in ("BigQuery", "PostgreSQL", "Arrow (Storage Read API)", "note"):
        table.add_column(name)
    for rule in typemap.TYPES.values():
        table.add_row(rule.bigquery, rule.pg, rule.arrow, rule.note)
    table.add_row("REPEATED <scalar>", "<type>[]", "list<...>", "an empty array is '{}'")
    out.print(table)
