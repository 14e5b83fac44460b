"""Quality rules before publishing (write–audit–publish): every rule kind passing and failing,
both severities, tolerances, the gate for replace, append, merge and the patents model, bad rule
files, ``--skip-quality``, stored results and ``bq2pg quality show``."""

from __future__ import annotations

import dataclasses
import json
import uuid

import psycopg
import pytest
from psycopg import sql

from bq2pg import admin
from bq2pg.bigquery.client import Source, TableRef
from bq2pg.bigquery.seed import create_table, load_arrow
from bq2pg.engine import copy as copy_engine
from bq2pg.engine.run import run_job
from bq2pg.errors import ConfigError, QualityGateError
from bq2pg.patents import model as patents_model
from bq2pg.patents import pipeline as patents_pipeline
from bq2pg.patents import quality as patents_quality
from bq2pg.patents import source as publications
from bq2pg.patents import synthetic
from bq2pg.plan.tables import Field
from bq2pg.quality import rules
from bq2pg.state import runs
from conftest import bq2pg_cmd, make_table

FIELDS = [
    Field("id", "INT64"),
    Field("code", "STRING"),
    Field("price", "NUMERIC"),
    Field("status", "STRING"),
    Field("updated", "TIMESTAMP"),
    Field("parts", "RECORD", "REPEATED", (Field("sku", "STRING"), Field("n", "INT64"))),
]


def item_rows(ids: range, *, bad: bool = False) -> list[dict[str, object]]:
    """Clean rows, or (``bad``) rows that break one rule of each kind."""
    out: list[dict[str, object]] = []
    for i in ids:
        out.append(
            {
                "id": i,
                "code": f"C{i:03d}",
                "price": str(i + 1),
                "status": "open" if i % 2 else "closed",
                "updated": "2026-11-29T00:00:00Z",
                "parts": [{"sku": f"s{i}-{j}", "n": j} for j in range(i % 3)],
            }
        )
    if bad:
        out[0]["code"] = None  # not_null
        out[1]["price"] = "-5"  # range
        out[2]["code"] = "bad code"  # pattern
        out[3]["status"] = "lost"  # accepted_values
        out.append(dict(out[4]))  # unique: id 4 twice
    return out


def doc(*entries: dict[str, object], table: str = "items") -> list[rules.Rule]:
    return rules.parse({table: list(entries)}, "test")


def load(source: Source, table_id: str, pg_url: str, schema: str, quality: list[rules.Rule],
         **kw: object):  # fmt: skip
    """Run a copy of ``table_id`` into ``schema.items`` with ``quality`` (bound to its plan)."""
    request = copy_engine.CopyRequest(
        source=table_id, database_url=pg_url, table=f"{schema}.items", **kw
    )  # type: ignore[arg-type]
    job = copy_engine.build_job(source, request)
    bound, _ = rules.bind([dataclasses.replace(r, table=_qualify(r.table, schema)) for r in quality],
                          job.plan)  # fmt: skip
    return run_job(source, dataclasses.replace(job, quality=tuple(bound)))


def _qualify(table: str, schema: str) -> str:
    return table if "." in table else f"{schema}.{table}"


def ids(pg: psycopg.Connection, schema: str) -> list[int]:
    query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "items"))
    return [r[0] for r in pg.execute(query).fetchall()]


def status_of(pg: psycopg.Connection, run_id: uuid.UUID | str) -> str:
    return pg.execute("SELECT status FROM bq2pg.runs WHERE run_id = %s", [run_id]).fetchone()[0]


def latest_run(pg: psycopg.Connection, schema: str) -> tuple[uuid.UUID, str, str | None]:
    return pg.execute(
        "SELECT run_id, status, error FROM bq2pg.runs WHERE target = %s "
        "ORDER BY started_at DESC LIMIT 1",
        [f"{schema}.items"],
    ).fetchone()


def exists(pg: psycopg.Connection, schema: str, name: str) -> bool:
    return pg.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}"."{name}"']).fetchone()[0]


# --- the grammar -------------------------------------------------------------------------------

