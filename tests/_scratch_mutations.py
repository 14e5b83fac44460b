import psycopg, pytest
from psycopg import sql
import test_queries as tq
from test_queries import seeded, expected  # noqa

MUTANTS = {
    1: [("WHERE p.publication_date IS NOT NULL", ""), ("count(DISTINCT p.publication_number)", "count(*)")],
    2: [("ORDER BY count(*) DESC, 1", "ORDER BY count(*), 1"), ("UNION ALL", "UNION")],
    3: [("WHERE a.name IS NOT NULL", ""), ("FILTER (WHERE p.grant_date IS NOT NULL)", ""), ("count(DISTINCT p.country_code)", "count(p.country_code)")],
    4: [("WHERE family_id IS NOT NULL", ""), ("HAVING count(*) > 1", "")],
    5: [("count(*) AS forward_citations", "count(DISTINCT c.publication_number) AS forward_citations")],
    6: [("'2000-01-01'", "'2000-01-02'")],
    7: [("percentile_cont(0.5)", "percentile_disc(0.5)"), ("AND filing_date IS NOT NULL", "")],
    8: [("a.code < b.code", "a.code <> b.code"), ("count(DISTINCT a.publication_number)", "count(*)")],
    9: [("WHERE name IS NOT NULL", ""), ("GROUP BY 1, 2", "GROUP BY 1, 2, publication_number")],
    10: [("round(100.0", "trunc(100.0"), ("sum(p.npl_citation_count) AS", "sum(p.patent_citation_count) AS")],
}
CASES = [(n, i) for n, ms in MUTANTS.items() for i in range(len(ms))]

@pytest.mark.parametrize("case", CASES)
def test_mutant_is_caught(pg_url, seeded, expected, case):
    n, i = case
    old, new = MUTANTS[n][i]
    q = tq.QUERIES[n - 1]
    assert old in q, (n, old)
    q = q.replace(old, new)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(seeded[0])))
        rows = conn.execute(q).fetchall()
        print(conn.execute("SELECT datcollate, datlocprovider FROM pg_database WHERE datname = current_database()").fetchone())
    with pytest.raises(AssertionError):
        tq.assert_result(rows, expected[n])
