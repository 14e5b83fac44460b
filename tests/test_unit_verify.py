"""The one comparison behind both verifiers (a run's, and ``bq2pg verify``): pure, no server."""

from __future__ import annotations

import pytest

from bq2pg.quality.verify import MERGED, TableCheck, compare


@pytest.mark.parametrize(
    ("ledger", "rows", "expected", "found", "status", "ok"),
    [
        (10, 10, None, None, "ok (count)", True),
        (10, 10, 123, 123, "ok (count, checksum)", True),
        (10, 10, 123, None, "ok (count)", True),  # not computable on one side: counts only
        (10, 10, None, 123, "ok (count)", True),
        (10, 9, 123, 123, "MISMATCH", False),  # a count mismatch wins over the checksum
        (10, 11, None, None, "MISMATCH", False),
        (10, 10, 123, 124, "MISMATCH (checksum)", False),
        (0, 0, 0, 0, "ok (count, checksum)", True),
    ],
)
def test_compare(ledger, rows, expected, found, status, ok):
    check = compare("s.t", ledger, rows, expected, found)
    assert (check.status, check.ok) == (status, ok)
    assert check.checksummed == (status == "ok (count, checksum)")
    assert bool(check.problem) == (not ok)


def test_problems_say_what_differs():
    assert compare("t", 10, 9, None, None).problem == "t: 9 rows, the ledger committed 10"
    assert "content checksum" in compare("t", 10, 10, 1, 2).problem


def test_a_merged_table_is_not_a_mismatch():
    check = TableCheck("s.t", None, None, status=MERGED)
    assert check.ok and not check.checksummed and check.problem == ""
