"""Publishing a loaded run: verify, build keys, make the rows visible with the run's record,
then build indexes and statistics.

Verification scans and key builds run on several connections (``postgres.postload``); the
publish itself (swap, append or merge, the watermark, the run's status, dropping the side
tables) is one transaction on the run's own connection, which holds the target's lock. If that
connection is lost around the commit, the run's status says whether it committed, so a publish
is never applied twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

from bq2pg.config.settings import tuning
from bq2pg.engine import anomalies
from bq2pg.engine.job import Job
from bq2pg.errors import Bq2pgError, QualityGateError, TargetError
from bq2pg.observe import metrics, tracing
from bq2pg.observe.log import get_logger
from bq2pg.observe.progress import Progress
from bq2pg.plan import ddl
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import postload, target
from bq2pg.postgres import publish as tables
from bq2pg.postgres.connection import Connection
from bq2pg.postgres.lock import LockedConnection
from bq2pg.postgres.target import Mode, physical
from bq2pg.quality import anomaly, gate, profile, results, rules, verify
from bq2pg.state import audit, runs, watermarks

log = get_logger(__name__)

_VERIFYING = "verifying row counts and checksums against the ledger"
#: SQLSTATE of a duplicate key (a primary key build that finds one).
UNIQUE_VIOLATION = "23505"
#: Attempts at the post-publish statements (indexes, ANALYZE) across reconnections.
AFTER_PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class Published:
    """What publishing did: duplicate keys a merge collapsed, tables checksum-verified, and
    the quality rules' outcomes."""

    duplicates: int
    checksummed: list[str]
    quality: list[gate.Outcome]
    anomalies: list[anomaly.Finding]


