"""bq2pg against the approach it replaces (pandas ``to_sql``) and its best peer (dlt).

Two tables of the same generated rows, the contenders alternating round by round:

* flat (bigint, 2 × double, timestamptz, date, boolean, short text): ``psql \\copy`` of the
  pre-encoded CSV (the server alone), bq2pg's load engine on 1 and 2 connections, pandas
  ``to_sql`` default and ``method='multi', chunksize=10000``, dlt from the Arrow table;
* nested (publications without full text, records as child tables): bq2pg's load engine with
  ``--nested tables`` against dlt, whose normalizer makes child tables of nested lists.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import contenders
from bench.common import Sample, alternate, bq2pg_load, encode_file, psql_copy
from bq2pg.arrow import split as normalize
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
from bq2pg.plan.tables import Field, plan_table

FLAT_FIELDS = [
    Field("id", "INT64"), Field("amount", "FLOAT64"), Field("score", "FLOAT64"),
    Field("created", "TIMESTAMP"), Field("day", "DATE"), Field("flag", "BOOL"),
    Field("label", "STRING"),
]  # fmt: skip


def flat_table(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
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


def flat_peers(url: str, psql: Path, folder: Path, rows: int, rounds: int) -> list[Sample]:
    table = flat_table(rows)
    plan = plan_table(FLAT_FIELDS, source="bench", schema="bench", name="peers")
    csv_path = folder / "peers.csv"
    nbytes = encode_file(plan, table, csv_path, allow_binary=False)

    def dlt() -> float:
        seconds, _ = contenders.dlt_load(url, table, rows)
        return seconds

    runs: dict[str, Callable[[], float]] = {
        "psql \\copy (pre-encoded CSV, 1 conn)": lambda: psql_copy(url, plan, csv_path, psql),
        "bq2pg load engine, 1 conn": lambda: bq2pg_load(url, plan, table, 1),
        "bq2pg load engine, 2 conns": lambda: bq2pg_load(url, plan, table, 2),
        "pandas to_sql (default)": lambda: contenders.pandas_to_sql(url, plan, table, multi=False),
        multi_name(table.num_columns): lambda: contenders.pandas_to_sql(
            url, plan, table, multi=True
        ),
        "dlt (Arrow table, csv loader file format = COPY)": dlt,
    }
    samples = alternate(url, plan, runs, rows, nbytes, rounds, own_tables={"dlt"})
    csv_path.unlink()
    return samples


def nested_peers(url: str, rows: int, rounds: int) -> tuple[list[Sample], dict[str, int]]:
    """bq2pg (child tables) against dlt (its normalizer's child tables); tables each made."""
    fields = [f for f in publications.PUBLICATIONS if f.name not in publications.FULL_TEXT_COLUMNS]
    plan = plan_table(fields, source="bench", schema="bench", name="nested",
                      key=("publication_number",), nested="tables")  # fmt: skip
    raw = generate.generate(rows, seed=5).select([f.name for f in fields])
    parts = normalize.split(raw, plan)
    nbytes = raw.nbytes
    dicts = raw.to_pylist()  # dlt's input: Python objects (not timed)
    made: dict[str, int] = {"bq2pg": len(parts)}

    def dlt() -> float:
        seconds, tables = contenders.dlt_load(url, dicts, rows)
        made["dlt"] = tables
        return seconds

    def bq2pg() -> float:
        return bq2pg_load(url, plan, raw, 1)

    runs: dict[str, Callable[[], float]] = {
        "bq2pg load engine, --nested tables, 1 conn": bq2pg,
        "dlt (Python rows, nested lists as child tables, csv = COPY)": dlt,
    }
    return alternate(url, plan, runs, rows, nbytes, rounds, own_tables={"dlt"}), made


def multi_name(columns: int) -> str:
    return f"pandas to_sql (method='multi', chunksize={contenders.multi_chunksize(columns):,})"


def median_rate(samples: list[Sample], name: str) -> float:
    return statistics.median(s.rows_per_second for s in samples if s.contender == name)