ISSUE_EXAMPLE = """
quality:
  public.items:                 # target table
    - rule: not_null
      columns: [id]
      severity: error           # the default
    - rule: unique
      columns: [id]
    - rule: range
      column: price
      min: 0
      severity: warn
"""


def test_the_documented_rules_file_parses(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(ISSUE_EXAMPLE)
    found = rules.parse_file(str(path))
    assert [(r.table, r.kind, r.name, r.severity, r.columns) for r in found] == [
        ("public.items", "not_null", "not_null(id)", "error", ("id",)),
        ("public.items", "unique", "unique(id)", "error", ("id",)),
        ("public.items", "range", "range(price)", "warn", ("price",)),
    ]
    assert found[2].params == {"min": 0, "min_inclusive": True, "max_inclusive": True}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"rule": "not_nul", "columns": ["id"]}, "unknown rule 'not_nul'.*did you mean 'not_null'"),
        ({"rule": "not_null", "columns": ["id"], "severty": "warn"}, "severty: Extra inputs"),
        ({"rule": "not_null", "columns": ["id"], "severity": "fatal"}, "severity"),
        ({"rule": "pattern", "column": "code", "regex": "(["}, "invalid regex"),
        ({"rule": "range", "column": "price"}, "needs min, max or both"),
        ({"rule": "row_count"}, "needs a bound"),
        ({"rule": "custom", "sql": "DELETE FROM {table}"}, "single SELECT"),
        ({"rule": "custom", "sql": "SELECT 1; SELECT 2"}, "single SELECT"),
        (
            {"rule": "custom", "sql": "WITH d AS (DELETE FROM x RETURNING *) SELECT * FROM d"},
            "must be SELECTs",
        ),
        ({"rule": "custom", "sql": "SELEC * FROM {table}"}, "does not parse"),
        ({"rule": "freshness", "column": "updated", "max_age": "soon"}, "max_age"),
        ({"rule": "not_null", "column": "id", "max_failing_ratio": 2}, "max_failing_ratio"),
        ("not a mapping", "each rule is a mapping"),
    ],
)
def test_bad_rules_are_clear_errors(entry, message):
    with pytest.raises(ConfigError, match=message):
        rules.parse({"items": [entry]}, "rules.yaml")


def test_unknown_columns_and_references_are_refused_before_reading():
    plan = patents_model.model("p")
    with pytest.raises(ConfigError, match=r"unknown column 'publication_numbr'.*did you mean"):
        rules.bind(doc({"rule": "not_null", "column": "publication_numbr"}, table="p.publications"),
                   plan)  # fmt: skip
    bad_ref = {"rule": "relationships", "column": "publication_number", "to": "publications",
               "field": "nope"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"unknown column 'nope' of p\.publications"):
        rules.bind(doc(bad_ref, table="publication_cpc"), plan)
    bound, ignored = rules.bind(doc({"rule": "not_null", "column": "x"}, table="other.t"), plan)
    assert bound == [] and ignored == ["other.t"]


def test_tolerance_score_and_overrides():
    (strict,) = doc({"rule": "not_null", "column": "id"})
    assert strict.passes(0, 10) and not strict.passes(1, 10)
    (rows,) = doc({"rule": "not_null", "column": "id", "max_failing_rows": 2})
    assert rows.passes(2, 10) and not rows.passes(3, 10)
    (ratio,) = doc({"rule": "not_null", "column": "id", "max_failing_ratio": 0.1})
    assert ratio.passes(1, 10) and not ratio.passes(2, 10)
    (both,) = doc({"rule": "not_null", "column": "id", "max_failing_rows": 5,
                   "max_failing_ratio": 0.1})  # fmt: skip
    assert not both.passes(2, 10) and both.passes(2, 100)
    assert rules.score([("error", True), ("warn", False)]) == 75.0
    assert rules.score([("error", False), ("warn", True)]) == 25.0
    assert rules.score([]) is None
    builtin = doc({"rule": "unique", "column": "id", "name": "k"})
    mine = doc({"rule": "unique", "column": "id", "name": "k", "severity": "warn"})
    assert [r.severity for r in rules.merge(builtin, mine)] == ["warn"]


