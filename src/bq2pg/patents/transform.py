"""Reshape Google Patents ``publications`` batches into the tables of the patents model.

One DuckDB query per model table, over the Arrow batch (zero-copy in, Arrow out), generated once:
dates from ``YYYYMMDD`` integers (``0`` and impossible dates become NULL), English title and
abstract with a fallback to the first language, ``''`` to NULL in scalar text columns, distinct
codes in source order, counts, and child rows from ``UNNEST`` with their 1-based ordinal.
Batches of the older 30-column snapshots are first conformed to the 37-column layout (missing
columns NULL), so one set of queries serves both.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from bq2pg.arrow.encode import DUCKDB_CONFIG
from bq2pg.patents import model
from bq2pg.patents import source as publications
from bq2pg.plan.tables import TablePlan


def _date(x: str) -> str:
    """``YYYYMMDD`` -> date; NULL unless exactly 8 digits of a real calendar date."""
    return (
        f"CASE WHEN {x} BETWEEN 10000101 AND 99991231 "
        f"THEN CAST(try_strptime(CAST({x} AS VARCHAR), '%Y%m%d') AS DATE) END"
    )


def _text(x: str) -> str:
    return f"nullif({x}, '')"


def _pick(column: str) -> str:
    """The English entry of a localized column, else its first non-empty one."""
    return (
        f"coalesce(list_filter({column}, t -> t.language = 'en' AND t.text <> '')[1], "
        f"list_filter({column}, t -> t.text <> '')[1])"
    )


def _codes(column: str) -> str:
    """The codes of a classification column (computed once in the inner query: DuckDB would
    evaluate the lambda twice, 4x the cost, if :func:`_distinct_codes` repeated it)."""
    return f"list_transform(coalesce({column}, []), c -> c.code) AS _{column}_codes"


def _distinct_codes(column: str) -> str:
    codes = f"_{column}_codes"
    return f"list_filter({codes}, (c, i) -> c <> '' AND list_position({codes}, c) = i)"


#: A numbered claim: a line starting with a number and a dot (Unicode digits and spaces, as
#: RE2's ``\s`` and ``\d`` are ASCII only and real claims use no-break spaces).
CLAIM_PATTERN = r"(?m)^[\s\p{Z}]*\p{Nd}+[\s\p{Z}]*\.[\s\p{Z}]"


def _publications_sql(full_text: bool, untruncated: frozenset[str]) -> str:
    scalars = [c.name for c in model.model().columns[1:10]]
    claims = (
        f"len(regexp_extract_all(coalesce(_claims.text, ''), '{CLAIM_PATTERN}'))"
        if full_text
        else "NULL"
    )
    extra = ", ".join(
        # an older snapshot's localized entries have no 'truncated' key: keep them as they were
        f"{c} := list_transform(coalesce({c}, []), t -> struct_pack(text := t.text, language := t.language))"
        if c in untruncated
        else f"{c} := coalesce({c}, [])"
        for c in model.EXTRA_COLUMNS
    )
    return f"""
    SELECT
        publication_number,
        {", ".join(f"{_text(c)} AS {c}" for c in scalars)},
        {", ".join(f"{_date(c)} AS {c}" for c in model.DATE_COLUMNS)},
        _title.text AS title, nullif(_title.language, '') AS title_language,
        _abstract.text AS abstract, nullif(_abstract.language, '') AS abstract_language,
        coalesce(inventor, []) AS inventors,
        coalesce(assignee, []) AS assignees,
        list_transform(coalesce(inventor_harmonized, []), x -> x.name) AS inventors_harmonized,
        list_transform(coalesce(assignee_harmonized, []), x -> x.name) AS assignees_harmonized,
        {_distinct_codes("cpc")} AS cpc_codes,
        {_distinct_codes("ipc")} AS ipc_codes,
        len(coalesce(citation, [])) AS citation_count,
        len(list_filter(coalesce(citation, []), x -> x.publication_number <> '')) AS patent_citation_count,
        len(list_filter(coalesce(citation, []), x -> x.npl_text <> '')) AS npl_citation_count,
        CASE WHEN _claims IS NULL THEN NULL ELSE {claims} END AS claims_count,
        {_text("entity_status")} AS entity_status,
        {_text("art_unit")} AS art_unit,
        CAST(to_json(struct_pack({extra})) AS VARCHAR) AS extra
    FROM (
        SELECT *,
            {_pick("title_localized")} AS _title,
            {_pick("abstract_localized")} AS _abstract,
            {_pick("claims_localized") if full_text else "NULL"} AS _claims,
            {_codes("cpc")}, {_codes("ipc")}
        FROM src
    )
    """  # noqa: S608 - names from the model, not from users


def _unnest(column: str, select: str, where: str = "") -> str:
    """Child rows of a REPEATED RECORD column: parent key, ordinal, the element as ``e``."""
    return f"""
    SELECT publication_number, ordinal, {select} FROM (
        SELECT publication_number,
               unnest(range(1, len({column}) + 1)) AS ordinal,
               unnest({column}) AS e
        FROM src WHERE len({column}) > 0
    ) {where}
    """  # noqa: S608


def _classification(column: str) -> str:
    return _unnest(
        column, f"{_text('e.code')} AS code, e.inventive, e.first, coalesce(e.tree, []) AS tree"
    )


def _references(column: str, first: str, relation: str | None = None) -> str:
    head = f"'{relation}' AS relation, " if relation else ""
    select = (
        f"{head}{_text('e.publication_number')} AS {first}, "
        f"{_text('e.application_number')} AS application_number, {_text('e.npl_text')} AS npl_text, "
        f"{_text('e.type')} AS type, {_text('e.category')} AS category, "
        f"{_date('e.filing_date')} AS filing_date"
    )
    return _unnest(column, select)


def _people(column: str) -> str:
    return _unnest(column, f"{_text('e.name')} AS name, {_text('e.country_code')} AS country_code")


def _texts() -> str:
    parts = []
    for column in publications.FULL_TEXT_COLUMNS:
        kind = "claims" if column.startswith("claims") else "description"
        fmt = "html" if column.endswith("_html") else "plain"
        parts.append(
            _unnest(
                column,
                f"'{kind}' AS kind, '{fmt}' AS format, {_text('e.language')} AS language, "
                "e.text AS text, e.truncated AS truncated",
            )
        )
    return " UNION ALL ".join(f"({p})" for p in parts)


def queries(full_text: bool, untruncated: frozenset[str] = frozenset()) -> dict[str, str]:
    """The DuckDB query of each model table, by table name.

    ``untruncated`` names the localized columns whose entries lack ``truncated`` in the source.
    """
    family = (
        f"({_references('parent', 'linked_publication_number', 'parent')}) UNION ALL "
        f"({_references('child', 'linked_publication_number', 'child')})"
    )
    out = {
        "publications": _publications_sql(full_text, untruncated),
        "publication_cpc": _classification("cpc"),
        "publication_ipc": _classification("ipc"),
        "publication_citations": _references("citation", "cited_publication_number"),
        "publication_priority_claims": _references("priority_claim", "priority_publication_number"),
        "publication_inventors": _people("inventor_harmonized"),
        "publication_assignees": _people("assignee_harmonized"),
        "publication_examiners": _unnest(
            "examiner",
            f"{_text('e.name')} AS name, {_text('e.department')} AS department, "
            f"{_text('e.level')} AS level",
        ),
        "publication_family_links": family,
    }
    if full_text:
        out["publication_texts"] = _texts()
    return out


def conform(table: pa.Table) -> pa.Table:
    """``table`` with the 37-column layout: missing columns NULL, ``truncated`` added.

    Older snapshots (30 columns) lack ``spif_*``, ``*_html``, ``locarno``, ``parent``, ``child``
    and the ``truncated`` key of localized texts. Full-text columns that were not read stay out.
    """
    present = {name.lower(): i for i, name in enumerate(table.column_names)}
    full_text_read = any(c in present for c in publications.FULL_TEXT_COLUMNS)
    arrays, names = [], []
    for f in publications.PUBLICATIONS:
        wanted = publications.arrow_type(f)
        index = present.get(f.name)
        if index is None:
            if f.name in publications.FULL_TEXT_COLUMNS and not full_text_read:
                continue
            arrays.append(pa.nulls(table.num_rows, wanted))
        else:
            column = table.column(index).combine_chunks()
            if not column.type.equals(wanted):
                column = _add_missing_fields(column, wanted)
            arrays.append(column)
        names.append(f.name)
    return pa.table(arrays, names=names)


def _add_missing_fields(column: pa.Array, wanted: pa.DataType) -> pa.Array:
    """A list<struct> column given the struct fields it lacks (as NULLs)."""
    if not (pa.types.is_list(column.type) and pa.types.is_struct(wanted.value_type)):
        return column.cast(wanted)
    values = column.values
    have = {values.type.field(i).name: values.field(i) for i in range(values.type.num_fields)}
    children = [
        have.get(f.name, pa.nulls(len(values), f.type)).cast(f.type) for f in wanted.value_type
    ]
    struct = pa.StructArray.from_arrays(
        children, fields=list(wanted.value_type), mask=values.is_null()
    )
    return pa.ListArray.from_arrays(column.offsets, struct, mask=column.is_null())


def _untruncated(schema: pa.Schema) -> frozenset[str]:
    """The localized columns of ``schema`` whose entries have no ``truncated`` field."""
    names = set()
    for f in schema:
        if f.name.endswith(("_localized", "_localized_html")) and pa.types.is_list(f.type):
            element = f.type.value_type
            if pa.types.is_struct(element) and element.get_field_index("truncated") < 0:
                names.add(f.name)
    return frozenset(names)


class Splitter:
    """Turns source batches into model rows; one per thread (it owns a DuckDB connection)."""

    def __init__(self, plan: TablePlan, *, full_text: bool) -> None:
        self.plan = plan
        self.full_text = full_text
        self.queries: dict[str, str] | None = None
        self.db = duckdb.connect(config=DUCKDB_CONFIG)

    def __call__(self, table: pa.Table) -> dict[str, pa.Table]:
        if self.queries is None:  # one source table per run: its layout decides once
            self.queries = queries(self.full_text, _untruncated(table.schema))
        src = conform(table)
        self.db.register("src", src)
        try:
            out = {}
            for t in self.plan.all_tables():
                result = self.db.execute(self.queries[t.name]).to_arrow_table()
                out[t.name] = result.select(t.column_names)
            return out
        finally:
            self.db.unregister("src")
