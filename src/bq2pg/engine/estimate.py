"""The plan of a run, with its cost: what ``bq2pg plan`` (and every run, before it reads) says.

Nothing is loaded or billed, and every number says where it came from: rows and bytes from the
table's metadata (``numRows``, ``numBytes``; the selected columns' share weighed by type width,
:data:`TYPE_WIDTH_BYTES`; scaled down by ``--limit``), or on real BigQuery from a dry-run query
of the same columns and filter (``bigquery.dryrun``); cost from :data:`PRICE_PER_TIB_USD`; time
and space from the target's earlier runs (``state.runs.history``), else from
:data:`DEFAULT_ROWS_PER_SECOND` and :data:`PG_BYTES_PER_BYTE_READ`; free space from the
target's tablespace where the server can tell. The target is only read, in a read-only
transaction; when it cannot be reached the estimate still comes back, with those numbers
unknown and a note: a plan works before the database exists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bq2pg.bigquery import dryrun
from bq2pg.bigquery.client import Source
from bq2pg.engine.job import Job
from bq2pg.errors import BudgetExceededError, ConfigError, TargetError, TransientSourceError
from bq2pg.plan.tables import Field
from bq2pg.postgres.connection import session
from bq2pg.postgres.space import free_space
from bq2pg.state import runs

#: On-demand list price of the Storage Read API in USD per TiB read (US multi-region; other
#: regions cost more), https://cloud.google.com/bigquery/pricing#data_extraction_pricing
#: ("starting at $1.10 per TiB read", as quoted from that page in 2026).
PRICE_PER_TIB_USD = 1.10
#: The Storage Read API's free tier: the first 300 TiB read each month, per billing account
#: (same page; also https://climbtheladder.com/is-bigquery-free-how-the-free-tier-actually-works/).
FREE_TIB_PER_MONTH = 300
TIB = 2**40
#: Rows per second assumed when the target has no earlier run: the slowest end-to-end rate in
#: docs/benchmarks.md ("Copy end to end": 100,000 wide publications with full text, --nested
#: tables, 2 streams, 2 cores, verification and keys included: 3,103 rows/s), rounded down.
#: Narrow rows load far faster (500,000 flat rows at 345,000 rows/s): this errs long.
DEFAULT_ROWS_PER_SECOND = 3_000
#: PostgreSQL bytes (heap, TOAST, indexes) per BigQuery byte read, when no earlier run recorded
#: its size. Measured with bq2pg copy into the embedded PostgreSQL, against BigQuery's own size
#: rules (https://cloud.google.com/bigquery/docs/storage_overview#data_type_sizes): 20,000
#: generated publications 0.53× (--nested jsonb: TOAST compresses the text) and 0.94× (--nested
#: tables); 100,000 flat rows (bigint, 2 double, timestamptz, short text) 2.37×, where 24-byte
#: tuple headers and the primary key weigh most. The largest, rounded up: a plan errs on the
#: side of space.
PG_BYTES_PER_BYTE_READ = 2.5
#: Typical bytes of one value, by BigQuery type, to weigh the selected columns' share of a
#: table's bytes. Fixed widths are BigQuery's (data_type_sizes above); STRING and BYTES are
#: "2 + length", taken as a 30-byte value; JSON and GEOGRAPHY (16 + 24 per vertex) as small
#: documents and shapes. A RECORD weighs its fields; a REPEATED field :data:`REPEATED_ELEMENTS`
#: elements.
TYPE_WIDTH_BYTES = {
    "BOOL": 1, "INT64": 8, "FLOAT64": 8, "NUMERIC": 16, "BIGNUMERIC": 32, "STRING": 32,
    "BYTES": 32, "DATE": 8, "TIME": 8, "DATETIME": 8, "TIMESTAMP": 8, "INTERVAL": 16,
    "JSON": 64, "GEOGRAPHY": 64, "RANGE": 16,
}  # fmt: skip
#: Width of a type missing from :data:`TYPE_WIDTH_BYTES`.
OTHER_WIDTH_BYTES = 16
#: Elements assumed in an array (REPEATED field) of unknown length.
REPEATED_ELEMENTS = 4
#: The form of :meth:`Estimate.as_dict` (stored in ``bq2pg.runs.plan``).
PLAN_FORMAT = 1
#: SQLSTATEs of a database without bq2pg's state tables: no earlier runs, not an error.
_NO_STATE = ("42P01", "3F000")


@dataclass(frozen=True)
class Estimate:
    """A run's plan: what it creates and reads, and what that costs, each with its source."""

    tables: list[str]
    streams: int
    rows: int | None
    rows_source: str
    bytes: int | None
    bytes_source: str
    usd: float | None
    price_per_tib_usd: float
    seconds: float | None
    seconds_source: str
    pg_bytes: int | None
    pg_bytes_source: str
    free_bytes: int | None
    free_source: str
    notes: list[str] = field(default_factory=list)
    #: ``rows`` is an upper bound: a filter keeps an unknown share of them.
    rows_at_most: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The estimate as JSON-able values (``bq2pg.runs.plan``)."""
        return {"format": PLAN_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """The estimate :meth:`as_dict` gave (keys it does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        return cls(**{**values, "tables": list(data["tables"]), "notes": list(data["notes"])})


def field_width(f: Field) -> int:
    """Typical bytes of one value of ``f`` (:data:`TYPE_WIDTH_BYTES`)."""
    if f.is_record:
        width = sum(field_width(s) for s in f.fields)
    else:
        width = TYPE_WIDTH_BYTES.get(f.type.split("<")[0], OTHER_WIDTH_BYTES)
    return width * REPEATED_ELEMENTS if f.repeated else width


def column_share(fields: list[Field], selected: list[str] | None) -> float:
    """The share of a table's bytes in its ``selected`` columns (None: all), by typical width."""
    if selected is None:
        return 1.0
    wanted = {s.lower() for s in selected}
    total = sum(field_width(f) for f in fields)
    part = sum(field_width(f) for f in fields if f.name.lower() in wanted)
    return part / total if total else 1.0


def _rows(job: Job, num_rows: int | None) -> tuple[int | None, str, bool]:
    """(rows, where that came from, whether it is an upper bound)."""
    filtered = bool(job.where) or job.incremental is not None
    if num_rows is None:
        return None, "unknown: tables.get gives no numRows (an external table?)", False
    rows, source = num_rows, "table metadata (numRows)"
    if job.limit is not None and job.limit < num_rows:
        rows, source = job.limit, f"table metadata (numRows {num_rows:,}), --limit"
    if job.where:
        source += "; the filter keeps an unknown share"
    if job.incremental is not None:
        source += "; incremental: only rows from the watermark on, read when the run starts"
    return rows, source, filtered


def _bytes(
    job: Job, fields: list[Field], num_rows: int | None, num_bytes: int | None, dry: dryrun.DryRun
) -> tuple[int | None, str]:
    """(bytes to read, where that came from): a dry run, else metadata, scaled to ``--limit``."""
    share = column_share(fields, job.selected)
    why = "" if dry.bytes is not None else f"; no dry run: {dry.reason}"
    if dry.bytes is not None:
        found, source = dry.bytes, f"dry-run query (totalBytesProcessed {dry.reason})"
    elif num_bytes:
        found = round(num_bytes * share)
        of = f" × {share:.1%}, the selected columns' share by type width" if share < 1 else ""
        source = f"table metadata (numBytes{of})"
    elif num_rows is not None:
        wanted = {s.lower() for s in job.selected or [f.name for f in fields]}
        width = sum(field_width(f) for f in fields if f.name.lower() in wanted)
        found = num_rows * width
        source = (
            f"table metadata (numRows × {width:,} bytes per row, the selected columns' typical "
            f"type widths, as numBytes is {num_bytes or 0})"
        )
    else:
        return None, f"unknown: tables.get gives neither numBytes nor numRows{why}"
    if job.limit is not None and num_rows and job.limit < num_rows:
        found = round(found * job.limit / num_rows)
        source += f", scaled to --limit {job.limit:,} of {num_rows:,} rows"
    return found, source + why


def _target(job: Job) -> tuple[runs.History | None, int | None, str, list[str]]:
    """Read the target's history and free space (read-only); unknown when it is unreachable."""
    history, free, notes = None, None, []
    try:
        with session(job.database_url, "reading the target's earlier runs") as conn:
            conn.read_only = True
            free = free_space(conn)
            with conn.transaction():
                history = runs.history(conn, job.plan.qualified)
    except TargetError as exc:
        if free is None:
            notes.append(f"PostgreSQL could not be reached, so time and space are defaults: {exc}")
        elif exc.sqlstate in _NO_STATE:
            notes.append("the database has no bq2pg state yet: no earlier runs")
        else:
            notes.append(f"the earlier runs could not be read: {exc}")
    except ConfigError as exc:
        notes.append(f"no PostgreSQL to ask, so time and space are defaults: {exc}")
    if free is None:
        return history, None, "PostgreSQL could not be reached", notes
    return history, free.bytes, free.how, notes


def estimate(source: Source, job: Job, *, price_per_tib_usd: float = PRICE_PER_TIB_USD) -> Estimate:
    """The plan of ``job``, loading nothing: tables, streams, rows, bytes, cost, time, space.

    Raises:
        SourceError: BigQuery refused or failed to describe the table.
    """
    info = source.table(job.ref)
    notes: list[str] = []
    try:
        dry = dryrun.dry_run(source, job.ref, job.selected, job.where)
    except TransientSourceError as exc:
        dry = dryrun.DryRun(None, f"it failed for now ({exc})")
    if source.emulated:
        notes.append("the source is an emulator: nothing is billed, the cost is BigQuery's")
    rows, rows_source, at_most = _rows(job, info.num_rows)
    nbytes, bytes_source = _bytes(job, info.fields, info.num_rows, info.num_bytes, dry)
    history, free_bytes, free_source, reached = _target(job)
    notes += reached
    seconds, seconds_source = _seconds(rows, history, job.plan.qualified)
    pg_bytes, pg_source = _pg_bytes(rows, nbytes, history)
    if pg_bytes is not None and free_bytes is not None and pg_bytes > free_bytes:
        notes.append(
            f"the tables need more than the {_size(free_bytes)} free: free space, or read less "
            "(--columns, --where, --limit)"
        )
    return Estimate(
        tables=[t.qualified for t in job.plan.all_tables()],
        streams=job.streams,
        rows=rows, rows_source=rows_source, rows_at_most=at_most,
        bytes=nbytes, bytes_source=bytes_source,
        usd=None if nbytes is None else nbytes / TIB * price_per_tib_usd,
        price_per_tib_usd=price_per_tib_usd,
        seconds=seconds, seconds_source=seconds_source,
        pg_bytes=pg_bytes, pg_bytes_source=pg_source,
        free_bytes=free_bytes, free_source=free_source,
        notes=notes,
    )  # fmt: skip


def _seconds(
    rows: int | None, history: runs.History | None, target: str
) -> tuple[float | None, str]:
    if rows is None:
        return None, "unknown: the rows to read are unknown"
    if history and history.rows > 0 and history.seconds > 0:
        rate = history.rows / history.seconds
        return rows / rate, f"earlier runs: {history.runs} run(s) of {target} at {rate:,.0f} rows/s"
    return rows / DEFAULT_ROWS_PER_SECOND, (
        f"default rate, {DEFAULT_ROWS_PER_SECOND:,} rows/s (docs/benchmarks.md, the slowest "
        f"end-to-end copy): no earlier run of {target}"
    )


def _pg_bytes(
    rows: int | None, nbytes: int | None, history: runs.History | None
) -> tuple[int | None, str]:
    if rows is not None and history and history.sized_rows > 0:
        per_row = history.sized_bytes / history.sized_rows
        return round(rows * per_row), f"earlier runs: {per_row:,.0f} bytes per row × rows"
    if nbytes is None:
        return None, "unknown: the bytes to read are unknown"
    return round(nbytes * PG_BYTES_PER_BYTE_READ), (
        f"{PG_BYTES_PER_BYTE_READ} × bytes to read: no earlier run recorded its size"
    )


def check_budget(estimate: Estimate, *, max_bytes: int | None, max_usd: float | None) -> None:
    """Refuse a run whose estimate exceeds a budget (before any read session is opened). The
    free tier is not deducted: the budget is for this run, whatever else the month read.

    Raises:
        BudgetExceededError: the bytes to read (or their cost) exceed ``max_bytes`` /
            ``max_usd``, or are unknown while a limit is set.
    """
    e = estimate
    checks = (
        (
            max_bytes,
            e.bytes,
            "--max-bytes / budget.max_bytes",
            lambda v: f"{_size(v)} ({v:,} bytes)",
        ),
        (max_usd, e.usd, "budget.max_usd", _usd),
    )
    for limit, value, names, show in checks:
        if limit is not None and value is None:
            raise BudgetExceededError(
                f"the bytes to read are unknown ({e.bytes_source}), so the budget {names} of "
                f"{show(limit)} cannot be checked; remove the limit to run anyway",
                hint="`bq2pg plan JOB` shows the estimate",
            )
        if limit is not None and value is not None and value > limit:
            raise BudgetExceededError(
                f"the run would read an estimated {_size(e.bytes)}, costing {_usd(e.usd)} at "
                f"${e.price_per_tib_usd:,.2f} per TiB (from {e.bytes_source}): above the "
                f"budget {names} of {show(limit)}",
                value=str(value),
                hint=f"raise the limit ({names}) to at least {show(value)}, or read less "
                "(--columns, --where, --limit)",
            )


def _usd(v: float | None) -> str:
    return "unknown" if v is None else f"${v:,.4f}"


def _size(n: int | None) -> str:
    """Bytes in binary units (BigQuery bills TiB, 2**40 bytes)."""
    if n is None:
        return "unknown"
    for unit, scale in (("TiB", TIB), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def _duration(s: float | None) -> str:
    if s is None:
        return "unknown"
    return f"{s:,.1f} s" if s < 120 else f"{s / 60:,.1f} min" if s < 7200 else f"{s / 3600:,.1f} h"


def lines(estimate: Estimate) -> list[str]:
    """The plan as lines for people: each number, then where it came from."""
    e = estimate
    rows = "unknown" if e.rows is None else f"{e.rows:,}"
    rows = f"at most {rows} (filtered)" if e.rows is not None and e.rows_at_most else rows
    return [
        f"tables to create:     {', '.join(e.tables)}",
        f"read streams:         up to {e.streams} (BigQuery may grant fewer)",
        f"rows to read:         {rows} — {e.rows_source}",
        f"bytes to read:        {_size(e.bytes)} — {e.bytes_source}",
        f"estimated cost:       {_usd(e.usd)} at ${e.price_per_tib_usd:,.2f} per TiB read "
        f"(Storage Read API, on demand; the first {FREE_TIB_PER_MONTH} TiB a month per billing "
        "account are free)",
        f"estimated time:       {_duration(e.seconds)} — {e.seconds_source}",
        f"space in PostgreSQL:  {_size(e.pg_bytes)} — {e.pg_bytes_source}",
        f"free space:           {_size(e.free_bytes)} — {e.free_source}",
        *(f"note: {n}" for n in e.notes),
    ]
