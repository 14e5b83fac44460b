"""bq2pg's relational model of the Google Patents ``publications`` table.

``publications`` holds one row per publication (key ``publication_number``): the scalar columns
with ``''`` as NULL, the four dates as ``date`` (``0`` and impossible values NULL), English title
and abstract (else the first language, with the language kept), people and codes as ``text[]``,
counts, and every other source field as ``extra`` jsonb, so nothing in the source is lost. Child
tables hold the arrays, one row per element with its 1-based ``ordinal`` (source arrays contain
exact duplicates, so no element column is a key). ``transform`` fills these tables.
"""

from __future__ import annotations

from bq2pg.plan.tables import Column, Field, TablePlan

#: Default PostgreSQL schema of the model.
MODEL_SCHEMA = "patents"
KEY = "publication_number"


def _c(
    name: str, pg: str, bq: str = "STRING", *, repeated: bool = False, key: bool = False
) -> Column:
    return Column(name, pg, Field(name, bq, "REPEATED" if repeated else "NULLABLE"), not_null=key)


_TEXT = "text"
_ORDINAL = _c("ordinal", "integer", "INT64", key=True)


def _child(schema: str, name: str, *columns: Column, extra_key: tuple[str, ...] = ()) -> TablePlan:
    parent = _c(KEY, _TEXT, key=True)
    cols = (parent, *(c for c in columns if c.name in extra_key), _ORDINAL)
    cols += tuple(c for c in columns if c.name not in extra_key)
    return TablePlan(
        schema=schema,
        name=name,
        columns=cols,
        key=(KEY, *extra_key, "ordinal"),
        parent_key=(KEY,),
    )


def _reference_columns(first: str) -> tuple[Column, ...]:
    return (
        _c(first, _TEXT),
        _c("application_number", _TEXT),
        _c("npl_text", _TEXT),
        _c("type", _TEXT),
        _c("category", _TEXT),
        _c("filing_date", "date", "DATE"),
    )


def _classification_columns() -> tuple[Column, ...]:
    return (
        _c("code", _TEXT),
        _c("inventive", "boolean", "BOOL"),
        _c("first", "boolean", "BOOL"),
        _c("tree", "text[]", repeated=True),
    )


def model(schema: str = MODEL_SCHEMA, *, full_text: bool = False) -> TablePlan:
    """The tables of the patents model (``publications`` and its child tables)."""
    scalars = [
        "application_number", "country_code", "kind_code", "application_kind",
        "application_number_formatted", "pct_number", "family_id",
        "spif_publication_number", "spif_application_number",
    ]  # fmt: skip
    columns = [
        _c(KEY, _TEXT, key=True),
        *(_c(n, _TEXT) for n in scalars),
        *(_c(n, "date", "DATE") for n in DATE_COLUMNS),
        _c("title", _TEXT),
        _c("title_language", _TEXT),
        _c("abstract", _TEXT),
        _c("abstract_language", _TEXT),
        *(
            _c(n, "text[]", repeated=True)
            for n in ("inventors", "assignees", "inventors_harmonized", "assignees_harmonized")
        ),
        _c("cpc_codes", "text[]", repeated=True),
        _c("ipc_codes", "text[]", repeated=True),
        _c("citation_count", "integer", "INT64"),
        _c("patent_citation_count", "integer", "INT64"),
        _c("npl_citation_count", "integer", "INT64"),
        _c("claims_count", "integer", "INT64"),
        _c("entity_status", _TEXT),
        _c("art_unit", _TEXT),
        _c("extra", "jsonb", "JSON"),
    ]
    children = [
        _child(schema, "publication_cpc", *_classification_columns()),
        _child(schema, "publication_ipc", *_classification_columns()),
        _child(schema, "publication_citations", *_reference_columns("cited_publication_number")),
        _child(
            schema,
            "publication_priority_claims",
            *_reference_columns("priority_publication_number"),
        ),
        _child(schema, "publication_inventors", _c("name", _TEXT), _c("country_code", _TEXT)),
        _child(schema, "publication_assignees", _c("name", _TEXT), _c("country_code", _TEXT)),
        _child(
            schema,
            "publication_examiners",
            _c("name", _TEXT),
            _c("department", _TEXT),
            _c("level", _TEXT),
        ),
        _child(
            schema,
            "publication_family_links",
            _c("relation", _TEXT, key=True),
            *_reference_columns("linked_publication_number"),
            extra_key=("relation",),
        ),
    ]
    if full_text:
        children.append(
            _child(
                schema,
                "publication_texts",
                _c("kind", _TEXT, key=True),
                _c("format", _TEXT, key=True),
                _c("language", _TEXT),
                _c("text", _TEXT),
                _c("truncated", "boolean", "BOOL"),
                extra_key=("kind", "format"),
            )
        )
    return TablePlan(
        schema=schema, name="publications", columns=tuple(columns), key=(KEY,),
        children=tuple(children),
    )  # fmt: skip


DATE_COLUMNS = ("publication_date", "filing_date", "grant_date", "priority_date")
#: Source columns kept as they are inside ``publications.extra`` (jsonb), so nothing is lost.
EXTRA_COLUMNS = ("title_localized", "abstract_localized", "uspc", "fi", "fterm", "locarno")
