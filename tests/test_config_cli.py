"""bq2pg.yaml end to end: named jobs with a secret password, environments, plan vs actuals,
the budget refusal, jobs, config show and validate, libpq's environment — through the real
command against the emulator and the embedded PostgreSQL."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from bq2pg.plan.tables import Field
from conftest import bq2pg_cmd, make_table

CANARY = "CANARY-pw-5e1d"
FIELDS = [Field("id", "INT64", "REQUIRED"), Field("name", "STRING"), Field("price", "NUMERIC")]


@pytest.fixture
def items(source, dataset) -> str:
    rows = [{"id": i, "name": f"item {i}", "price": f"{i}.25"} for i in range(500)]
    return make_table(source, dataset, "items", FIELDS, rows)


def write_config(tmp_path: Path, emu, pg_url: str, table_id: str, schema: str) -> Path:
    """A configuration like the issue's: a target with a file secret, a source, one job,
    and a production environment."""
    secret = tmp_path / "pg_password"
    secret.write_text(CANARY + "\n")
    secret.chmod(0o600)
    path = tmp_path / "bq2pg.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            targets:
              local:
                url: {pg_url}
                password: ${{file:{secret}}}
            sources:
              default:
                project: bq2pg-test
                bigquery_endpoint: {emu.rest_url}
                bigquery_storage_endpoint: {emu.grpc_endpoint}
                emulator: true
            jobs:
              items:
                kind: copy
                source: {table_id}
                target: local
                table: {schema}.items
                streams: 2
            environments:
              production:
                jobs:
                  items:
                    streams: 3
            """)
    )
    return path


