"""--where validation (pure)."""

from __future__ import annotations

import pytest

from bq2pg.errors import FilterError
from bq2pg.plan.filters import ROW_RESTRICTION_MAX_BYTES, validate

COLUMNS = ["publication_date", "country_code", "rec"]


@pytest.mark.parametrize(
    "where",
    [
        "publication_date >= 20200101 AND country_code IN ('US', 'DE')",
        "country_code = 'US' OR country_code LIKE 'E%'",
        "rec.x > 1",
        "true",
        "  publication_date BETWEEN 20200101 AND 20201231  ",
    ],
)
def test_valid_predicates_pass_unchanged(where):
    assert validate(where, COLUMNS) == where.strip()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("", "empty"),
        ("publication_date >", "not a valid"),
        ("1=1) OR (1=1", "not a valid"),
        ("country_code = 'US'; DROP TABLE x", "2 statements"),
        ("SELECT 1", "statement"),
        ("DROP TABLE x", "statement"),
        ("country_code IN (SELECT 'US')", "subquery"),
        ("nosuch = 1", "nosuch"),
    ],
)
def test_bad_predicates_are_clear_errors(where, reason):
    with pytest.raises(FilterError, match=reason):
        validate(where, COLUMNS)


def test_a_filter_over_1_mb_is_refused():
    with pytest.raises(FilterError, match="at most"):
        validate("country_code = '" + "x" * ROW_RESTRICTION_MAX_BYTES + "'", COLUMNS)
