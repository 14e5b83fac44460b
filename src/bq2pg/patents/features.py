"""``bq2pg export features``: one row of engineered features per publication, for ML.

The features are computed by PostgreSQL over the patents model (one SQL query, see
``docs/features.md``) and streamed out with ``COPY (query) TO STDOUT``: CSV blocks are written
as they arrive, or parsed by Arrow's streaming CSV reader and written to Parquet batch by batch,
so memory stays bounded whatever the row count.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from bq2pg.errors import ConfigError
from bq2pg.patents import model
from bq2pg.plan import ddl
from bq2pg.plan import filters as predicate
from bq2pg.postgres import copy

#: The CPC sections a code can start with (A-H, and Y for emerging technologies).
CPC_SECTIONS = "ABCDEFGHY"
#: Rows per Parquet row group / Arrow batch read from the COPY stream (bounded memory).
EXPORT_BLOCK_BYTES = 8 * 1024 * 1024

#: (name, Arrow type, SQL over ``p`` = publications and ``f`` = forward citations).
FEATURES: list[tuple[str, pa.DataType, str]] = [
    ("publication_number", pa.string(), "p.publication_number"),
    ("country_code", pa.string(), "p.country_code"),
    ("kind_code", pa.string(), "p.kind_code"),
    ("publication_year", pa.int32(), "extract(year FROM p.publication_date)::int"),
    ("priority_year", pa.int32(), "extract(year FROM p.priority_date)::int"),
    ("granted", pa.bool_(), "p.grant_date IS NOT NULL"),
    ("inventor_count", pa.int32(), "cardinality(p.inventors)"),
    ("assignee_count", pa.int32(), "cardinality(p.assignees)"),
    ("cpc_count", pa.int32(), "cardinality(p.cpc_codes)"),
    ("ipc_count", pa.int32(), "cardinality(p.ipc_codes)"),
    ("citation_count", pa.int32(), "p.citation_count"),
    ("patent_citation_count", pa.int32(), "p.patent_citation_count"),
    ("npl_citation_count", pa.int32(), "p.npl_citation_count"),
    ("forward_citation_count", pa.int32(), "coalesce(f.n, 0)"),
    ("claims_count", pa.int32(), "p.claims_count"),
    ("title_length", pa.int32(), "char_length(p.title)"),
    ("abstract_length", pa.int32(), "char_length(p.abstract)"),
    ("filing_to_publication_days", pa.int32(), "p.publication_date - p.filing_date"),
    ("filing_to_grant_days", pa.int32(), "p.grant_date - p.filing_date"),
    *(
        (
            f"cpc_section_{s.lower()}",
            pa.bool_(),
            f"EXISTS (SELECT 1 FROM unnest(p.cpc_codes) c WHERE left(c, 1) = '{s}')",  # noqa: S608
        )
        for s in CPC_SECTIONS
    ),
]


def query(schema: str, where: str | None = None) -> sql.Composed:
    """The features query over the model in ``schema`` (``where``: a checked user filter)."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.SQL(expression), sql.Identifier(name))
        for name, _, expression in FEATURES
    )
    condition: sql.Composable = sql.SQL("")
    if where:
        names = [c.name for c in model.model(schema).columns]
        condition = sql.SQL(" WHERE {}").format(sql.SQL(predicate.to_postgres(where, names)))
    return sql.SQL(
        "SELECT {columns} FROM {pubs} p LEFT JOIN (SELECT cited_publication_number, count(*) AS n "
        "FROM {cites} GROUP BY 1) f ON f.cited_publication_number = p.publication_number"
        "{condition} ORDER BY p.publication_number"
    ).format(
        columns=columns,
        pubs=ddl.ident(schema, "publications"),
        cites=ddl.ident(schema, "publication_citations"),
        condition=condition,
    )


class _CopyReader(io.RawIOBase):
    """A file-like view of ``COPY ... TO STDOUT`` blocks, for Arrow's streaming CSV reader."""

    def __init__(self, blocks: Iterator[bytes | bytearray | memoryview]) -> None:
        self._blocks = blocks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._left:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._left = bytes(block)
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def export(
    database_url: str,
    path: Path,
    *,
    schema: str = model.MODEL_SCHEMA,
    where: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the features of every publication (matching ``where``) to ``path``.

    The format follows the suffix: ``.parquet`` or ``.csv``. Returns the rows written.
    """
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"--to {path}: the file must end in .parquet or .csv")
    rows = 0
    # written beside the target and renamed over it only when complete: a failed export
    # (disk full, lost connection) leaves no half-written file behind
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    what = f"exporting features from {schema}"
    try:
        with copy.copy_out(database_url, query(schema, where), what) as blocks:
            if suffix == ".csv":
                with open(partial, "wb") as out:
                    for block in blocks:
                        out.write(block)
                        rows += block.count(b"\n")
                rows -= 1  # the header line
            else:
                rows = _write_parquet(_CopyReader(blocks), partial, progress)
        os.replace(partial, path)
    except OSError as exc:
        raise ConfigError(
            f"--to {path}: could not write the file ({exc.strerror or exc}); nothing was "
            "written: free some space or choose another --to"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    return rows


def _write_parquet(reader: io.RawIOBase, path: Path, progress: Callable[[int], None] | None) -> int:
    schema = pa.schema([(name, arrow) for name, arrow, _ in FEATURES])
    stream = pacsv.open_csv(
        io.BufferedReader(reader, buffer_size=EXPORT_BLOCK_BYTES),
        read_options=pacsv.ReadOptions(block_size=EXPORT_BLOCK_BYTES),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    rows = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in stream:
            writer.write_batch(batch)
            rows += batch.num_rows
            if progress is not None:
                progress(batch.num_rows)
    return rows
