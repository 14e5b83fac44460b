"""What a run is doing, in the current context: the fields every log line carries and the
labels of its metrics.

``run_id``, ``job`` and ``target_table`` are bound when a run starts, ``stream`` in a stream's
thread, ``chunk`` and ``offset`` while a chunk commits (:func:`bound`). They live in a
:class:`contextvars.ContextVar`, so threads started through :func:`carry` (and Dask tasks,
which bind them again) see the run they work for.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("bq2pg_fields", default={})  # noqa: B039 (never mutated)

#: The labels outside a run (a library call that is not a run).
_NO_RUN = {"job": "", "target_table": ""}


def fields() -> dict[str, Any]:
    """The fields bound in the current context (do not mutate)."""
    return _fields.get()


def labels() -> dict[str, str]:
    """``job`` and ``target_table`` of the current run ("" outside a run)."""
    found = _fields.get()
    return {k: str(found.get(k, v)) for k, v in _NO_RUN.items()}


@contextlib.contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind ``values`` (None values are left out) for the duration of the block."""
    token = _fields.set({**_fields.get(), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


def bind(**values: Any) -> contextvars.Token[dict[str, Any]]:
    """Bind ``values`` until :func:`unbind` with the returned token."""
    return _fields.set({**_fields.get(), **{k: v for k, v in values.items() if v is not None}})


def unbind(token: contextvars.Token[dict[str, Any]]) -> None:
    _fields.reset(token)


def carry(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` made to run in a copy of the caller's context (its fields and its trace span),
    for a thread pool's ``submit``."""
    ctx = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return ctx.run(fn, *args, **kwargs)

    return run
