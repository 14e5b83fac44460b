"""Other tools, loading the same rows into the same server: pandas ``to_sql`` and dlt.

* pandas ``DataFrame.to_sql`` through SQLAlchemy (psycopg 3 driver): the default (one
  ``executemany`` of single-row INSERTs per chunk) and ``method='multi', chunksize=10000``
  (multi-row INSERTs; fewer rows per statement where 10,000 would pass PostgreSQL's 65,535
  bind parameters): the approach bq2pg replaces;
* dlt (``dlt[postgres]``), the best-known Python loading library: its fastest PostgreSQL path
  for Arrow data is the ``csv`` loader file format (COPY); nested rows go through its
  normalizer, which makes child tables of nested lists, as bq2pg's ``--nested tables`` does.

Each returns the seconds taken and checks the rows arrived.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bq2pg.plan.tables import TablePlan

#: Rows per multi-row INSERT asked for; PostgreSQL allows at most 65,535 bind parameters
#: per statement, so wider tables get fewer (:func:`multi_chunksize`).
MULTI_CHUNKSIZE = 10_000


def multi_chunksize(columns: int) -> int:
    """``chunksize=10000``, or as many rows as 65,535 bind parameters allow."""
    return min(MULTI_CHUNKSIZE, 65_535 // columns)


def pandas_to_sql(url: str, plan: TablePlan, table: pa.Table, *, multi: bool) -> float:
    """``DataFrame.to_sql`` into the (fresh, empty) table of ``plan``."""
    import sqlalchemy

    frame = table.to_pandas()
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    started = time.perf_counter()
    frame.to_sql(
        plan.name,
        engine,
        schema=plan.schema,
        if_exists="append",
        index=False,
        method="multi" if multi else None,
        chunksize=multi_chunksize(table.num_columns) if multi else None,
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def _dlt_credentials(url: str) -> dict[str, Any] | str:
    """dlt wants a host name; a Unix-socket URL keeps its directory in ``?host=``."""
    parts = conninfo_to_dict(url)
    if not parts.get("host", "").startswith("/"):
        return url
    return {
        "database": parts.get("dbname", "postgres"),
        "username": parts.get("user", "postgres"),
        "password": parts.get("password") or "unused",  # trust auth locally; dlt wants one
        "host": "localhost",
        "port": int(parts.get("port", 5432)),
        # a socket directory goes in the query string, where libpq lets it override the host
        "query": {"host": parts["host"]} if parts.get("host", "").startswith("/") else {},
    }


def dlt_load(url: str, data: Any, rows: int, *, table_name: str = "rows") -> tuple[float, int]:
    """A dlt pipeline run of ``data`` (an Arrow table, or dicts with nested lists) into a new
    dataset; (seconds, tables dlt made). Extract, normalize and load are all timed."""
    import dlt

    dataset = f"bench_dlt_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name=dataset,
            destination=dlt.destinations.postgres(credentials=_dlt_credentials(url)),
            dataset_name=dataset,
            pipelines_dir=pipelines_dir,
            progress=None,
        )
        started = time.perf_counter()
        pipeline.run(data, table_name=table_name, loader_file_format="csv")
        seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(dataset, table_name))
        ).fetchone()
        assert count == (rows,), ("dlt", count)
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename NOT LIKE '\\_dlt%%'",
            [dataset],
        ).fetchone()
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(dataset)))
    return seconds, int(tables[0]) if tables else 0
