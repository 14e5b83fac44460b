"""The built-in quality rules of the patents model, on by default for ``bq2pg patents``.

Structural rules are ``error``s (a broken key or an orphan child row must not be published):
``publication_number`` present and unique, each child table's key unique, every child row's
publication present. Rules on the content of a third-party dataset are ``warn``s (reported,
never blocking a load): code patterns, plausible dates, counts not negative. A user's rule of
the same table and name replaces a built-in one; ``default_rules: false`` (or
``--no-default-rules``) turns them off.
"""

from __future__ import annotations

from typing import Any

from bq2pg.patents.model import DATE_COLUMNS, KEY
from bq2pg.plan.tables import TablePlan
from bq2pg.quality import rules

ORIGIN = "built-in patents rules"
#: Plausible publication dates: the oldest patents in the dataset are from the 1700s.
EARLIEST, LATEST = "1700-01-01", "2100-12-31"
PATTERNS = {
    "country_code": r"^[A-Z]{2}$",
    "kind_code": r"^[A-Z][0-9]?$",
    KEY: r"^[A-Z]{2}-[A-Z0-9]+-[A-Z][0-9]?$",
}
#: A CPC symbol: section, class, subclass, group/subgroup (``H04L9/0643``, ``Y10T428/12674``).
CPC = r"^[A-HY][0-9]{2}[A-Z][0-9]{1,4}/[0-9]{2,6}$"


def document(plan: TablePlan) -> dict[str, list[dict[str, Any]]]:
    """The rules, in the grammar of a ``quality:`` mapping, for the model's tables in
    ``plan``."""
    main: list[dict[str, Any]] = [
        {"rule": "not_null", "columns": [KEY]},
        {"rule": "unique", "columns": [KEY]},
        *({"rule": "pattern", "column": c, "regex": r, "severity": "warn"}
          for c, r in PATTERNS.items()),
        {"rule": "range", "columns": list(DATE_COLUMNS), "min": EARLIEST, "max": LATEST,
         "severity": "warn", "name": "plausible_date"},
        {"rule": "range", "min": 0, "severity": "warn", "name": "count_not_negative",
         "columns": ["citation_count", "patent_citation_count", "npl_citation_count",
                     "claims_count"]},
        {"rule": "row_count", "min": 1, "severity": "warn", "name": "not_empty"},
    ]  # fmt: skip
    found: dict[str, list[dict[str, Any]]] = {plan.name: main}
    for child in plan.children:
        found[child.name] = [
            {"rule": "unique", "columns": list(child.key), "name": "key_unique"},
            {"rule": "relationships", "columns": list(child.parent_key), "to": plan.name,
             "field": list(plan.key), "name": "publication_exists"},
        ]  # fmt: skip
        if child.name in ("publication_cpc", "publication_ipc"):
            symbol = CPC if child.name == "publication_cpc" else r"^[A-H][0-9]{2}[A-Z]"
            found[child.name].append(
                {"rule": "pattern", "column": "code", "regex": symbol, "severity": "warn",
                 "name": "code_pattern"}
            )  # fmt: skip
    return found


def builtin(plan: TablePlan) -> list[rules.Rule]:
    """The built-in rules, parsed (not yet bound to the plan)."""
    return rules.parse(document(plan), ORIGIN)
