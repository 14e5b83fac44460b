"""Typed configuration, read in one place: defaults < environment (``BQ2PG_*``) < flags.

Secrets (the database URL, which may hold a password) are :class:`pydantic.SecretStr`, which
prints as ``**********``; :func:`redact` masks passwords in any DSN shown to a person.
"""

from __future__ import annotations

import os
import re

from pydantic import SecretStr
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


_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/\s]*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.I)


def redact(text: str) -> str:
    """``text`` with every DSN password replaced by ``***`` (URI, query and key=value forms)."""
    text = _URI_PASSWORD.sub(lambda m: m["head"] + "***" if m["pw"] else m[0], text)
    text = _QUERY_PASSWORD.sub(lambda m: m["head"] + "***", text)
    return _KV_PASSWORD.sub(lambda m: m["head"] + "***", text)
