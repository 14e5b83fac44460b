"""The bq2pg command: real processes, real servers, exit codes and output."""

from __future__ import annotations

import pytest

import bq2pg
from bq2pg.plan.tables import Field
from conftest import bq2pg_cmd, make_table

CANARY = "CANARY-7f3a9c"


def test_public_api_is_pinned():
    """A name leaves or joins the public API only on purpose (tests/test_exported_members.py
    checks that ``__all__`` is exactly what ``bq2pg`` exposes)."""
    assert sorted(bq2pg.__all__) == sorted(
        [
            "Bq2pgError", "BudgetExceededError", "CancelledError", "CircuitOpenError", "ConcurrentRunError",
            "ConfigError", "ConfigFileError", "CopyRequest", "DeadLetter", "DeadLetterDetail", "EXIT_DEAD_LETTERS",
            "EmbeddedError", "FilterError", "IdentifierError", "NothingToResumeError", "NothingToVerifyError",
            "PatentsRequest", "Progress", "QualityGateError", "Replayed", "RowRejectedError", "RunInfo",
            "RunProgress", "RunResult", "SecretError", "SessionExpiredError", "Source", "SourceError",
            "TableCheck", "TableRef", "TableResult", "TargetError", "TargetMismatchError",
            "Transient", "TransientSourceError", "TransientTargetError", "TypeMappingError",
            "VerificationError", "__version__", "copy_table", "list_dead_letters",
            "list_runs", "load_patents", "plan", "purge_dead_letters",
            "replay_dead_letters", "reset_target", "run_progress", "show_dead_letter",
            "verify_target", "watermark",
        ]
    )  # fmt: skip
    for name in bq2pg.__all__:
        assert hasattr(bq2pg, name)


def test_help_lists_every_command():
    result = bq2pg_cmd("--help")
    assert result.returncode == 0
    for command in ("copy", "patents", "schema", "types", "demo", "emulator", "postgres"):
        assert command in result.stdout


def test_no_option_takes_key_json_on_the_command_line():
    assert "key-json" not in bq2pg_cmd("copy", "--help").stdout


def test_types_prints_the_type_table():
    result = bq2pg_cmd("types")
    assert result.returncode == 0
    for name in ("BIGNUMERIC", "tstzrange", "jsonb", "double precision"):
        assert name in result.stdout