def test_patents_builtin_rules_cover_every_table():
    plan = patents_model.model("p", full_text=True)
    bound, ignored = rules.bind(patents_quality.builtin(plan), plan)
    assert not ignored
    covered = {r.table for r in bound}
    assert covered == {t.qualified for t in plan.all_tables()}
    assert {r.kind for r in bound if r.table != "p.publications"} >= {"unique", "relationships"}


# --- the gate on a real load -------------------------------------------------------------------

EVERY_KIND = [
    {"rule": "not_null", "columns": ["id", "code"]},
    {"rule": "unique", "columns": ["id"]},
    {"rule": "range", "column": "price", "min": 0, "max": 1000},
    {"rule": "pattern", "column": "code", "regex": "^C[0-9]{3}$"},
    {"rule": "accepted_values", "column": "status", "values": ["open", "closed"]},
    {"rule": "row_count", "min": 10, "max_ratio_of_source": 1.0},
    {"rule": "freshness", "column": "updated", "max_age": "3650d"},
    {"rule": "custom", "sql": "SELECT id FROM {table} WHERE price > 500"},
]
CHILD = {"rule": "relationships", "column": "parent_id", "to": "items", "field": "id"}
TABLES = {"nested": "tables", "key": ("id",)}


def test_every_rule_kind_passes_on_clean_rows(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(30)))
    result = load(source, table_id, pg_url, pg_schema,
                  doc(*EVERY_KIND) + doc(CHILD, table="items__parts"), **TABLES)  # fmt: skip
    assert [o.rule.name for o in result.quality if not o.passed] == []
    assert len(result.quality) == 10 and result.quality_score == 100.0
    # replace builds the primary key on id anyway: it proves unique(id) without a second scan
    by_name = {o.rule.name: o for o in result.quality}
    assert by_name["unique(id)"].detail == "enforced by the primary key"
    stored = pg.execute(
        "SELECT name, evaluated, failing, passed FROM bq2pg.quality_results WHERE run_id = %s "
        "ORDER BY id", [result.run_id],
    ).fetchall()  # fmt: skip
    assert ("not_null(code)", 30, 0, True) in stored and len(stored) == 10


def test_every_rule_kind_fails_with_counts_and_examples(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(30), bad=True))
    warn = [{**e, "severity": "warn"} for e in EVERY_KIND]
    warn[5] = {"rule": "row_count", "max": 5, "severity": "warn"}
    warn[6] = {"rule": "freshness", "column": "updated", "max_age": "1s", "severity": "warn"}
    warn[7] = {"rule": "custom", "sql": "SELECT id, price FROM {table} WHERE price < 0",
               "severity": "warn"}  # fmt: skip
    result = load(source, table_id, pg_url, pg_schema, doc(*warn))
    got = {o.rule.name: (o.failing, o.passed) for o in result.quality}
    assert got == {
        "not_null(id)": (0, True),
        "not_null(code)": (1, False),
        "unique(id)": (2, False),  # both rows of id 4
        "range(price)": (1, False),
        "pattern(code)": (1, False),  # "bad code"; the NULL is not_null's business
        "accepted_values(status)": (1, False),
        "row_count": (1, False),
        "freshness(updated)": (1, False),
        "custom": (1, False),
    }
    by_name = {o.rule.name: o for o in result.quality}
    assert by_name["unique(id)"].samples == [{"id": "4", "occurrences": 2}]
    assert [s["id"] for s in by_name["range(price)"].samples] == ["1"]
    assert by_name["range(price)"].samples[0]["price"].startswith("-5")
    assert [s["id"] for s in by_name["custom"].samples] == [1]
    assert by_name["not_null(code)"].samples == [{"id": "0", "code": None}]
    assert "31 rows > max 5" in by_name["row_count"].detail
    # warn rules publish: the rows are in the target
    assert len(ids(pg, pg_schema)) == 31
    assert status_of(pg, result.run_id) == "succeeded"
    assert 0 < result.quality_score < 100


