"""Writing BigQuery tables: only to seed the emulator (the demo, the tests, the benchmarks).

bq2pg reads BigQuery and never writes it; these helpers create a table in the real schema and
load Arrow rows into it through a Parquet load job (the emulator's fastest path).
"""

from __future__ import annotations

import pyarrow as pa

from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.errors import translate
from bq2pg.plan.tables import Field


def _schema_field(f: Field) -> object:
    from google.cloud import bigquery

    kwargs: dict[str, object] = {"mode": f.mode}
    if f.fields:
        kwargs["fields"] = [_schema_field(s) for s in f.fields]
    if f.range_element_type:
        kwargs["range_element_type"] = f.range_element_type
    return bigquery.SchemaField(f.name, f.type, **kwargs)  # type: ignore[arg-type]


def create_table(source: Source, ref: TableRef, fields: list[Field] | tuple[Field, ...]) -> None:
    """Create (or re-create) table ``ref`` with ``fields``, and its dataset if missing."""
    from google.cloud import bigquery

    # no client-side retry: a refused schema must fail now, not after 10 minutes of retries
    bq = source.bq
    try:
        bq.create_dataset(f"{ref.project}.{ref.dataset}", exists_ok=True, retry=None, timeout=60)  # type: ignore[arg-type]
        bq.delete_table(str(ref), not_found_ok=True, retry=None, timeout=60)  # type: ignore[arg-type]
        schema = [_schema_field(f) for f in fields]
        bq.create_table(bigquery.Table(str(ref), schema=schema), retry=None, timeout=60)  # type: ignore[arg-type]
    except Exception as exc:
        raise translate(exc, f"creating {ref}") from exc


def load_arrow(source: Source, ref: TableRef, table: pa.Table) -> int:
    """Append ``table`` to ``ref`` with a load job from Parquet; returns the rows loaded.

    Columns are matched by position (the emulator's load job does so), so ``table`` must have
    the target's columns in order.
    """
    import tempfile

    import pyarrow.parquet as pq
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
    )
    with tempfile.TemporaryFile() as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.seek(0)
        try:
            job = source.bq.load_table_from_file(fh, str(ref), job_config=config)
            job.result()
        except Exception as exc:
            raise translate(exc, f"loading rows into {ref}") from exc
    return table.num_rows
