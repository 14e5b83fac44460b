"""Secrets never leave: a canary password in the database URL appears in no output or state."""

from __future__ import annotations

import re

from bq2pg.plan.tables import Field
from conftest import bq2pg_cmd, make_table

CANARY = "CANARY-7f3a-9c1e"


def with_password(url: str) -> str:
    """``url`` with a user and the canary password (the embedded server trusts the socket)."""
    return re.sub(r"^postgresql://[^@]*@", f"postgresql://postgres:{CANARY}@", url)


def test_the_canary_password_appears_in_no_output_log_or_state(
    source, dataset, emu, pg_url, pg_schema, pg
):
    rows = [{"id": i, "s": f"row {i}"} for i in range(20)]
    rows[4]["s"] = "nul\x00here"  # a dead letter too, so every path writes state
    table_id = make_table(source, dataset, "t", [Field("id", "INT64"), Field("s", "STRING")], rows)
    env = {
        "BQ2PG_BIGQUERY_ENDPOINT": emu.rest_url,
        "BQ2PG_BIGQUERY_STORAGE_ENDPOINT": emu.grpc_endpoint,
        "BQ2PG_PROJECT": "bq2pg-test",
    }
    url = with_password(pg_url)
    outputs = [
        bq2pg_cmd("-v", "-v", "copy", table_id, "--to", url, "--table", f"{pg_schema}.t", env=env),
        bq2pg_cmd(
            "-v",
            "-v",
            "copy",
            table_id,
            "--table",
            f"{pg_schema}.u",
            env={**env, "BQ2PG_DATABASE_URL": url},
        ),
        bq2pg_cmd("-v", "state", "show", "--database", url),
        bq2pg_cmd("-v", "dlq", "list", "--database", url),
        bq2pg_cmd("-v", "copy", table_id, "--to", url.replace("/postgres?", "/nosuchdb?"), env=env),
    ]
    assert [o.returncode for o in outputs] == [8, 8, 0, 0, 4]
    for o in outputs:
        assert CANARY not in o.stdout + o.stderr
    state = pg.execute(
        "SELECT string_agg(r::text, ' ') FROM bq2pg.runs r UNION ALL "
        "SELECT string_agg(c::text, ' ') FROM bq2pg.chunks c UNION ALL "
        "SELECT string_agg(concat_ws(' ', d.target, d.error, d.context, d.stream), ' ') FROM bq2pg.dead_letters d"
    ).fetchall()
    assert all(CANARY not in (text or "") for (text,) in state)