def publish(
    conn: LockedConnection,
    job: Job,
    mode: Mode,
    progress: Progress,
    run_id: uuid.UUID,
    *,
    rows_read: int,
    rows_loaded: int,
    nbytes: int,
    started: float | None = None,
    retries: float = 0.0,
) -> Published:
    """Verify the run's side tables, then publish them with the run's status in one
    transaction; then indexes and ``ANALYZE`` (which never fail the run)."""
    plan = job.plan
    deadline = tuning().publish_timeout_s
    lanes = postload.lanes_for(job.streams, len(plan.all_tables()))
    progress.phase(_VERIFYING)
    metrics.progressed()
    with tracing.span("bq2pg.verify", **{"bq2pg.checksums": job.checksum}):
        checks = conn.call(
            "verifying",
            partial(
                verify.verify_run, database_url=job.database_url, plan=plan, mode=mode,
                run_id=run_id, with_checksums=job.checksum, lanes=lanes, deadline=deadline,
            ),
            deadline,
        )  # fmt: skip
    log.info("run.verified", tables=len(checks), checksummed=sum(c.checksummed for c in checks))
    table_rows = {c.table: c.rows or 0 for c in checks}
    # a key's unique rule is proved by the primary key replace builds anyway (no second sort)
    enforced = [] if job.skip_quality else _enforced_by_keys(job, mode)
    checked = [r for r in job.quality if r not in enforced]
    outcomes = _audit(conn, job, mode, progress, run_id, rows_read, table_rows, lanes, deadline,
                      checked)  # fmt: skip
    refuse = partial(_refuse, conn, job, mode, run_id, rows_read=rows_read,
                     rows_loaded=rows_loaded, nbytes=nbytes)  # fmt: skip
    if any(o.blocking for o in outcomes):
        _report(job, outcomes)
        refuse(outcomes)
    if mode == "replace":
        keyed = [(t, physical("replace", t)) for t in plan.all_tables() if t.key]
        if keyed:
            progress.phase(f"building the primary keys of {len(keyed)} table(s)")
        try:
            postload.add_primary_keys(
                job.database_url, keyed, lanes=postload.lanes_for(job.streams, len(keyed)),
                deadline=deadline,
            )  # fmt: skip
        except TargetError as exc:
            if exc.sqlstate != UNIQUE_VIOLATION or not enforced:
                raise
            # a duplicate key: the rules on the keys say where, with examples
            proof = _audit(conn, job, mode, progress, run_id, rows_read, table_rows, lanes,
                           deadline, enforced)  # fmt: skip
            if not any(o.blocking for o in proof):
                raise
            outcomes = _ordered(job, outcomes + proof)
            _report(job, outcomes)
            refuse(outcomes)
        outcomes = _ordered(job, outcomes + [
            gate.Outcome(r, table_rows.get(r.table.rpartition(".")[2], 0), 0, True, [],
                         "enforced by the primary key")
            for r in enforced
        ])  # fmt: skip
    if outcomes:
        _report(job, outcomes)
    unusual = _anomalies(conn, job, run_id, rows_read, rows_loaded, nbytes, started, retries,
                         outcomes)  # fmt: skip
    if any(f.severity == "error" for f in unusual):
        refuse(outcomes, unusual)
    progress.phase(
        {
            "replace": "swapping the new tables in",
            "merge": "merging the staged rows into the targets",
            "append": "appending the staged rows to the targets",
        }[mode]
    )

    def transaction(c: Connection) -> int:
        if runs.status(c, run_id) == "succeeded":  # committed, and the answer was lost
            log.warning("run.published_already", detail="its answer was lost")
            return 0
        duplicates = 0
        with c.transaction():
            if mode == "replace":
                tables.replace(c, plan)
            elif mode == "merge":
                duplicates = tables.merge(c, plan)
                if job.incremental is not None:  # before the staging tables go
                    stage = physical("merge", plan)
                    watermarks.advance(c, plan, job.incremental.column, stage, run_id)
            else:
                tables.append(c, plan)
            runs.finish(
                c, run_id, status="succeeded", rows_read=rows_read, rows_loaded=rows_loaded,
                nbytes=nbytes,
            )  # fmt: skip
            results.store(c, run_id, plan.qualified, outcomes)
            if unusual:
                anomalies.record(c, job, run_id, unusual)
            audit.record(
                c, audit.RUN_FINISHED, target=plan.qualified,
                arguments={"run_id": str(run_id), "rows_read": rows_read,
                           "rows_loaded": rows_loaded},
                outcome="succeeded",
            )  # fmt: skip
            if mode != "replace":
                tables.drop_side_tables(c, plan, mode)
        return duplicates

    metrics.progressed()
    with tracing.span("bq2pg.publish", **{"bq2pg.mode": mode}):
        duplicates = conn.call(f"publishing {plan.qualified}", transaction, deadline)
    log.info("run.published", mode=mode, rows_loaded=rows_loaded, duplicates=duplicates)
    if job.incremental is not None:
        with contextlib.suppress(Bq2pgError):  # a statistic: it must not fail a published run
            found = conn.call(
                "reading the watermark", lambda c: watermarks.read(c, plan.qualified), 60.0
            )
            if found is not None:
                metrics.set_watermark(plan.qualified, found[1])
    metrics.progressed()
    with tracing.span("bq2pg.postload", **{"bq2pg.indexes": len(job.indexes)}):
        _after(job, progress, deadline)
    with contextlib.suppress(Bq2pgError):  # a statistic: it must not fail a published run
        conn.call(
            "recording the size of the tables",
            lambda c: runs.record_pg_bytes(c, run_id, target.size(c, plan)),
            60.0,
        )
    if job.profile:
        with contextlib.suppress(Bq2pgError):  # a statistic: it must not fail a published run
            conn.call("profiling the tables", partial(_profile, plan, run_id), deadline)
        try:  # the null rates of the profile: reported, never failing a published run
            unusual += conn.call(
                "looking for unusual null rates",
                partial(anomalies.after_publishing, job=job, run_id=run_id), 60.0,
            )  # fmt: skip
        except Exception as exc:
            log.warning("anomaly.failed", error=str(exc))
    return Published(duplicates, [c.table for c in checks if c.checksummed], outcomes, unusual)


