"""Every SQL query in docs/queries.md returns exactly the rows computed from the seeded data.

The model is loaded (emulator -> ``bq2pg patents`` -> PostgreSQL) from 1,500 generated
publications plus a few hand-made edge rows (empty country, family and names, unknown and
impossible dates). Each query's result is compared with one computed here in Python from the
seeded Arrow rows, independently of the model's SQL: a wrong query or a wrong load fails.
Where a documented ``ORDER BY`` leaves ties, any order of the tied rows (and any choice of
them at a ``LIMIT``) is accepted, but every row must be a right one, in a right place.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql

import model_oracle as oracle
from bq2pg.bigquery.client import TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic as generate
from bq2pg.patents.pipeline import PatentsRequest, run
from model_oracle import date, text

DOC = Path(__file__).resolve().parents[1] / "docs" / "queries.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)
Row = tuple[object, ...]


# --- the seeded rows ---------------------------------------------------------------------------


EDGES = [f"ZZ-EDGE{i}-A1" for i in range(6)]


def edge_rows(generated: pa.Table) -> list[dict]:
    """Copies of generated rows with what the generator never makes: NULL countries, families,
    names and dates, an exact 2000-01-01, an even number of grants in a country, and a
    publication citing the most-cited one twice."""
    cited = Counter(
        c["publication_number"] for c in pc.list_flatten(generated["citation"]).to_pylist()
    )
    focus = min((-n, pn) for pn, n in cited.items() if pn)[1]
    templates = [r for r in generated.slice(0, 100).to_pylist() if r["cpc"] and r["citation"]]
    rows = [
        r | {
            "publication_number": pn, "family_id": "",
            "inventor_harmonized": [*r["inventor_harmonized"], {"name": "", "country_code": "DE"}],
            "assignee_harmonized": [*r["assignee_harmonized"], {"name": "", "country_code": ""}],
        }
        for pn, r in zip(EDGES, templates, strict=False)
    ]  # fmt: skip
    twice = [rows[1]["citation"][0] | {"publication_number": focus, "npl_text": ""}] * 2
    changes = [
        {"country_code": "", "publication_date": 0, "filing_date": 0, "grant_date": 20200102},
        {"country_code": "", "publication_date": 20210315, "filing_date": 20190231,
         "grant_date": 20210315, "citation": [*twice, *rows[1]["citation"]]},
        {"publication_date": 20000101},
        {"publication_date": 19991231},
        {"country_code": "ZZ", "filing_date": 20190101, "grant_date": 20200101},
        {"country_code": "ZZ", "filing_date": 20180101, "grant_date": 20200101},
    ]  # fmt: skip
    return [r | c for r, c in zip(rows, changes, strict=True)]


def seeded_table() -> pa.Table:
    generated = generate.generate(1500, seed=21)
    edges = pa.Table.from_pylist(edge_rows(generated), schema=generated.schema)
    return pa.concat_tables([generated, edges])


# --- the model, computed from the seeded rows --------------------------------------------------


def pick(entries: list[dict]) -> str | None:
    """The text of the first English entry with text, else of the first entry with text."""
    return (oracle.pick(entries) or {"text": None})["text"]


@dataclass
class Model:
    pubs: dict[str, dict]  # publication_number -> the publication's columns used here
    cpc: list[tuple[str, str | None]]  # (publication_number, code), one per source entry
    citations: list[tuple[str, str | None]]  # (publication_number, cited_publication_number)
    assignees: list[tuple[str, str | None]]  # (publication_number, name)
    inventors: list[tuple[str, str | None, str | None]]  # (publication_number, name, country)


def model_of(table: pa.Table) -> Model:
    model = Model({}, [], [], [], [])
    for r in table.to_pylist():
        pn = r["publication_number"]
        model.pubs[pn] = {
            "country_code": text(r["country_code"]),
            "family_id": text(r["family_id"]),
            "title": pick(r["title_localized"]),
            **{c: date(r[c]) for c in ("publication_date", "filing_date", "grant_date")},
            "citation_count": len(r["citation"]),
            "npl_citation_count": sum(1 for c in r["citation"] if c["npl_text"]),
        }
        model.cpc += [(pn, text(e["code"])) for e in r["cpc"]]
        model.citations += [(pn, text(e["publication_number"])) for e in r["citation"]]
        model.assignees += [(pn, text(h["name"])) for h in r["assignee_harmonized"]]
        model.inventors += [
            (pn, text(h["name"]), text(h["country_code"])) for h in r["inventor_harmonized"]
        ]
    return model


# --- the expected result of each query ----------------------------------------------------------


@dataclass
class Expected:
    rows: list[Row]  # every row of the result before its LIMIT
    key: Callable[[Row], tuple] | None = None  # the documented ORDER BY; None: no order
    limit: int | None = None


def split_part(code: str | None) -> str | None:
    return None if code is None else code.split("/")[0]


def percent(part: int, whole: int) -> Decimal:
    """``round(100.0 * part / whole, 1)`` (half away from zero) for part, whole >= 0."""
    tenths = math.floor(Fraction(1000 * part, whole) + Fraction(1, 2))
    return Decimal(tenths).scaleb(-1)


def median(values: list[int]) -> float:
    """``percentile_cont(0.5)``: the middle value, or interpolated halfway between two."""
    ordered = sorted(values)
    lo, hi = ordered[(len(ordered) - 1) // 2], ordered[len(ordered) // 2]
    return lo + (hi - lo) * 0.5


def expectations(m: Model, rank: Callable[[str | None], tuple]) -> dict[int, Expected]:
    """Query number -> its expected result; ``rank`` orders text as the server's collation."""
    pubs = m.pubs
    codes: defaultdict[str, set[str]] = defaultdict(set)  # distinct codes per publication
    for pn, code in m.cpc:
        if code is not None:
            codes[pn].add(code)

    # 1. top CPC groups by publication year
    q1: defaultdict[tuple, set[str]] = defaultdict(set)
    for pn, code in m.cpc:
        if (published := pubs[pn]["publication_date"]) is not None:
            q1[published.year, split_part(code)].add(pn)

    # 2. citation neighbours of the most-cited publication
    cited = Counter(c for _, c in m.citations if c is not None)
    focus = min(cited, key=lambda c: (-cited[c], rank(c)))
    q2 = [("cited by", pn) for pn, c in m.citations if c == focus]
    q2 += [("cites", c) for pn, c in m.citations if pn == focus and c is not None]

    # 3. assignee portfolios
    portfolio: defaultdict[str, set[str]] = defaultdict(set)
    for pn, name in m.assignees:
        if name is not None:
            portfolio[name].add(pn)
    q3 = [
        (
            name,
            len(pns),
            sum(1 for pn in pns if pubs[pn]["grant_date"] is not None),
            len({pubs[pn]["country_code"] for pn in pns} - {None}),
            len({split_part(c) for pn in pns for c in codes[pn]}),
        )
        for name, pns in portfolio.items()
    ]

    # 4. families with more than one member
    family: defaultdict[str, list[str]] = defaultdict(list)
    for pn, p in pubs.items():
        if p["family_id"] is not None:
            family[p["family_id"]].append(pn)
    q4 = [
        (f, len(pns), tuple(sorted({pubs[pn]["country_code"] for pn in pns}, key=rank)))
        for f, pns in family.items()
        if len(pns) > 1
    ]

    # 5. forward citations within the loaded set (one per citation row)
    q5 = [(pn, pubs[pn]["title"], n) for pn, n in cited.items() if pn in pubs]

    # 6. publications per country and year, from 2000
    q6 = Counter(
        (p["country_code"], p["publication_date"].year)
        for p in pubs.values()
        if p["publication_date"] is not None and p["publication_date"] >= dt.date(2000, 1, 1)
    )

    # 7. median days from filing to grant
    days: defaultdict[str | None, list[int]] = defaultdict(list)
    for p in pubs.values():
        if p["grant_date"] is not None and p["filing_date"] is not None:
            days[p["country_code"]].append((p["grant_date"] - p["filing_date"]).days)

    # 8. CPC codes that appear together (a < b in the server's collation)
    pairs = Counter(
        (a, b) for pn in codes for a in codes[pn] for b in codes[pn] if rank(a) < rank(b)
    )

    # 9. inventors by name and country
    inventor: defaultdict[tuple, set[str]] = defaultdict(set)
    for pn, name, country in m.inventors:
        if name is not None:
            inventor[name, country].add(pn)

    # 10. share of non-patent literature among citations, by country
    sums: defaultdict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for p in pubs.values():
        sums[p["country_code"]][0] += p["npl_citation_count"]
        sums[p["country_code"]][1] += p["citation_count"]

    return {
        1: Expected([(y, g, len(pns)) for (y, g), pns in q1.items()], lambda r: (-r[0], -r[2]), 20),
        2: Expected(q2),
        3: Expected(q3, lambda r: (-r[1],), 20),
        4: Expected(q4, lambda r: (-r[1], rank(r[0])), 20),
        5: Expected(q5, lambda r: (-r[2], rank(r[0])), 10),
        6: Expected([(c, y, n) for (c, y), n in q6.items()], lambda r: (rank(r[0]), r[1])),
        7: Expected([(c, len(d), median(d)) for c, d in days.items()], lambda r: (r[2],)),
        8: Expected(
            [(a, b, n) for (a, b), n in pairs.items()],
            lambda r: (-r[2], rank(r[0]), rank(r[1])),
            20,
        ),
        9: Expected(
            [(name, c, len(pns)) for (name, c), pns in inventor.items()],
            lambda r: (-r[2], rank(r[0])),
            20,
        ),
        10: Expected(
            [(c, npl, cit, percent(npl, cit)) for c, (npl, cit) in sums.items() if cit > 0],
            lambda r: (-r[3],),
        ),
    }


