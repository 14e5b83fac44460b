"""``bq2pg doctor``'s checks against the real embedded PostgreSQL and the real emulator: a
healthy setup has no fail; each misconfiguration is one fail (or warn) line that says what to
do, and none raises."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bq2pg import doctor
from bq2pg.bigquery.client import Source
from bq2pg.local.emulator import free_port
from bq2pg.plan.tables import Field
from bq2pg.postgres.settings_probe import quantity
from conftest import EMULATOR_PROJECT, make_table


def with_user(url: str, user: str) -> str:
    """``url`` connecting as ``user`` (the embedded server trusts local connections)."""
    return re.sub(r"^postgresql://[^@]*@", f"postgresql://{user}@", url)


def with_options(url: str, options: str) -> str:
    """``url`` with libpq ``options`` (percent-encoded) added to its query."""
    return f"{url}{'&' if '?' in url else '?'}options={options}"


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


@pytest.fixture
def role(pg: psycopg.Connection) -> Iterator[str]:
    """A LOGIN role with no privileges beyond PUBLIC's, dropped afterwards."""
    name = f"doctor_{uuid.uuid4().hex[:8]}"
    pg.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    pg.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    pg.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_units_compare_as_quantities():
    assert quantity("8192", "8kB") == quantity("64MB")
    assert quantity("65536", "kB") < quantity("1GB")  # type: ignore[operator]
    assert quantity("300", "s") == quantity("5min")
    assert quantity("replica") is None


def test_a_healthy_server_has_no_fail_and_advises_on_settings(pg_url, pg_schema):
    checks = doctor.check_postgres(pg_url, schema=pg_schema, needed_bytes=1024)
    found = by_name(checks)
    assert not doctor.blocking(checks), [c for c in checks if c.blocking]
    assert found["postgres"].status == "ok"
    assert found["postgres version"].status == "ok"
    assert found["privileges"].status == "ok"
    assert "a role of its own" in found["privileges"].advice  # the embedded role is superuser
    assert found["disk space"].status == "ok"
    assert "free" in found["disk space"].detail
    for rule in doctor.SETTING_RULES:
        check = found[rule.setting]
        assert check.status in ("ok", "warn")
        if check.status == "warn":
            assert rule.recommended in check.advice and rule.why in check.advice
    # the embedded server's defaults: wal_level replica gets advice, synchronous_commit on is
    # what exactly-once needs
    assert found["synchronous_commit"].status == "ok"
    assert found["wal_level"].status == "warn"
    assert "restart" in found["wal_level"].advice
    assert "pg_reload_conf" in found["max_wal_size"].advice


def test_synchronous_commit_off_is_advised_against(pg_url):
    url = pg_url + "&options=-c%20synchronous_commit%3Doff"
    check = by_name(doctor.check_postgres(url))["synchronous_commit"]
    assert check.status == "warn" and "exactly-once" in check.advice


def test_a_role_without_create_on_the_database_fails_naming_the_grant(pg_url, pg_schema, role):
    found = by_name(doctor.check_postgres(with_user(pg_url, role), schema=pg_schema))
    check = found["privileges"]
    assert check.status == "fail"
    assert f"role {role} lacks CREATE on database" in check.detail
    assert f"GRANT CREATE ON DATABASE postgres TO {role};" in check.advice


@pytest.fixture
def database(pg: psycopg.Connection, pg_url: str) -> Iterator[str]:
    """A fresh database (its own bq2pg schema), dropped afterwards; its name."""
    name = f"doctor_{uuid.uuid4().hex[:8]}"
    pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_usage_and_create_on_existing_schemas_are_enough(pg_url, role, database):
    # role before database: the database (holding grants to the role) is dropped first
    with psycopg.connect(make_conninfo(pg_url, dbname=database), autocommit=True) as owner:
        for schema in ("bq2pg", "target"):
            owner.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        owner.execute(sql.SQL("GRANT USAGE ON SCHEMA target TO {}").format(sql.Identifier(role)))
        url = make_conninfo(pg_url, dbname=database, user=role)
        check = by_name(doctor.check_postgres(url, schema="target"))["privileges"]
        assert check.status == "fail"
        assert check.detail == (
            f"role {role} lacks USAGE and CREATE on schema bq2pg; CREATE on schema target"
        )
        assert check.advice.endswith(
            f"GRANT USAGE, CREATE ON SCHEMA bq2pg TO {role}; "
            f"GRANT CREATE ON SCHEMA target TO {role};"
        )
        owner.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA bq2pg, target TO {}").format(
                sql.Identifier(role)
            )
        )
        check = by_name(doctor.check_postgres(url, schema="target"))["privileges"]
        assert check.status == "ok", check
        assert (
            check.detail == f"{role} may create tables in bq2pg, target (USAGE and CREATE on them)"
        )


def test_more_needed_bytes_than_free_space_fails(pg_url):
    check = by_name(doctor.check_postgres(pg_url, needed_bytes=1 << 60))["disk space"]
    assert check.status == "fail"
    assert "the load needs about 1048576.0 TiB" in check.detail
    assert check.advice


def test_an_unreachable_server_is_one_fail_without_a_password():
    url = f"postgresql://loader:s3cret-pw@127.0.0.1:{free_port()}/nowhere"
    checks = doctor.check_postgres(url)
    assert [c.name for c in checks] == ["postgres"]
    assert checks[0].status == "fail" and checks[0].blocking
    assert "s3cret-pw" not in checks[0].detail + checks[0].advice


