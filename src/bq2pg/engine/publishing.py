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
import uuid
from dataclasses import dataclass
from functools import partial

from bq2pg.config.settings import tuning
from bq2pg.engine.job import Job
from bq2pg.errors import Bq2pgError
from bq2pg.observe import metrics, tracing
from bq2pg.observe.log import get_logger
from bq2pg.observe.progress import Progress
from bq2pg.plan import ddl
from bq2pg.postgres import postload, target
from bq2pg.postgres import publish as tables
from bq2pg.postgres.connection import Connection
from bq2pg.postgres.lock import LockedConnection
from bq2pg.postgres.target import Mode, physical
from bq2pg.quality import verify
from bq2pg.state import runs, watermarks

log = get_logger(__name__)

_VERIFYING = "verifying row counts and checksums against the ledger"
#: Attempts at the post-publish statements (indexes, ANALYZE) across reconnections.
AFTER_PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class Published:
    """What publishing did: duplicate keys a merge collapsed, tables checksum-verified."""

    duplicates: int
    checksummed: list[str]


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
    if mode == "replace":
        keyed = [(t, physical("replace", t)) for t in plan.all_tables() if t.key]
        if keyed:
            progress.phase(f"building the primary keys of {len(keyed)} table(s)")
        postload.add_primary_keys(
            job.database_url, keyed, lanes=postload.lanes_for(job.streams, len(keyed)),
            deadline=deadline,
        )  # fmt: skip
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
    return Published(duplicates, [c.table for c in checks if c.checksummed])


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
