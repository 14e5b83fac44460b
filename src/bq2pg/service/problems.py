"""Errors as ``application/problem+json`` (RFC 9457), mapped to HTTP statuses in one place.

A :class:`~bq2pg.errors.Bq2pgError` becomes a problem with its structured fields
(:meth:`~bq2pg.errors.Bq2pgError.fields`: kind, message, table, column, sqlstate, value, hint,
transient); a validation error names each field that failed; anything unexpected is a 500
that says nothing of the server's insides (no stack trace, no SQL).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from bq2pg.config.secrets import redact
from bq2pg.errors import (
    Bq2pgError,
    BudgetExceededError,
    CancelledError,
    ConcurrentRunError,
    ConfigError,
    EmbeddedError,
    NothingToResumeError,
    NothingToVerifyError,
    QualityGateError,
    SecretError,
    SourceError,
    TargetError,
    Transient,
    VerificationError,
)

MEDIA_TYPE = "application/problem+json"

#: The HTTP status of each kind of error, most specific first.
STATUSES: tuple[tuple[type[Bq2pgError], int], ...] = (
    (NothingToResumeError, 409),
    (NothingToVerifyError, 404),
    (BudgetExceededError, 422),
    (SecretError, 500),
    (ConfigError, 400),
    (ConcurrentRunError, 409),
    (VerificationError, 409),
    (QualityGateError, 422),
    (CancelledError, 409),
    (EmbeddedError, 503),
    (SourceError, 502),
    (TargetError, 502),
)


class Problem(Exception):
    """An HTTP problem raised by a route (not found, forbidden, conflict, …)."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def status_of(exc: Bq2pgError) -> int:
    """The HTTP status of a bq2pg error (503 for any transient one: try again)."""
    if isinstance(exc, Transient):
        return 503
    for kind, status in STATUSES:
        if isinstance(exc, kind):
            return status
    return 500


def response(
    status: int, title: str, detail: str, *, instance: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> JSONResponse:  # fmt: skip
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"urn:bq2pg:problem:{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": redact(detail),
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def from_error(exc: Bq2pgError, instance: str | None = None) -> JSONResponse:
    """The problem of a bq2pg error, with its structured fields."""
    fields = {k: redact(v) if isinstance(v, str) else v for k, v in exc.fields().items()}
    kind = fields.pop("kind")
    message = fields.pop("message")
    status = status_of(exc)
    headers = {"Retry-After": "5"} if status == 503 else None
    return response(status, kind, str(message), instance=instance, headers=headers, **fields)


def validation(errors: list[dict[str, Any]], instance: str | None = None) -> JSONResponse:
    """A 422 naming each field that failed."""
    found = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        found.append({"field": ".".join(loc) or "body", "message": str(e.get("msg", ""))[:500]})
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in found[:10])
    return response(422, "ValidationError", detail or "the request is not valid",
                    instance=instance, errors=found)  # fmt: skip


#: Documented in the OpenAPI schema of every route.
PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}
_CONTENT = {"content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **_CONTENT}
    for code, text in (
        (400, "The request is not valid for this configuration"),
        (401, "No valid API key"),
        (403, "The key's role does not allow this"),
        (404, "Not found"),
        (409, "Conflict with the run's state"),
        (413, "The request body is too large"),
        (422, "A field is not valid"),
        (429, "Too many failed attempts"),
        (502, "BigQuery or PostgreSQL refused"),
        (503, "PostgreSQL or BigQuery unavailable: try again"),
    )
}
