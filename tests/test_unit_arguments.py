"""``runs.arguments`` is versioned: what bq2pg 0.1 stored reads back as the same request."""

from __future__ import annotations

import pytest

from bq2pg.state.runs import ARGUMENTS_FORMAT, pack_arguments, unpack_arguments


def test_the_current_format_round_trips():
    request = {"source": "p.d.t", "table": "s.t", "key": ["id"]}
    stored = pack_arguments("copy", request)
    assert stored["format"] == ARGUMENTS_FORMAT
    assert unpack_arguments(stored) == ("copy", request)


@pytest.mark.parametrize(
    ("stored", "kind"),
    [
        ({"source": "p.d.t", "table": None, "mode": "append"}, "copy"),
        ({"source": "p.d.publications", "schema": "patents", "full_text": False}, "patents"),
    ],
)
def test_format_1_is_upgraded_on_reading(stored, kind):
    assert unpack_arguments(stored) == (kind, stored)


def test_a_newer_format_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="newer bq2pg"):
        unpack_arguments({"format": ARGUMENTS_FORMAT + 1, "kind": "copy", "request": {}})
