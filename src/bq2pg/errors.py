"""The one exception tree of bq2pg, split by what the caller should do.

::

    Bq2pgError                      base of every error bq2pg raises on purpose
    ├── ConfigError                 fix the configuration or the command line, then run again
    │   ├── FilterError             a --where filter that is not one valid BigQuery predicate
    │   ├── TypeMappingError        a BigQuery type with no lossless PostgreSQL mapping
    │   ├── IdentifierError         names that collide after normalisation or shortening
    │   └── TargetMismatchError     an existing target table that does not fit the source
    ├── SourceError                 BigQuery refused or failed (terminal: give up)
    │   ├── TransientSourceError    BigQuery failed in a way worth retrying (429, 5xx, UNAVAILABLE)
    │   └── SessionExpiredError     the read session expired: reopen one at the same snapshot
    ├── TargetError                 PostgreSQL refused (terminal: give up)
    │   ├── TransientTargetError    PostgreSQL connection lost, server restarting, disk full
    │   ├── ConcurrentRunError      another run is loading the same target right now
    │   └── VerificationError       the loaded rows do not add up to the rows read
    └── EmbeddedError               the embedded PostgreSQL or the emulator could not start

Driver errors are translated once, at the boundary, with ``raise ... from exc``. Messages say
what failed, the offending value, and the fix; they never carry a secret.
"""

from __future__ import annotations


class Bq2pgError(Exception):
    """Base of every error bq2pg raises on purpose."""

    exit_code = 1


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


class SourceError(Bq2pgError):
    """BigQuery (or the emulator) refused the request or failed terminally."""

    exit_code = 3


class TransientSourceError(SourceError):
    """BigQuery failed in a way worth retrying (429, 5xx, UNAVAILABLE, reset streams)."""


class SessionExpiredError(SourceError):
    """The read session expired (about 6 hours): a new one at the same snapshot must be opened.

    Its streams' offsets mean nothing in a new session, so the run's rows are loaded again
    from the start at the session's ``snapshot_time`` (the same data).
    """


class TargetError(Bq2pgError):
    """PostgreSQL refused the request or failed terminally."""

    exit_code = 4


class TransientTargetError(TargetError):
    """PostgreSQL failed in a way worth retrying (connection lost, restarting, disk full)."""


class ConcurrentRunError(TargetError):
    """Another bq2pg run holds the target's lock (one writer per target)."""

    exit_code = 6


class VerificationError(TargetError):
    """Rows in PostgreSQL differ from the rows the ledger says were committed."""

    exit_code = 7


class EmbeddedError(Bq2pgError):
    """The embedded PostgreSQL server or the BigQuery emulator could not be started."""

    exit_code = 5
