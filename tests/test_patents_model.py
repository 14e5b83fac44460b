"""The patents model (``patents.run``) built from the 20 real rows, every value checked.

The 15 37-column and 5 30-column rows of ``../shared/patents/publications_sample.jsonl`` go into
the emulator as they are; every column of every model table is compared with an expectation
computed here from the source JSON, independently of the SQL of ``transform``. Variants of a
real row cover what the sample lacks (impossible dates, combined citation types, fallbacks).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from functools import cache

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bq2pg.patents import pipeline as patents
from bq2pg.patents import source as publications
from bq2pg.patents.pipeline import PatentsRequest
from conftest import EMULATOR_PROJECT, make_table, patents_file
from model_oracle import date, pick, text

KEY = "publication_number"
CLAIM = re.compile(r"(?m)^\s*\d+\s*\.\s")
SCALARS = (
    "application_number", "country_code", "kind_code", "application_kind",
    "application_number_formatted", "pct_number", "family_id",
    "spif_publication_number", "spif_application_number", "entity_status", "art_unit",
)  # fmt: skip
DATES = ("publication_date", "filing_date", "grant_date", "priority_date")
EXTRA = ("title_localized", "abstract_localized", "uspc", "fi", "fterm", "locarno")
#: full-text column: (kind, format) of its publication_texts rows
TEXTS = {
    c: (c.split("_")[0], "html" if c.endswith("_html") else "plain")
    for c in publications.FULL_TEXT_COLUMNS
}
VERSIONS = {
    "37": (publications.PUBLICATIONS, slice(0, 15)),
    "30": (publications.PUBLICATIONS_30, slice(15, 20)),
}

# --- expectations, from the source JSON only ---------------------------------------------------


@cache
def sample_rows() -> tuple[str, ...]:
    return tuple(patents_file("publications_sample.jsonl").read_text("utf-8").splitlines())


def rows_for(version: str) -> list[dict]:
    """Fresh copies of the rows of ``version`` (tests may change them)."""
    return [json.loads(line) for line in sample_rows()[VERSIONS[version][1]]]


def distinct_codes(entries: list[dict]) -> list[str]:
    return list(dict.fromkeys(e["code"] for e in entries if e["code"]))


def expected_publication(row: dict, full_text: bool) -> dict:
    title, abstract = pick(row["title_localized"]), pick(row["abstract_localized"])
    claims = pick(row.get("claims_localized", []))
    cites = row["citation"]
    return {
        KEY: row[KEY],
        **{c: text(row.get(c, "")) for c in SCALARS},
        **{c: date(row[c]) for c in DATES},
        "title": title and title["text"],
        "title_language": title and text(title["language"]),
        "abstract": abstract and abstract["text"],
        "abstract_language": abstract and text(abstract["language"]),
        "inventors": row["inventor"],
        "assignees": row["assignee"],
        "inventors_harmonized": [h["name"] for h in row["inventor_harmonized"]],
        "assignees_harmonized": [h["name"] for h in row["assignee_harmonized"]],
        "cpc_codes": distinct_codes(row["cpc"]),
        "ipc_codes": distinct_codes(row["ipc"]),
        "citation_count": len(cites),
        "patent_citation_count": sum(1 for c in cites if c["publication_number"]),
        "npl_citation_count": sum(1 for c in cites if c["npl_text"]),
        "claims_count": len(CLAIM.findall(claims["text"])) if full_text and claims else None,
        "extra": {c: row.get(c, []) for c in EXTRA},
    }


def classification(e: dict) -> dict:
    return {"code": text(e["code"])} | {k: e[k] for k in ("inventive", "first", "tree")}


def reference(first: str):
    names = ("application_number", "npl_text", "type", "category")
    return lambda e: (
        {first: text(e["publication_number"])}
        | texts_of(*names)(e)
        | {"filing_date": date(e["filing_date"])}
    )


def texts_of(*names: str):
    return lambda e: {n: text(e[n]) for n in names}


def text_entry(e: dict) -> dict:
    return {"language": text(e["language"]), "text": e["text"], "truncated": e.get("truncated")}


#: (child table, source column, values of the table's KEYS, source element -> child row)
PARTS = [
    ("publication_cpc", "cpc", (), classification),
    ("publication_ipc", "ipc", (), classification),
    ("publication_citations", "citation", (), reference("cited_publication_number")),
    ("publication_priority_claims", "priority_claim", (), reference("priority_publication_number")),
    ("publication_inventors", "inventor_harmonized", (), texts_of("name", "country_code")),
    ("publication_assignees", "assignee_harmonized", (), texts_of("name", "country_code")),
    ("publication_examiners", "examiner", (), texts_of("name", "department", "level")),
    *(("publication_family_links", r, (r,), reference("linked_publication_number")) for r in ("parent", "child")),
    *(("publication_texts", c, kind_format, text_entry) for c, kind_format in TEXTS.items()),
]  # fmt: skip
#: child table: its key columns between publication_number and ordinal
KEYS = dict.fromkeys((p[0] for p in PARTS), ()) | {
    "publication_family_links": ("relation",),
    "publication_texts": ("kind", "format"),
}


def expected_child(table: str, rows: list[dict]) -> dict[tuple, dict]:
    """(publication_number, *key, ordinal) -> the other columns, for each source element."""
    return {
        (row[KEY], *key, ordinal): element(e)
        for name, column, key, element in PARTS
        if name == table
        for row in rows
        for ordinal, e in enumerate(row.get(column, []), 1)
    }


# --- loading and reading back ------------------------------------------------------------------


@dataclass
class Loaded:
    schema: str
    rows: list[dict]
    full_text: bool


def load_model(source, pg_url, dataset, schema, rows, *, full_text=True, fields=None) -> Loaded:
    """``rows`` in a new emulator table, the model built from it into PostgreSQL ``schema``."""
    fields = fields or publications.PUBLICATIONS
    table_id = make_table(source, dataset, "publications", list(fields), rows)
    request = PatentsRequest(
        database_url=pg_url, source=table_id, schema=schema, streams=1, full_text=full_text
    )
    assert patents.run(source, request).rows_read == len(rows)
    return Loaded(schema, rows, full_text)


@pytest.fixture(
    scope="module",
    params=[("37", True), ("30", True), ("37", False), ("30", False)],
    ids=["37-full_text", "30-full_text", "37", "30"],
)
def loaded(request, source, pg_url):
    version, full_text = request.param
    fields, rows = VERSIONS[version][0], rows_for(version)
    assert len(rows) == (15 if version == "37" else 5)
    dataset, schema = f"{EMULATOR_PROJECT}.m_{uuid.uuid4().hex[:12]}", f"m_{uuid.uuid4().hex[:12]}"
    model = load_model(source, pg_url, dataset, schema, rows, full_text=full_text, fields=fields)
    yield model
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def select(pg: psycopg.Connection, schema: str, table: str) -> list[dict]:
    with pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table))
        ).fetchall()


def child_rows(pg: psycopg.Connection, schema: str, table: str) -> dict[tuple, dict]:
    keys = [KEY, *KEYS[table], "ordinal"]
    got = select(pg, schema, table)
    out = {tuple(g.pop(k) for k in keys): g for g in got}
    assert len(out) == len(got), f"{table}: a key repeated"
    return out


def publications_by_key(pg: psycopg.Connection, schema: str) -> dict[str, dict]:
    got = select(pg, schema, "publications")
    assert len({g[KEY] for g in got}) == len(got), "publication_number repeated"
    return {g[KEY]: g for g in got}


def check_model(pg: psycopg.Connection, model: Loaded) -> None:
    """Every column of every model table equal to the expectation (``extra``: its own test)."""
    got = publications_by_key(pg, model.schema)
    assert sorted(got) == sorted(r[KEY] for r in model.rows)
    for row in model.rows:
        want = expected_publication(row, model.full_text)
        have = got[row[KEY]]
        assert set(have) == set(want), row[KEY]
        for column in set(want) - {"extra"}:
            assert have[column] == want[column], (row[KEY], column, have[column], want[column])
    tables = pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [model.schema])
    texts = {"publication_texts"} if model.full_text else set()
    assert {t for (t,) in tables} == {"publications", *KEYS} - {"publication_texts"} | texts
    for table in KEYS:  # texts compared as str: equal str, equal UTF-8 bytes
        if table != "publication_texts" or model.full_text:
            assert child_rows(pg, model.schema, table) == expected_child(table, model.rows), table


# --- the real rows -----------------------------------------------------------------------------


def test_every_value_of_the_model_equals_the_source(pg, loaded):
    check_model(pg, loaded)
    claims = [expected_publication(r, loaded.full_text)["claims_count"] for r in loaded.rows]
    us_rows = 5 if len(loaded.rows) == 15 else 1  # the rows with claims, all in English
    assert sum(1 for c in claims if c) == (us_rows if loaded.full_text else 0)


def test_extra_holds_the_localized_and_other_codes_exactly_as_the_source(pg, loaded, request):
    got = publications_by_key(pg, loaded.schema)
    for row in loaded.rows:
        assert got[row[KEY]]["extra"] == expected_publication(row, False)["extra"], row[KEY]


#: publication_number: (index of the title entry, its language, of the abstract entry, its
#: language), read off the source JSON by hand; None: no entry with text
LOCALIZED_PICKS = {
    **dict.fromkeys(
        ["US-2001000400-A1", "US-2001003026-A1", "US-2001011130-A1", "US-2001032386-A1",
         "US-2001033102-A1", "US-4314796-A", "CN-101481674-B"],  # English only, or first
        (0, "en", 0, "en"),
    ),
    **dict.fromkeys(["DE-69611147-T2", "DE-69630331-T2", "DE-69807539-T2"], (0, "de", None, None)),
    **dict.fromkeys(
        ["DE-69636755-T2", "DE-69728658-T2", "AT-E152950-T1", "AT-E208695-T1", "AT-E217560-T1",
         "AT-E234300-T1", "AT-E323922-T1"],  # German title only, English abstract
        (0, "de", 0, "en"),
    ),
    "CN-101856496-B": (1, "en", 0, "zh"),  # zh title listed before the en one; zh abstract only
    "CN-101481402-B": (0, "zh", 0, "zh"),  # zh only
    "JP-H0476664-B2": (None, None, None, None),  # no title or abstract at all
}  # fmt: skip


def test_title_and_abstract_are_english_first_then_first_language(pg, loaded):
    got = publications_by_key(pg, loaded.schema)
    assert sorted(got) == sorted(r[KEY] for r in loaded.rows)
    columns = ("title", "title_language", "abstract", "abstract_language")
    for row in loaded.rows:
        t, t_language, a, a_language = LOCALIZED_PICKS[row[KEY]]
        title = row["title_localized"][t] if t is not None else None
        abstract = row["abstract_localized"][a] if a is not None else None
        want = (
            title and title["text"],
            title and title["language"],
            abstract and abstract["text"],
            abstract and abstract["language"],
        )
        assert (want[1], want[3]) == (t_language, a_language), row[KEY]  # the table's indexes
        rule = expected_publication(row, loaded.full_text)  # the rule, from the source rows
        assert want == tuple(rule[c] for c in columns), row[KEY]
        have = tuple(got[row[KEY]][c] for c in columns)
        assert have == want, (row[KEY], have, want)


def test_duplicate_cpc_entries_stay_as_child_rows(pg, loaded):
    pn = "US-2001032386-A1"
    rows = {r[KEY]: r for r in loaded.rows}
    if pn not in rows:
        pytest.skip("the duplicated cpc entries are in the 37-column rows")
    source = rows[pn]["cpc"]
    assert len(source) == 32 and len(Counter(json.dumps(e) for e in source)) < 32
    got = {
        k[1]: g for k, g in child_rows(pg, loaded.schema, "publication_cpc").items() if k[0] == pn
    }
    assert sorted(got) == list(range(1, 33))
    stored = Counter(json.dumps(classification(g), sort_keys=True) for g in got.values())
    assert stored == Counter(json.dumps(classification(e), sort_keys=True) for e in source)
    codes = publications_by_key(pg, loaded.schema)[pn]["cpc_codes"]
    assert codes == distinct_codes(source) and len(codes) == len(set(codes)) == 17


def test_unknown_citation_categories_and_empty_country_codes_are_kept(pg, loaded):
    if len(loaded.rows) == 15:
        pytest.skip("citations and harmonized names without country are in the 30-column rows")
    cites = select(pg, loaded.schema, "publication_citations")
    categories = Counter(c["category"] for c in cites)
    assert categories == Counter(c["category"] for r in loaded.rows for c in r["citation"])
    assert categories == {"UNKNOWN": 9, "SEA": 6}
    npl = [c for c in cites if c["npl_text"]]
    assert len(npl) == 4 and all(c["cited_publication_number"] is None for c in npl)
    people = [p for p in select(pg, loaded.schema, "publication_inventors") if p[KEY][:3] == "CN-"]
    source = [h for r in loaded.rows if r[KEY][:3] == "CN-" for h in r["inventor_harmonized"]]
    assert len(source) == 9 and {h["country_code"] for h in source} == {""}
    assert sorted(p["name"] for p in people) == sorted(h["name"] for h in source)
    assert {p["country_code"] for p in people} == {None}


def test_indexes_and_primary_key_exist(pg, loaded):
    made = pg.execute(
        "SELECT indexname, tablename, indexdef FROM pg_indexes WHERE schemaname = %s",
        [loaded.schema],
    ).fetchall()
    found = {name: (table, definition) for name, table, definition in made}
    for index in patents.INDEXES:
        assert index.name in found, index
        table, definition = found[index.name]
        assert table == index.table and f"USING {index.method}" in definition, found[index.name]
        assert definition.endswith("(" + ", ".join(index.columns) + ")"), definition
    pkey = pg.execute(
        "SELECT array_agg(a.attname::text) FROM pg_constraint c JOIN pg_attribute a "
        "ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
        "WHERE c.contype = 'p' AND c.conrelid = to_regclass(%s)",
        [f'"{loaded.schema}"."publications"'],
    ).fetchone()
    assert pkey == ([KEY],)


# --- variants of a real row: what the sample lacks ---------------------------------------------


def variant(**changes) -> dict:
    """DE-69611147-T2 (37 columns, line 6) with ``changes``."""
    row = rows_for("37")[5]
    assert row[KEY] == "DE-69611147-T2"
    return row | changes


def entry(text_: str, language: str, truncated: bool = False) -> dict:
    return {"text": text_, "language": language, "truncated": truncated}


def test_variant_keeps_combined_citation_types_and_nulls_impossible_dates(
    source, dataset, pg_url, pg_schema, pg
):
    row = variant()
    cite = {"publication_number": "EP-0700000-A1", "application_number": "", "npl_text": "",
            "type": "XY", "category": "SEA", "filing_date": 19950231}  # fmt: skip
    npl = cite | {"publication_number": "", "npl_text": 'Doe, "Über" <URL:http://x.org>',
                  "type": "XPI", "category": "UNKNOWN", "filing_date": 0}  # fmt: skip
    link = cite | {"application_number": "EP-1-A", "type": "division", "filing_date": 19960101}
    row.update(
        publication_number="DE-VARIANT-T2", pct_number="", entity_status="SMALL", art_unit="3745",
        publication_date=20010231, filing_date=20011301, grant_date=19990000, priority_date=-1,
        title_localized=[entry("", "en"), entry("Schloss", "de"), entry("Serrure", "fr", True)],
        abstract_localized=[entry("Résumé", "")],
        claims_localized=[entry("1. Ein\n2. Zwei\n", "de"), entry("1. A\n 2 . B\n3.C\n", "en")],
        cpc=[*row["cpc"], row["cpc"][0], {"code": "", "inventive": False, "first": False, "tree": []}],
        citation=[cite, npl, cite, cite | {"publication_number": "", "type": "AP", "category": ""}],
        parent=[link, link], child=[link | {"type": "continuation-in-part"}],
        inventor_harmonized=[*row["inventor_harmonized"], {"name": "NOBODY", "country_code": ""}],
        examiner=[{"name": "Doe", "department": "", "level": "primary"}],
    )  # fmt: skip
    model = load_model(source, pg_url, dataset, pg_schema, [row])
    check_model(pg, model)
    pub = publications_by_key(pg, model.schema)["DE-VARIANT-T2"]
    assert pub["extra"] == expected_publication(row, True)["extra"]
    picked = ("title", "title_language", "abstract", "abstract_language", "claims_count")
    counts = ("citation_count", "patent_citation_count", "npl_citation_count")
    assert [pub[c] for c in (*DATES, *picked, *counts)] == [None] * 4 + [
        "Schloss", "de", "Résumé", None, 2,  # the English claims; "3.C" lacks the space
        4, 2, 1,
    ]  # fmt: skip
    assert pub["cpc_codes"] == distinct_codes(row["cpc"][:2]) and len(pub["cpc_codes"]) == 2
    cites = [c for _, c in sorted(child_rows(pg, model.schema, "publication_citations").items())]
    assert [(c["type"], c["filing_date"]) for c in cites] == [
        ("XY", None), ("XPI", None), ("XY", None), ("AP", None)
    ]  # fmt: skip
    links = child_rows(pg, model.schema, "publication_family_links")
    assert sorted(k[1:] for k in links) == [("child", 1), ("parent", 1), ("parent", 2)]
    assert links[("DE-VARIANT-T2", "parent", 2)]["type"] == "division"
    people = child_rows(pg, model.schema, "publication_inventors")
    assert people[("DE-VARIANT-T2", 5)] == {"name": "NOBODY", "country_code": None}


ODD = {  # case: (changes to the real row, check of its publications row, the bug it was)
    "a_seven_digit_date_is_not_read_as_another_date": (
        {"filing_date": 2001011},  # as YYYYMMDD: year 200, month 10, day 11
        lambda pub: pub["filing_date"] in (None, dt.date(200, 10, 11)),
        "BUG: try_strptime('%Y%m%d') reads the INT64 2001011 as 2001-01-01 (unpadded month/day)",
    ),
    "claims_numbered_with_a_no_break_space_are_counted": (
        {"claims_localized": [entry("1.\u00a0A lock.\n2.\u00a0The lock of claim 1.\n", "en")]},
        lambda pub: pub["claims_count"] == len(CLAIM.findall("1.\u00a0A\n2.\u00a0B")) == 2,
        "BUG: claims_count uses RE2, whose \\s is ASCII only: '1.<NBSP>A' is not counted",
    ),
}


@pytest.mark.parametrize(
    "case",
    list(ODD),
)
def test_odd_values_of_a_real_row(source, dataset, pg_url, pg_schema, pg, case):
    changes, check, _ = ODD[case]
    load_model(
        source, pg_url, dataset, pg_schema, [variant(publication_number="DE-ODD-T2", **changes)]
    )
    pub = publications_by_key(pg, pg_schema)["DE-ODD-T2"]
    assert check(pub), {c: pub[c] for c in ("filing_date", "claims_count")}
