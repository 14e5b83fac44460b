"""The lineage of the patents model: each model column from the ``publications`` fields that
``transform`` computes it from, and each exported feature from the model columns.

The model's columns carry synthetic fields (named like the column), so unlike ``bq2pg copy``
their sources are written out here, after ``transform``'s queries: the scalar text columns are
``nullif(x, '')``, the dates ``YYYYMMDD`` integers, title and abstract the English entry else
the first, the codes distinct and non-empty, the child tables one row per array element.
``tests/test_lineage.py`` checks that every column of the model has its edge and that every
source field named here is a field of ``patents.source.PUBLICATIONS``.
"""

from __future__ import annotations

import re
from pathlib import Path

from bq2pg.lineage import naming
from bq2pg.lineage.columns import ColumnEdge
from bq2pg.observe.log import get_logger
from bq2pg.patents import features, model
from bq2pg.patents import source as publications
from bq2pg.plan.tables import TablePlan
from bq2pg.postgres import connection
from bq2pg.state import lineage as stored
from bq2pg.state import schema as state_schema

log = get_logger(__name__)

_NULLIF = "STRING -> text; '' becomes NULL"
_DATE = "INT64 YYYYMMDD -> date; 0 and impossible dates become NULL"
_EMPTY_ARRAY = "NULL becomes an empty array"
_BOOL = "BOOL -> boolean"
_UNMAPPED = "not mapped: no source field is known for this column"

#: (source field, transformation, description) of a column, by column name.
Spec = dict[str, tuple[str, str, str]]


def _publications(full_text: bool) -> Spec:
    scalars = [c.name for c in model.model().columns[1:10]]
    spec: Spec = {model.KEY: (model.KEY, "identity", "STRING -> text")}
    spec |= {name: (name, "derived", _NULLIF) for name in scalars}
    spec |= {name: (name, "cast", _DATE) for name in model.DATE_COLUMNS}
    for column in ("title", "abstract"):
        localized = f"{column}_localized"
        spec[column] = (localized, "pick", f"the English text of {localized}, else the first")
        spec[f"{column}_language"] = (
            localized,
            "pick",
            f"the language of the text picked from {localized}",
        )
    for column, field in (("inventors", "inventor"), ("assignees", "assignee")):
        spec[column] = (field, "derived", _EMPTY_ARRAY)
        spec[f"{column}_harmonized"] = (
            f"{field}_harmonized.name",
            "derived",
            f"the names of {field}_harmonized",
        )
    for codes in ("cpc", "ipc"):
        spec[f"{codes}_codes"] = (
            f"{codes}.code",
            "derived",
            f"the distinct non-empty codes of {codes}, in source order",
        )
    spec["citation_count"] = ("citation", "derived", "the number of citations")
    spec["patent_citation_count"] = (
        "citation.publication_number",
        "derived",
        "the citations with a publication number",
    )
    spec["npl_citation_count"] = (
        "citation.npl_text",
        "derived",
        "the citations with a non-patent-literature text",
    )
    spec["claims_count"] = (
        ("claims_localized", "derived", "the numbered claims of the English claims, else the first")
        if full_text
        else ("", "derived", "NULL: the claims are read with --full-text only")
    )
    spec["entity_status"] = ("entity_status", "derived", _NULLIF)
    spec["art_unit"] = ("art_unit", "derived", _NULLIF)
    return spec


def _extra_edge(table: str) -> ColumnEdge:
    """``extra``: the source fields the model has no column for, as one jsonb object."""
    return ColumnEdge(
        table,
        "extra",
        model.EXTRA_COLUMNS,
        "json_encoding",
        f"{', '.join(model.EXTRA_COLUMNS)} as one JSON object, so nothing is lost",
    )


def _classification() -> Spec:
    return {
        "code": ("code", "derived", _NULLIF),
        "inventive": ("inventive", "identity", _BOOL),
        "first": ("first", "identity", _BOOL),
        "tree": ("tree", "derived", _EMPTY_ARRAY),
    }


def _reference(first: str) -> Spec:
    spec: Spec = {first: ("publication_number", "derived", _NULLIF)}
    spec |= {n: (n, "derived", _NULLIF) for n in ("application_number", "npl_text", "type")}
    spec["category"] = ("category", "derived", _NULLIF)
    spec["filing_date"] = ("filing_date", "cast", _DATE)
    return spec


def _named(*columns: str) -> Spec:
    return {n: (n, "derived", _NULLIF) for n in columns}


