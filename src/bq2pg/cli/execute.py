"""Running a resolved job: its plan (estimates, budget) first, then the load and its summary.

``bq2pg copy``, ``bq2pg patents``, ``bq2pg run JOB`` and ``bq2pg plan JOB`` all end here: the
options and the configuration became one :class:`~bq2pg.config.file.Resolved` job, which is
turned into the library's request, planned, checked against the budget and run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.table import Table

from bq2pg import __version__
from bq2pg.cli import configured
from bq2pg.cli.shared import RichProgress, err, out, split_list
from bq2pg.config import jobs as config_jobs
from bq2pg.config import secrets
from bq2pg.config.file import Resolved
from bq2pg.engine import copy as copy_engine
from bq2pg.engine import estimate, publishing
from bq2pg.engine.result import RunResult
from bq2pg.engine.run import run_job
from bq2pg.errors import EXIT_DEAD_LETTERS, ConfigError
from bq2pg.lineage import emit as lineage_emit
from bq2pg.observe import metrics, tracing
from bq2pg.observe.log import get_logger
from bq2pg.patents import pipeline as patents_pipeline
from bq2pg.patents import quality as patents_quality
from bq2pg.plan.tables import TablePlan
from bq2pg.quality import rules

log = get_logger(__name__)


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


def execute(resolved: Resolved, cfg: config_jobs.Config, *, plan_only: bool = False) -> None:
    """Plan the job, refuse it when over budget, then (unless only planning) run it."""
    values = resolved.values
    if resolved.kind == "copy" and not values.get("source"):
        require_source(values)  # says what is missing before anything connects
    url = configured.database_url(resolved, cfg)
    src = configured.source(resolved)
    if resolved.kind == "copy":
        copy = copy_request(values, url)
        job = copy_engine.build_job(src, copy)
        label = f"copy {copy.source}"
    else:
        patents = patents_request(values, url)
        job = patents_pipeline.build_job(src, patents)
        label = f"patents {patents.source}"
    job = dataclasses.replace(job, **quality_options(resolved, cfg, job.plan))
    price = values.get("price_per_tib_usd")
    plan = estimate.estimate(
        src, job, price_per_tib_usd=estimate.PRICE_PER_TIB_USD if price is None else price
    )
    only = plan_only or values.get("dry_run")
    title = f"plan of {resolved.name or label}" + ("" if only else " (before the run)")
    (out if only else err).print(
        title + "\n  " + "\n  ".join(estimate.lines(plan)), markup=False, highlight=False
    )
    estimate.check_budget(plan, max_bytes=values.get("max_bytes"), max_usd=values.get("max_usd"))
    if only:
        out.print("nothing was loaded (a plan only)", markup=False)
        return
    job = dataclasses.replace(job, estimate=plan.as_dict(), name=resolved.name)
    with observed(values, job.label, job.plan.qualified):
        if resolved.kind == "copy":
            _run(label, lambda progress: run_job(src, job, progress))
        else:
            _run(label, lambda progress: patents_pipeline.run_built(src, patents, job, progress))


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


@contextlib.contextmanager
def observed(values: dict[str, Any], job: str, target_table: str) -> Iterator[None]:
    """Around a run: serve its metrics (``metrics_port``), export its traces
    (``otlp_endpoint`` or OpenTelemetry's variables) and, when it ends, push its metrics
    (``pushgateway``) — whether it succeeded or failed."""
    metrics.set_version(__version__)
    if values.get("metrics_port"):
        metrics.serve(int(values["metrics_port"]))
        log.info("metrics.serving", port=int(values["metrics_port"]))
    provider = tracing.configure(values.get("otlp_endpoint"), version=__version__)
    try:
        yield
    finally:
        if values.get("metrics_port") and values.get("metrics_linger"):
            log.info("metrics.lingering", seconds=float(values["metrics_linger"]))
            time.sleep(float(values["metrics_linger"]))
        if values.get("pushgateway"):
            try:
                metrics.push(values["pushgateway"], job, {"target_table": target_table})
                log.info("metrics.pushed", gateway=values["pushgateway"])
            except OSError as exc:  # the run's outcome stands; the push is a report of it
                log.warning("metrics.push_failed", gateway=values["pushgateway"], error=str(exc))
        if provider is not None:
            provider.shutdown()  # flushes the spans still queued
            tracing.use(None)


def quality_summary(result: RunResult) -> None:
    """The quality rules' outcome: the score, and every failed rule with its examples."""
    if result.skip_quality:
        err.print("[yellow]quality rules skipped (--skip-quality): recorded with the run")
        return
    if not result.quality:
        return
    failed = [o for o in result.quality if not o.passed]
    score = result.quality_score
    out.print(
        f"quality: {len(result.quality) - len(failed)} of {len(result.quality)} rule(s) passed"
        + (f", score {score:.1f}/100" if score is not None else "")
    )
    for o in failed:
        err.print(f"quality warning: {publishing.describe(o)}", style="yellow", markup=False,
                  highlight=False)  # fmt: skip


def _run(label: str, job: Callable[[RichProgress], RunResult]) -> None:
    """Run ``job`` with a progress bar on stderr, then print its summary."""
    progress = RichProgress(label)
    try:
        result = job(progress)
    finally:
        progress.stop()
    summary(result)
    if result.dead_letters:
        raise typer.Exit(EXIT_DEAD_LETTERS)


def summary(result: RunResult) -> None:
    """Print a run's summary: rows, bytes and rates per table, verification, dead letters."""
    table = Table(title=f"{result.source} → {result.target} ({result.mode})", title_justify="left")
    for name in ("table", "rows", "MB", "seconds", "rows/s"):
        table.add_column(name, justify="left" if name == "table" else "right")
    for t in result.tables:
        table.add_row(
            t.name, f"{t.rows:,}", f"{t.bytes / 1e6:,.1f}", f"{t.seconds:,.2f}",
            f"{t.rows_per_second:,.0f}",
        )  # fmt: skip
    out.print(table)
    out.print(
        f"{result.rows_read:,} rows read in {result.seconds:,.2f} s "
        f"({result.rows_per_second:,.0f} rows/s end to end; load {result.load_seconds:,.2f} s, "
        f"publish {result.publish_seconds:,.2f} s; {result.bytes / 1e6:,.1f} MB via COPY, "
        f"{result.streams} stream{'s' if result.streams != 1 else ''}); run {result.run_id}"
    )
    counted = len(result.tables) - len(result.checksummed)
    out.print(
        f"verified against the ledger: row counts of {len(result.tables)} table(s)"
        + (f", content checksums of {len(result.checksummed)}" if result.checksummed else "")
        + (f" ({counted} without checksummable columns)" if result.checksummed and counted else "")
    )
    quality_summary(result)
    for f in result.anomalies:
        err.print(f"unusual run ({f.method}): {f.message}", style="yellow", markup=False,
                  highlight=False)  # fmt: skip
    if result.duplicates_collapsed:
        out.print(f"[yellow]{result.duplicates_collapsed:,} duplicate keys collapsed by merge")
    if result.dead_letters:
        err.print(
            f"[yellow]{result.dead_letters:,} row(s) rejected by PostgreSQL are in "
            f"bq2pg.dead_letters (run {result.run_id}); the other rows loaded"
        )
