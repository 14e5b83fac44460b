"""Secret references: each backend resolves through its real client, every failure is a
SecretError (exit 10) that names the setting, the reference and the case, and no value leaks.

Google Secret Manager is a local gRPC server speaking the client package's own messages; AWS
Secrets Manager is moto's server mode with IAM enforced (see ``secret_servers``).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from bq2pg.config import secrets
from bq2pg.config.secrets import Secret, has_reference, references, resolve
from bq2pg.errors import SecretError
from secret_servers import FakeSecretManager, MotoSecrets, aws_server, free_port, gcp_server

CANARY = "CANARY-s3cr3t"
WHAT = "targets.local.password"
GCP_SECRET = "projects/p1/secrets/pg-password"
GCP_DENIED = "projects/p1/secrets/not-yours"


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    secrets.clear_cache()
    yield
    secrets.clear_cache()


@pytest.fixture(scope="module")
def gcp_fake() -> Iterator[FakeSecretManager]:
    with gcp_server() as fake:
        fake.add(GCP_SECRET, "first")
        fake.add(GCP_SECRET, CANARY)
        fake.add("projects/p1/secrets/binary", b"\xff\xfe" + CANARY.encode())
        fake.add(GCP_DENIED, CANARY)
        fake.denied.add(GCP_DENIED)
        yield fake


@pytest.fixture
def gcp(gcp_fake: FakeSecretManager, monkeypatch: pytest.MonkeyPatch) -> FakeSecretManager:
    """The fake Secret Manager, named by BQ2PG_GCP_SECRETS_ENDPOINT, with no requests yet."""
    monkeypatch.setenv("BQ2PG_GCP_SECRETS_ENDPOINT", gcp_fake.endpoint)
    gcp_fake.requests.clear()
    return gcp_fake


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoSecrets]:
    with aws_server() as server:
        server.put("bq2pg/pg", CANARY)
        server.put("bq2pg/json", json.dumps({"password": CANARY, "port": 5432}))
        server.put("bq2pg/blob", CANARY.encode())
        yield server


@pytest.fixture
def aws(moto: MotoSecrets, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoSecrets:
    """moto, reached by boto3 as the reader; no AWS configuration of this machine applies."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name, value in moto.env(moto.reader).items():
        monkeypatch.setenv(name, value)
    return moto