def test_schema_prints_ddl_without_loading(source, dataset, emulator_env):
    fields = [Field("id", "INT64"), Field("r", "RECORD", "REPEATED", (Field("x", "STRING"),))]
    table_id = make_table(source, dataset, "t", fields, [])
    result = bq2pg_cmd(
        "schema", table_id, "--key", "id", "--nested", "tables", "--table", "s.t",
        env=emulator_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert 'CREATE TABLE "s"."t" (\n    "id" bigint\n);' in result.stdout
    assert 'CREATE TABLE "s"."t__r"' in result.stdout
    assert '"parent_id" bigint NOT NULL' in result.stdout


def test_copy_end_to_end_prints_a_summary(source, dataset, emulator_env, pg_url, pg_schema, pg):
    table_id = make_table(
        source, dataset, "t", [Field("id", "INT64")], [{"id": i} for i in range(5)]
    )
    result = bq2pg_cmd(
        "copy", table_id, "--to", pg_url, "--table", f"{pg_schema}.t", "--streams", "2",
        env=emulator_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "5 rows read" in result.stdout
    assert pg.execute(f'SELECT count(*) FROM "{pg_schema}"."t"').fetchone() == (5,)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["copy", "not-a-table", "--to", "postgresql://x@/y"], 2, "PROJECT.DATASET.TABLE"),
        (["copy", "p.d.t"], 2, "BQ2PG_DATABASE_URL"),
        (["copy", "p.d.t", "--to", "postgresql://x@/y", "--mode", "upsert"], 2, "--mode"),
    ],
)
def test_configuration_errors_exit_2_with_the_fix(args, code, message, emulator_env):
    env = {**emulator_env, "BQ2PG_DATABASE_URL": ""}
    result = bq2pg_cmd(*args, env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["verify", "s.t", "--into", "x"], "No such option"), (["copy"], "missing argument SOURCE")],
)
def test_usage_errors_exit_2_without_a_traceback(args, message):
    done = bq2pg_cmd(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_missing_source_table_exits_3(emulator_env):
    result = bq2pg_cmd(
        "copy", "bq2pg-test.nosuch.table", "--to", "postgresql://x@/y", env=emulator_env
    )
    assert result.returncode == 3
    assert "not found" in result.stderr


def test_unreachable_database_error_never_shows_the_password(source, dataset, emulator_env):
    table_id = make_table(source, dataset, "t", [Field("id", "INT64")], [{"id": 1}])
    url = f"postgresql://loader:{CANARY}@127.0.0.1:1/db?connect_timeout=3"
    result = bq2pg_cmd("-v", "-v", "copy", table_id, "--to", url, env=emulator_env)
    assert result.returncode == 4, result.stderr
    assert "connecting to PostgreSQL" in result.stderr
    assert CANARY not in result.stdout + result.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end(pg_url, pg, tmp_path):
    result = bq2pg_cmd(
        "demo", "--rows", "2000", "--to", pg_url, env={"XDG_CACHE_HOME": str(tmp_path)}, timeout=600
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "2,000 rows read" in result.stdout
        assert pg.execute("SELECT count(*) FROM patents.publications").fetchone() == (2000,)
        cpc = pg.execute(
            "SELECT count(*), count(DISTINCT publication_number) FROM patents.publication_cpc"
        ).fetchone()
        assert cpc is not None and cpc[0] > cpc[1] > 0
    finally:
        pg.execute("DROP SCHEMA IF EXISTS patents CASCADE")


def test_dlq_and_state_commands(source, dataset, emulator_env, pg_url, pg_schema, pg):
    rows = [{"id": i, "s": f"row {i}"} for i in range(5)]
    rows[2]["s"] = "CANARY-VALUE\x00"
    table_id = make_table(source, dataset, "t", [Field("id", "INT64"), Field("s", "STRING")], rows)
    target = f"{pg_schema}.t"
    copied = bq2pg_cmd("copy", table_id, "--to", pg_url, "--table", target, env=emulator_env)
    assert copied.returncode == 8, copied.stderr  # loaded, but a row is in the dead letters
    assert "bq2pg.dead_letters" in copied.stderr
    assert "CANARY-VALUE" not in copied.stdout + copied.stderr  # row values never in output
    listed = bq2pg_cmd("dlq", "list", "--database", pg_url, "--target", target)
    assert listed.returncode == 0 and target in listed.stdout and "CANARY" not in listed.stdout
    letter = pg.execute("SELECT id FROM bq2pg.dead_letters WHERE target = %s", [target]).fetchone()
    shown = bq2pg_cmd("dlq", "show", str(letter[0]), "--database", pg_url)
    assert shown.returncode == 0 and "CANARY-VALUE" in shown.stdout  # asked for: the raw row
    runs = bq2pg_cmd("state", "show", target, "--database", pg_url)
    assert runs.returncode == 0 and "succeeded" in runs.stdout
    refused = bq2pg_cmd("dlq", "purge", "--database", pg_url, "--target", target)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = bq2pg_cmd("dlq", "purge", "--database", pg_url, "--target", target, "--yes")
    assert purged.returncode == 0 and "1 dead letter(s) deleted" in purged.stdout
    reset = bq2pg_cmd("state", "reset", target, "--database", pg_url)
    assert reset.returncode == 0 and "0 unfinished run(s)" in reset.stdout


def test_verify_rechecks_counts_and_catches_a_deleted_row(
    source, dataset, emulator_env, pg_url, pg_schema, pg
):
    fields = [Field("id", "INT64"), Field("r", "RECORD", "REPEATED", (Field("x", "STRING"),))]
    rows = [{"id": i, "r": [{"x": "a"}, {"x": "b"}]} for i in range(6)]
    table_id = make_table(source, dataset, "t", fields, rows)
    target = f"{pg_schema}.t"
    args = [
        "copy",
        table_id,
        "--to",
        pg_url,
        "--table",
        target,
        "--key",
        "id",
        "--nested",
        "tables",
    ]
    assert bq2pg_cmd(*args, env=emulator_env).returncode == 0
    ok = bq2pg_cmd("verify", target, "--database", pg_url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(" ok ") == 2  # t and t__r
    pg.execute(f'DELETE FROM "{pg_schema}"."t__r" WHERE parent_id = 0 AND ordinal = 2')
    bad = bq2pg_cmd("verify", target, "--to", pg_url)  # --to, as copy says, works too
    assert bad.returncode == 7 and "MISMATCH" in bad.stdout