def clean_env() -> dict[str, str]:
    """The environment without BQ2PG_ variables (the test's configuration decides)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("BQ2PG_", "PG"))}


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    base = clean_env() | (env or {})
    if cwd is not None:
        base["BQ2PG_CONFIG"] = str(cwd / "bq2pg.yaml")
    return bq2pg_cmd(*args, env=base)


def test_run_a_named_job_with_a_secret_and_an_environment(
    tmp_path, emu, pg_url, pg_schema, pg, items
):
    write_config(tmp_path, emu, pg_url, items, pg_schema)
    plan = run("plan", "items", "--env", "production", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "500" in plan.stdout and "nothing was loaded" in plan.stdout
    assert pg.execute("SELECT to_regclass(%s)", [f"{pg_schema}.items"]).fetchone() == (None,)

    done = run("run", "items", "--env", "production", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert pg.execute(f'SELECT count(*) FROM "{pg_schema}".items').fetchone() == (500,)
    plan_row = pg.execute(
        "SELECT plan, rows_read, pg_bytes FROM bq2pg.runs WHERE target = %s",
        [f"{pg_schema}.items"],
    ).fetchone()
    assert plan_row[0]["rows"] == 500 == plan_row[1]
    assert plan_row[2] > 0
    assert CANARY not in done.stdout + done.stderr + plan.stdout + plan.stderr

    shown = run("state", "show", "--to", pg_url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "estimated" in shown.stdout.lower()


def test_flags_and_variables_override_the_file(tmp_path, emu, pg_url, pg_schema, pg, items):
    write_config(tmp_path, emu, pg_url, items, pg_schema)
    env = {"BQ2PG_JOBS__ITEMS__TABLE": f"{pg_schema}.other"}
    done = run("run", "items", "--limit", "7", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert pg.execute(f'SELECT count(*) FROM "{pg_schema}".other').fetchone() == (7,)


def test_config_show_names_where_each_value_came_from(tmp_path, emu, pg_url, items):
    path = write_config(tmp_path, emu, pg_url, items, "s")
    lines = path.read_text().splitlines()
    line_of = {k: n + 1 for n, line in enumerate(lines) for k in ("streams: 3", "streams: 2")
               if line.strip() == k}  # fmt: skip
    env = {"BQ2PG_JOBS__ITEMS__TABLE": "public.from_env", "BQ2PG_DEFAULTS__LIMIT": "5"}
    shown = run("config", "show", "--env", "production", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = {r.split(" = ")[0]: r for r in shown.stdout.splitlines() if " = " in r}
    assert f"bq2pg.yaml:{line_of['streams: 3']}" in rows["jobs.items.streams"]
    assert "BQ2PG_JOBS__ITEMS__TABLE" in rows["jobs.items.table"]
    assert "BQ2PG_DEFAULTS__LIMIT" in rows["jobs.items.limit"]
    assert "built-in" in rows["jobs.items.mode"]
    assert "${file:" in rows["targets.local.password"]  # a reference, shown as written
    assert CANARY not in shown.stdout
    plain = run("config", "show", env=env, cwd=tmp_path)
    rows = {r.split(" = ")[0]: r for r in plain.stdout.splitlines() if " = " in r}
    assert f"bq2pg.yaml:{line_of['streams: 2']}" in rows["jobs.items.streams"]


def test_budget_refuses_before_any_read_session(tmp_path, emu, pg_url, pg_schema, pg, items):
    write_config(tmp_path, emu, pg_url, items, pg_schema)
    before = pg.execute("SELECT count(*) FROM bq2pg.runs").fetchone() if _has_runs(pg) else (0,)
    refused = run("run", "items", "--max-bytes", "1", cwd=tmp_path)
    assert refused.returncode == 9, refused.stderr
    assert "--max-bytes" in refused.stderr or "max_bytes" in refused.stderr
    after = pg.execute("SELECT count(*) FROM bq2pg.runs").fetchone() if _has_runs(pg) else (0,)
    assert after == before
    assert pg.execute("SELECT to_regclass(%s)", [f"{pg_schema}.items"]).fetchone() == (None,)


def _has_runs(pg) -> bool:
    return pg.execute("SELECT to_regclass('bq2pg.runs')").fetchone() != (None,)


def test_jobs_lists_target_and_last_run(tmp_path, emu, pg_url, pg_schema, items):
    write_config(tmp_path, emu, pg_url, items, pg_schema)
    assert "never" in run("jobs", cwd=tmp_path).stdout
    assert run("run", "items", cwd=tmp_path).returncode == 0
    listed = run("jobs", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "succeeded" in listed.stdout and "500 rows" in listed.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jobs:\n  a:\n    kind: copy\n    stream: 2\n", "bq2pg.yaml:4: jobs.a.stream: unknown key; did you mean 'streams'?"),
        ("jobs:\n  a:\n    kind: copy\n    limit: lots\n", "bq2pg.yaml:4: jobs.a.limit: Input should be a valid integer"),
        ("targets:\n  local:\n    url: postgresql://h/db\njobs:\n  a:\n    kind: copy\n    target: lokal\n",
         "bq2pg.yaml:7: jobs.a.target: no target named 'lokal'; targets: local; did you mean 'local'?"),
        ("jobs:\n  a:\n    kind: copy\n   bad: [\n", "bq2pg.yaml:4:4: YAML syntax error"),
        ("jobs:\n  a:\n    kind: copy\n    year: 2020\n", "bq2pg.yaml:4: jobs.a.year: a key of patents jobs"),
        ("jobs:\n  a:\n    source: p.d.t\n", "jobs.a: kind is missing"),
        ("jobs:\n  a:\n    kind: copy\n  a:\n    kind: patents\n", "bq2pg.yaml:4: jobs.a: duplicate key"),
    ],
)  # fmt: skip
def test_bad_files_name_file_line_and_key(tmp_path, text, expected):
    (tmp_path / "bq2pg.yaml").write_text(text)
    checked = run("config", "validate", cwd=tmp_path)
    assert checked.returncode == 2
    assert (
        expected in checked.stderr.replace("\n", " ").replace("  ", " ")
        or expected in checked.stderr
    )
    ran = run("run", "a", cwd=tmp_path)
    assert ran.returncode == 2 and expected.split(":")[0] in ran.stderr


def test_an_unknown_environment_is_refused_with_a_suggestion(tmp_path, emu, pg_url, items):
    write_config(tmp_path, emu, pg_url, items, "s")
    refused = run("run", "items", "--env", "prod", cwd=tmp_path)
    assert refused.returncode == 2
    assert "no environment 'prod'" in refused.stderr and "production" in refused.stderr
    assert run("config", "validate", cwd=tmp_path).returncode == 0


def test_libpq_environment_is_used_without_a_url(
    source, dataset, emulator_env, pg_url, pg_schema, pg
):
    table_id = make_table(source, dataset, "t", FIELDS, [{"id": 1, "name": "a", "price": "1"}])
    parts = conninfo_to_dict(pg_url)
    service = Path(os.environ.get("TMPDIR", "/tmp")) / f"pg_service_{uuid.uuid4().hex}.conf"
    service.write_text(
        f"[bq2pg_test]\nhost={parts.get('host')}\nport={parts.get('port', 5432)}\n"
        f"user={parts.get('user')}\ndbname={parts.get('dbname')}\n"
    )
    try:
        env = emulator_env | {"PGSERVICEFILE": str(service), "PGSERVICE": "bq2pg_test"}
        done = run("copy", table_id, "--table", f"{pg_schema}.t", env=env)
        assert done.returncode == 0, done.stderr
    finally:
        service.unlink()
    assert pg.execute(f'SELECT count(*) FROM "{pg_schema}".t').fetchone() == (1,)


def test_dry_run_on_copy_loads_nothing(source, dataset, emulator_env, pg_url, pg_schema, pg):
    table_id = make_table(source, dataset, "t", FIELDS, [{"id": 1, "name": "a", "price": "1"}])
    done = run("copy", table_id, "--to", pg_url, "--table", f"{pg_schema}.t", "--dry-run",
               env=emulator_env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "nothing was loaded" in done.stdout
    assert pg.execute("SELECT to_regclass(%s)", [f"{pg_schema}.t"]).fetchone() == (None,)


def test_every_option_of_copy_and_patents_is_a_job_key():
    from typer.main import get_command

    from bq2pg.cli.app import app
    from bq2pg.cli.jobs import RENAME
    from bq2pg.config import model

    commands = get_command(app).commands  # type: ignore[attr-defined]
    for kind in ("copy", "patents"):
        names = {RENAME.get(p.name, p.name) for p in commands[kind].params} - {"config", "env"}
        assert names <= model.KIND_KEYS[kind], names - model.KIND_KEYS[kind]
        for p in commands[kind].params:
            key = RENAME.get(p.name, p.name)
            if key in model.BUILTIN[kind] and key != "streams":
                assert p.default == model.BUILTIN[kind][key], (kind, key)


def test_secrets_never_reach_outputs_logs_or_state(tmp_path, emu, pg_url, pg_schema, pg, items):
    """The canary, at every new output: a literal password and a referenced one."""
    path = write_config(tmp_path, emu, pg_url, items, pg_schema)
    text = path.read_text().replace(
        "targets:\n", f"targets:\n  literal:\n    url: {pg_url}\n    password: {CANARY}\n"
    )
    path.write_text(text)
    outputs = []
    for args in (("config", "show"), ("config", "validate"), ("jobs",), ("plan", "items"),
                 ("-v", "-v", "run", "items"), ("run", "items", "--to", "literal"),
                 ("state", "show", "--to", "literal"), ("doctor", "items"),
                 ("run", "items", "--max-bytes", "1")):  # fmt: skip
        done = run(*args, cwd=tmp_path)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode in (0, 1, 9), (args, done.stderr)
    assert all(CANARY not in o for o in outputs)
    assert "password = ***" in outputs[0]
    stored = pg.execute(
        "SELECT string_agg(concat_ws(' ', arguments::text, plan::text, error, target), ' ') "
        "FROM bq2pg.runs"
    ).fetchone()[0]
    assert stored and CANARY not in stored


def test_a_secret_that_cannot_be_read_exits_10(tmp_path, emu, pg_url, items):
    path = write_config(tmp_path, emu, pg_url, items, "s")
    (tmp_path / "pg_password").unlink()
    done = run("run", "items", cwd=tmp_path)
    assert done.returncode == 10, done.stderr
    assert "targets.local.password" in done.stderr and "missing" in done.stderr
    (tmp_path / "pg_password").write_text(CANARY)
    (tmp_path / "pg_password").chmod(0o644)
    loose = run("run", "items", cwd=tmp_path)
    assert loose.returncode == 10 and "chmod 600" in loose.stderr
    assert CANARY not in loose.stdout + loose.stderr
    assert path.exists()


def test_doctor_on_a_healthy_and_an_unreachable_server(emulator_env, pg_url, items):
    ok = run("doctor", "--to", pg_url, "--source", items, env=emulator_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   postgres:" in ok.stdout and "ok   read session" in ok.stdout
    assert "maintenance_work_mem" in ok.stdout
    bad = run("doctor", "--to", f"postgresql://u:{CANARY}@127.0.0.1:1/db", env=emulator_env)
    assert bad.returncode == 1
    assert "fail postgres" in bad.stdout and CANARY not in bad.stdout + bad.stderr


def test_the_examples_in_the_docs_are_valid(tmp_path):
    """The example files of docs/configuration.md and README.md load without an error."""
    from bq2pg.config import jobs as config_jobs

    root = Path(__file__).resolve().parents[1]
    blocks = []
    for doc in (root / "docs" / "configuration.md", root / "README.md"):
        parts = doc.read_text().split("```yaml\n")[1:]
        blocks += [p.split("```")[0] for p in parts if "jobs:" in p.split("```")[0]]
    assert len(blocks) >= 2
    environ = {"PGPASSWORD_DEV": "x"}
    for n, block in enumerate(blocks):
        if "NAME:" in block:  # the grammar, with placeholders
            continue
        path = tmp_path / f"example{n}.yaml"
        path.write_text(block)
        loaded = config_jobs.load(path, environ=environ)
        for env in loaded.base.get("environments") or {}:
            config_jobs.load(path, env, environ=environ)
