"""From a resolved job of the configuration to a run: its connections, its library request,
its quality rules and settings, its :class:`~bq2pg.engine.job.Job`, its plan and its run.

The commands (``bq2pg copy``, ``patents``, ``run``, ``plan``) and the service's workers
(``bq2pg worker``) build and run jobs through these same functions, so that a job started from
the REST API is the job the command line would have run. Secret references are resolved here,
at run time, and never stored.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from bq2pg.bigquery.client import Source
from bq2pg.config import jobs as config_jobs
from bq2pg.config import secrets
from bq2pg.config.file import Resolved
from bq2pg.engine import copy as copy_engine
from bq2pg.engine import estimate
from bq2pg.engine.job import Job
from bq2pg.engine.result import RunResult
from bq2pg.engine.run import run_job
from bq2pg.errors import ConfigError
from bq2pg.lineage import emit as lineage_emit
from bq2pg.observe.log import get_logger
from bq2pg.observe.progress import Progress
from bq2pg.patents import pipeline as patents_pipeline
from bq2pg.patents import quality as patents_quality
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres.connection import check_url, compose, libpq_environment
from bq2pg.quality import rules

log = get_logger(__name__)


def split_list(value: str | None) -> tuple[str, ...]:
    """``a, b,c`` → ``('a', 'b', 'c')`` (None and empty → ())."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def require_source(values: dict[str, Any]) -> None:
    """A copy job names its source table (the argument, or ``source:`` in the job)."""
    if not values.get("source"):
        raise ConfigError(
            "missing argument SOURCE: give PROJECT.DATASET.TABLE (or `source:` in the job)"
        )


def copy_request(values: dict[str, Any], url: str) -> copy_engine.CopyRequest:
    """The library's request of a resolved ``copy`` job."""
    require_source(values)
    return copy_engine.CopyRequest(
        source=values["source"],
        database_url=url,
        table=values.get("table"),
        columns=split_list(values.get("columns")),
        where=values.get("where"),
        limit=values.get("limit"),
        streams=values["streams"],
        mode=values["mode"],
        key=split_list(values.get("key")),
        nested=values["nested"],
        drop=values["drop"],
        incremental=values.get("incremental"),
        lag=values.get("lag"),
        checksum=values["checksum"],
        executor=values["executor"],
        resume=values["resume"],
    )


def patents_request(values: dict[str, Any], url: str) -> patents_pipeline.PatentsRequest:
    """The library's request of a resolved ``patents`` job."""
    return patents_pipeline.PatentsRequest(
        database_url=url,
        source=values["source"],
        schema=values["schema"],
        test=values["test"],
        limit=values.get("limit"),
        year=values.get("year"),
        recent_days=values.get("recent_days"),
        country=split_list(values.get("country")),
        kind=split_list(values.get("kind_codes")),
        full_text=values["full_text"],
        drop_tables=values["drop_tables"],
        with_cpc_definitions=values["with_cpc_definitions"],
        cpc_source=values["cpc_source"],
        streams=values["streams"],
        checksum=values["checksum"],
        executor=values["executor"],
        resume=values["resume"],
    )


def quality_rules(resolved: Resolved, cfg: config_jobs.Config, plan: TablePlan) -> list[rules.Rule]:
    """The job's quality rules, checked against its tables before anything is read: the
    model's built-in ones (patents), then bq2pg.yaml's ``quality:`` section, then the job's
    ``quality:`` key, then ``--quality FILE`` (a later rule of the same table and name wins)."""
    values = resolved.values
    layers: list[list[rules.Rule]] = []
    if resolved.kind == "patents" and values.get("default_rules", True):
        layers.append(patents_quality.builtin(plan))
    section, origins = cfg.section("quality", "")
    for table, entries in section.items():
        layers.append(rules.parse({table: entries}, str(origins.get(table, "bq2pg.yaml"))))
    own = values.get("quality")
    if own:
        document = {plan.qualified: own} if isinstance(own, list) else own
        layers.append(rules.parse(document, str(resolved.origins.get("quality", "the job"))))
    if values.get("quality_file"):
        layers.append(rules.parse_file(values["quality_file"]))
    bound, ignored = rules.bind(rules.merge(*layers), plan)
    if ignored:
        log.info("quality.other_tables", tables=ignored, detail="rules of tables this run "
                 "does not write are ignored")  # fmt: skip
    return bound


