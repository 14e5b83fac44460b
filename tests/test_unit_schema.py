"""Planning: identifiers, keys, child tables and DDL (pure, no servers)."""

from __future__ import annotations

import pytest

from bq2pg.errors import ConfigError, IdentifierError, TypeMappingError
from bq2pg.patents.source import PUBLICATIONS, PUBLICATIONS_30
from bq2pg.plan import ddl
from bq2pg.plan.tables import PG_MAX_IDENTIFIER_BYTES, Field, normalize_identifier, plan_table


def plan(fields, **kw):
    kw.setdefault("source", "p.d.t")
    kw.setdefault("schema", "public")
    kw.setdefault("name", "t")
    return plan_table(fields, **kw)


def test_identifiers_are_lower_cased():
    assert normalize_identifier("PublicationNumber") == "publicationnumber"


@pytest.mark.parametrize("name", ["a" * 64, "x" * 300, "é" * 33, "列" * 30])
def test_long_identifiers_are_shortened_to_63_bytes_deterministically(name):
    short = normalize_identifier(name)
    assert len(short.encode()) <= PG_MAX_IDENTIFIER_BYTES
    assert short == normalize_identifier(name)
    short.encode().decode()  # cut on a character boundary


def test_names_sharing_a_63_byte_prefix_stay_distinct():
    a, b = "p" * 63 + "_first", "p" * 63 + "_second"
    assert normalize_identifier(a) != normalize_identifier(b)
    p = plan([Field(a, "INT64"), Field(b, "INT64")])
    assert len(set(p.column_names)) == 2


def test_a_63_byte_name_is_kept_as_is():
    assert normalize_identifier("a" * 63) == "a" * 63


def test_case_collisions_are_detected_before_any_ddl():
    with pytest.raises(IdentifierError, match="'Foo' and 'foo'"):
        plan([Field("Foo", "INT64"), Field("foo", "STRING")])


def test_nul_in_a_name_is_refused():
    with pytest.raises(IdentifierError):
        normalize_identifier("a\x00b")


def test_reserved_words_and_odd_names_are_quoted_in_ddl():
    p = plan([Field("user", "INT64"), Field('x"; DROP TABLE t; --', "STRING")], name="order")
    text = ddl.render(p)
    assert '"public"."order"' in text
    assert '"user" bigint' in text
    assert '"x""; drop table t; --" text' in text


def test_unmappable_type_names_type_column_and_table():
    with pytest.raises(TypeMappingError, match=r"FOOBAR.*'c'.*p\.d\.t"):
        plan([Field("c", "FOOBAR")])


def test_unmappable_type_inside_a_record_is_found():
    with pytest.raises(TypeMappingError, match=r"r\.x"):
        plan([Field("r", "RECORD", fields=(Field("x", "NOPE"),))])


def test_nested_tables_need_a_key():
    with pytest.raises(ConfigError, match="--key"):
        plan([Field("r", "RECORD", "REPEATED", (Field("x", "INT64"),))], nested="tables")


@pytest.mark.parametrize("key", ["nosuch", "tags", "rec"])
def test_key_must_be_an_existing_scalar(key):
    fields = [
        Field("id", "INT64"),
        Field("tags", "STRING", "REPEATED"),
        Field("rec", "RECORD", fields=(Field("x", "INT64"),)),
    ]
    with pytest.raises(ConfigError, match=key):
        plan(fields, key=(key,))


def test_child_tables_are_keyed_by_parent_key_and_ordinal():
    p = plan(list(PUBLICATIONS), name="publications", key=("publication_number",), nested="tables")
    repeated_records = [f.name for f in PUBLICATIONS if f.repeated and f.is_record]
    assert len(repeated_records) == 19
    assert [c.source_field for c in p.children] == repeated_records
    cpc = next(c for c in p.children if c.source_field == "cpc")
    assert cpc.name == "publications__cpc"
    assert cpc.column_names == [
        "parent_publication_number", "ordinal", "code", "inventive", "first", "tree"
    ]  # fmt: skip
    assert cpc.key == ("parent_publication_number", "ordinal")
    assert dict((c.name, c.pg_type) for c in cpc.columns)["tree"] == "text[]"
    citation = next(c for c in p.children if c.source_field == "citation")
    assert "publication_number" in citation.column_names  # the cited one, beside the parent's
    assert [c.name for c in p.columns if c.pg_type == "text[]"] == ["inventor", "assignee"]


def test_jsonb_mode_keeps_every_column_on_one_table():
    p = plan(list(PUBLICATIONS), name="publications")
    assert len(p.columns) == 37 and not p.children
    assert dict((c.name, c.pg_type) for c in p.columns)["cpc"] == "jsonb"


def test_the_patents_schemas_have_37_and_30_columns_and_110_fields():
    def count(fields):
        return sum(1 + count(f.fields) for f in fields)

    assert len(PUBLICATIONS) == 37 and count(PUBLICATIONS) == 110
    assert len(PUBLICATIONS_30) == 30
    title = next(f for f in PUBLICATIONS_30 if f.name == "title_localized")
    assert [s.name for s in title.fields] == ["text", "language"]


def test_parameterised_numeric_keeps_precision_and_scale():
    p = plan([Field("n", "NUMERIC", precision=10, scale=2), Field("b", "BIGNUMERIC")])
    assert [c.pg_type for c in p.columns] == ["numeric(10,2)", "numeric"]


def test_more_than_1600_columns_is_a_clear_error():
    with pytest.raises(ConfigError, match="1600"):
        plan([Field(f"c{i}", "INT64") for i in range(1601)])
