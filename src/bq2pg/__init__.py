"""bq2pg: copy BigQuery tables into PostgreSQL, fast, lossless and with nested data as tables.

The library is the product; the ``bq2pg`` command (and the REST API) are thin layers over it::

    from bq2pg import CopyRequest, Source, copy_table

    source = Source(project="my-billing-project")
    result = copy_table(source, CopyRequest(
        source="patents-public-data.patents.publications",
        database_url="postgresql://localhost/patents",
        table="patents.publications", key=("publication_number",), nested="tables",
        limit=1000,
    ))
    print(result.rows_read, result.rows_per_second)

Every name in ``__all__`` is public and pinned by ``tests/test_exported_members.py``.
"""

from bq2pg.admin import (
    DeadLetter,
    DeadLetterDetail,
    Replayed,
    RunInfo,
    RunProgress,
    TableCheck,
    list_dead_letters,
    list_runs,
    purge_dead_letters,
    replay_dead_letters,
    reset_target,
    run_progress,
    show_dead_letter,
    verify_target,
    watermark,
)
from bq2pg.bigquery.client import Source, TableRef
from bq2pg.engine.copy import CopyRequest, copy_table, plan
from bq2pg.engine.result import RunResult, TableResult
from bq2pg.errors import (
    EXIT_DEAD_LETTERS,
    Bq2pgError,
    BudgetExceededError,
    CancelledError,
    CircuitOpenError,
    ConcurrentRunError,
    ConfigError,
    ConfigFileError,
    EmbeddedError,
    FilterError,
    IdentifierError,
    NothingToResumeError,
    NothingToVerifyError,
    QualityGateError,
    RowRejectedError,
    SecretError,
    SessionExpiredError,
    SourceError,
    TargetError,
    TargetMismatchError,
    Transient,
    TransientSourceError,
    TransientTargetError,
    TypeMappingError,
    VerificationError,
)
from bq2pg.observe.progress import Progress
from bq2pg.patents.pipeline import PatentsRequest
from bq2pg.patents.pipeline import run as load_patents

__version__ = "0.1.0"

__all__ = [
    "EXIT_DEAD_LETTERS",
    "Bq2pgError",
    "BudgetExceededError",
    "CancelledError",
    "CircuitOpenError",
    "ConcurrentRunError",
    "ConfigError",
    "ConfigFileError",
    "CopyRequest",
    "DeadLetter",
    "DeadLetterDetail",
    "EmbeddedError",
    "FilterError",
    "IdentifierError",
    "NothingToResumeError",
    "NothingToVerifyError",
    "PatentsRequest",
    "Progress",
    "QualityGateError",
    "Replayed",
    "RowRejectedError",
    "RunInfo",
    "RunProgress",
    "RunResult",
    "SecretError",
    "SessionExpiredError",
    "Source",
    "SourceError",
    "TableCheck",
    "TableRef",
    "TableResult",
    "TargetError",
    "TargetMismatchError",
    "Transient",
    "TransientSourceError",
    "TransientTargetError",
    "TypeMappingError",
    "VerificationError",
    "__version__",
    "copy_table",
    "list_dead_letters",
    "list_runs",
    "load_patents",
    "plan",
    "purge_dead_letters",
    "replay_dead_letters",
    "reset_target",
    "run_progress",
    "show_dead_letter",
    "verify_target",
    "watermark",
]