def test_relationships_finds_orphan_child_rows(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(12)))
    # a parent table that lacks some ids: a "custom" table the rule points at
    pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg_schema)))
    pg.execute(sql.SQL("CREATE TABLE {} (id bigint)").format(sql.Identifier(pg_schema, "known")))
    pg.execute(sql.SQL("INSERT INTO {} SELECT generate_series(0, 5)").format(
        sql.Identifier(pg_schema, "known")))  # fmt: skip
    rule = {
        "rule": "relationships",
        "column": "parent_id",
        "to": f"{pg_schema}.known",
        "field": "id",
        "severity": "warn",
    }
    result = load(source, table_id, pg_url, pg_schema, doc(rule, table="items__parts"), **TABLES)
    (o,) = result.quality
    # ids 6..11 with parts (i % 3 parts): 7, 8, 10, 11 → 1 + 2 + 1 + 2 rows
    assert (o.failing, o.passed) == (6, False)
    assert {s["parent_id"] for s in o.samples} == {"7", "8", "10", "11"}


def test_tolerances_let_a_few_failing_rows_pass(source, dataset, pg_url, pg_schema):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(30), bad=True))
    result = load(source, table_id, pg_url, pg_schema, doc(
        {"rule": "not_null", "column": "code", "max_failing_rows": 1},
        {"rule": "unique", "column": "id", "max_failing_ratio": 0.1},
        {"rule": "accepted_values", "column": "status", "values": ["open"],
         "max_failing_ratio": 0.2, "severity": "warn"},
    ))  # fmt: skip
    assert [(o.rule.name, o.failing, o.passed) for o in result.quality] == [
        ("not_null(code)", 1, True),
        ("unique(id)", 2, True),  # 2 of 31 rows: 6.5 %
        ("accepted_values(status)", 17, False),  # 16 closed (one twice) and one lost: 55 %
    ]


@pytest.mark.parametrize("mode", ["replace", "append", "merge"])
def test_a_failing_error_rule_publishes_nothing(source, dataset, pg_url, pg_schema, pg, mode):
    first = make_table(source, dataset, "first", FIELDS, item_rows(range(10)))
    load(source, first, pg_url, pg_schema, [], mode=mode, key=("id",) if mode == "merge" else ())
    before = ids(pg, pg_schema)
    second = make_table(source, dataset, "second", FIELDS, item_rows(range(100, 130), bad=True))
    with pytest.raises(QualityGateError) as caught:
        load(source, second, pg_url, pg_schema, doc(
            {"rule": "not_null", "column": "code"},
            {"rule": "range", "column": "price", "min": 0, "severity": "warn"},
        ), mode=mode, key=("id",) if mode == "merge" else ())  # fmt: skip
    assert ids(pg, pg_schema) == before  # the target kept its previous content
    message = str(caught.value)
    assert "not_null(code) [error]: 1 of 31 row(s) fail" in message
    assert '"code": null' in message  # an example row
    assert caught.value.exit_code == 11
    run_id, status, error = latest_run(pg, pg_schema)
    assert status == "failed_quality" and "not_null(code)" in error
    stored = pg.execute(
        "SELECT name, passed FROM bq2pg.quality_results WHERE run_id = %s ORDER BY id", [run_id]
    ).fetchall()
    assert stored == [("not_null(code)", False), ("range(price)", False)]
    side = "items__bq2pg_new" if mode == "replace" else "items__bq2pg_stage"
    assert exists(pg, pg_schema, side)  # kept for diagnosis
    count = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(pg_schema, side))).fetchone()[0]  # fmt: skip
    assert count == 31
    # the next run starts over (the failed one is not resumed) and publishes
    third = make_table(source, dataset, "third", FIELDS, item_rows(range(200, 205)))
    result = load(source, third, pg_url, pg_schema, doc({"rule": "not_null", "column": "code"}),
                  mode=mode, key=("id",) if mode == "merge" else ())  # fmt: skip
    assert not result.resumed and status_of(pg, result.run_id) == "succeeded"
    assert ids(pg, pg_schema) == sorted(
        {*range(200, 205)} if mode == "replace" else {*before, *range(200, 205)}
    )
    assert not exists(pg, pg_schema, side)


