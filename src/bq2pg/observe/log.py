"""Logs: structlog events over the standard library's ``logging``, configured in one place.

The library logs and never prints. Its modules log events with stable names through
:func:`get_logger` (``log.info("run.started", mode="replace")``); older modules and the
libraries underneath (``google``, ``grpc``, ``psycopg``, ``dask``, ``urllib3``) log through
``logging`` as usual. Only the CLI (and the API) call :func:`configure`, which renders every
record of both kinds alike:

* ``json``: one JSON object per line (``timestamp``, ``level``, ``logger``, ``event`` and the
  event's fields), the default when stderr is not a terminal;
* ``console``: readable colored lines through rich's console, the one the progress bar draws on,
  so that lines print above the bar instead of through it.

Every line of a run carries the fields bound in ``observe.context`` (``run_id``, ``job``,
``target_table``, ``stream``, ``chunk``, ``offset``) and the current ``trace_id``/``span_id``.
Every string in a line, tracebacks included, passes through the redaction function the caller
gives (``config.secrets.redact``), so secrets never reach a log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import IO, Any, Literal

import structlog
from structlog.stdlib import ProcessorFormatter

from bq2pg.observe import context

Format = Literal["auto", "json", "console"]
#: The libraries whose loggers go through the same pipeline, kept one step quieter than bq2pg.
LIBRARIES = ("google", "grpc", "psycopg", "dask", "distributed", "urllib3", "tenacity")
#: The names of the levels ``--log-level`` accepts.
LEVELS = ("debug", "info", "warning", "error", "critical")

EventDict = MutableMapping[str, Any]


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger of events for the module ``name``: ``log.info("event.name", key=value)``.

    It needs no global structlog configuration: events become ``logging`` records (filtered by
    the level of ``logging.getLogger(name)``), rendered by whatever :func:`configure` installed.
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger


def _from_record(_: Any, __: str, event: EventDict) -> EventDict:
    """``level`` and ``logger`` from the ``logging`` record, whoever logged it."""
    record: logging.LogRecord | None = event.get("_record")
    if record is not None:
        event.setdefault("level", record.levelname.lower())
        event.setdefault("logger", record.name)
    return event


def _with_context(_: Any, __: str, event: EventDict) -> EventDict:
    """The run's fields bound in ``observe.context`` (an event's own fields win)."""
    for key, value in context.fields().items():
        event.setdefault(key, value)
    return event


def _with_trace(_: Any, __: str, event: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` of the current span, when one is recording."""
    from opentelemetry import trace

    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event["trace_id"] = format(span.trace_id, "032x")
        event["span_id"] = format(span.span_id, "016x")
    return event


def _redacting(redact: Callable[[str], str]) -> structlog.types.Processor:
    def processor(_: Any, __: str, event: EventDict) -> EventDict:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value)
            elif not isinstance(value, bool | int | float | type(None)):
                event[key] = redact(str(value))
        return event

    return processor


#: The keys a JSON line starts with, in this order.
FIRST = ("timestamp", "level", "logger", "event")


def _first_keys(_: Any, __: str, event: EventDict) -> EventDict:
    return {**{k: event[k] for k in FIRST if k in event}, **event}


def _console_line(_: Any, __: str, event: EventDict) -> str:
    """``event  key=value ...`` (rich's handler shows the time and the level), then the
    traceback."""
    for key in ("timestamp", "level", "logger"):
        event.pop(key, None)
    trace = event.pop("exception", None)
    text = str(event.pop("event", ""))
    if event:
        text += "  " + " ".join(f"{k}={v}" for k, v in event.items())
    return f"{text}\n{trace}" if trace else text


def configure(
    *,
    fmt: Format = "auto",
    level: str | int = "info",
    verbose: int = 0,
    redact: Callable[[str], str] = lambda text: text,
    console: Any = None,
    stream: IO[str] | None = None,
) -> None:
    """Route every log record (bq2pg's events and the libraries') through one pipeline.

    Args:
        fmt: ``json`` lines, ``console`` lines, or ``auto``: console when ``stream`` is a
            terminal, else JSON.
        level: bq2pg's level (a name of :data:`LEVELS` or a number).
        verbose: ``-v`` (1): debug mode (per-chunk timings, retries, SQL statements without
            values); ``-vv`` (2): the libraries' debug logs too.
        redact: applied to every string of every line (secrets never appear).
        console: the rich console console lines print on (stderr's, shared with the progress
            bar); made here when None.
        stream: where JSON lines go (stderr).
    """
    stream = stream or sys.stderr
    number = level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    if verbose:
        number = min(number, logging.DEBUG)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    chain: list[structlog.types.Processor] = [
        _from_record,
        timestamp,
        _with_context,
        _with_trace,
        structlog.processors.format_exc_info,
        ProcessorFormatter.remove_processors_meta,
        _redacting(redact),
    ]
    handler: logging.Handler
    if fmt == "json":
        renderer: structlog.types.Processor = structlog.processors.JSONRenderer(default=str)
        handler = logging.StreamHandler(stream)
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        renderer = _console_line
        handler = RichHandler(
            console=console or Console(stderr=True),
            show_path=False,
            markup=False,
            rich_tracebacks=False,
            log_time_format="%H:%M:%S",
        )
    handler.setFormatter(
        ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder()],
            processors=[*chain, _first_keys, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    logging.getLogger("bq2pg").setLevel(number)
    # the libraries one step quieter than bq2pg (their INFO at -v), unless -vv
    quieter = logging.DEBUG if verbose >= 2 else max(number + 10, logging.INFO)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(quieter)
    logging.captureWarnings(True)
