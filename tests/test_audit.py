"""The audit trail (bq2pg.audit): append-only rows, filters, JSONL, secrets kept as references,
and ``bq2pg audit`` — against the session's real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from bq2pg.cli import audit as cli_audit
from bq2pg.config import secrets
from bq2pg.errors import ConfigError
from bq2pg.postgres.connection import connect
from bq2pg.state import audit, schema


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection]:
    """bq2pg's own connection (UTC, autocommit) with the state schema in place."""
    c = connect(pg_url)
    schema.ensure(c)
    yield c
    c.close()


@pytest.fixture
def target() -> str:
    """A target no other test writes, so that filters by target see only this test's rows."""
    return f"s_{uuid.uuid4().hex[:10]}.t"


def test_record_writes_one_row_with_actor_host_and_time(conn, target):
    before = dt.datetime.now(dt.UTC)
    entry_id = audit.record(conn, audit.RUN_STARTED, target=target, arguments={"mode": "replace"})
    [entry] = audit.listing(conn, target=target)
    assert entry.id == entry_id
    assert entry.action == "run.started"
    assert entry.actor == audit.current_actor()
    assert entry.host == audit.current_host()
    assert entry.arguments == {"mode": "replace"}
    assert entry.outcome == "ok"
    assert before - dt.timedelta(seconds=5) <= entry.at <= dt.datetime.now(dt.UTC)


def test_record_takes_an_api_key_as_actor(conn, target):
    audit.record(conn, "api.runs.created", target=target, actor="key:42", host="api-1")
    [entry] = audit.listing(conn, target=target)
    assert (entry.actor, entry.host, entry.action) == ("key:42", "api-1", "api.runs.created")


def test_record_refuses_an_unknown_action(conn, target):
    with pytest.raises(ValueError, match=r"run\.startd"):
        audit.record(conn, "run.startd", target=target)


def test_listing_filters_by_action_prefix_actor_and_since(conn, target):
    audit.record(conn, audit.RUN_STARTED, target=target, actor="alice")
    audit.record(conn, audit.DLQ_REPLAYED, target=target, actor="bob")
    audit.record(conn, audit.DLQ_PURGED, target=target, actor="alice", outcome="failed: boom")
    [middle] = audit.listing(conn, target=target, action=audit.DLQ_REPLAYED)

    assert [e.action for e in audit.listing(conn, target=target)] == [
        "run.started",
        "dlq.replayed",
        "dlq.purged",
    ]
    assert [e.action for e in audit.listing(conn, target=target, action="dlq.*")] == [
        "dlq.replayed",
        "dlq.purged",
    ]
    assert audit.listing(conn, target=target, action="dlq.") == []  # exact unless '*'
    alice = audit.listing(conn, target=target, actor="alice")
    assert [e.action for e in alice] == ["run.started", "dlq.purged"]
    assert alice[-1].outcome == "failed: boom"
    since = audit.listing(conn, target=target, since=middle.at)
    assert [e.action for e in since] == ["dlq.replayed", "dlq.purged"]
    assert audit.listing(conn, target=target, since=dt.datetime.now(dt.UTC)) == []
    assert audit.listing(conn, target="no.such_target") == []


def test_listing_limit_keeps_the_latest_oldest_first(conn, target):
    for action in (audit.RUN_STARTED, audit.QUALITY_SKIPPED, audit.RUN_FINISHED):
        audit.record(conn, action, target=target)
    latest = audit.listing(conn, target=target, limit=2)
    assert [e.action for e in latest] == ["quality.skipped", "run.finished"]


def test_jsonl_lines_parse_with_fixed_keys_and_iso_time(conn, target):
    audit.record(conn, audit.STATE_RESET, target=target, arguments={"run": "r1", "n": [1, 2]})
    audit.record(conn, audit.WATERMARK_RESET, target=target, arguments={"column": "ts"})
    lines = [e.as_json() for e in audit.listing(conn, target=target)]
    parsed = [json.loads(line) for line in lines]
    assert all("\n" not in line for line in lines)
    assert [list(p) for p in parsed] == [
        ["id", "at", "actor", "host", "action", "target", "arguments", "outcome"]
    ] * 2
    assert parsed[0]["arguments"] == {"run": "r1", "n": [1, 2]}
    assert parsed[1]["action"] == "watermark.reset"
    at = dt.datetime.fromisoformat(parsed[0]["at"])
    assert at.utcoffset() is not None


