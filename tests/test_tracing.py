"""Traces: the span tree of a real run (in process, with the SDK's in-memory exporter), a COPY
error's SQLSTATE, the trace context carried to Dask workers, OTLP export from the real CLI over
HTTP and gRPC, tracing off by default, and the pure helpers of ``observe.tracing``."""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bq2pg import CopyRequest, copy_table
from bq2pg.bigquery.client import Source
from bq2pg.config.settings import tuning
from bq2pg.engine.copy import plan
from bq2pg.observe import tracing
from bq2pg.plan.tables import Field
from bq2pg.postgres.target import physical
from conftest import bq2pg_cmd, make_table
from otlp_receiver import OtlpReceiver, ReceivedSpan

SERVICE = "google.cloud.bigquery.storage.v1.BigQueryRead"
CREATE = f"{SERVICE}/CreateReadSession"
READ_ROWS = f"{SERVICE}/ReadRows"
N = 300
#: Wide enough in all (> 1 MB of Arrow) for the emulator to split a session into streams.
PAD = 5000
FIELDS = [
    Field("id", "INT64"),
    Field("name", "STRING"),
    Field("pad", "STRING"),
    Field("parts", "RECORD", "REPEATED", (Field("code", "STRING"), Field("n", "INT64"))),
]
FLAT = [Field("id", "INT64"), Field("s", "STRING")]


def rows(n: int = N, pad: int = PAD) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "name": f"name-{i}",
            "pad": f"{i:08d}" * (pad // 8),
            "parts": [{"code": f"c{j}", "n": j} for j in range(i % 3)],
        }
        for i in range(n)
    ]


# -- in process: the SDK's in-memory exporter ----------------------------------------------


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """bq2pg's spans recorded in memory for the test (the global provider again afterwards)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use(provider)
    try:
        yield memory
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of about 64 KiB, so that a few hundred rows make several chunks per stream."""
    size = 64 * 1024
    monkeypatch.setattr(tuning(), "copy_chunk_bytes", size)
    return size


class Tree:
    """Finished spans, by name and by id."""

    def __init__(self, spans: tuple[ReadableSpan, ...]) -> None:
        self.spans = list(spans)
        self.by_id = {s.context.span_id: s for s in self.spans}

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        return self.by_id.get(span.parent.span_id)

    def parent_name(self, span: ReadableSpan) -> str | None:
        found = self.parent(span)
        return found.name if found is not None else None


def database_of(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]  # type: ignore[return-value]


