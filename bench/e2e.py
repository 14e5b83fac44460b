"""End to end over the BigQuery emulator: ``bq2pg copy`` and ``bq2pg patents``.

For the patents pipeline the run is set beside its two limits, measured in the same run on the
same rows: the emulator's Storage Read API read alone (every stream read, nothing loaded) and
``psql \\copy`` alone of the rows the run produced (dumped from the model's tables, loaded into
empty copies of them).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pyarrow as pa
from psycopg import sql

from bench.common import Sample, psql_copy
from bq2pg.bigquery import client as source
from bq2pg.bigquery import read, seed
from bq2pg.bigquery.client import TableRef
from bq2pg.engine import copy as pipeline
from bq2pg.local import demo, emulator
from bq2pg.patents import model
from bq2pg.patents import pipeline as patents
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate

STREAMS = 2
#: Publications generated and loaded into the emulator at a time when seeding it.
SEED_STEP = 50_000


@dataclass
class PatentsE2E:
    """One patents run and its limits."""

    rows: int
    read_seconds: float  # the emulator alone
    load_seconds: float  # bq2pg: read + transform + encode + COPY (+ checksums, ledger)
    publish_seconds: float  # verification, keys, indexes, ANALYZE
    load_bytes: int  # COPY bytes bq2pg sent
    unchecked_load_seconds: float  # the same run with --no-checksum
    unchecked_publish_seconds: float
    copy_seconds: float  # psql \copy alone of the produced rows
    copy_bytes: int
    model_rows: int
    #: CPU seconds during the checksummed load: the loader, the emulator, everything else
    #: (PostgreSQL), and the wall seconds times the cores.
    cpu: dict[str, float]


@contextlib.contextmanager
def seeded(rows: int, *, full_text: bool = True) -> Iterator[tuple[source.Source, Path]]:
    """An emulator holding ``rows`` generated publications (seeding is not timed), and a
    scratch folder. Without ``full_text`` the claims and descriptions are NULL: the emulator
    keeps its tables in memory (4 GB for 300,000 publications without them, read once; at
    1,000,000 it went past 22.9 GB and was killed on a 24 GB machine)."""
    with (
        tempfile.TemporaryDirectory() as work,
        emulator.start(log_path=Path(work) / "emulator.log") as emu,
    ):
        src = source.Source(
            project="patents-public-data",
            rest_endpoint=emu.rest_url,
            storage_endpoint=emu.grpc_endpoint,
            emulator=True,
        )
        if full_text:
            demo.seed(src, rows)
        else:
            ref = TableRef.parse(publications.SOURCE_TABLE)
            seed.create_table(src, ref, publications.PUBLICATIONS)
            for start in range(0, rows, SEED_STEP):
                part = generate.generate(min(SEED_STEP, rows - start), seed=start // SEED_STEP)
                for name in publications.FULL_TEXT_COLUMNS:
                    i = part.schema.get_field_index(name)
                    nulls = pa.nulls(part.num_rows, part.schema.field(i).type)
                    part = part.set_column(i, part.schema.field(i), nulls)
                seed.load_arrow(src, ref, part)
        yield src, Path(work)


class CpuMeter:
    """CPU seconds spent by this process, by the emulator (its child) and by everything
    else on the machine (PostgreSQL, on a bench machine) during a run's load: from the run's
    start to its first phase (verification). It is the run's progress listener."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.children = [
            c for c in self.me.children(recursive=True) if "bqemulator" in " ".join(c.cmdline())
        ]
        self.cpu: dict[str, float] = {}
        self.loading = False

    def start(self, total_rows: int | None, streams: int) -> None:
        self.before = self._now()
        self.loading = True

    def advance(self, rows: int, nbytes: int) -> None:
        pass

    def phase(self, description: str) -> None:
        if self.loading:
            self.cpu, self.loading = self.stop(), False

    def _now(self) -> tuple[float, float, float, float]:
        def busy(p: psutil.Process) -> float:
            try:
                t = p.cpu_times()
                return t.user + t.system
            except psutil.Error:
                return 0.0

        total = psutil.cpu_times()
        machine = total.user + total.system + total.nice + getattr(total, "softirq", 0.0)
        mine = busy(self.me)
        return mine, sum(busy(c) for c in self.children), machine, time.perf_counter()

    def stop(self) -> dict[str, float]:
        mine, kids, machine, wall = (b - a for a, b in zip(self.before, self._now(), strict=True))
        return {
            "loader": mine,
            "emulator": kids,
            "postgres and the rest": max(0.0, machine - mine - kids),
            "available": wall * (psutil.cpu_count() or 1),
        }


