"""What the patents model should hold, computed from source rows in Python: the oracle the
model and query tests compare the database with (independent of bq2pg's SQL)."""

from __future__ import annotations

import datetime as dt
import re


def text(value: str | None) -> str | None:
    """A source string as the model stores it: ``''`` becomes NULL."""
    return None if value == "" else value


def date(value: int) -> dt.date | None:
    """A YYYYMMDD integer as a date; 0 and anything not a real 8-digit date -> None."""
    digits = str(value)
    if not re.fullmatch(r"[0-9]{8}", digits):
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def pick(entries: list[dict]) -> dict | None:
    """The first English entry with text, else the first entry with text, else None."""
    with_text = [e for e in entries if e["text"]]
    english = [e for e in with_text if e["language"] == "en"]
    return (english or with_text or [None])[0]
