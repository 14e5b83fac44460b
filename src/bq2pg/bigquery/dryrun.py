"""What BigQuery says a read will scan, for free: a dry-run query of the same projection and filter.

A dry run (``QueryJobConfig(dry_run=True)``) is validated and priced but never runs, and is not
billed; its ``total_bytes_processed`` counts the selected columns of the partitions the filter
keeps. It needs ``bigquery.jobs.create`` on the billing project, which a read-only principal
(``roles/bigquery.readSessionUser``) may lack: a refusal makes the estimate fall back to the
table's metadata, it does not fail the plan.

The bqemulator has no cost model: it answers a dry run with 0 bytes and runs the whole query,
so no dry run is ever sent to an emulator (``Source.emulated``).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.api_core import exceptions as gexc

from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.errors import translate

#: BigQuery's answers that mean "no dry run here" rather than "BigQuery failed": no permission
#: to create query jobs, a query BigQuery will not plan (a table that requires a partition
#: filter, say) or an endpoint that has no jobs API. The estimate then uses table metadata.
_REFUSALS = (
    gexc.Forbidden,
    gexc.Unauthorized,
    gexc.PermissionDenied,
    gexc.BadRequest,
    gexc.MethodNotAllowed,
    gexc.MethodNotImplemented,
)


@dataclass(frozen=True)
class DryRun:
    """Bytes a query of the read's columns and filter would scan (None: no dry run), and why."""

    bytes: int | None
    reason: str


def query(ref: TableRef, selected: list[str] | None, where: str | None) -> str:
    """The GoogleSQL query whose scan is the read's: its columns, its filter, no LIMIT (a
    LIMIT does not lower the bytes a query scans)."""
    columns = ", ".join(f"`{c.replace('`', '')}`" for c in selected) if selected else "*"
    # names of a parsed TableRef and of the table's schema; the filter is the one the read
    # session sends as its row_restriction (validated by plan.filters); and it is never run
    text = f"SELECT {columns} FROM `{ref.project}.{ref.dataset}.{ref.table}`"  # noqa: S608
    return f"{text} WHERE {where}" if where else text


def dry_run(source: Source, ref: TableRef, selected: list[str] | None, where: str | None) -> DryRun:
    """Dry-run the read's query on ``source``: its bytes, or None and the reason there are none.

    Raises:
        SourceError: BigQuery failed otherwise (not found, unavailable after retries).
    """
    if source.emulated:
        return DryRun(
            None,
            "the endpoint is an emulator, which has no cost model (it answers a dry run with "
            "0 bytes and runs the whole query), so none is made",
        )
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
    try:
        job = source.bq.query(query(ref, selected, where), job_config=config)
    except _REFUSALS as exc:
        detail = (str(getattr(exc, "message", exc)).strip().splitlines() or [""])[0]
        needs = "" if isinstance(exc, gexc.BadRequest) else "; it needs bigquery.jobs.create"
        return DryRun(None, f"BigQuery refused it ({exc.__class__.__name__}: {detail}){needs}")
    except Exception as exc:
        raise translate(exc, f"dry-running a query of {ref}") from exc
    found = job.total_bytes_processed
    if found is None:
        return DryRun(None, "the dry run answered without totalBytesProcessed")
    return DryRun(int(found), "of the same columns and filter")


def dry_run_bytes(
    source: Source, ref: TableRef, selected: list[str] | None, where: str | None
) -> int | None:
    """Bytes a query of ``selected`` (None: every column) of ``ref`` filtered by ``where``
    scans, as a dry run says; None on an emulator or when the endpoint refuses."""
    return dry_run(source, ref, selected, where).bytes