@pytest.mark.timeout(300)
def test_a_run_makes_one_trace_with_the_documented_tree(
    source: Source, dataset, pg_url, pg_schema, pg, exporter, small_chunks
):
    table_id = make_table(source, dataset, "items", FIELDS, rows())
    request = CopyRequest(
        source=table_id,
        database_url=pg_url,
        table=f"{pg_schema}.items",
        key=("id",),
        nested="tables",
        streams=2,
    )
    result = copy_table(source, request)
    assert result.rows_read == N and result.streams == 2

    tree = Tree(exporter.get_finished_spans())
    run = tree.one("bq2pg.run")
    assert run.parent is None
    trace_id = run.context.trace_id
    assert {s.context.trace_id for s in tree.spans} == {trace_id}
    assert [s.name for s in tree.spans if s.parent is None] == ["bq2pg.run"]
    assert all(s.parent is None or s.parent.span_id in tree.by_id for s in tree.spans)

    attrs = run.attributes or {}
    assert attrs["bq2pg.run_id"] == str(result.run_id)
    assert attrs["bq2pg.target_table"] == f"{pg_schema}.items"
    assert attrs["bq2pg.source"] == table_id
    assert attrs["bq2pg.mode"] == "replace"
    assert attrs["bq2pg.job"] == "copy"
    assert run.status.status_code == StatusCode.UNSET

    session = tree.one("bq2pg.read_session")
    assert tree.parent(session) is run
    assert (session.attributes or {})["bq2pg.streams"] == 2
    create = tree.one(CREATE)
    assert tree.parent(create) is session
    assert (create.attributes or {})["rpc.system"] == "grpc"
    assert (create.attributes or {})["rpc.method"] == "CreateReadSession"

    streams = tree.named("bq2pg.stream")
    assert len(streams) == 2
    assert all(tree.parent(s) is session for s in streams)
    assert len({(s.attributes or {})["bq2pg.stream"] for s in streams}) == 2
    stream_ids = {s.context.span_id for s in streams}

    reads = tree.named(READ_ROWS)
    assert reads and all(s.parent and s.parent.span_id in stream_ids for s in reads)
    for s in reads:
        a = s.attributes or {}
        assert (a["rpc.system"], a["rpc.service"], a["rpc.method"]) == ("grpc", SERVICE, "ReadRows")
        assert a["bq2pg.offset"] == 0 and a["bq2pg.bytes"] > 0
    assert sum((s.attributes or {})["bq2pg.rows"] for s in reads) == N

    chunks = tree.named("bq2pg.chunk")
    assert all(s.parent and s.parent.span_id in stream_ids for s in chunks)
    per_stream = Counter(s.parent.span_id for s in chunks if s.parent)
    assert set(per_stream) == stream_ids and min(per_stream.values()) >= 2, per_stream
    for s in chunks:
        a = s.attributes or {}
        assert a["bq2pg.chunk.outcome"] == "committed"
        assert a["bq2pg.chunk.end"] > a["bq2pg.chunk.start"] and a["bq2pg.chunk.bytes"] > 0
    # chunk rows count every table's rows: the parent's and the child table's
    assert sum((s.attributes or {})["bq2pg.chunk.rows"] for s in chunks) == sum(
        t.rows for t in result.tables
    )
    assert result.tables[0].rows == N
    # each stream's chunks tile its source rows from 0
    for stream_id in stream_ids:
        spans = sorted(
            (s for s in chunks if s.parent and s.parent.span_id == stream_id),
            key=lambda s: (s.attributes or {})["bq2pg.chunk.start"],
        )
        ends = [0] + [(s.attributes or {})["bq2pg.chunk.end"] for s in spans[:-1]]
        assert [(s.attributes or {})["bq2pg.chunk.start"] for s in spans] == ends

    table_plan = plan(source, request)[0]
    collections = {f"{pg_schema}.{physical('replace', t)}" for t in table_plan.all_tables()}
    parent_collection = f"{pg_schema}.{physical('replace', table_plan)}"
    copies = [s for s in tree.spans if s.name.startswith("COPY ")]
    assert copies
    chunk_ids = {s.context.span_id for s in chunks}
    database = database_of(pg_url)
    for s in copies:
        a = dict(s.attributes or {})
        assert s.parent is not None and s.parent.span_id in chunk_ids
        assert s.name == f"COPY {a['db.collection.name']}"
        assert a == {
            "db.system.name": "postgresql",
            "db.namespace": database,
            "db.collection.name": a["db.collection.name"],
            "db.operation.name": "COPY",
        }
        assert a["db.collection.name"].startswith(f"{pg_schema}.")
        assert a["db.collection.name"] in collections
        assert s.status.status_code == StatusCode.UNSET
    assert {(s.attributes or {})["db.collection.name"] for s in copies} == collections
    # every chunk COPYs its parent rows
    parent_copies = Counter(
        s.parent.span_id
        for s in copies
        if s.parent and (s.attributes or {})["db.collection.name"] == parent_collection
    )
    assert set(parent_copies) == chunk_ids and set(parent_copies.values()) == {1}

    for name in ("bq2pg.verify", "bq2pg.publish", "bq2pg.postload"):
        assert tree.parent(tree.one(name)) is run, name
    # the run's steps come in order: read, verify, publish, post-load
    steps = [tree.one(n) for n in ("bq2pg.read_session", "bq2pg.verify", "bq2pg.publish")]
    steps.append(tree.one("bq2pg.postload"))
    assert all(a.end_time <= b.start_time for a, b in itertools.pairwise(steps))
    assert all(run.start_time <= s.start_time and s.end_time <= run.end_time for s in tree.spans)