#: The child tables of the model: the array(s) whose elements become rows, and the columns
#: made from each element's fields ("" as source field: the array itself, for constants).
_CHILDREN: dict[str, tuple[tuple[str, ...], Spec]] = {
    "publication_cpc": (("cpc",), _classification()),
    "publication_ipc": (("ipc",), _classification()),
    "publication_citations": (("citation",), _reference("cited_publication_number")),
    "publication_priority_claims": (
        ("priority_claim",),
        _reference("priority_publication_number"),
    ),
    "publication_inventors": (("inventor_harmonized",), _named("name", "country_code")),
    "publication_assignees": (("assignee_harmonized",), _named("name", "country_code")),
    "publication_examiners": (("examiner",), _named("name", "department", "level")),
    "publication_family_links": (
        ("parent", "child"),
        {
            **_reference("linked_publication_number"),
            "relation": ("", "derived", "'parent' or 'child': the array the link comes from"),
        },
    ),
    "publication_texts": (
        publications.FULL_TEXT_COLUMNS,
        {
            "kind": ("", "derived", "'claims' or 'description': the array the text comes from"),
            "format": ("", "derived", "'plain' or 'html': the array the text comes from"),
            "language": ("language", "derived", _NULLIF),
            "text": ("text", "identity", "STRING -> text"),
            "truncated": ("truncated", "identity", _BOOL),
        },
    ),
}


def for_model(plan: TablePlan) -> list[ColumnEdge]:
    """The edges of every table and column of the patents model ``plan``.

    A column this module does not know (a model change not reflected here) gets a ``derived``
    edge without sources, described as not mapped, rather than failing the run.
    """
    full_text = any(t.name == "publication_texts" for t in plan.all_tables())
    table = plan.qualified
    spec = _publications(full_text)
    edges = [
        ColumnEdge(
            table,
            "",
            tuple(sorted({s for s, _, _ in spec.values() if s} | set(model.EXTRA_COLUMNS))),
            "identity",
            "one row per source row",
        ),
    ]
    for c in plan.columns:
        if c.name == "extra":
            edges.append(_extra_edge(table))
        else:
            edges.append(_edge(table, c.name, spec.get(c.name), ("",)))
    for child in plan.children:
        edges += _child(child)
    return edges


def _edge(
    table: str, column: str, spec: tuple[str, str, str] | None, arrays: tuple[str, ...]
) -> ColumnEdge:
    if spec is None:
        return ColumnEdge(table, column, (), "derived", _UNMAPPED)
    field, transformation, description = spec
    if not field:
        sources = tuple(a for a in arrays if a)
    else:
        sources = tuple(f"{a}.{field}" if a else field for a in arrays)
    return ColumnEdge(table, column, sources, transformation, description)


def _child(child: TablePlan) -> list[ColumnEdge]:
    table = child.qualified
    arrays, spec = _CHILDREN.get(child.name, ((), {}))
    each = " or ".join(arrays) if arrays else "an array"
    edges = [
        ColumnEdge(
            table, "", (model.KEY, *arrays), "array_explode", f"one row per element of {each}"
        )
    ]
    for c in child.columns:
        if c.name == model.KEY:
            edges.append(
                ColumnEdge(
                    table,
                    c.name,
                    (model.KEY,),
                    "array_explode",
                    f"the publication's key, repeated for each element of {each}",
                )
            )
        elif c.name == "ordinal":
            edges.append(
                ColumnEdge(table, c.name, arrays, "array_explode", f"1-based position in {each}")
            )
        else:
            edges.append(_edge(table, c.name, spec.get(c.name), arrays))
    return edges


#: A model column named in a feature's SQL (``p`` is ``publications``).
_PUBLICATIONS_COLUMN = re.compile(r"\bp\.(\w+)")


def export_columns(schema: str = model.MODEL_SCHEMA) -> list[stored.ExportColumn]:
    """The lineage of ``bq2pg export features``: each feature from the model columns its SQL
    (``features.FEATURES``) reads; ``identity`` when it is a column as it is."""
    pubs = f"{schema}.publications"
    cites = f"{schema}.publication_citations"
    out = []
    for name, _, expression in features.FEATURES:
        sources = [(pubs, c) for c in dict.fromkeys(_PUBLICATIONS_COLUMN.findall(expression))]
        if "f.n" in expression:  # the forward citations: rows of citations citing this one
            sources.append((cites, "cited_publication_number"))
        same = expression == f"p.{name}"
        out.append(
            stored.ExportColumn(
                name,
                tuple(sources),
                "identity" if same else "derived",
                "" if same else expression,
            )
        )
    return out


def record_features_export(database_url: str, path: Path, schema: str = model.MODEL_SCHEMA) -> bool:
    """Record that ``path`` was exported from the model in ``schema`` (``bq2pg lineage`` then
    shows the file downstream of the model). Never raises: the export itself succeeded, so a
    failure here is logged (``lineage.record_failed``) and returns False."""
    try:
        with connection.session(database_url, "recording the export's lineage") as conn:
            state_schema.ensure(conn)
            stored.record_export(
                conn,
                source_namespace=naming.namespace(database_url),
                source_database=naming.database(database_url),
                target_namespace=naming.FILE_NAMESPACE,
                target_name=str(path.resolve()),
                columns=export_columns(schema),
            )
    except Exception as exc:  # the file is written: its lineage is a nicety, never a failure
        log.warning("lineage.record_failed", target=str(path), error=str(exc))
        return False
    return True
