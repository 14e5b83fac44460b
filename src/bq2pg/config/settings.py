"""Typed settings, read in one place: defaults < environment (``BQ2PG_*``) < flags.

:class:`Settings` holds what a user sets (the database URL, endpoints, project, streams);
:class:`Tuning` the engine's tuning knobs, which the fault-injection suite turns down. Both are
read from the environment once per process (:func:`settings`, :func:`tuning`). Secrets (the
database URL, which may hold a password) are :class:`pydantic.SecretStr`, which prints as
``**********``.
"""

from __future__ import annotations

import functools
import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Parallel read streams by default: one per core, since each stream's encoding and COPY
#: use about one core between the client and the server.
DEFAULT_STREAMS = os.cpu_count() or 2


class Settings(BaseSettings):
    """Settings that can come from the environment; command-line flags override them."""

    model_config = SettingsConfigDict(env_prefix="BQ2PG_", extra="ignore")

    database_url: SecretStr | None = None
    bigquery_endpoint: str | None = None
    bigquery_storage_endpoint: str | None = None
    project: str | None = None
    streams: int = DEFAULT_STREAMS


class Tuning(BaseSettings):
    """The engine's tuning knobs (``BQ2PG_COPY_CHUNK_BYTES``, ``BQ2PG_WRITE_TIMEOUT_S``,
    ``BQ2PG_PUBLISH_TIMEOUT_S``); the defaults are the measured ones."""

    model_config = SettingsConfigDict(env_prefix="BQ2PG_", extra="ignore")

    #: Encoded bytes buffered per stream before one COPY transaction: large enough to amortise
    #: the per-transaction round trips, small enough to keep memory flat (docs/benchmarks.md).
    #: The fault-injection suite uses 512 KiB, so that kills land between many commits.
    copy_chunk_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    #: Seconds one chunk's COPY may take before its connection counts as dead (a half-open
    #: connection hangs forever otherwise). Generous: a 32 MB chunk takes about a second on a
    #: healthy server; the fault suite uses 3 s.
    write_timeout_s: float = Field(default=120.0, gt=0)
    #: Seconds a publishing step (key builds, swap, merge) may take before the run's connection
    #: counts as dead; key builds on 100M rows take many minutes, so this is generous.
    publish_timeout_s: float = Field(default=4 * 3600.0, gt=0)


@functools.cache
def settings() -> Settings:
    """The user settings from the environment, read once."""
    return Settings()


@functools.cache
def tuning() -> Tuning:
    """The tuning knobs from the environment, read once."""
    return Tuning()
