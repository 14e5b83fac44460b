"""Every SQL query in docs/queries.md runs on a model loaded from generated publications."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bq2pg import generate, publications
from bq2pg.patents import PatentsRequest, run
from bq2pg.source import TableRef, create_table, load_arrow

DOC = Path(__file__).resolve().parents[1] / "docs" / "queries.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def model_schema(source, pg_url, tmp_path_factory):
    table_id = f"bq2pg-test.queries_{tmp_path_factory.mktemp('q').name[-6:]}.publications"
    ref = TableRef.parse(table_id)
    create_table(source, ref, publications.PUBLICATIONS)
    load_arrow(source, ref, generate.generate(1500, seed=21))
    schema = "queries_model"
    run(
        source,
        PatentsRequest(database_url=pg_url, source=table_id, schema=schema, drop_tables=True),
    )
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_the_doc_has_ten_queries():
    assert len(QUERIES) == 10


@pytest.mark.parametrize("number", range(1, len(QUERIES) + 1))
def test_each_documented_query_returns_rows(pg_url, model_schema, number):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(model_schema)))
        rows = conn.execute(QUERIES[number - 1]).fetchall()
    assert rows, f"query {number} of docs/queries.md returned nothing"