@pytest.mark.timeout(300)
def test_a_rejected_row_marks_its_copy_span_with_the_sqlstate(
    source: Source, dataset, pg_url, pg_schema, pg, exporter
):
    data: list[dict[str, object]] = [{"id": i, "s": f"row {i}"} for i in range(60)]
    data[17]["s"] = "bad\x00row"
    table_id = make_table(source, dataset, "t", FLAT, data)
    result = copy_table(
        source,
        CopyRequest(source=table_id, database_url=pg_url, table=f"{pg_schema}.t", streams=1),
    )
    assert (result.rows_read, result.tables[0].rows, result.dead_letters) == (60, 59, 1)
    [(sqlstate,)] = pg.execute(
        "SELECT sqlstate FROM bq2pg.dead_letters WHERE run_id = %s", [result.run_id]
    ).fetchall()
    assert sqlstate == "22021"  # character_not_in_repertoire: NUL in text

    tree = Tree(exporter.get_finished_spans())
    copies = [s for s in tree.spans if s.name == f"COPY {pg_schema}.t__bq2pg_new"]
    failed = [s for s in copies if s.status.status_code == StatusCode.ERROR]
    assert failed, [(s.name, s.status) for s in copies]
    for s in failed:
        a = s.attributes or {}
        assert a["db.response.status_code"] == sqlstate
        assert a["error.type"]
        assert tree.parent_name(s) == "bq2pg.chunk"
        assert any(e.name == "exception" for e in s.events)
    # the COPYs that loaded the good rows did not fail
    assert any(s.status.status_code == StatusCode.UNSET for s in copies)
    [chunk] = tree.named("bq2pg.chunk")
    assert (chunk.attributes or {})["bq2pg.chunk.outcome"] == "isolated"
    assert (chunk.attributes or {})["bq2pg.chunk.rows"] == 59
    assert chunk.status.status_code == StatusCode.UNSET  # the row was handled: not an error
    run = tree.one("bq2pg.run")
    assert run.status.status_code == StatusCode.UNSET
    assert {s.context.trace_id for s in tree.spans} == {run.context.trace_id}


@pytest.fixture
def threaded_cluster() -> Iterator[str]:
    """A Dask cluster whose worker runs tasks in threads of this process, so that the in-memory
    exporter sees their spans (the worker's threads do not inherit this thread's context)."""
    distributed = pytest.importorskip("distributed", reason="needs the dask extra")
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp://",  # bq2pg reaches a scheduler over TCP (processes=False: inproc://)
        host="127.0.0.1",
        dashboard_address=None,
    ) as running:
        yield "dask://" + running.scheduler_address.removeprefix("tcp://")


@pytest.mark.timeout(300)
def test_the_trace_travels_to_dask_workers(
    source: Source, dataset, pg_url, pg_schema, pg, exporter, threaded_cluster
):
    table_id = make_table(source, dataset, "items", FIELDS, rows())
    result = copy_table(
        source,
        CopyRequest(
            source=table_id,
            database_url=pg_url,
            table=f"{pg_schema}.items",
            key=("id",),
            nested="tables",
            streams=2,
            executor=threaded_cluster,
        ),
    )
    assert result.rows_read == N

    tree = Tree(exporter.get_finished_spans())
    run = tree.one("bq2pg.run")
    session = tree.one("bq2pg.read_session")
    streams = tree.named("bq2pg.stream")
    assert len(streams) == 2
    for s in streams:
        assert (s.attributes or {})["bq2pg.executor"] == "dask"
        assert s.context.trace_id == run.context.trace_id
        assert s.parent is not None and s.parent.span_id == session.context.span_id
        assert s.parent.is_remote  # continued from the W3C carrier
    stream_ids = {s.context.span_id for s in streams}
    chunks = tree.named("bq2pg.chunk")
    reads = tree.named(READ_ROWS)
    assert chunks and reads
    assert all(s.parent and s.parent.span_id in stream_ids for s in chunks + reads)
    assert sum((s.attributes or {})["bq2pg.rows"] for s in reads) == N
    assert {s.context.trace_id for s in tree.spans} == {run.context.trace_id}
    assert [s.name for s in tree.spans if s.parent is None] == ["bq2pg.run"]


