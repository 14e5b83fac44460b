"""The Google Patents ``publications`` table: its real schema, written from the facts.

The schema is written here from the facts of ``patents-public-data.patents.publications``
(names, types and modes of its 37 columns; 110 fields in all). The older 30-column snapshot
tables (``publications_201710`` ...) lack ``spif_*``, ``*_html``, ``locarno``, ``parent``,
``child`` and the ``truncated`` key of the localized texts.

Rows like it for demos and tests come from ``generate``.
"""

from __future__ import annotations

import pyarrow as pa

from bq2pg.plan.tables import Field

SOURCE_TABLE = "patents-public-data.patents.publications"


def _localized(name: str, *, truncated: bool = True) -> Field:
    subs = [Field("text", "STRING"), Field("language", "STRING")]
    if truncated:
        subs.append(Field("truncated", "BOOL"))
    return Field(name, "RECORD", "REPEATED", tuple(subs))


def _classification(name: str) -> Field:
    return Field(
        name,
        "RECORD",
        "REPEATED",
        (
            Field("code", "STRING"),
            Field("inventive", "BOOL"),
            Field("first", "BOOL"),
            Field("tree", "STRING", "REPEATED"),
        ),
    )


def _reference(name: str) -> Field:
    return Field(
        name,
        "RECORD",
        "REPEATED",
        (
            Field("publication_number", "STRING"),
            Field("application_number", "STRING"),
            Field("npl_text", "STRING"),
            Field("type", "STRING"),
            Field("category", "STRING"),
            Field("filing_date", "INT64"),
        ),
    )


def _harmonized(name: str) -> Field:
    return Field(
        name, "RECORD", "REPEATED", (Field("name", "STRING"), Field("country_code", "STRING"))
    )


def _s(name: str) -> Field:
    return Field(name, "STRING")


def _i(name: str) -> Field:
    return Field(name, "INT64")


#: The 37 top-level fields of ``publications`` (schema of 2022-12 and later), in order.
PUBLICATIONS: tuple[Field, ...] = (
    _s("publication_number"),
    _s("application_number"),
    _s("country_code"),
    _s("kind_code"),
    _s("application_kind"),
    _s("application_number_formatted"),
    _s("pct_number"),
    _s("family_id"),
    _s("spif_publication_number"),
    _s("spif_application_number"),
    _localized("title_localized"),
    _localized("abstract_localized"),
    _localized("claims_localized"),
    _localized("claims_localized_html"),
    _localized("description_localized"),
    _localized("description_localized_html"),
    _i("publication_date"),
    _i("filing_date"),
    _i("grant_date"),
    _i("priority_date"),
    _reference("priority_claim"),
    Field("inventor", "STRING", "REPEATED"),
    _harmonized("inventor_harmonized"),
    Field("assignee", "STRING", "REPEATED"),
    _harmonized("assignee_harmonized"),
    Field(
        "examiner",
        "RECORD",
        "REPEATED",
        (Field("name", "STRING"), Field("department", "STRING"), Field("level", "STRING")),
    ),
    _classification("uspc"),
    _classification("ipc"),
    _classification("cpc"),
    _classification("fi"),
    _classification("fterm"),
    _classification("locarno"),
    _reference("citation"),
    _reference("parent"),
    _reference("child"),
    _s("entity_status"),
    _s("art_unit"),
)

_ABSENT_IN_30 = {
    "spif_publication_number",
    "spif_application_number",
    "claims_localized_html",
    "description_localized_html",
    "locarno",
    "parent",
    "child",
}

#: The 30 top-level fields of the 2017-2018 snapshots: no ``truncated`` in localized texts.
PUBLICATIONS_30: tuple[Field, ...] = tuple(
    _localized(f.name, truncated=False) if f.name.endswith("_localized") else f
    for f in PUBLICATIONS
    if f.name not in _ABSENT_IN_30
)

#: Columns holding full text (claims and descriptions, up to ~9 MB each).
FULL_TEXT_COLUMNS = (
    "claims_localized",
    "claims_localized_html",
    "description_localized",
    "description_localized_html",
)


def arrow_type(f: Field) -> pa.DataType:
    """The Arrow type of a patents field (only the types this table uses)."""
    base: pa.DataType
    if f.is_record:
        base = pa.struct([pa.field(s.name, arrow_type(s)) for s in f.fields])
    else:
        base = {"STRING": pa.string(), "INT64": pa.int64(), "BOOL": pa.bool_()}[f.type]
    return pa.list_(base) if f.repeated else base
