"""``bq2pg patents``: the Google Patents publications table as an indexed relational model.

The same engine as ``copy`` (one read session, parallel streams, COPY, progress, summary) with
the model's tables (``model``) and reshaping (``transform``). Filters are pushed down to the
Storage Read API as ``row_restriction`` on the INT64 ``YYYYMMDD`` and code columns, so they cost
no query job; full-text columns are not even read unless ``full_text`` is asked for.

The first load (or one with ``drop_tables``) loads fresh tables and swaps them in; later runs
merge on ``publication_number`` (child rows of every loaded publication are replaced), so a
re-run, or a run over an overlapping filter, leaves one consistent model. Indexes are built
after the load, then ``ANALYZE``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from functools import partial

from bq2pg.bigquery.client import Source, TableRef
from bq2pg.config.settings import DEFAULT_STREAMS
from bq2pg.engine import dask as executor
from bq2pg.engine.copy import CopyRequest, copy_table
from bq2pg.engine.job import Job
from bq2pg.engine.result import RunResult
from bq2pg.engine.run import run_job
from bq2pg.errors import ConfigError
from bq2pg.observe.progress import Progress
from bq2pg.patents import lineage as patents_lineage
from bq2pg.patents import model
from bq2pg.patents import source as publications
from bq2pg.patents.transform import Splitter
from bq2pg.plan.tables import Index

#: The CPC scheme: one row per symbol, with its titles (camelCase columns, lower-cased here).
CPC_SOURCE = "patents-public-data.cpc.definition"
#: Rows loaded by ``--test``.
TEST_ROWS = 100
#: Source columns the model cannot do without (present in every snapshot since 2017).
REQUIRED = ("publication_number", "country_code", "kind_code", "publication_date")

_COUNTRY = re.compile(r"^[A-Z]{2}$")
_KIND = re.compile(r"^[A-Z][A-Z0-9]{0,2}$")


@dataclass(frozen=True)
class PatentsRequest:
    """The options of ``bq2pg patents``."""

    database_url: str = field(repr=False)
    source: str = publications.SOURCE_TABLE
    schema: str = model.MODEL_SCHEMA
    test: bool = False
    limit: int | None = None
    year: int | None = None
    recent_days: int | None = None
    country: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    full_text: bool = False
    drop_tables: bool = False
    #: Also load the CPC scheme (``cpc_source``) into ``cpc_definitions``, keyed by ``symbol``.
    with_cpc_definitions: bool = False
    cpc_source: str = CPC_SOURCE
    streams: int = DEFAULT_STREAMS
    #: Verify content checksums besides row counts.
    checksum: bool = True
    #: Where the streams run: ``local`` or ``dask://HOST:PORT`` (``executor``).
    executor: str = "local"
    #: "today" for --recent-days (tests pin it); the UTC date when None.
    today: dt.date | None = None
    #: Only resume the interrupted run of this job (fail when there is none).
    resume: bool = False

    def arguments(self) -> dict[str, object]:
        """The request as stored with the run (without the database URL, nor ``resume``)."""
        args = asdict(self)
        args.pop("database_url")
        args.pop("resume")
        args["today"] = str(self.today) if self.today else None
        return args


def _codes(values: tuple[str, ...], pattern: re.Pattern[str], what: str) -> list[str]:
    codes = [v.strip().upper() for v in values if v.strip()]
    bad = [c for c in codes if not pattern.match(c)]
    if bad:
        raise ConfigError(f"--{what} {', '.join(bad)}: not a {what} code (e.g. US, DE / B1, A1)")
    return codes


def row_restriction(request: PatentsRequest) -> str | None:
    """The ``row_restriction`` for the request's filters (values validated, never spliced raw)."""
    parts = []
    if request.year is not None:
        if not 1700 <= request.year <= 9999:
            raise ConfigError(f"--year {request.year}: give a year such as 2020")
        parts.append(f"publication_date BETWEEN {request.year}0101 AND {request.year}1231")
    if request.recent_days is not None:
        if request.recent_days < 0:
            raise ConfigError("--recent-days must be 0 or more")
        today = request.today or dt.datetime.now(dt.UTC).date()
        since = today - dt.timedelta(days=request.recent_days)
        parts.append(f"publication_date >= {since:%Y%m%d}")
    for column, values, pattern, what in (
        ("country_code", request.country, _COUNTRY, "country"),
        ("kind_code", request.kind, _KIND, "kind"),
    ):
        codes = _codes(values, pattern, what)
        if codes:
            parts.append(f"{column} IN ({', '.join(repr(c) for c in codes)})")
    return " AND ".join(parts) or None


