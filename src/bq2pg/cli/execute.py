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

from bq2pg import __version__, runner
from bq2pg.cli.shared import RichProgress, err, out
from bq2pg.config import jobs as config_jobs
from bq2pg.config.file import Resolved
from bq2pg.engine import estimate, publishing
from bq2pg.engine.result import RunResult
from bq2pg.errors import EXIT_DEAD_LETTERS
from bq2pg.observe import metrics, tracing
from bq2pg.observe.log import get_logger

log = get_logger(__name__)


def execute(resolved: Resolved, cfg: config_jobs.Config, *, plan_only: bool = False) -> None:
    """Plan the job, refuse it when over budget, then (unless only planning) run it."""
    values = resolved.values
    built = runner.build(resolved, cfg)
    label, job = built.label, built.job
    plan = runner.estimate_of(built, values)
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
    built = dataclasses.replace(built, job=job)
    with observed(values, job.label, job.plan.qualified):
        _run(label, lambda progress: runner.run(built, progress))


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
