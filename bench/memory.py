"""Peak RSS of the load engine against the number of rows: memory must stay flat.

``python -m bench.memory URL ROWS BASE.parquet`` loads ROWS publications (no full text) through
the patents model's splitter and bq2pg's load engine (content checksums on, as in a run), in
batches of :data:`BATCH_ROWS` rows (the emulator sends messages of up to 65,536 rows): the
generated rows of BASE.parquet (made once by :func:`write_base`), sent again and again under
new publication numbers, so that what grows with the row count is the loader's memory, not a
generator's. It prints its own peak RSS
and the seconds taken as JSON; the bench runs it in a fresh process per row count.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bq2pg.engine.stream import write_batches
from bq2pg.patents import model
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
from bq2pg.patents.transform import Splitter
from bq2pg.plan import ddl
from bq2pg.postgres import connection as load

BATCH_ROWS = 32_768


def write_base(path: str) -> None:
    """:data:`BATCH_ROWS` generated publications without full text, as Parquet."""
    keep = [
        f.name for f in publications.PUBLICATIONS if f.name not in publications.FULL_TEXT_COLUMNS
    ]
    pq.write_table(generate.generate(BATCH_ROWS, seed=7).select(keep), path)


def batches(base: pa.Table, rows: int) -> Iterator[pa.RecordBatch]:
    """``rows`` rows of ``base``, repeated, each round under new publication numbers."""
    index = base.schema.get_field_index("publication_number")
    made = 0
    while made < rows:
        n = min(base.num_rows, rows - made)
        numbers = pc.binary_join_element_wise(
            base.column(index).slice(0, n), pa.scalar(f"-{made}"), ""
        )
        yield from base.slice(0, n).set_column(index, "publication_number", numbers).to_batches()
        made += n


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Not ``getrusage``: Linux keeps ru_maxrss
    across fork and exec, so a child of a big parent reports the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux


def main() -> None:
    url, rows, base = sys.argv[1], int(sys.argv[2]), pq.read_table(sys.argv[3])
    schema = f"bench_mem_{rows}"
    plan = model.model(schema, full_text=False)
    conn = load.connect(url)
    statements = [ddl.create_schema(schema)]
    for t in plan.all_tables():
        statements += [ddl.drop_table(t.schema, t.name), ddl.create_table(t)]
    load.execute(conn, statements, "memory bench tables")
    started = time.perf_counter()
    write_batches(
        url, plan, batches(base, rows), splitter=lambda: Splitter(plan, full_text=False),
        checksum=True,  # as a run computes them by default
    )  # fmt: skip
    seconds = time.perf_counter() - started
    count = conn.execute(f'SELECT count(*) FROM "{schema}".publications').fetchone()  # noqa: S608
    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    conn.close()
    peak_kib = peak_rss_kib()
    loaded = count[0] if count else 0
    result = {"rows": rows, "loaded": loaded, "seconds": seconds, "peak_rss_mib": peak_kib / 1024}
    print(json.dumps(result))


def curve(url: str, sizes: list[int], folder: str) -> list[dict]:
    """Peak RSS of a fresh loader process per row count (``python -m bench.memory``)."""
    import subprocess

    base = f"{folder}/memory-base.parquet"
    write_base(base)
    points = []
    for rows in sizes:
        done = subprocess.run(
            [sys.executable, "-m", "bench.memory", url, str(rows), base],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        point = json.loads(done.stdout.strip().splitlines()[-1])
        assert point["loaded"] == rows, point
        print(f"  {rows:,} rows: peak RSS {point['peak_rss_mib']:,.0f} MiB", flush=True)
        points.append(point)
    return points


if __name__ == "__main__":
    main()