def _anomalies(
    conn: LockedConnection,
    job: Job,
    run_id: uuid.UUID,
    rows_read: int,
    rows_loaded: int,
    nbytes: int,
    started: float | None,
    retries: float,
    outcomes: list[gate.Outcome],
) -> list[anomaly.Finding]:
    """The run against its job's history (``engine.anomalies``); a failure to look is logged,
    never failing the run."""
    seconds = time.perf_counter() - started if started is not None else 0.0
    try:
        return conn.call(
            "looking for anomalies",
            partial(
                anomalies.before_publishing, job=job, run_id=run_id, rows_read=rows_read,
                nbytes=nbytes, dead_letters=rows_read - rows_loaded, seconds=seconds,
                retries=anomalies.retries_so_far() - retries, outcomes=outcomes,
            ),
            60.0,
        )  # fmt: skip
    except Exception as exc:
        log.warning("anomaly.failed", error=str(exc))
        return []


def _profile(plan: TablePlan, run_id: uuid.UUID, c: Connection) -> None:
    """Store each column's profile from the statistics ANALYZE just gathered (no scan)."""
    found = profile.profile(c, [t.qualified for t in plan.all_tables()])
    profile.store(c, run_id, found)
    log.debug("run.profiled", tables=len(found))


def _audit(
    conn: LockedConnection,
    job: Job,
    mode: Mode,
    progress: Progress,
    run_id: uuid.UUID,
    rows_read: int,
    table_rows: dict[str, int],
    lanes: int,
    deadline: float,
    checked: list[rules.Rule],
) -> list[gate.Outcome]:
    """Evaluate the ``checked`` quality rules on the side tables (write–audit–publish);
    nothing when ``--skip-quality`` (recorded with the run)."""
    plan = job.plan
    if job.skip_quality:

        def skipped(c: Connection) -> None:
            with c.transaction():
                runs.record_skip_quality(c, run_id)
                arguments = {"run_id": str(run_id), "rules": len(job.quality)}
                audit.record(c, audit.QUALITY_SKIPPED, target=plan.qualified, arguments=arguments)

        conn.call("recording --skip-quality", skipped, 60.0)
        log.warning("quality.skipped", rules=len(job.quality))
        return []
    if not checked:
        return []
    progress.phase(f"checking {len(checked)} quality rule(s)")
    metrics.progressed()
    names = [t.name for t in plan.all_tables()]
    previous = conn.call(
        "reading the previous run's rows",
        lambda c: results.previous_rows(c, plan.qualified, names), 60.0,
    )  # fmt: skip
    ctx = gate.Context(
        mode=mode, rows_read=rows_read, table_rows=table_rows, previous_rows=previous,
        samples=job.quality_samples,
    )  # fmt: skip
    with tracing.span("bq2pg.quality", **{"bq2pg.rules": len(checked)}):
        return gate.evaluate(job.database_url, plan, checked, ctx, lanes=lanes, deadline=deadline)


def _enforced_by_keys(job: Job, mode: Mode) -> list[rules.Rule]:
    """The ``unique`` rules on exactly a table's key, which the primary key that ``replace``
    builds before the swap proves (a duplicate makes the build fail, and then these rules are
    evaluated to say where)."""
    if mode != "replace":
        return []
    keys = {t.qualified: t.key for t in job.plan.all_tables() if t.key}
    return [
        r for r in job.quality
        if r.kind == "unique" and set(r.columns) == set(keys.get(r.table, ()))
        and not r.max_failing_rows and not r.max_failing_ratio
    ]  # fmt: skip


def _ordered(job: Job, outcomes: list[gate.Outcome]) -> list[gate.Outcome]:
    """Outcomes in the order of the job's rules."""
    order = {(r.table, r.name): i for i, r in enumerate(job.quality)}
    return sorted(outcomes, key=lambda o: order.get((o.rule.table, o.rule.name), len(order)))


