"""A generator of rows like the Google Patents ``publications`` table, for demos and tests.

:func:`generate` makes a deterministic Arrow table in the real schema (37 or 30 columns) whose
shapes follow real rows: several languages per text, rows with no title, duplicate cpc entries,
empty arrays, ``''`` for missing strings, ``0`` for unknown dates, citations with combined
types and ``UNKNOWN`` categories (citing other generated rows, so forward citations exist), and
a few very long descriptions. It is vectorised (numpy and Arrow compute): a million rows take
seconds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bq2pg.patents import vocabulary
from bq2pg.patents.source import PUBLICATIONS, PUBLICATIONS_30, arrow_type


def _lists(values: pa.Array, counts: np.ndarray) -> pa.ListArray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


_VOCAB = pa.array([w for words in vocabulary.WORDS.values() for w in words])
_VOCAB_START = dict(
    zip(
        vocabulary.WORDS,
        np.cumsum([0] + [len(w) for w in vocabulary.WORDS.values()])[:-1],
        strict=True,
    )
)
_VOCAB_SIZE = {lang: len(words) for lang, words in vocabulary.WORDS.items()}


def _text(rng: np.random.Generator, langs: np.ndarray, words: np.ndarray) -> pa.Array:
    """One random text per entry: ``words[i]`` words in language ``langs[i]``."""
    start = np.vectorize(_VOCAB_START.get, otypes=[np.int64])(langs) if len(langs) else langs
    size = np.vectorize(_VOCAB_SIZE.get, otypes=[np.int64])(langs) if len(langs) else langs
    total = int(words.sum())
    pick = np.repeat(start, words) + (rng.random(total) * np.repeat(size, words)).astype(np.int64)
    return pc.binary_join(_lists(_VOCAB.take(pa.array(pick)), words), " ")


def _dates(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """Random YYYYMMDD integers between years ``lo`` and ``hi``."""
    year = rng.integers(lo, hi, n)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 29, n)
    return (year * 10000 + month * 100 + day).astype(np.int64)


def _localized_col(
    rng: np.random.Generator,
    lang: np.ndarray,
    has: np.ndarray,
    words: tuple[int, int],
    *,
    second: float,
    truncated: bool,
    html: bool = False,
) -> pa.Array:
    """A REPEATED {text, language[, truncated]} column: 0, 1 or 2 languages per row."""
    n = len(lang)
    counts = has.astype(np.int32) + (has & (rng.random(n) < second)).astype(np.int32)
    first_lang = lang
    langs = np.empty(int(counts.sum()), dtype=object)
    row = np.repeat(np.arange(n), counts)
    pos = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    langs[:] = np.where(pos == 0, first_lang[row], np.where(first_lang[row] == "en", "de", "en"))
    nwords = rng.integers(words[0], words[1], len(row))
    text = _text(rng, langs, nwords)
    if html:
        text = pc.binary_join_element_wise("<p>", text, "</p>", "")
    children = [text, pa.array(langs, pa.string())]
    names = ["text", "language"]
    if truncated:
        children.append(pa.array(rng.random(len(row)) < 0.01))
        names.append("truncated")
    return _lists(pa.StructArray.from_arrays(children, names=names), counts)


def generate(n: int, *, seed: int = 0, thirty_columns: bool = False) -> pa.Table:
    """``n`` deterministic publications rows in the real schema (37 or 30 columns).

    The same ``n`` and ``seed`` always give the same rows; ``publication_number`` is unique.
    """
    rng = np.random.default_rng(seed)
    country = rng.choice(vocabulary.COUNTRIES, n, p=vocabulary.COUNTRY_WEIGHTS)
    kind = np.empty(n, dtype=object)
    for cc, kinds in vocabulary.KINDS.items():
        mask = country == cc
        kind[mask] = rng.choice(kinds, int(mask.sum()))
    number = (np.arange(n) * 7 + 1_000_003 + seed * 10_000_019).astype(str)
    app_kind = np.where(np.isin(country, ["DE", "AT"]), "T", "A")
    pub_no = pc.binary_join_element_wise(country, number, kind.astype(str), "-")
    app_digits = (rng.integers(10**6, 10**9, n)).astype(str)
    app_no = pc.binary_join_element_wise(country, app_digits, app_kind, "-")
    lang = np.vectorize(vocabulary.LANG.get, otypes=[object])(country)
    is_us = country == "US"
    publication_date = _dates(rng, n, 1980, 2025)
    filing_date = publication_date - rng.integers(1, 5, n) * 10000  # 1-4 years earlier
    granted = np.isin(kind, ["B", "B1", "B2", "T1", "T2", "A"]) & ~is_us | np.isin(
        kind, ["B1", "B2"]
    )
    grant_date = np.where(granted, publication_date, 0)
    priority_date = np.where(rng.random(n) < 0.03, 0, filing_date - rng.integers(0, 2, n) * 10000)
    family = rng.integers(10**6, 5 * 10**7, n).astype(str)
    # ~30% of rows share a family with the row before them
    shared = np.concatenate([[False], rng.random(n - 1) < 0.3]) if n else np.array([], bool)
    family[shared] = family[np.flatnonzero(shared) - 1]
    empty = np.full(n, "", dtype=object)

    full = is_us & (rng.random(n) < 0.6) | (rng.random(n) < 0.05)
    has_title = rng.random(n) > 0.03  # a few rows have no title at all
    columns: dict[str, pa.Array] = {
        "publication_number": pub_no,
        "application_number": app_no,
        "country_code": pa.array(country),
        "kind_code": pa.array(kind, pa.string()),
        "application_kind": pa.array(app_kind),
        "application_number_formatted": pc.binary_join_element_wise(country, app_digits, ""),
        "pct_number": pa.array(
            np.where(rng.random(n) < 0.1, "PCT/" + country + "2001/0" + app_digits, ""), pa.string()
        ),
        "family_id": pa.array(family),
        "spif_publication_number": pa.array(
            np.where(
                is_us,
                pc.binary_join_element_wise(country, number, kind.astype(str), "").to_numpy(
                    zero_copy_only=False
                ),
                empty,
            ),
            pa.string(),
        ),
        "spif_application_number": pa.array(np.where(is_us, "US" + app_digits, empty), pa.string()),
    }
    truncated = not thirty_columns
    columns["title_localized"] = _localized_col(
        rng, lang, has_title, (4, 14), second=0.35, truncated=truncated
    )
    columns["abstract_localized"] = _localized_col(
        rng, lang, rng.random(n) < 0.8, (40, 160), second=0.2, truncated=truncated
    )
    long_text = rng.random(n) < 0.002  # a few very long descriptions
    for name, words, html in (
        ("claims_localized", (150, 400), False),
        ("claims_localized_html", (150, 400), True),
        ("description_localized", (500, 1500), False),
        ("description_localized_html", (500, 1500), True),
    ):
        col = _localized_col(rng, lang, full, words, second=0.0, truncated=truncated, html=html)
        if name == "description_localized" and long_text.any():
            col = _lengthen(col, long_text)
        columns[name] = col
    columns["publication_date"] = pa.array(publication_date)
    columns["filing_date"] = pa.array(filing_date)
    columns["grant_date"] = pa.array(grant_date)
    columns["priority_date"] = pa.array(priority_date)
    columns["priority_claim"] = _references(
        rng, n, (1, 4), country, app_digits, pub_numbers=None, npl_share=0.0
    )
    inv_counts = rng.integers(0, 7, n).astype(np.int32)
    inv_names = vocabulary.NAMES[rng.integers(0, len(vocabulary.NAMES), int(inv_counts.sum()))]
    columns["inventor"] = _lists(pa.array(inv_names), inv_counts)
    columns["inventor_harmonized"] = _lists(
        pa.StructArray.from_arrays(
            [
                pa.array(np.char.replace(inv_names, ".", "")),
                pa.array(
                    np.where(rng.random(len(inv_names)) < 0.2, "", np.repeat(country, inv_counts))
                ),
            ],
            names=["name", "country_code"],
        ),
        inv_counts,
    )
    asg_counts = rng.integers(0, 3, n).astype(np.int32)
    asg = vocabulary.ASSIGNEES[rng.integers(0, len(vocabulary.ASSIGNEES), int(asg_counts.sum()))]
    columns["assignee"] = _lists(pa.array(asg), asg_counts)
    harm_counts = np.where(rng.random(n) < 0.2, 0, asg_counts).astype(np.int32)
    harm = vocabulary.ASSIGNEES[
        rng.integers(0, len(vocabulary.ASSIGNEES) - 1, int(harm_counts.sum()))
    ]
    columns["assignee_harmonized"] = _lists(
        pa.StructArray.from_arrays(
            [pa.array(harm), pa.array(np.where(rng.random(len(harm)) < 0.3, "", "US"))],
            names=["name", "country_code"],
        ),
        harm_counts,
    )
    ex_counts = ((country == "CN") | is_us & (rng.random(n) < 0.5)).astype(np.int32)
    m = int(ex_counts.sum())
    columns["examiner"] = _lists(
        pa.StructArray.from_arrays(
            [
                pa.array(vocabulary.NAMES[rng.integers(0, len(vocabulary.NAMES), m)]),
                pa.array(np.where(rng.random(m) < 0.5, "", "3744"), pa.string()),
                pa.array(np.where(rng.random(m) < 0.5, "primary", "assistant"), pa.string()),
            ],
            names=["name", "department", "level"],
        ),
        ex_counts,
    )
    columns["uspc"] = _codes(rng, np.where(is_us, rng.integers(1, 4, n), 0), "uspc")
    columns["ipc"] = _codes(rng, rng.integers(1, 11, n), "ipc")
    columns["cpc"] = _codes(
        rng, np.where(np.isin(country, ["CN", "JP"]), 0, rng.integers(0, 30, n)), "cpc"
    )
    columns["fi"] = _codes(rng, np.where(country == "JP", rng.integers(1, 4, n), 0), "fi")
    columns["fterm"] = _codes(rng, np.where(country == "JP", rng.integers(0, 20, n), 0), "fterm")
    columns["locarno"] = _codes(rng, np.where(rng.random(n) < 0.01, 1, 0), "locarno")
    columns["citation"] = _references(
        rng, n, (0, 9), country, app_digits, pub_numbers=pub_no, npl_share=0.15
    )
    for name, share in (("parent", 0.05), ("child", 0.03)):
        columns[name] = _references(
            rng, n, (0, 1), country, app_digits, pub_numbers=None, npl_share=0.0, share=share
        )
    columns["entity_status"] = pa.array(
        np.where(
            is_us & (rng.random(n) < 0.3), np.where(rng.random(n) < 0.5, "LARGE", "SMALL"), ""
        ),
        pa.string(),
    )
    columns["art_unit"] = pa.array(
        np.where(is_us & (rng.random(n) < 0.2), rng.integers(100, 3999, n).astype(str), ""),
        pa.string(),
    )
    fields = PUBLICATIONS_30 if thirty_columns else PUBLICATIONS
    schema = pa.schema([pa.field(f.name, arrow_type(f)) for f in fields])
    return pa.table([columns[f.name].cast(arrow_type(f)) for f in fields], schema=schema)


def _lengthen(col: pa.ListArray, rows: np.ndarray) -> pa.ListArray:
    """Make the texts of ``rows`` ~200 times longer (real descriptions reach megabytes)."""
    values = col.values
    texts = values.field("text")
    parent = pc.list_parent_indices(col).to_numpy()
    long_idx = rows[parent]
    repeated = pc.binary_repeat(texts, pa.array(np.where(long_idx, 200, 1)))
    new_values = pa.StructArray.from_arrays(
        [repeated, *[values.field(i) for i in range(1, values.type.num_fields)]],
        fields=list(values.type),
    )
    return pa.ListArray.from_arrays(col.offsets, new_values)


def _codes(rng: np.random.Generator, counts: np.ndarray, kind: str) -> pa.ListArray:
    """A classification column; ~10% of entries repeat the entry before (as real cpc does)."""
    counts = counts.astype(np.int32)
    m = int(counts.sum())
    if kind == "uspc":
        codes = np.char.add(
            rng.integers(100, 999, m).astype(str), "/" + rng.integers(1, 300, m).astype(str)
        )
    elif kind in ("fi", "fterm"):
        codes = np.char.add("4B018", rng.integers(10, 99, m).astype(str))
    else:
        codes = vocabulary.CPC[rng.integers(0, len(vocabulary.CPC), m)].astype(object)
    dup = np.concatenate([[False], rng.random(m - 1) < 0.1]) if m else np.array([], bool)
    codes[dup] = codes[np.flatnonzero(dup) - 1]
    first = np.zeros(m, dtype=bool)
    starts = np.cumsum(counts) - counts
    first[starts[counts > 0]] = True
    tree_counts = np.zeros(m, dtype=np.int32)
    return _lists(
        pa.StructArray.from_arrays(
            [
                pa.array(codes.astype(str)),
                pa.array(rng.random(m) < 0.7),
                pa.array(first),
                _lists(pa.array([], pa.string()), tree_counts),
            ],
            names=["code", "inventive", "first", "tree"],
        ),
        counts,
    )


def _references(
    rng: np.random.Generator,
    n: int,
    count_range: tuple[int, int],
    country: np.ndarray,
    app_digits: np.ndarray,
    *,
    pub_numbers: pa.Array | None,
    npl_share: float,
    share: float = 1.0,
) -> pa.ListArray:
    """A REPEATED {publication_number, application_number, npl_text, type, category, filing_date}."""
    counts = rng.integers(count_range[0], count_range[1] + 1, n).astype(np.int32)
    counts = np.where(rng.random(n) < share, np.maximum(counts, 1 if share < 1 else 0), 0).astype(
        np.int32
    )
    m = int(counts.sum())
    row = np.repeat(np.arange(n), counts)
    npl = rng.random(m) < npl_share
    if pub_numbers is not None and n:
        # cite other generated publications, so forward citations exist in the loaded set
        cited = pub_numbers.to_numpy(zero_copy_only=False)[rng.integers(0, n, m)]
        publication = np.where(npl, "", cited)
        application = np.full(m, "", dtype=object)
        category = vocabulary.CATEGORIES[rng.integers(0, len(vocabulary.CATEGORIES), m)]
        ctype = vocabulary.CITATION_TYPES[rng.integers(0, len(vocabulary.CITATION_TYPES), m)]
        filing = np.where(rng.random(m) < 0.7, 0, _dates(rng, m, 1970, 2020))
    else:
        publication = np.full(m, "", dtype=object)
        application = np.char.add(
            np.char.add(country[row].astype(str), "-"),
            np.char.add(app_digits[row].astype(str), "-A"),
        )
        category = np.full(m, "", dtype=object)
        ctype = np.where(
            rng.random(m) < 0.5,
            "",
            np.where(rng.random(m) < 0.5, "division", "continuation-in-part"),
        )
        filing = _dates(rng, m, 1975, 2020)
    npl_text = np.where(
        npl,
        'Tse-Chun Lin et al., "Enhanced mannanase production", Process Biochemistry, 2004, 《第39卷》, <URL:http://example.org/a?b=1>',
        "",
    )
    return _lists(
        pa.StructArray.from_arrays(
            [
                pa.array(publication.astype(str)),
                pa.array(np.asarray(application).astype(str)),
                pa.array(npl_text.astype(str)),
                pa.array(np.asarray(ctype).astype(str)),
                pa.array(np.asarray(category).astype(str)),
                pa.array(np.asarray(filing, dtype=np.int64)),
            ],
            names=[
                "publication_number",
                "application_number",
                "npl_text",
                "type",
                "category",
                "filing_date",
            ],
        ),
        counts,
    )
