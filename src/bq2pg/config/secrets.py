"""Secrets never appear in output; configuration values may name them instead of holding them.

A configuration value may be a *reference* that is resolved when the value is used::

    ${env:PGPASSWORD}                                    an environment variable
    ${file:/run/secrets/pg}                              a file's content (mode 600 or 400)
    ${gcp:projects/P/secrets/S/versions/V}               Google Secret Manager (or .../secrets/S)
    ${aws:NAME}  ${aws:NAME#field}                       AWS Secrets Manager (id or ARN)

A reference may be the whole value or part of one (``postgresql://bq2pg:${env:PW}@db/x``); the
value replaces it verbatim (no URL quoting). :func:`resolve` asks each backend once per process
and raises :class:`~bq2pg.errors.SecretError` naming the setting, the reference and the case
(``missing``, ``denied``, ``unreachable``, ``not installed``, ``unknown backend``, ...), never a
value. The cloud backends live in :mod:`bq2pg.config.vault`.

A resolved value is held as a :class:`Secret`, which prints as ``***``; :func:`redact` masks
what arrives as text (a URL in an error message).
"""

from __future__ import annotations

import hmac
import os
import re
import stat
import threading

from bq2pg.errors import SecretError

_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/\s]*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.I)

#: A secret reference: ``${backend:name}``; the name runs to the first ``}``.
REFERENCE = re.compile(r"\$\{(?P<backend>[A-Za-z][A-Za-z0-9_-]*):(?P<name>[^}]*)\}")

#: The backends a reference may name, in the order the messages list them.
BACKENDS = ("env", "file", "gcp", "aws")

#: What a secret prints as.
MASK = "***"

# The words that open every SecretError's reason, so a person (and a test) can tell the cases.
MISSING = "missing"
DENIED = "denied"
UNREACHABLE = "unreachable"
NOT_INSTALLED = "not installed"
UNKNOWN_BACKEND = "unknown backend"
MALFORMED = "malformed"
LOOSE_PERMISSIONS = "refused (loose permissions)"
FAILED = "failed"

# Resolved values by reference text. A run connects many times (streams, retries, the state
# database); a secret manager is asked once per process. ``${env:...}`` is not cached: reading
# the environment costs nothing, and a test or a caller that changes it sees the change.
_cache: dict[str, str] = {}
_cache_lock = threading.Lock()
#: Every value a reference resolved to in this process, masked by :func:`redact` wherever
#: it shows up (a log line, a traceback, an error). Values this short are not masked: masking
#: them would garble ordinary text.
_resolved: set[str] = set()
MIN_MASKED_LENGTH = 4
#: Settings whose resolved values are not secrets (left unmasked).
NOT_SECRET = frozenset(
    {"user", "host", "hostaddr", "port", "dbname", "sslmode", "service", "project"}
)


def redact(text: str) -> str:
    """``text`` with every DSN password replaced by ``***`` (URI, query and key=value forms),
    and every value a secret reference resolved to in this process."""
    text = _URI_PASSWORD.sub(lambda m: m["head"] + "***" if m["pw"] else m[0], text)
    text = _QUERY_PASSWORD.sub(lambda m: m["head"] + "***", text)
    text = _KV_PASSWORD.sub(lambda m: m["head"] + "***", text)
    for value in tuple(_resolved):  # (another thread may add one)
        if value in text:
            text = text.replace(value, MASK)
    return text