def _report(job: Job, outcomes: list[gate.Outcome]) -> None:
    """Log every failed rule, and set the quality metrics of each table."""
    by_table: dict[str, list[gate.Outcome]] = {}
    for o in outcomes:
        by_table.setdefault(o.rule.table, []).append(o)
        if not o.passed:
            log.log(
                logging.ERROR if o.rule.severity == "error" else logging.WARNING,
                "quality.failed", table=o.rule.table, rule=o.rule.name,
                severity=o.rule.severity, failing=o.failing, evaluated=o.evaluated,
                detail=o.detail or None,
            )  # fmt: skip
    labels = (job.label, job.plan.qualified)
    for table, found in by_table.items():
        value = rules.score([(o.rule.severity, o.passed) for o in found])
        if value is not None:
            metrics.QUALITY_SCORE.labels(*labels, table).set(value / 100)
        for severity in ("error", "warn"):
            failing = sum(not o.passed and o.rule.severity == severity for o in found)
            metrics.QUALITY_RULES_FAILING.labels(*labels, table, severity).set(failing)
    total = rules.score([(o.rule.severity, o.passed) for o in outcomes])
    log.info("quality.checked", rules=len(outcomes), failed=sum(not o.passed for o in outcomes),
             score=None if total is None else round(total, 1))  # fmt: skip


def describe(outcome: gate.Outcome) -> str:
    """One failed rule in words: table, rule, failing count, examples."""
    o = outcome
    what = o.detail or f"{o.failing:,} of {o.evaluated:,} row(s) fail ({o.ratio:.2%})"
    examples = ""
    if o.samples:
        shown = ", ".join(json.dumps(s, default=str) for s in o.samples[:3])
        examples = f"; e.g. {shown}" + (" …" if len(o.samples) > 3 else "")
    return f"{o.rule.table} {o.rule.name} [{o.rule.severity}]: {what}{examples}"


def _refuse(
    conn: LockedConnection,
    job: Job,
    mode: Mode,
    run_id: uuid.UUID,
    outcomes: list[gate.Outcome],
    found: list[anomaly.Finding] | None = None,
    *,
    rows_read: int,
    rows_loaded: int,
    nbytes: int,
) -> NoReturn:
    """Record the failed gate (the outcomes and anomalies, status ``failed_quality``, the kept
    side tables) in one transaction, and stop the run: nothing is published."""
    blocking = [o for o in outcomes if o.blocking]
    found = found or []
    plan = job.plan
    message = (
        f"the quality gate of {plan.qualified} failed, nothing was published (the side tables "
        f"are kept for diagnosis until the next run or `bq2pg state reset`): "
        + "; ".join(
            [describe(o) for o in blocking]
            + [f"anomaly [error]: {f.message}" for f in found if f.severity == "error"]
        )
    )

    def record(c: Connection) -> None:
        sides = [ddl.ident(t.schema, physical(mode, t)).as_string(c) for t in plan.all_tables()]
        with c.transaction():
            results.store(c, run_id, plan.qualified, outcomes)
            if found:
                anomalies.record(c, job, run_id, found)
            runs.record_quality_failure(
                c, run_id, rows_read=rows_read, rows_loaded=rows_loaded, nbytes=nbytes,
                error=message, side_tables=sides,
            )  # fmt: skip
            audit.record(c, audit.RUN_FINISHED, target=plan.qualified,
                         arguments={"run_id": str(run_id), "failed_rules": [
                             f"{o.rule.table} {o.rule.name}" for o in blocking]},
                         outcome="failed_quality")  # fmt: skip

    conn.call("recording the failed quality gate", record, 60.0)
    raise QualityGateError(message, table=plan.qualified, failures=tuple(blocking))


def _after(job: Job, progress: Progress, deadline: float) -> None:
    """Indexes and statistics: the data and the run's status are committed, so these improve
    reading and must not fail the run (a re-run of an append would load it twice)."""
    plan = job.plan
    statements = [ddl.create_index(plan.schema, index) for index in job.indexes]
    statements += [ddl.analyze(t.schema, t.name) for t in plan.all_tables()]
    if job.indexes:
        progress.phase(f"building {len(job.indexes)} index(es)")
    postload.after_publish(
        job.database_url, statements, lanes=postload.lanes_for(job.streams, len(statements)),
        attempts=AFTER_PUBLISH_ATTEMPTS, deadline=deadline,
    )  # fmt: skip