def collation(conn: psycopg.Connection, strings: set[str]) -> Callable[[str | None], tuple]:
    """Sort key of text in the server's default collation (NULLs last, as ORDER BY ... ASC)."""
    (ordered,) = conn.execute(
        "SELECT array_agg(s ORDER BY s) FROM unnest(%s::text[]) s", [sorted(strings)]
    ).fetchone()
    position = {s: i for i, s in enumerate(ordered)}
    return lambda s: (s is None, position[s] if s is not None else 0)


def assert_result(got: list[Row], want: Expected) -> None:
    """``got`` is ``want``: the same rows, or for an ORDER BY with ties and a LIMIT, right rows
    whose sort keys are exactly the first keys of the expected result."""
    got = [tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in got]
    assert want.rows, "the seeded data must give this query something to return"
    if want.key is None:
        assert Counter(got) == Counter(want.rows)
        return
    wrong = Counter(got) - Counter(want.rows)
    assert not wrong, f"rows not in the expected result: {list(wrong)[:5]}"
    ranked = sorted(want.rows, key=want.key)[: want.limit]
    assert [want.key(r) for r in got] == [want.key(r) for r in ranked], (got[:5], ranked[:5])


# --- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(source, pg_url, tmp_path_factory):
    """(schema of the loaded model, the seeded Arrow rows)."""
    table_id = f"bq2pg-test.queries_{tmp_path_factory.mktemp('q').name[-6:]}.publications"
    ref = TableRef.parse(table_id)
    table = seeded_table()
    create_table(source, ref, publications.PUBLICATIONS)
    load_arrow(source, ref, table)
    schema = "queries_model"
    run(
        source,
        PatentsRequest(database_url=pg_url, source=table_id, schema=schema, drop_tables=True),
    )
    yield schema, table
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def expected(seeded, pg_url) -> dict[int, Expected]:
    model = model_of(seeded[1])
    strings = {s for p in model.pubs.values() for s in (p["country_code"], p["family_id"])}
    strings |= set(model.pubs) | {c for _, c in model.cpc} | {c for _, c in model.citations}
    strings |= {n for _, n, _ in model.inventors}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rank = collation(conn, strings - {None})
    return expectations(model, rank)


