"""The one exception tree of bq2pg, split by what the caller should do.

::

    Bq2pgError                        every error bq2pg raises on purpose          exit 1
    ├── ConfigError                   fix the configuration or the command line    exit 2
    │   ├── FilterError               a --where that is not one BigQuery predicate
    │   ├── TypeMappingError          a BigQuery type with no lossless mapping
    │   ├── IdentifierError           names colliding after normalisation
    │   ├── TargetMismatchError       an existing target that does not fit the source
    │   ├── NothingToResumeError      --resume, and no interrupted run of the job
    │   ├── ConfigFileError           bq2pg.yaml is invalid (file, line, key)
    │   ├── BudgetExceededError       the plan's estimate exceeds --max-bytes/--max-usd  exit 9
    │   └── SecretError               a ${env:/file:/gcp:/aws:} reference failed  exit 10
    ├── SourceError                   BigQuery refused or failed                   exit 3
    │   ├── TransientSourceError  [T] 429, 5xx, UNAVAILABLE, reset streams
    │   └── SessionExpiredError   [T] the read session expired: reopen at the snapshot
    ├── TargetError                   PostgreSQL refused or failed                 exit 4
    │   ├── TransientTargetError  [T] connection lost, server restarting, disk full
    │   │   └── CircuitOpenError  [T] the target kept failing: waiting before trying again
    │   ├── RowRejectedError          a row's data refused (the writer dead-letters it)
    │   ├── NothingToVerifyError      no finished run has loaded the target
    │   ├── ConcurrentRunError        another run holds the target's lock          exit 6
    │   └── VerificationError         stored rows differ from the ledger's          exit 7
    ├── QualityGateError              an error-severity quality rule (or a blocking
    │                                 anomaly) failed: nothing was published       exit 11
    ├── CancelledError                the run was cancelled (the REST API): its
    │                                 committed chunks stay, it can be resumed     exit 12
    └── EmbeddedError                 the embedded PostgreSQL or emulator failed   exit 5

    [T] = also a :class:`Transient`: retrying the same thing may succeed.

What the caller should do follows from two questions, independent of the subsystem: is it a
:class:`ConfigError` (fix the input, then run again), and is it :class:`Transient` (retry;
the retry policies in :mod:`bq2pg.retry` retry exactly these)? Anything else: give up, the
run resumes from its ledger when started again.

Errors carry structured fields (``table``, ``column``, ``sqlstate``, ``value``, ``hint``) that
the CLI prints and an API returns as fields (:meth:`Bq2pgError.fields`). Driver errors are
translated once, at the PostgreSQL boundary (:mod:`bq2pg.postgres.errors`) and the BigQuery
boundary (:mod:`bq2pg.bigquery.errors`), with ``raise ... from exc``. Messages say what failed,
the offending value and the fix; they never carry a secret.

Exit codes are class attributes; :data:`EXIT_DEAD_LETTERS` is the one exit code that is no
error: the run finished, and some rows are in ``bq2pg.dead_letters``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXIT_DEAD_LETTERS",
    "Bq2pgError",
    "BudgetExceededError",
    "CancelledError",
    "CircuitOpenError",
    "ConcurrentRunError",
    "ConfigError",
    "ConfigFileError",
    "EmbeddedError",
    "FilterError",
    "IdentifierError",
    "NothingToResumeError",
    "NothingToVerifyError",
    "QualityGateError",
    "RowRejectedError",
    "SecretError",
    "SessionExpiredError",
    "SourceError",
    "TargetError",
    "TargetMismatchError",
    "Transient",
    "TransientSourceError",
    "TransientTargetError",
    "TypeMappingError",
    "VerificationError",
]

#: Exit code of a run that finished with rows in ``bq2pg.dead_letters`` (the others loaded).
EXIT_DEAD_LETTERS = 8


class Bq2pgError(Exception):
    """Base of every error bq2pg raises on purpose.

    Args:
        message: what failed, the offending value and the fix (no secrets).
        table: the table concerned (``schema.name`` or a BigQuery table id).
        column: the column concerned.
        sqlstate: PostgreSQL's SQLSTATE, when PostgreSQL raised it.
        value: the offending value, as text (never a row's content or a secret).
        hint: what to do about it, when the message alone does not say.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        column: str | None = None,
        sqlstate: str | None = None,
        value: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.table = table
        self.column = column
        self.sqlstate = sqlstate
        self.value = value
        self.hint = hint

    @property
    def transient(self) -> bool:
        """True when retrying the same thing may succeed."""
        return isinstance(self, Transient)

    def fields(self) -> dict[str, Any]:
        """The error as fields (an API's problem details): kind, message, the structured
        attributes that are set, whether it is transient, and the exit code."""
        found = {
            "kind": type(self).__name__,
            "message": self.message,
            "transient": self.transient,
            "exit_code": self.exit_code,
        }
        for name in ("table", "column", "sqlstate", "value", "hint"):
            value = getattr(self, name)
            if value is not None:
                found[name] = value
        return found

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class Transient:
    """Marker: the failure may pass; retrying the same thing may succeed.

    Independent of the subsystem: ``isinstance(exc, Transient)`` is what retry policies ask.
    """


class ConfigError(Bq2pgError):
    """The configuration or the command line needs fixing; running again will not help."""

    exit_code = 2


class FilterError(ConfigError):
    """A user filter (``--where``) is not one valid BigQuery boolean expression."""


class TypeMappingError(ConfigError):
    """A BigQuery type that bq2pg cannot map to PostgreSQL without loss."""


class IdentifierError(ConfigError):
    """Column or table names collide after normalisation or shortening."""


class TargetMismatchError(ConfigError):
    """The existing target table does not match the source (use --drop or --mode replace)."""


class NothingToResumeError(ConfigError):
    """``--resume`` was asked for, and the job has no interrupted run to resume."""


class ConfigFileError(ConfigError):
    """The configuration file is invalid: the message names the file, the line and the key
    (``bq2pg.config.file``); nothing runs."""


class BudgetExceededError(ConfigError):
    """The run's estimate (bytes to read, or their cost) exceeds ``--max-bytes`` /
    ``budget.max_bytes`` / ``budget.max_usd``; refused before any read session is opened."""

    exit_code = 9


class SecretError(ConfigError):
    """A secret reference could not be resolved: the secret is missing, access was denied,
    or its backend is unreachable or not installed. The message names the reference, never a
    value."""

    exit_code = 10


class SourceError(Bq2pgError):
    """BigQuery (or the emulator) refused the request or failed."""

    exit_code = 3


class TransientSourceError(SourceError, Transient):
    """BigQuery failed in a way worth retrying (429, 5xx, UNAVAILABLE, reset streams)."""


class SessionExpiredError(SourceError, Transient):
    """The read session expired (about 6 hours): a new one at the same snapshot must be opened.

    Its streams' offsets mean nothing in a new session, so the run's rows are loaded again
    from the start at the session's ``snapshot_time`` (the same data).
    """


class TargetError(Bq2pgError):
    """PostgreSQL refused the request or failed."""

    exit_code = 4


class TransientTargetError(TargetError, Transient):
    """PostgreSQL failed in a way worth retrying (connection lost, restarting, disk full)."""


class CircuitOpenError(TransientTargetError):
    """The target failed too often in a row: calls fail at once until the breaker's cool-down."""


class RowRejectedError(TargetError):
    """PostgreSQL rejected a row's data (SQLSTATE class 22, 23 or 54); the writer isolates the
    row into ``bq2pg.dead_letters`` and loads the rest."""


class NothingToVerifyError(TargetError):
    """No finished run has loaded the target: there is nothing to verify it against."""


class ConcurrentRunError(TargetError):
    """Another bq2pg run holds the target's lock (one writer per target)."""

    exit_code = 6


class VerificationError(TargetError):
    """Rows in PostgreSQL differ from the rows the ledger says were committed."""

    exit_code = 7


class QualityGateError(Bq2pgError):
    """The run loaded and verified its rows, and a quality rule of severity ``error`` (or an
    anomaly configured to block) failed on them: nothing was published, the targets keep their
    previous content, and the run ends ``failed_quality``. Its side tables stay for diagnosis
    until the next run of the target or ``bq2pg state reset``.

    ``failures`` holds the failed checks (``quality.rules.Outcome``) for the summary.
    """

    exit_code = 11

    def __init__(self, message: str, *, failures: tuple[Any, ...] = (), **fields: Any) -> None:
        super().__init__(message, **fields)
        self.failures = failures


class CancelledError(Bq2pgError):
    """The run was cancelled (``POST /api/v1/runs/{id}/cancel``): its streams stopped at their
    next chunk boundary, the committed chunks stay in the ledger, nothing was published, and
    the run ends ``cancelled``. The next run of the same job (or a resume) takes it up."""

    exit_code = 12


class EmbeddedError(Bq2pgError):
    """The embedded PostgreSQL server or the BigQuery emulator could not be started."""

    exit_code = 5