# -- the real CLI: OTLP export and JSON logs ------------------------------------------------


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OpenTelemetry variable of this process reaches the CLI's subprocess."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def has(*names: str) -> Any:
    """A predicate: each name (or a ``COPY `` prefix) among the spans received."""

    def check(spans: list[ReceivedSpan]) -> bool:
        got = {s.name for s in spans}
        return all(
            any(g.startswith(n) for g in got) if n.endswith(" ") else n in got for n in names
        )

    return check


def cli_copy(table_id: str, pg_url: str, pg_schema: str, *extra: str, env: dict[str, str]):
    return bq2pg_cmd(
        "--log-format", "json", "copy", table_id, "--to", pg_url,
        "--table", f"{pg_schema}.items", "--streams", "2", *extra,
        env=env,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_the_cli_exports_spans_over_otlp_http_and_logs_carry_the_trace(
    source: Source, dataset, pg_url, pg_schema, emulator_env, no_otel_env
):
    table_id = make_table(source, dataset, "items", FIELDS, rows(100, pad=10))
    with OtlpReceiver() as r:
        done = cli_copy(
            table_id, pg_url, pg_schema, "--otlp-endpoint", r.http_endpoint,
            env={**emulator_env, "OTEL_SERVICE_NAME": "bq2pg-test"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        spans = r.wait_for(has("bq2pg.run", "bq2pg.stream", "bq2pg.chunk", "COPY "), timeout=15)
        assert r.requests["grpc"] == 0
    assert {(s.transport, s.service_name) for s in spans} == {("http", "bq2pg-test")}
    [run] = [s for s in spans if s.name == "bq2pg.run"]
    assert run.parent_span_id is None
    assert run.attributes["bq2pg.target_table"] == f"{pg_schema}.items"
    assert {s.trace_id for s in spans} == {run.trace_id}
    names = {s.name for s in spans}
    assert {"bq2pg.read_session", CREATE, READ_ROWS, "bq2pg.publish"} <= names
    assert sum(s.attributes["bq2pg.rows"] for s in spans if s.name == READ_ROWS) == 100
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        if s.name.startswith("COPY "):
            assert by_id[s.parent_span_id or ""].name == "bq2pg.chunk"
            assert s.attributes["db.namespace"] == database_of(pg_url)

    lines = json_lines(done.stderr)
    assert lines, done.stderr
    traced = [line for line in lines if "trace_id" in line]
    assert traced, lines
    assert {line["trace_id"] for line in traced} == {run.trace_id}
    assert all(line["span_id"] in by_id for line in traced)
    [started] = [line for line in lines if line.get("event") == "run.started"]
    assert (started["trace_id"], started["span_id"]) == (run.trace_id, run.span_id)
    assert started["run_id"] == run.attributes["bq2pg.run_id"]
    [succeeded] = [line for line in lines if line.get("event") == "run.succeeded"]
    assert succeeded["trace_id"] == run.trace_id


@pytest.mark.timeout(300)
def test_the_cli_exports_over_grpc_from_the_standard_variables(
    source: Source, dataset, pg_url, pg_schema, emulator_env, no_otel_env
):
    table_id = make_table(source, dataset, "items", FIELDS, rows(50, pad=10))
    with OtlpReceiver() as r:
        env = {
            **emulator_env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": r.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        done = cli_copy(table_id, pg_url, pg_schema, env=env)
        assert done.returncode == 0, done.stderr
        spans = r.wait_for(has("bq2pg.run", "bq2pg.stream", "bq2pg.chunk", "COPY "), timeout=15)
        assert r.requests["http"] == 0
    assert {(s.transport, s.service_name) for s in spans} == {("grpc", "bq2pg")}
    [run] = [s for s in spans if s.name == "bq2pg.run"]
    assert {s.trace_id for s in spans} == {run.trace_id}


@pytest.mark.timeout(300)
def test_tracing_is_off_by_default(
    source: Source, dataset, pg_url, pg_schema, emulator_env, no_otel_env
):
    table_id = make_table(source, dataset, "items", FIELDS, rows(20, pad=10))
    done = cli_copy(table_id, pg_url, pg_schema, env=emulator_env)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    assert any(line.get("event") == "run.started" for line in lines), lines
    assert any(line.get("event") == "run.succeeded" for line in lines), lines
    assert not [line for line in lines if "trace_id" in line or "span_id" in line]


# -- pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "environ", "expected"),
    [
        ("http://collector:4317", {}, "grpc"),
        ("http://collector:4317/", {}, "grpc"),
        ("collector:4317", {}, "grpc"),
        ("http://collector:4318", {}, "http/protobuf"),
        ("http://collector:4318/v1/traces", {}, "http/protobuf"),
        ("https://otlp.example.com", {}, "http/protobuf"),
        (
            "http://collector:4317",
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "http/protobuf",
        ),
        ("http://collector:4318", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        (
            "http://collector:4318",
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            "grpc",
        ),
        ("http://collector:4317", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "grpc"),
    ],
)
def test_protocol_for(endpoint: str, environ: dict[str, str], expected: str):
    assert tracing.protocol_for(endpoint, environ) == expected


def test_endpoint_from_env():
    generic, traces = "http://generic:4318", "http://traces:4318/v1/traces"
    assert tracing.endpoint_from_env({}) is None
    assert tracing.endpoint_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}) is None
    assert tracing.endpoint_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": generic}) == generic
    assert tracing.endpoint_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces}) == traces
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": generic, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces}
    assert tracing.endpoint_from_env(both) == traces