#: The indexes built after a load (``IF NOT EXISTS``: merges keep the ones they have).
INDEXES = (
    Index(
        "publications",
        "publications_country_date_idx",
        "btree",
        ("country_code", "publication_date"),
    ),
    Index("publications", "publications_family_idx", "btree", ("family_id",)),
    Index("publications", "publications_filing_date_idx", "btree", ("filing_date",)),
    Index("publications", "publications_grant_date_idx", "btree", ("grant_date",)),
    Index("publications", "publications_cpc_codes_idx", "gin", ("cpc_codes",)),
    Index("publications", "publications_ipc_codes_idx", "gin", ("ipc_codes",)),
    Index(
        "publication_citations",
        "publication_citations_cited_idx",
        "btree",
        ("cited_publication_number",),
    ),
    Index("publication_cpc", "publication_cpc_code_idx", "btree", ("code",)),
)


def run(source: Source, request: PatentsRequest, progress: Progress | None = None) -> RunResult:
    """Load the patents model from ``request.source`` into ``request.database_url``."""
    return run_built(source, request, build_job(source, request), progress)


def build_job(source: Source, request: PatentsRequest) -> Job:
    """The job that loads the publications (reads the source schema, loads nothing)."""
    ref = TableRef.parse(request.source)
    where = row_restriction(request)
    limit = TEST_ROWS if request.test else request.limit
    if limit is not None and limit < 0:
        raise ConfigError("--limit must be 0 or more")
    executor.check(request.executor)
    info = source.table(ref)
    names = {f.name for f in info.fields}
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ConfigError(
            f"{ref} is not a patents publications table: it has no {', '.join(missing)}"
        )
    selected = [
        f.name
        for f in info.fields
        if f.name in {p.name for p in publications.PUBLICATIONS}
        and (request.full_text or f.name not in publications.FULL_TEXT_COLUMNS)
    ]
    plan = model.model(request.schema, full_text=request.full_text)
    return Job(
        ref=ref,
        database_url=request.database_url,
        plan=plan,
        kind="patents",
        request=request.arguments(),
        selected=selected,
        where=where,
        limit=limit,
        streams=request.streams,
        # a first load (or one after dropping) replaces, later ones merge: decided by the run,
        # under the target's lock
        mode="auto",
        drop_tables=(
            tuple(model.model(plan.schema, full_text=True).all_tables())
            if request.drop_tables
            else ()
        ),
        splitter=partial(Splitter, plan, full_text=request.full_text),  # picklable (Dask)
        indexes=INDEXES,
        total_rows=None if where else info.num_rows,
        checksum=request.checksum,
        executor=request.executor,
        resume_only=request.resume,
        lineage=tuple(patents_lineage.for_model(plan)),
        source_fields=tuple(f for f in info.fields if f.name in selected),
    )


def run_built(
    source: Source, request: PatentsRequest, job: Job, progress: Progress | None = None
) -> RunResult:
    """Run the publications ``job`` built from ``request`` (then the CPC scheme, if asked)."""
    result = run_job(source, job, progress)
    if request.with_cpc_definitions:
        cpc = copy_table(
            source,
            CopyRequest(
                source=request.cpc_source,
                database_url=request.database_url,
                table=f"{request.schema}.cpc_definitions",
                key=("symbol",),
                mode="replace",
                streams=request.streams,
                checksum=request.checksum,
            ),
            progress,
        )
        result = dataclasses.replace(
            result,
            tables=[*result.tables, *cpc.tables],
            checksummed=[*result.checksummed, *cpc.checksummed],
        )
    return result