def quality_options(resolved: Resolved, cfg: config_jobs.Config, plan: TablePlan) -> dict[str, Any]:
    """The job's quality, profile and anomaly settings (the library's ``Job`` fields)."""
    values = resolved.values
    found: dict[str, Any] = {
        "quality": tuple(quality_rules(resolved, cfg, plan)),
        "skip_quality": bool(values.get("skip_quality")),
        "profile": values.get("profile", True) is not False,
        "anomaly_severity": values.get("anomaly_severity") or "warn",
    }
    if values.get("quality_samples") is not None:
        found["quality_samples"] = int(values["quality_samples"])
    found["lineage_settings"] = lineage_settings(cfg)
    return found


def lineage_settings(cfg: config_jobs.Config) -> dict[str, Any] | None:
    """bq2pg.yaml's ``lineage:`` section, its secret references resolved, checked before the
    run (None: unset; OPENLINEAGE_URL / OPENLINEAGE_CONFIG may still turn lineage on)."""
    values, _ = cfg.section("lineage", "")
    settings = {
        k: secrets.resolve(str(v), what=f"lineage.{k}") if isinstance(v, str) else v
        for k, v in values.items()
        if v is not None
    }
    emitter = lineage_emit.from_settings(settings or None)  # a bad section fails here
    if emitter is not None:
        emitter.close()
    return settings or None


def database_url(resolved: Resolved, cfg: config_jobs.Config) -> str:
    """The connection string of a resolved job's target, its secrets resolved."""
    target = cfg.target(resolved.values.get("target"))
    if target is None:
        if libpq_environment():
            return ""
        raise ConfigError(
            "no target database: give --to postgresql://... (or the name of a target in "
            "bq2pg.yaml), set BQ2PG_DATABASE_URL, or libpq's PGHOST/PGDATABASE/PGSERVICE"
        )
    what = f"targets.{target.name}" if target.name else "the target URL"
    url = secrets.resolve(target.url, what=f"{what}.url") if target.url else None
    params = {k: secrets.resolve(v, what=f"{what}.{k}") for k, v in target.params.items()}
    if url and not params:
        check_url(url)
        return url
    return compose(url, params)


def source(resolved: Resolved) -> Source:
    """The BigQuery clients of a resolved job (its source's project, endpoints, emulation,
    credentials)."""
    values = resolved.values
    credentials = values.get("credentials")
    if credentials:
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
    return Source(
        project=values.get("project"),
        rest_endpoint=values.get("bigquery_endpoint"),
        storage_endpoint=values.get("bigquery_storage_endpoint"),
        emulator=values.get("emulator"),
    )


@dataclass(frozen=True)
class Built:
    """A resolved job made ready to plan and run: its source, its engine job, a label, and
    (patents) the request its pipeline runs."""

    source: Source
    job: Job
    label: str
    patents: patents_pipeline.PatentsRequest | None = None


def build(resolved: Resolved, cfg: config_jobs.Config) -> Built:
    """The :class:`Built` job of ``resolved``: connections, request, plan, quality settings.

    Raises:
        ConfigError: a missing source or target, a bad rule file, a bad lineage section.
    """
    values = resolved.values
    if resolved.kind == "copy" and not values.get("source"):
        require_source(values)  # says what is missing before anything connects
    url = database_url(resolved, cfg)
    src = source(resolved)
    patents: patents_pipeline.PatentsRequest | None = None
    if resolved.kind == "copy":
        copy = copy_request(values, url)
        job = copy_engine.build_job(src, copy)
        label = f"copy {copy.source}"
    else:
        patents = patents_request(values, url)
        job = patents_pipeline.build_job(src, patents)
        label = f"patents {patents.source}"
    job = dataclasses.replace(job, **quality_options(resolved, cfg, job.plan))
    return Built(src, job, label, patents)


def estimate_of(built: Built, values: dict[str, Any]) -> estimate.Estimate:
    """The plan of a built job (bytes, rows, cost), at the configured price per TiB."""
    price = values.get("price_per_tib_usd")
    return estimate.estimate(
        built.source,
        built.job,
        price_per_tib_usd=estimate.PRICE_PER_TIB_USD if price is None else price,
    )


def run(built: Built, progress: Progress | None = None) -> RunResult:
    """Run a built job (the patents pipeline or the copy engine)."""
    if built.patents is not None:
        return patents_pipeline.run_built(built.source, built.patents, built.job, progress)
    return run_job(built.source, built.job, progress)


def target_table(job: Resolved) -> str:
    """The table a job's runs are recorded under (``bq2pg.runs.target``), without connecting."""
    values = job.values
    if job.kind == "patents":
        return f"{values['schema']}.publications"
    table = values.get("table") or str(values.get("source", "")).rsplit(".", 1)[-1]
    return table if "." in table else f"public.{table}"
