"""Column profiles from pg_stats (quality.profile) and ``bq2pg profile``, against the session's
real PostgreSQL: a table with known NULLs, distinct values and bounds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from bq2pg.cli import profile as cli_profile
from bq2pg.errors import ConfigError
from bq2pg.postgres.connection import connect
from bq2pg.quality import profile
from bq2pg.state import schema

ROWS = 1000


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection]:
    """bq2pg's own connection (UTC, autocommit)."""
    c = connect(pg_url)
    yield c
    c.close()


@pytest.fixture
def known(pg: psycopg.Connection, pg_schema: str) -> str:
    """``schema.known``: 1000 rows (fewer than ANALYZE samples, so its statistics are exact).

    id: 1..1000, unique. grp: 'a' (half), 'b' (30 %), 'c' (20 %). half_null: NULL on even ids,
    else id % 10 (five values). ts: one day per id from 2026-01-01. code: 'x' + 6 digits
    (width 8 with the varlena header). arr, doc, note: an array, a jsonb and a json that must
    not break it. nothing: NULL everywhere.
    """
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(
        sql.SQL(
            "CREATE TABLE {}.known (id integer PRIMARY KEY, grp text, half_null integer, "
            'ts timestamptz, code text, arr integer[], doc jsonb, "Mixed Case" boolean, '
            "note json, nothing text)"
        ).format(sql.Identifier(pg_schema))
    )
    pg.execute(
        sql.SQL(
            "INSERT INTO {}.known SELECT i, CASE WHEN i <= 500 THEN 'a' WHEN i <= 800 THEN 'b' "
            "ELSE 'c' END, CASE WHEN i %% 2 = 1 THEN i %% 10 END, "
            "timestamptz '2026-01-01 00:00:00+00' + (i - 1) * interval '1 day', "
            "'x' || lpad(i::text, 6, '0'), CASE WHEN i %% 3 = 0 THEN ARRAY[[i, i], [0, 1]] "
            "ELSE ARRAY[i %% 4] END, jsonb_build_object('k', i %% 3, 'v', array[i]), i %% 4 = 0, "
            "json_build_object('a', 1), NULL FROM generate_series(1, %s) AS i"
        ).format(sql.Identifier(pg_schema)),
        [ROWS],
    )
    return f"{pg_schema}.known"


def _columns(p: profile.TableProfile) -> dict[str, profile.ColumnProfile]:
    return {c.column: c for c in p.columns}


def test_profile_reads_nulls_distincts_bounds_and_common_values(conn, known):
    [p] = profile.profile(conn, [known], analyze=True)
    assert p.table == known
    assert p.row_estimate == ROWS
    assert p.analyzed_at is not None
    cols = _columns(p)
    assert list(cols) == [
        "id", "grp", "half_null", "ts", "code", "arr", "doc", "Mixed Case", "note", "nothing"
    ]  # fmt: skip

    assert cols["id"].data_type == "integer"
    assert cols["id"].null_frac == 0
    assert cols["id"].distinct_estimate == ROWS  # n_distinct -1 (unique) made absolute
    assert (cols["id"].min_value, cols["id"].max_value) == ("1", "1000")
    assert cols["id"].avg_width == 4

    grp = cols["grp"]
    assert grp.distinct_estimate == 3
    assert [v for v, _ in grp.most_common] == ["a", "b", "c"]
    assert [round(f, 2) for _, f in grp.most_common] == [0.5, 0.3, 0.2]
    assert (grp.min_value, grp.max_value) == ("a", "c")  # no histogram: from the common values

    half = cols["half_null"]
    assert half.null_frac == pytest.approx(0.5)
    assert half.distinct_estimate == 5
    assert (half.min_value, half.max_value) == ("1", "9")
    assert len(half.most_common) == 5

    ts = cols["ts"]
    assert ts.data_type == "timestamp with time zone"
    assert ts.min_value == "2026-01-01 00:00:00+00"
    assert ts.max_value.startswith("2028-09-")  # day 1000
    assert ts.avg_width == 8

    code = cols["code"]
    assert code.distinct_estimate == ROWS
    assert (code.min_value, code.max_value) == ("x000001", "x001000")
    assert code.avg_width == 8
    assert code.most_common == ()

    assert cols["Mixed Case"].distinct_estimate == 2
    assert (cols["Mixed Case"].min_value, cols["Mixed Case"].max_value) == ("f", "t")