def test_state_reset_drops_the_kept_side_tables(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(10), bad=True))
    with pytest.raises(QualityGateError, match=r"unique\(id\) \[error\]: 2 of 11 row"):
        # the primary key's build finds the duplicate; the rule then says where
        load(source, table_id, pg_url, pg_schema, doc({"rule": "unique", "column": "id"}),
             **TABLES)  # fmt: skip
    assert exists(pg, pg_schema, "items__bq2pg_new")
    assert exists(pg, pg_schema, "items__parts__bq2pg_new")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        runs.reset(conn, f"{pg_schema}.items")
    assert not exists(pg, pg_schema, "items__bq2pg_new")
    assert not exists(pg, pg_schema, "items__parts__bq2pg_new")


def test_skip_quality_publishes_and_is_recorded(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(10), bad=True))
    request = copy_engine.CopyRequest(source=table_id, database_url=pg_url,
                                      table=f"{pg_schema}.items")  # fmt: skip
    job = copy_engine.build_job(source, request)
    bound, _ = rules.bind(doc({"rule": "unique", "column": "id"}, table=f"{pg_schema}.items"),
                          job.plan)  # fmt: skip
    result = run_job(source, dataclasses.replace(job, quality=tuple(bound), skip_quality=True))
    assert result.quality == [] and result.skip_quality
    assert len(ids(pg, pg_schema)) == 11
    assert pg.execute("SELECT skip_quality FROM bq2pg.runs WHERE run_id = %s",
                      [result.run_id]).fetchone()[0] is True  # fmt: skip


def test_an_invalid_postgresql_regex_is_refused_before_reading(source, dataset, pg_url, pg_schema,
                                                               pg):  # fmt: skip
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(3)))
    # Python accepts a possessive quantifier; PostgreSQL's regex dialect does not
    with pytest.raises(ConfigError, match=r"invalid regex.*for PostgreSQL"):
        load(source, table_id, pg_url, pg_schema, doc(
            {"rule": "pattern", "column": "code", "regex": "^C[0-9]++$"}))  # fmt: skip
    found = pg.execute("SELECT count(*) FROM bq2pg.runs WHERE target = %s",
                       [f"{pg_schema}.items"]).fetchone()[0]  # fmt: skip
    assert found == 0  # no run was recorded: nothing was read


def test_row_count_against_the_previous_run(source, dataset, pg_url, pg_schema):
    big = make_table(source, dataset, "big", FIELDS, item_rows(range(40)))
    small = make_table(source, dataset, "small", FIELDS, item_rows(range(10)))
    rule = doc({"rule": "row_count", "min_ratio_of_previous": 0.5})
    first = load(source, big, pg_url, pg_schema, rule)
    assert "no previous run" in first.quality[0].detail and first.quality[0].passed
    with pytest.raises(QualityGateError, match=r"10 rows < min 20 \(the previous run's 40 rows"):
        load(source, small, pg_url, pg_schema, rule)


# --- the patents model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patents_table(source) -> str:
    table_id = f"bq2pg-test.quality_{uuid.uuid4().hex[:8]}.publications"
    ref = TableRef.parse(table_id)
    create_table(source, ref, publications.PUBLICATIONS)
    load_arrow(source, ref, synthetic.generate(300, seed=5))
    return table_id


def patents_job(source, table_id: str, pg_url: str, schema: str, extra: list[rules.Rule]):
    request = patents_pipeline.PatentsRequest(database_url=pg_url, source=table_id, schema=schema)
    job = patents_pipeline.build_job(source, request)
    bound, _ = rules.bind(rules.merge(patents_quality.builtin(job.plan), extra), job.plan)
    return request, dataclasses.replace(job, quality=tuple(bound))


def test_patents_builtin_rules_pass_on_a_model_load(source, patents_table, pg_url, pg_schema, pg):
    request, job = patents_job(source, patents_table, pg_url, pg_schema, [])
    result = patents_pipeline.run_built(source, request, job)
    failed = [(o.rule.table, o.rule.name, o.failing) for o in result.quality if not o.passed]
    assert not [f for f in failed if "pattern" not in f[1]], failed
    assert {o.rule.kind for o in result.quality} >= {"unique", "relationships", "pattern"}