class Secret:
    """A resolved secret value that shows as ``***`` in ``repr``, ``str``, f-strings, logs and
    ``json.dumps(default=str)``; :meth:`reveal` gives the value to the one place that needs it.

    Not a ``str`` subclass on purpose: a ``str`` would serialise, concatenate and compare as
    its value wherever it is passed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


def references(text: str) -> list[str]:
    """The ``${backend:name}`` references in ``text``, in order (repeats included)."""
    return [m[0] for m in REFERENCE.finditer(text)]


def has_reference(text: str) -> bool:
    """Whether ``text`` holds at least one secret reference."""
    return REFERENCE.search(text) is not None


def resolve(text: str, *, what: str) -> str:
    """``text`` with every secret reference replaced by the secret's value.

    Args:
        text: a configuration value: a literal, a reference, or text with references in it.
        what: the setting it came from (``targets.local.password``), for messages.

    Raises:
        SecretError: a reference could not be resolved; the message names ``what``, the
            reference and the case, never a value.
    """
    if not has_reference(text):
        return text
    if REFERENCE.fullmatch(text):
        return _remembered(REFERENCE.sub(lambda m: _value(m, what), text), what)
    # a reference inside a value (a URL's password): the value's own form is redacted
    return REFERENCE.sub(lambda m: _value(m, what), text)


def _remembered(value: str, what: str) -> str:
    """A whole value a reference resolved to, remembered for :func:`redact` unless its setting
    is not a secret (a user name or a host may come from a reference too, and masking them
    would garble messages)."""
    if len(value) >= MIN_MASKED_LENGTH and what.rsplit(".", 1)[-1] not in NOT_SECRET:
        _resolved.add(value)
    return value


def clear_cache() -> None:
    """Forget every resolved value (tests; a long-lived process after a rotation)."""
    with _cache_lock:
        _cache.clear()
        _resolved.clear()


def secret_error(reason: str, detail: str, *, hint: str | None = None) -> SecretError:
    """A backend's :class:`SecretError`: ``reason`` is one of the case words (:data:`MISSING`,
    :data:`DENIED`, ...); :func:`resolve` adds the setting and the reference."""
    return SecretError(f"{reason}: {detail}", hint=hint)


def utf8_text(payload: bytes, name: str) -> str:
    """A secret's bytes as text; ``name`` says whose bytes, for the message."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised outside: the decode error holds the whole payload, even when not shown
    raise secret_error(FAILED, f"the value of {name} is not UTF-8 text")


def _value(match: re.Match[str], what: str) -> str:
    """The value of one reference, from the cache or its backend; errors get their context."""
    reference, backend, name = match[0], match["backend"], match["name"]
    try:
        if backend == "env":
            return _env(name)
        with _cache_lock:
            if reference not in _cache:
                _cache[reference] = _fetch(backend, name)
            return _cache[reference]
    except SecretError as exc:
        # ``from None``: the backend's error was built without values; what it chained (a
        # driver's exception) is not shown again.
        raise SecretError(
            f"{what}: cannot resolve {reference}: {exc.message}", value=reference, hint=exc.hint
        ) from None


def _fetch(backend: str, name: str) -> str:
    """Ask ``backend`` for ``name`` (not cached)."""
    if not name:
        raise secret_error(MALFORMED, f"the reference names no {backend} secret")
    if backend == "file":
        return _file(name)
    if backend in ("gcp", "aws"):
        from bq2pg.config import vault

        return vault.gcp_secret(name) if backend == "gcp" else vault.aws_secret(name)
    raise secret_error(
        UNKNOWN_BACKEND,
        f"{backend!r} is none of {', '.join(BACKENDS)}",
        hint="write ${env:NAME}, ${file:/path}, ${gcp:projects/P/secrets/S} or ${aws:NAME}",
    )


def _env(name: str) -> str:
    """The environment variable ``name``."""
    if not name:
        raise secret_error(MALFORMED, "the reference names no environment variable")
    value = os.environ.get(name)
    if value is None:
        raise secret_error(
            MISSING,
            f"the environment variable {name} is not set",
            hint=f"set {name} in bq2pg's environment",
        )
    return value


def _file(path: str) -> str:
    """The content of the file at ``path``, less one trailing newline; the file must be
    readable and writable by its owner only (as ``check_key_file`` asks of key files)."""
    path = os.path.expanduser(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise secret_error(MISSING, f"there is no file {path}") from None
    except PermissionError:
        raise secret_error(DENIED, f"bq2pg may not open {path}") from None
    except OSError as exc:
        raise secret_error(FAILED, f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise secret_error(MISSING, f"{path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise secret_error(
            LOOSE_PERMISSIONS,
            f"the file {path} is readable or writable by group or others "
            f"(mode {stat.S_IMODE(mode):o})",
            hint=f"run `chmod 600 {path}`",
        )
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except PermissionError:
        raise secret_error(DENIED, f"bq2pg may not read {path}") from None
    except OSError as exc:
        raise secret_error(FAILED, f"{path}: {exc.strerror}") from None
    text = utf8_text(payload, path)
    return text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