def test_secrets_are_masked_and_references_kept_as_written(conn, target, monkeypatch):
    monkeypatch.setenv("AUDIT_TEST_PW", "s3cr3t-value")
    secrets.resolve("${env:AUDIT_TEST_PW}", what="targets.t.password")  # now known to redact
    arguments = {
        "to": "postgresql://loader:hunter2@db:5432/warehouse",
        "ref_url": "postgresql://loader:${env:PGPW}@db/warehouse",
        "password": "plain-text-pw",
        "pg_password": "${env:PGPW}",
        "api_key": 12345,
        "nested": {"client_secret": "abc", "token": "${file:/run/secrets/tok}", "keep": 3},
        "note": "used s3cr3t-value by mistake",
        "list": ["password=xyz host=db", None, True],
    }
    audit.record(conn, audit.RUN_STARTED, target=target, arguments=arguments)
    [entry] = audit.listing(conn, target=target)
    assert entry.arguments == {
        "to": "postgresql://loader:***@db:5432/warehouse",
        "ref_url": "postgresql://loader:${env:PGPW}@db/warehouse",
        "password": "***",
        "pg_password": "${env:PGPW}",
        "api_key": "***",
        "nested": {"client_secret": "***", "token": "${file:/run/secrets/tok}", "keep": 3},
        "note": "used *** by mistake",
        "list": ["password=*** host=db", None, True],
    }
    assert "hunter2" not in entry.as_json()


def test_secret_objects_and_outcomes_are_redacted(conn, target):
    audit.record(
        conn,
        audit.RUN_FINISHED,
        target=target,
        arguments={"dsn": secrets.Secret("topsecret"), "when": dt.date(2026, 11, 1)},
        outcome="failed: could not connect to postgresql://u:pw123@db/x",
    )
    [entry] = audit.listing(conn, target=target)
    assert entry.arguments == {"dsn": "***", "when": "2026-11-01"}
    assert entry.outcome == "failed: could not connect to postgresql://u:***@db/x"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE bq2pg.audit SET outcome = 'tampered' WHERE id = %s",
        "DELETE FROM bq2pg.audit WHERE id = %s",
        "TRUNCATE bq2pg.audit",
    ],
    ids=["update", "delete", "truncate"],
)
def test_the_trigger_refuses_changing_the_trail(conn, pg, target, statement):
    entry_id = audit.record(conn, audit.DLQ_PURGED, target=target, arguments={"n": 1})
    params = [entry_id] if "%s" in statement else None
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        pg.execute(statement, params)
    [entry] = audit.listing(conn, target=target)
    assert (entry.id, entry.outcome, entry.arguments) == (entry_id, "ok", {"n": 1})


def test_parse_since_reads_dates_times_and_durations():
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    assert cli_audit.parse_since(None, now) is None
    assert cli_audit.parse_since("2026-11-01", now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert cli_audit.parse_since("2026-11-01T08:00+01:00", now) == dt.datetime(
        2026, 11, 1, 7, 0, tzinfo=dt.UTC
    )
    assert cli_audit.parse_since("2h", now) == dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)
    assert cli_audit.parse_since("1d", now) == dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="--since 'yesterday'"):
        cli_audit.parse_since("yesterday", now)


def test_cli_prints_jsonl_filtered(conn, pg_url, target):
    audit.record(conn, audit.DLQ_REPLAYED, target=target, actor="carol", arguments={"ids": [7]})
    audit.record(conn, audit.RUN_STARTED, target=target, actor="carol")
    result = CliRunner().invoke(
        cli_audit.app,
        ["--to", pg_url, "--target", target, "--action", "dlq.*", "--since", "1h",
         "--format", "jsonl"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["action"], x["actor"], x["arguments"]) for x in lines] == [
        ("dlq.replayed", "carol", {"ids": [7]})
    ]


def test_cli_prints_a_table(conn, pg_url, target):
    audit.record(conn, audit.STATE_RESET, target=target, actor="dave", arguments={"x": "[b]"})
    result = CliRunner().invoke(
        cli_audit.app, ["--to", pg_url, "--actor", "dave", "--target", target]
    )
    assert result.exit_code == 0, result.output
    assert "1 audit entry" in result.stdout
    assert "state.reset" in result.stdout
    assert '{"x": "[b]"}' in result.stdout  # brackets are text, not rich markup


def test_cli_refuses_a_bad_since(pg_url):
    result = CliRunner().invoke(cli_audit.app, ["--to", pg_url, "--since", "soon"])
    assert isinstance(result.exception, ConfigError)