def test_configure_without_an_endpoint_is_off():
    assert tracing.configure(None, environ={}) is None
    assert tracing.configure("", environ={"OTEL_SERVICE_NAME": "x"}) is None
    assert tracing._provider is None
    with tracing.span("bq2pg.test") as span:  # the global (no-op) provider
        assert not span.is_recording()
    assert tracing.carrier() == {}


@pytest.fixture
def reset_tracing() -> Iterator[None]:
    try:
        yield
    finally:
        provider = tracing._provider
        tracing.use(None)
        if provider is not None:
            provider.shutdown()


def export_one(provider: Any) -> None:
    with tracing.span("bq2pg.test", **{"k": "v"}):
        pass
    assert provider.force_flush(5_000)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_configure_exports_to_the_endpoint_it_is_given(reset_tracing, transport: str):
    with OtlpReceiver() as r:
        endpoint = r.http_endpoint if transport == "http" else r.grpc_endpoint
        provider = tracing.configure(
            endpoint,
            protocol="http/protobuf" if transport == "http" else "grpc",
            service_name="svc",
            version="9.9",
            environ={},
        )
        assert provider is not None and tracing._provider is provider
        export_one(provider)
        [span] = r.wait_for(lambda spans: spans, timeout=10)
    assert (span.name, span.transport, span.service_name) == ("bq2pg.test", transport, "svc")
    assert span.attributes == {"k": "v"}
    assert provider.resource.attributes["service.version"] == "9.9"


@pytest.mark.timeout(60)
def test_configure_takes_the_traces_endpoint_as_a_full_url(reset_tracing):
    with OtlpReceiver() as r:
        environ = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": r.http_traces_url}
        provider = tracing.configure(None, environ=environ)
        export_one(provider)
        [span] = r.wait_for(lambda spans: spans, timeout=10)
    assert (span.transport, span.service_name) == ("http", "bq2pg")


@pytest.mark.timeout(60)
def test_an_explicit_base_endpoint_gets_its_path_whatever_the_environment(reset_tracing):
    with OtlpReceiver() as r:
        environ = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}
        provider = tracing.configure(r.http_endpoint, environ=environ)
        export_one(provider)
        r.wait_for(lambda spans: spans, timeout=3)
