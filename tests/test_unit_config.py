"""Configuration and secret redaction (pure)."""

from __future__ import annotations

import pytest

from bq2pg.config.secrets import redact
from bq2pg.config.settings import Settings

CANARY = "CANARY-7f3a-pw"


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://loader:{CANARY}@db.example:5432/patents",
        f"postgres://loader:{CANARY}@/patents?host=/tmp",
        f"host=db user=loader password={CANARY} dbname=patents",
        f"host=db password = '{CANARY}' dbname=patents",
        f"postgresql://db/patents?user=loader&password={CANARY}&sslmode=verify-full",
        f"error connecting to postgresql://u:{CANARY}@h/db: timeout",
    ],
)
def test_redact_masks_passwords_in_every_dsn_form(text):
    masked = redact(text)
    assert CANARY not in masked
    assert "***" in masked


def test_redact_leaves_text_without_secrets_alone():
    text = "postgresql://loader@db/patents?sslmode=require"
    assert redact(text) == text


def test_database_url_from_the_environment_is_a_secret(monkeypatch):
    monkeypatch.setenv("BQ2PG_DATABASE_URL", f"postgresql://u:{CANARY}@h/db")
    settings = Settings()
    assert CANARY not in repr(settings) and CANARY not in str(settings)
    assert settings.database_url is not None
    assert CANARY in settings.database_url.get_secret_value()


def test_streams_default_and_environment(monkeypatch):
    monkeypatch.setenv("BQ2PG_STREAMS", "3")
    assert Settings().streams == 3


@pytest.mark.parametrize(
    ("mode", "refused"), [(0o600, False), (0o400, False), (0o644, True), (0o640, True)]
)
def test_key_files_readable_by_others_are_refused(tmp_path, mode, refused):
    from bq2pg.bigquery.client import check_key_file
    from bq2pg.errors import ConfigError

    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account", "private_key": "CANARY"}')
    key.chmod(mode)
    if refused:
        with pytest.raises(ConfigError, match="chmod 600") as info:
            check_key_file(str(key))
        assert "CANARY" not in str(info.value)  # the message names the file, never its content
    else:
        check_key_file(str(key))


def test_a_missing_key_file_is_a_config_error(tmp_path):
    from bq2pg.bigquery.client import check_key_file
    from bq2pg.errors import ConfigError

    with pytest.raises(ConfigError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        check_key_file(str(tmp_path / "nope.json"))


def test_redact_masks_resolved_secret_values_but_not_user_names(monkeypatch):
    from bq2pg.config import secrets

    monkeypatch.setenv("BQ2PG_T_PW", "s3cr3t-value")
    monkeypatch.setenv("BQ2PG_T_USER", "loader")
    try:
        secrets.resolve("${env:BQ2PG_T_PW}", what="targets.t.password")
        secrets.resolve("${env:BQ2PG_T_USER}", what="targets.t.user")
        assert (
            redact("auth failed for loader with s3cr3t-value") == "auth failed for loader with ***"
        )
    finally:
        secrets.clear_cache()
    assert redact("s3cr3t-value") == "s3cr3t-value"  # forgotten with the cache
