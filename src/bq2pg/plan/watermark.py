"""Incremental loads: the watermark of a target, as a BigQuery filter and as a stored value.

``--incremental COLUMN`` reads only rows whose column is at or above the last run's maximum
(an inclusive bound: rows equal to the boundary are read again, and the merge on ``--key``
makes that idempotent), optionally minus a ``--lag`` for rows that arrive late. The new
maximum is computed from the staged rows and stored in ``bq2pg.watermarks`` in the same
transaction as the publish, and never moves backwards. Rows whose column is NULL are never
selected by the bound: give them a value upstream, or load them with a full run.

Pure logic here; the statements are in ``state.watermarks``.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from bq2pg.errors import ConfigError
from bq2pg.plan import typemap
from bq2pg.plan.tables import Field

#: Column types a watermark can have (``typemap.TYPES``' watermark column). FLOAT64 is refused:
#: one NaN makes max() NaN, and every later `> NaN` filter matches nothing, silently
#: (RELIABILITY.md b.13).
TYPES = tuple(typemap.watermark_types())

_LAG = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def check(field: Field, table: str) -> None:
    """Refuse a column that cannot be a watermark, saying why."""
    if field.repeated or field.is_record or field.type not in TYPES:
        reason = (
            "a FLOAT64 watermark could become NaN and silently stop every later run"
            if field.type == "FLOAT64"
            else f"{field.type}{' REPEATED' if field.repeated else ''} cannot be compared in order"
        )
        raise ConfigError(
            f"--incremental {field.name!r} of {table}: {reason}; use an INT64, NUMERIC, DATE, "
            "DATETIME, TIMESTAMP or STRING column"
        )


def parse_lag(text: str | None) -> float:
    """``--lag``: seconds (``90``, ``15m``, ``2h``, ``1d``) or, for numbers, an amount."""
    if not text:
        return 0.0
    m = _LAG.match(text)
    if not m:
        raise ConfigError(f"--lag {text!r}: give a number, or a duration like 30m, 2h or 1d")
    return float(m[1]) * _UNIT_SECONDS[m[2]]


def bound(field: Field, value: str, lag: float) -> str:
    """The BigQuery literal of ``value`` (as PostgreSQL printed it) minus ``lag``."""
    t = field.type
    if t == "STRING":
        if lag:
            raise ConfigError("--lag needs a number or a time column, not STRING")
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if t in ("INT64", "NUMERIC", "BIGNUMERIC"):
        number = Decimal(value) - Decimal(str(lag))
        text = str(int(number)) if t == "INT64" else format(number, "f")
        return text if t == "INT64" else f"{t} '{text}'"
    if t == "DATE":
        day = dt.date.fromisoformat(value) - dt.timedelta(seconds=lag)
        return f"DATE '{day.isoformat()}'"
    moment = dt.datetime.fromisoformat(value) - dt.timedelta(seconds=lag)
    if t == "DATETIME":
        return f"DATETIME '{moment.isoformat(sep=' ')}'"
    return f"TIMESTAMP '{moment.astimezone(dt.UTC).isoformat(sep=' ')}'"


def restriction(field: Field, value: str | None, lag: float) -> str | None:
    """``column >= bound``, or None for the first run (no watermark yet)."""
    if value is None:
        return None
    return f"`{field.name}` >= {bound(field, value, lag)}"