def secret_file(tmp_path: Path, content: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(content)
    path.chmod(mode)
    return path


def failure(reference: str, case: str) -> SecretError:
    """The SecretError of resolving ``reference``, checked for what every one must say."""
    with pytest.raises(SecretError) as info:
        resolve(reference, what=WHAT)
    err = info.value
    assert err.exit_code == 10
    assert str(err).startswith(f"{WHAT}: cannot resolve {reference}: {case}:"), str(err)
    shown = "".join(traceback.format_exception(err)) + json.dumps(err.fields())
    assert CANARY not in shown
    chained: BaseException | None = err  # nor in what a debugger or error tracker could walk
    while chained is not None:
        assert CANARY not in repr(chained.args), type(chained)
        chained = chained.__cause__ or chained.__context__
    return err


# -- each backend resolves ----------------------------------------------------------------


def test_env_reference_resolves_to_the_variable(monkeypatch):
    monkeypatch.setenv("BQ2PG_TEST_PW", CANARY)
    assert resolve("${env:BQ2PG_TEST_PW}", what=WHAT) == CANARY


def test_file_reference_resolves_without_one_trailing_newline(tmp_path):
    path = secret_file(tmp_path, CANARY + "\n")
    assert resolve(f"${{file:{path}}}", what=WHAT) == CANARY
    secrets.clear_cache()
    path.write_text("two\n\n")
    assert resolve(f"${{file:{path}}}", what=WHAT) == "two\n"


def test_gcp_reference_resolves_through_the_official_client(gcp):
    assert resolve(f"${{gcp:{GCP_SECRET}}}", what=WHAT) == CANARY
    assert resolve(f"${{gcp:{GCP_SECRET}/versions/1}}", what=WHAT) == "first"
    assert gcp.requests == [f"{GCP_SECRET}/versions/latest", f"{GCP_SECRET}/versions/1"]


def test_aws_reference_resolves_through_boto3_by_name_arn_and_json_field(aws):
    arn = aws.client(aws.admin).describe_secret(SecretId="bq2pg/pg")["ARN"]
    assert resolve("${aws:bq2pg/pg}", what=WHAT) == CANARY
    assert resolve(f"${{aws:{arn}}}", what=WHAT) == CANARY
    assert resolve("${aws:bq2pg/json#password}", what=WHAT) == CANARY
    assert resolve("${aws:bq2pg/json#port}", what=WHAT) == "5432"
    assert resolve("${aws:bq2pg/blob}", what=WHAT) == CANARY


def test_references_embedded_in_a_url_are_replaced(monkeypatch, tmp_path, gcp):
    monkeypatch.setenv("BQ2PG_TEST_USER", "loader")
    path = secret_file(tmp_path, "db.internal\n")
    url = f"postgresql://${{env:BQ2PG_TEST_USER}}:${{gcp:{GCP_SECRET}}}@${{file:{path}}}:5432/dw"
    assert references(url) == [
        "${env:BQ2PG_TEST_USER}",
        f"${{gcp:{GCP_SECRET}}}",
        f"${{file:{path}}}",
    ]
    assert (
        resolve(url, what="targets.dw.url") == f"postgresql://loader:{CANARY}@db.internal:5432/dw"
    )


def test_text_without_references_is_returned_as_is():
    for text in ("plain", "pa$$word", "${NOT_A_REFERENCE}", "$env:X", ""):
        assert not has_reference(text)
        assert resolve(text, what=WHAT) == text


def test_a_gcp_secret_is_asked_once_per_process(gcp):
    reference = f"${{gcp:{GCP_SECRET}}}"
    assert resolve(reference, what=WHAT) == CANARY
    assert resolve(f"postgresql://u:{reference}@h/db", what="targets.other.url").endswith("@h/db")
    assert len(gcp.requests) == 1
    secrets.clear_cache()
    resolve(reference, what=WHAT)
    assert len(gcp.requests) == 2


# -- every failure is a SecretError naming the case ------------------------------------------


def test_missing_env_variable(monkeypatch):
    monkeypatch.delenv("BQ2PG_TEST_ABSENT", raising=False)
    err = failure("${env:BQ2PG_TEST_ABSENT}", "missing")
    assert "BQ2PG_TEST_ABSENT is not set" in str(err)


def test_missing_file(tmp_path):
    failure(f"${{file:{tmp_path / 'absent'}}}", "missing")


def test_file_readable_by_others_is_refused_with_the_chmod_fix(tmp_path):
    path = secret_file(tmp_path, CANARY, mode=0o644)
    err = failure(f"${{file:{path}}}", "refused (loose permissions)")
    assert f"chmod 600 {path}" in str(err) and "mode 644" in str(err)


def test_missing_gcp_secret(gcp):
    failure("${gcp:projects/p1/secrets/absent}", "missing")
    failure(f"${{gcp:{GCP_SECRET}/versions/9}}", "missing")


def test_denied_gcp_secret(gcp):
    err = failure(f"${{gcp:{GCP_DENIED}}}", "denied")
    assert "PERMISSION_DENIED" in str(err) and "secretAccessor" in str(err)


def test_unreachable_gcp_endpoint(monkeypatch):
    monkeypatch.setenv("BQ2PG_GCP_SECRETS_ENDPOINT", f"127.0.0.1:{free_port()}")
    failure(f"${{gcp:{GCP_SECRET}}}", "unreachable")


def test_malformed_gcp_name(gcp):
    failure("${gcp:pg-password}", "malformed")
    assert gcp.requests == []


def test_missing_aws_secret_and_field(aws):
    failure("${aws:bq2pg/absent}", "missing")
    err = failure("${aws:bq2pg/json#user}", "missing")
    assert "no field user" in str(err)
    failure("${aws:bq2pg/pg#password}", "missing")  # a secret that is no JSON


def test_denied_aws_secret_enforced_by_moto_iam(aws, monkeypatch):
    for name, value in aws.env(aws.outsider).items():
        monkeypatch.setenv(name, value)
    failure("${aws:bq2pg/pg}", "denied")


def test_unreachable_aws_endpoint(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{free_port()}")
    failure("${aws:bq2pg/pg}", "unreachable")


def test_aws_without_a_region_says_how_to_set_one(aws, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    err = failure("${aws:bq2pg/pg}", "missing")
    assert "AWS_REGION" in str(err)


def test_unknown_backend_lists_the_four():
    err = failure("${vault:secret/pg}", "unknown backend")
    assert "'vault' is none of env, file, gcp, aws" in str(err)


@pytest.mark.parametrize(
    ("module", "reference", "extra"),
    [
        ("google.cloud.secretmanager_v1", f"${{gcp:{GCP_SECRET}}}", "bq2pg[gcp-secrets]"),
        ("boto3", "${aws:bq2pg/pg}", "bq2pg[aws]"),
    ],
)
def test_backend_not_installed_names_the_extra(monkeypatch, module, reference, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import` now fails as if absent
    err = failure(reference, "not installed")
    assert f"pip install '{extra}'" in str(err)


# -- no value leaks ----------------------------------------------------------------------


def test_a_secret_shows_as_stars_everywhere_but_reveal():
    secret = Secret(CANARY)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret:>20}",
        repr([secret]),
        json.dumps({"password": secret}, default=str),
    ]
    assert all(CANARY not in text and "***" in text for text in shown), shown
    with pytest.raises(TypeError) as info:
        json.dumps(secret)
    assert CANARY not in str(info.value)
    assert secret.reveal() == CANARY
    assert secret == Secret(CANARY) and secret != Secret("other")


def test_no_log_line_carries_a_secret_value(gcp, aws, caplog):
    caplog.set_level(logging.DEBUG)
    assert resolve(f"${{gcp:{GCP_SECRET}}} ${{aws:bq2pg/pg}}", what=WHAT) == f"{CANARY} {CANARY}"
    assert any(r.name.startswith("botocore") for r in caplog.records)  # DEBUG logging was on
    assert CANARY not in caplog.text


def test_an_undecodable_value_is_refused_without_showing_it(gcp, tmp_path):
    failure("${gcp:projects/p1/secrets/binary}", "failed")
    path = tmp_path / "latin1"
    path.write_bytes(b"\xe9" + CANARY.encode())
    path.chmod(0o600)
    failure(f"${{file:{path}}}", "failed")
