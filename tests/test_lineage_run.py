"""Lineage of real runs: bq2pg.yaml's ``quality:`` and ``lineage:`` sections, OpenLineage
events written by a run (file transport) and delivered over HTTP, a lineage backend that is down
(the run still succeeds), and ``bq2pg lineage`` in both directions from the recorded runs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bq2pg.plan.tables import Field
from conftest import bq2pg_cmd, make_table
from secret_servers import free_port
from test_lineage import Receiver, validate  # the unit tests' receiver and event validation

FIELDS = [
    Field("id", "INT64"),
    Field("price", "NUMERIC"),
    Field("tags", "STRING", "REPEATED"),
    Field("parts", "RECORD", "REPEATED", (Field("sku", "STRING"),)),
]
ROWS = [{"id": i, "price": str(i), "tags": ["a"], "parts": [{"sku": f"s{i}"}]} for i in range(8)]


def config(tmp_path: Path, emu, pg_url: str, table_id: str, schema: str, lineage: str) -> Path:
    path = tmp_path / "bq2pg.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            targets:
              main:
                url: {pg_url}
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
                target: main
                table: {schema}.items
                key: [id]
                nested: tables
                quality:
                  - rule: range
                    column: price
                    min: 0
            quality:
              {schema}.items:
                - rule: row_count
                  min: 1
        """)
        + textwrap.dedent(lineage)
    )
    return path


def run(path: Path, *args: str):
    return bq2pg_cmd(*args, env={"BQ2PG_CONFIG": str(path), "OPENLINEAGE_URL": "",
                                 "OPENLINEAGE_CONFIG": ""})  # fmt: skip


def test_a_run_writes_start_and_complete_events_and_lineage_both_ways(
    tmp_path, emu, source, dataset, pg_url, pg_schema
):
    table_id = make_table(source, dataset, "items", FIELDS, ROWS)
    events_file = tmp_path / "events.jsonl"
    path = config(tmp_path, emu, pg_url, table_id, pg_schema,
                  f"lineage:\n  transport: file\n  path: {events_file}\n")  # fmt: skip
    done = run(path, "run", "items")
    assert done.returncode == 0, done.stderr
    assert "quality: 2 of 2 rule(s) passed, score 100.0/100" in done.stdout
    found = [validate(json.loads(line)) for line in events_file.read_text().splitlines()]
    assert [e["eventType"] for e in found] == ["START", "COMPLETE"]
    complete = found[1]
    assert complete["job"] == {**complete["job"], "namespace": "bq2pg", "name": "items"}
    assert complete["inputs"][0]["namespace"] == "bigquery"
    assert complete["inputs"][0]["name"] == table_id
    outputs = {o["name"].split(".", 1)[1]: o for o in complete["outputs"]}
    assert set(outputs) == {f"{pg_schema}.items", f"{pg_schema}.items__parts"}
    items = outputs[f"{pg_schema}.items"]
    assert items["outputFacets"]["outputStatistics"]["rowCount"] == 8
    assertions = items["facets"]["dataQualityAssertions"]["assertions"]
    assert {(a["assertion"], a["success"]) for a in assertions} == {
        ("range", True),
        ("row_count", True),
    }
    price = items["facets"]["columnLineage"]["fields"]["price"]["inputFields"][0]
    assert (price["name"], price["field"]) == (table_id, "price")
    assert "snapshotTime" in complete["run"]["facets"]["bq2pg_readSession"]
    assert "postgres://" in items["namespace"] and "@" not in items["namespace"]

    up = run(path, "lineage", f"{pg_schema}.items__parts", "--upstream", "--to", pg_url,
             "--format", "json")  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert table_id in up.stdout
    down = run(path, "lineage", table_id, "--downstream", "--to", pg_url, "--format", "mermaid")
    assert down.returncode == 0, down.stderr
    assert "flowchart LR" in down.stdout and "items__parts" in down.stdout


def test_events_go_over_http_and_a_backend_that_is_down_fails_nothing(
    tmp_path, emu, source, dataset, pg_url, pg_schema
):
    table_id = make_table(source, dataset, "items", FIELDS, ROWS)
    receiver = Receiver()
    try:
        path = config(tmp_path, emu, pg_url, table_id, pg_schema,
                      f"lineage:\n  transport: http\n  url: {receiver.url}\n"
                      "  api_key: ${env:LINEAGE_TEST_KEY}\n")  # fmt: skip
        done = bq2pg_cmd("run", "items", env={"BQ2PG_CONFIG": str(path),
                                              "LINEAGE_TEST_KEY": "k-123-secret"})  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        receiver.shutdown()
        receiver.server_close()
    got = [validate(json.loads(body)) for _, _, body in receiver.received]
    assert [e["eventType"] for e in got] == ["START", "COMPLETE"]
    assert [h["Authorization"] for _, h, _ in receiver.received] == ["Bearer k-123-secret"] * 2
    down = config(tmp_path, emu, pg_url, table_id, pg_schema,
                  f"lineage:\n  transport: http\n  url: http://127.0.0.1:{free_port()}\n"
                  "  timeout: 1\n  api_key: k-456-secret\n")  # fmt: skip
    done = run(down, "run", "items")
    assert done.returncode == 0, done.stderr
    assert "lineage.failed" in done.stderr
    assert "k-456-secret" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("lineage:\n  transport: pigeon\n", "transport"),
        ("lineage:\n  transport: http\n", "url"),
    ],
)
def test_a_bad_lineage_section_is_refused_before_the_run(
    tmp_path, emu, source, dataset, pg_url, pg_schema, section, message
):
    table_id = make_table(source, dataset, "items", FIELDS, ROWS)
    done = run(config(tmp_path, emu, pg_url, table_id, pg_schema, section), "run", "items")
    assert done.returncode == 2 and message in done.stderr