def test_the_patents_gate_keeps_the_previous_model(source, patents_table, pg_url, pg_schema, pg):
    request, job = patents_job(source, patents_table, pg_url, pg_schema, [])
    patents_pipeline.run_built(source, request, job)
    count = sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(pg_schema, "publication_cpc"))  # fmt: skip
    before = pg.execute(count).fetchone()[0]
    strict = rules.parse(
        {
            "publication_cpc": [
                {"rule": "custom", "name": "no_cpc_rows", "sql": "SELECT * FROM {table}"}
            ]
        },
        "test",
    )
    request, job = patents_job(source, patents_table, pg_url, pg_schema, strict)
    with pytest.raises(QualityGateError, match="no_cpc_rows"):
        patents_pipeline.run_built(source, request, job)
    assert pg.execute(count).fetchone()[0] == before


# --- the command line --------------------------------------------------------------------------


def test_cli_gate_exit_code_summary_and_quality_show(
    source, dataset, pg_url, pg_schema, pg, emulator_env, tmp_path
):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(20), bad=True))
    path = tmp_path / "rules.yaml"
    path.write_text(ISSUE_EXAMPLE.replace("public.items", f"{pg_schema}.items")
                    + "    - rule: pattern\n      column: code\n      regex: '^C'\n"
                    + "      severity: warn\n")  # fmt: skip
    args = ["copy", table_id, "--to", pg_url, "--table", f"{pg_schema}.items", "--quality",
            str(path)]  # fmt: skip
    failed = bq2pg_cmd(*args, env=emulator_env)
    assert failed.returncode == 11, failed.stderr
    assert "unique(id) [error]: 2 of 21 row(s) fail" in failed.stderr
    assert not exists(pg, pg_schema, "items")
    ok = bq2pg_cmd(*args, "--skip-quality", env=emulator_env)
    assert ok.returncode == 0, ok.stderr
    assert "quality rules skipped" in ok.stderr
    shown = bq2pg_cmd("quality", "show", f"{pg_schema}.items", "--to", pg_url, "--format",
                      "json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["status"] == "failed_quality"
    assert {r["name"]: r["passed"] for r in found["results"]} == {
        "not_null(id)": True,
        "unique(id)": False,
        "range(price)": False,
        "pattern(code)": False,
    }
    assert found["scores"][f"{pg_schema}.items"] == pytest.approx(100 * 3 / 8)
    table = bq2pg_cmd("quality", "show", "--to", pg_url)
    assert table.returncode == 0 and "unique(id)" in table.stdout


def test_runs_are_profiled_and_audited(source, dataset, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "items", FIELDS, item_rows(range(20), bad=True))
    target = f"{pg_schema}.items"
    with pytest.raises(QualityGateError):
        load(source, table_id, pg_url, pg_schema, doc({"rule": "unique", "column": "id"}))
    result = load(source, table_id, pg_url, pg_schema, [])
    profiled = dict(pg.execute(
        "SELECT column_name, null_frac FROM bq2pg.profiles WHERE run_id = %s",
        [result.run_id]).fetchall())  # fmt: skip
    assert set(profiled) == {"id", "code", "price", "status", "updated", "parts"}
    assert profiled["code"] == pytest.approx(1 / 21)
    admin.reset_target(pg_url, target)
    trail = pg.execute(
        "SELECT action, outcome, arguments ->> 'run_id' FROM bq2pg.audit WHERE target = %s "
        "ORDER BY id", [target],
    ).fetchall()  # fmt: skip
    actions = [(a, o) for a, o, _ in trail]
    assert actions == [
        ("run.started", "ok"),
        ("run.finished", "failed_quality"),
        ("run.started", "ok"),
        ("run.finished", "succeeded"),
        ("state.reset", "ok"),
    ]
    assert trail[3][2] == str(result.run_id)
