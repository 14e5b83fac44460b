"""``bq2pg demo``: the whole product on one machine, with nothing but Python installed.

Starts the BigQuery emulator, seeds ``patents-public-data.patents.publications`` with
generated rows in the real 37-column schema (a Parquet load job, as fast as the emulator
takes them), starts the embedded PostgreSQL unless a server is given, and runs the patents
pipeline exactly as against production: Storage Read API in Arrow, parallel streams, the
relational model, COPY, indexes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from bq2pg.bigquery import client as source
from bq2pg.bigquery import seed as bq_seed
from bq2pg.config.settings import DEFAULT_STREAMS
from bq2pg.engine.result import RunResult
from bq2pg.local import embedded, emulator
from bq2pg.observe.progress import Progress
from bq2pg.patents import pipeline as patents
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate

log = logging.getLogger(__name__)

#: Rows the demo seeds by default: enough to show throughput, quick on a laptop.
DEMO_ROWS = 10_000


@dataclass
class DemoResult:
    """The copy's summary, the seeding time, and how to look at the result."""

    run: RunResult
    seed_seconds: float
    database_url: str
    psql_command: str | None


def seed(src: source.Source, rows: int, *, seed: int = 0) -> float:
    """Create the patents table in the emulator and load ``rows`` generated rows; seconds."""
    started = time.perf_counter()
    ref = source.TableRef.parse(publications.SOURCE_TABLE)
    bq_seed.create_table(src, ref, publications.PUBLICATIONS)
    step = 50_000  # generate and load in slices: bounded memory for big demos
    for start in range(0, rows, step):
        part = generate.generate(min(step, rows - start), seed=seed + start // step)
        bq_seed.load_arrow(src, ref, part)
    return time.perf_counter() - started


def run(
    *,
    rows: int = DEMO_ROWS,
    database_url: str | None = None,
    streams: int = DEFAULT_STREAMS,
    full_text: bool = False,
    progress: Progress | None = None,
    work_dir: Path | None = None,
) -> DemoResult:
    """Run the demo end to end and return its summary."""
    work = work_dir or Path(platformdirs.user_cache_dir("bq2pg"))
    psql = None
    if database_url is None:
        server = embedded.start(work / "postgres")
        database_url, psql = server.url, server.psql_command
    with emulator.start(log_path=work / "emulator.log") as emu:
        src = source.Source(
            project="patents-public-data",
            rest_endpoint=emu.rest_url,
            storage_endpoint=emu.grpc_endpoint,
            emulator=True,
        )
        seed_seconds = seed(src, rows)
        request = patents.PatentsRequest(
            database_url=database_url,
            streams=streams,
            full_text=full_text,
            drop_tables=True,
        )
        result = patents.run(src, request, progress)
    return DemoResult(result, seed_seconds, database_url, psql)