def test_profile_survives_array_and_jsonb_columns(conn, known):
    [p] = profile.profile(conn, [known], analyze=True)
    arr, doc = _columns(p)["arr"], _columns(p)["doc"]
    assert arr.data_type == "integer[]"
    assert (arr.min_value, arr.max_value) == (None, None)  # arrays get no bounds
    assert arr.null_frac == 0 and arr.avg_width and arr.avg_width > 0
    assert all(isinstance(v, str) for v, _ in arr.most_common)
    assert doc.data_type == "jsonb"
    assert doc.null_frac == 0 and doc.distinct_estimate == ROWS
    json.loads(doc.min_value)  # the histogram's ends are jsonb text
    json.loads(doc.max_value)


def test_profile_says_unknown_distincts_and_all_null_columns(conn, known):
    [p] = profile.profile(conn, [known], analyze=True)
    note, nothing = _columns(p)["note"], _columns(p)["nothing"]
    assert note.data_type == "json"  # no equality operator: pg_stats knows no distincts
    assert (note.null_frac, note.distinct_estimate, note.min_value, note.most_common) == (
        0,
        None,
        None,
        (),
    )
    assert (nothing.null_frac, nothing.distinct_estimate, nothing.avg_width) == (1, 0, 0)


def test_profile_analyzes_a_table_never_analyzed(conn, pg, pg_schema):
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(
        sql.SQL("CREATE TABLE {}.fresh AS SELECT g AS n FROM generate_series(1, 50) g").format(
            sql.Identifier(pg_schema)
        )
    )
    [p] = profile.profile(conn, [f"{pg_schema}.fresh"])
    assert p.row_estimate == 50
    [n] = p.columns
    assert (n.min_value, n.max_value, n.distinct_estimate) == ("1", "50", 50)


def test_profile_lists_columns_without_statistics(conn, pg, pg_schema):
    """An empty table has no pg_stats rows once analyzed: its columns come with Nones."""
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(sql.SQL("CREATE TABLE {}.empty (a int, b text)").format(sql.Identifier(pg_schema)))
    [p] = profile.profile(conn, [f"{pg_schema}.empty"], analyze=True)
    assert [c.column for c in p.columns] == ["a", "b"]
    assert p.columns[1] == profile.ColumnProfile("b", "text")


def test_profile_of_several_tables_keeps_their_order(conn, known, pg, pg_schema):
    pg.execute(sql.SQL("CREATE TABLE {}.other (z int)").format(sql.Identifier(pg_schema)))
    other = f"{pg_schema}.other"
    found = profile.profile(conn, [other, known, other])
    assert [p.table for p in found] == [other, known]


def test_profile_names_every_unknown_table(conn, known, pg_schema):
    with pytest.raises(ConfigError, match=rf"{pg_schema}\.nope, nowhere\.t") as caught:
        profile.profile(conn, [known, f"{pg_schema}.nope", "nowhere.t"])
    assert caught.value.table == f"{pg_schema}.nope"


def test_store_and_latest_round_trip(conn, known):
    schema.ensure(conn)
    [p] = profile.profile(conn, [known], analyze=True)
    assert profile.store(conn, None, [p]) == len(p.columns)
    second = profile.store(conn, None, [p])
    assert second == len(p.columns)
    stored = profile.latest(conn, known)
    assert stored is not None
    assert stored.table == known and stored.run_id is None and stored.profiled_at is not None
    assert stored.row_estimate == p.row_estimate
    assert stored.columns == p.columns
    assert profile.latest(conn, f"{uuid.uuid4().hex}.none") is None


def test_cli_prints_json_and_stores(conn, pg_url, known):
    result = CliRunner().invoke(
        cli_profile.app, [known, "--analyze", "--format", "json", "--to", pg_url]
    )
    assert result.exit_code == 0, result.output
    [table] = json.loads(result.stdout)
    assert table["table"] == known and table["row_estimate"] == ROWS
    grp = next(c for c in table["columns"] if c["column"] == "grp")
    assert grp["most_common"][0] == {"value": "a", "freq": pytest.approx(0.5)}
    assert profile.latest(conn, known) is not None


def test_cli_prints_a_table_without_storing(conn, pg_url, known):
    schema.ensure(conn)
    result = CliRunner().invoke(cli_profile.app, [known, "--no-store", "--to", pg_url])
    assert result.exit_code == 0, result.output
    assert f"{known}: ~1,000 rows" in result.stdout
    assert "half_null" in result.stdout and "50.0%" in result.stdout
    assert profile.latest(conn, known) is None