def test_the_doc_has_ten_queries():
    assert len(QUERIES) == 10


def test_the_edge_rows_reach_the_null_cases(seeded, expected):
    model = model_of(seeded[1])
    edges = [model.pubs[pn] for pn in EDGES]
    assert all(e["family_id"] is None for e in edges)
    assert [e["country_code"] for e in edges[:2] + edges[4:]] == [None, None, "ZZ", "ZZ"]
    assert [e["filing_date"] for e in edges[:2]] == [None, None]  # 0, and 2019-02-31
    assert edges[0]["publication_date"] is None and edges[1]["grant_date"] is not None
    assert edges[2]["publication_date"] == dt.date(2000, 1, 1)
    assert {(pn, None) for pn in EDGES} <= set(model.assignees)
    assert {(pn, None, "DE") for pn in EDGES} <= set(model.inventors)
    assert set(EDGES) <= {pn for pn, _ in model.cpc} & {pn for pn, _ in model.citations}
    assert ("ZZ", 2, 547.5) in expected[7].rows  # 365 and 730 days: interpolated
    assert Counter(expected[2].rows)["cited by", EDGES[1]] == 2  # UNION ALL keeps both


@pytest.mark.parametrize("number", range(1, 11))
def test_each_documented_query_returns_the_expected_rows(pg_url, seeded, expected, number):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(seeded[0])))
        rows = conn.execute(QUERIES[number - 1]).fetchall()
    assert_result(rows, expected[number])
