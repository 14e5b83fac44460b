"""bq2pg: copy BigQuery tables into PostgreSQL, fast, lossless and with nested data as tables.

The library is the product; the ``bq2pg`` command is a thin layer over it::

    from bq2pg import CopyRequest, Source, copy_table

    source = Source(project="my-billing-project")
    result = copy_table(source, CopyRequest(
        source="patents-public-data.patents.publications",
        database_url="postgresql://localhost/patents",
        table="patents.publications", key=("publication_number",), nested="tables",
        limit=1000,
    ))
    print(result.rows_read, result.rows_per_second)
"""

from bq2pg.bigquery.client import Source, TableRef
from bq2pg.engine.copy import CopyRequest, RunResult, TableResult, copy_table, plan
from bq2pg.errors import (
    Bq2pgError,
    ConfigError,
    EmbeddedError,
    FilterError,
    IdentifierError,
    SourceError,
    TargetError,
    TargetMismatchError,
    TransientSourceError,
    TransientTargetError,
    TypeMappingError,
)

__version__ = "0.1.0"

__all__ = [
    "Bq2pgError",
    "ConfigError",
    "CopyRequest",
    "EmbeddedError",
    "FilterError",
    "IdentifierError",
    "RunResult",
    "Source",
    "SourceError",
    "TableRef",
    "TableResult",
    "TargetError",
    "TargetMismatchError",
    "TransientSourceError",
    "TransientTargetError",
    "TypeMappingError",
    "__version__",
    "copy_table",
    "plan",
]