def test_a_small_maintenance_work_mem_warns_with_advice(pg_url):
    url = with_options(pg_url, "-c%20maintenance_work_mem%3D1MB")
    check = by_name(doctor.check_postgres(url))["maintenance_work_mem"]
    assert check.status == "warn"
    assert check.detail == "maintenance_work_mem = 1MB"
    assert "set 1GB" in check.advice and "index builds" in check.advice
    assert "ALTER ROLE postgres SET maintenance_work_mem = '1GB';" in check.advice
    url = with_options(pg_url, "-c%20maintenance_work_mem%3D2GB")
    assert by_name(doctor.check_postgres(url))["maintenance_work_mem"].status == "ok"


def test_a_role_setting_is_seen_like_the_load_sees_it(pg, pg_url, role):
    pg.execute(
        sql.SQL("ALTER ROLE {} SET maintenance_work_mem = '1MB'").format(sql.Identifier(role))
    )
    check = by_name(doctor.check_postgres(with_user(pg_url, role)))["maintenance_work_mem"]
    assert check.status == "warn"
    assert f"ALTER ROLE {role} SET" in check.advice


def emulated(emu, project: str = EMULATOR_PROJECT):
    return lambda: Source(
        project=project,
        rest_endpoint=emu.rest_url,
        storage_endpoint=emu.grpc_endpoint,
        emulator=True,
    )


def test_an_emulator_table_is_readable(emu, source, dataset):
    table = make_table(source, dataset, "t", [Field("id", "INT64")], [{"id": 1}])
    checks = doctor.check_bigquery(emulated(emu), table)
    found = by_name(checks)
    assert not doctor.blocking(checks), checks
    assert found["bigquery credentials"].detail == "not needed (emulator: anonymous)"
    assert found["billing project"].status == "ok"
    assert found["bigquery REST endpoint"].status == "ok"
    assert found["bigquery Storage Read endpoint"].status == "ok"
    assert found["read session"].status == "ok"


def test_a_missing_table_fails_saying_not_found(emu, dataset):
    check = by_name(doctor.check_bigquery(emulated(emu), f"{dataset}.missing"))["read session"]
    assert check.status == "fail"
    assert f"{dataset}.missing" in check.detail and "not found" in check.detail.lower()


def test_a_closed_emulator_endpoint_fails_and_skips_the_read_session():
    port = free_port()

    def closed() -> Source:
        return Source(
            project=EMULATOR_PROJECT,
            rest_endpoint=f"http://127.0.0.1:{port}",
            storage_endpoint=f"127.0.0.1:{port}",
            emulator=True,
        )

    checks = doctor.check_bigquery(closed, f"{EMULATOR_PROJECT}.d.t")
    found = by_name(checks)
    assert found["bigquery REST endpoint"].status == "fail"
    assert found["bigquery Storage Read endpoint"].status == "fail"
    assert "not answering" in found["bigquery Storage Read endpoint"].detail
    assert "read session" not in found


def test_a_local_endpoint_that_is_no_emulator_needs_only_to_answer(emu):
    def local() -> Source:
        return Source(
            project=EMULATOR_PROJECT,
            rest_endpoint=emu.rest_url,
            storage_endpoint=emu.grpc_endpoint,
            emulator=False,
        )

    found = by_name(doctor.check_bigquery(local, None))
    assert found["bigquery credentials"].detail == "not needed (local endpoint: anonymous)"
    assert found["bigquery REST endpoint"].detail == f"{emu.rest_url} answers: HTTP 200"


@pytest.fixture
def no_gcp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No gcloud config, no project, and a metadata server that refuses at once."""
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def test_authorized_user_credentials_are_named_by_kind_not_token(no_gcp, monkeypatch, tmp_path):
    key = tmp_path / "adc.json"
    secret = "refresh-token-canary"
    key.write_text(
        json.dumps(
            {"type": "authorized_user", "client_id": "id", "client_secret": "cs",
             "refresh_token": secret}
        )
    )  # fmt: skip
    key.chmod(0o600)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    checks = doctor.check_bigquery(lambda: Source(project="billed-here"), None)
    found = by_name(checks)
    assert found["bigquery credentials"].status == "ok"
    assert found["bigquery credentials"].detail == f"authorized user (gcloud ADC) from {key}"
    assert found["billing project"].detail == "read sessions are billed to billed-here"
    assert all(secret not in c.detail + c.advice for c in checks)


def test_missing_credentials_are_a_fail_not_an_exception(no_gcp):
    checks = doctor.check_bigquery(lambda: Source(project="p"), "p.d.t")
    assert [c.name for c in checks] == ["bigquery client"]
    assert checks[0].status == "fail"
    assert "gcloud auth application-default login" in checks[0].detail


def test_run_checks_combines_both(pg_url, emu):
    checks = doctor.run_checks(pg_url, source=emulated(emu))
    names = [c.name for c in checks]
    assert names[0] == "postgres" and "billing project" in names
    assert not doctor.blocking(checks)


def test_no_billing_project_is_a_fail(no_gcp, monkeypatch, tmp_path):
    key = tmp_path / "adc.json"
    key.write_text(
        json.dumps(
            {"type": "authorized_user", "client_id": "id", "client_secret": "cs",
             "refresh_token": "r"}
        )
    )  # fmt: skip
    key.chmod(0o600)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    checks = doctor.check_bigquery(lambda: Source(project=None), None)
    assert [(c.name, c.status) for c in checks] == [("billing project", "fail")]
    assert "BQ2PG_PROJECT" in checks[0].advice


def test_a_key_file_others_can_read_is_a_fail(no_gcp, monkeypatch, tmp_path):
    key = tmp_path / "key.json"
    key.write_text("{}")
    key.chmod(0o644)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    checks = doctor.check_bigquery(lambda: Source(project="p"), None)
    assert [(c.name, c.status) for c in checks] == [("bigquery client", "fail")]
    assert f"chmod 600 {key}" in checks[0].detail
