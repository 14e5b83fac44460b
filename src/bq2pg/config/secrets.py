"""Secrets never appear in output: passwords in any DSN shown to a person are masked.

Secret values themselves are :class:`pydantic.SecretStr` in the settings, which print as
``**********``; :func:`redact` masks what arrives as text (a URL in an error message).
"""

from __future__ import annotations

import re

_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/\s]*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.I)


def redact(text: str) -> str:
    """``text`` with every DSN password replaced by ``***`` (URI, query and key=value forms)."""
    text = _URI_PASSWORD.sub(lambda m: m["head"] + "***" if m["pw"] else m[0], text)
    text = _QUERY_PASSWORD.sub(lambda m: m["head"] + "***", text)
    return _KV_PASSWORD.sub(lambda m: m["head"] + "***", text)