def copy_e2e(url: str, rows: int, rounds: int) -> list[Sample]:
    """``bq2pg copy`` of all 37 columns over the emulator (seeding not timed), jsonb and tables."""
    samples = []
    with seeded(rows) as (src, _):
        for _ in range(rounds):
            for nested in ("jsonb", "tables"):
                request = pipeline.CopyRequest(
                    source=publications.SOURCE_TABLE,
                    database_url=url,
                    table="bench_e2e.publications",
                    key=("publication_number",),
                    nested=nested,  # type: ignore[arg-type]
                    streams=STREAMS,
                )
                result = pipeline.copy_table(src, request)
                name = f"bq2pg copy end to end, --nested {nested}, {STREAMS} streams"
                samples.append(Sample(name, result.rows_read, result.seconds, result.bytes))
                print(f"  {name}: {result.rows_per_second:,.0f} rows/s", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench_e2e CASCADE")
    return samples


def _read_alone(src: source.Source) -> tuple[int, float]:
    """Every stream of a session on the publications (no full text) read, nothing loaded."""
    selected = [
        f.name for f in publications.PUBLICATIONS if f.name not in publications.FULL_TEXT_COLUMNS
    ]
    started = time.perf_counter()
    session = read.open_session(
        src,
        TableRef.parse(publications.SOURCE_TABLE),
        selected_fields=selected,
        max_streams=STREAMS,
    )

    def count(stream: str) -> int:
        return sum(b.num_rows for b in read.read_stream(src, session, stream))

    with ThreadPoolExecutor(len(session.streams)) as pool:
        rows = sum(pool.map(count, session.streams))
    return rows, time.perf_counter() - started


def _copy_alone(url: str, psql: Path, folder: Path, schema: str) -> tuple[float, int, int]:
    """The model's rows dumped to CSV and loaded by psql into empty copies of its tables."""
    plan = model.model(schema, full_text=False)
    copies = f"{schema}_copy"
    files = []
    with psycopg.connect(url, autocommit=True) as conn:
        ident = sql.Identifier(copies)
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        for t in plan.all_tables():
            path = folder / f"{t.name}.csv"
            with (
                open(path, "wb") as fh,
                conn.cursor().copy(
                    sql.SQL("COPY {} TO STDOUT (FORMAT csv)").format(sql.Identifier(schema, t.name))
                ) as copy,
            ):
                for block in copy:
                    fh.write(block)
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {})").format(
                    sql.Identifier(copies, t.name), sql.Identifier(schema, t.name)
                )
            )
            files.append((t.name, path))
        rows = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, plan.name))
        ).fetchone()
    seconds, nbytes = 0.0, 0
    targets = {t.name: t for t in model.model(copies, full_text=False).all_tables()}
    for name, path in files:
        seconds += psql_copy(url, targets[name], path, psql)
        nbytes += path.stat().st_size
        path.unlink()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(copies)))
    return seconds, nbytes, int(rows[0]) if rows else 0


def patents_e2e(url: str, psql: Path, rows: int) -> PatentsE2E:
    """``bq2pg patents`` (no full text) over the emulator, beside its two limits."""
    schema = "bench_patents"
    with seeded(rows, full_text=False) as (src, work):
        meter = CpuMeter()
        read_rows, read_seconds = _read_alone(src)
        assert read_rows == rows, read_rows
        print(f"  emulator read alone: {rows / read_seconds:,.0f} rows/s", flush=True)
        unchecked = patents.run(
            src,
            patents.PatentsRequest(
                database_url=url, schema=schema, streams=STREAMS, drop_tables=True, checksum=False
            ),
        )
        rate = rows / unchecked.load_seconds
        print(f"  bq2pg patents --no-checksum: load {rate:,.0f} rows/s")
        request = patents.PatentsRequest(
            database_url=url, schema=schema, streams=STREAMS, drop_tables=True
        )
        result = patents.run(src, request, progress=meter)
        cpu = meter.cpu
        rate = rows / result.load_seconds
        print(f"  bq2pg patents: load {rate:,.0f} rows/s, publish {result.publish_seconds:.1f} s")
        copy_seconds, copy_bytes, model_rows = _copy_alone(url, psql, work, schema)
        print(f"  psql \\copy alone: {rows / copy_seconds:,.0f} rows/s", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return PatentsE2E(
        rows=rows,
        read_seconds=read_seconds,
        load_seconds=result.load_seconds,
        publish_seconds=result.publish_seconds,
        load_bytes=result.bytes,
        unchecked_load_seconds=unchecked.load_seconds,
        unchecked_publish_seconds=unchecked.publish_seconds,
        copy_seconds=copy_seconds,
        copy_bytes=copy_bytes,
        model_rows=model_rows,
        cpu=cpu,
    )
