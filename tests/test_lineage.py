"""Lineage: column lineage of copy plans and of the patents model, OpenLineage events checked
against the specification's generated classes, delivery (HTTP to a local receiver, a file, a
receiver that is down), the recorded edges and the graph ``bq2pg lineage`` draws.

The OpenLineage JSON schemas ship in no installable package (openlineage-python,
-integration-common, -sql, -airflow, -dbt and apache-airflow-providers-openlineage were
checked), so each event is validated by a round trip through ``openlineage-python``'s classes,
which are generated from those schemas: every object is rebuilt as the class its position (or
its facet's ``_schemaURL``) calls for, every field without a default must be present, no field
may be unknown, the classes' validators run (``runId`` a UUID, ``eventTime`` a date-time), and
the rebuilt event must serialise to the same JSON.
"""

from __future__ import annotations

import datetime as dt
import enum
import http.server
import importlib
import json
import logging
import pkgutil
import re
import shutil
import socket
import subprocess
import threading
import types
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import attr
import jsonschema
import psycopg
import pytest
from openlineage.client import generated
from openlineage.client.event_v2 import RunEvent
from openlineage.client.facet_v2 import BaseFacet, DatasetFacet, data_quality_assertions_dataset
from openlineage.client.serde import Serde
from typer.testing import CliRunner

from bq2pg.cli import lineage as cli_lineage
from bq2pg.errors import ConfigError
from bq2pg.lineage import columns, emit, events, graph, naming, runs
from bq2pg.observe import metrics
from bq2pg.patents import features, model
from bq2pg.patents import lineage as patents_lineage
from bq2pg.patents import source as publications
from bq2pg.plan.tables import Field, Nested, TablePlan, plan_table
from bq2pg.state import lineage as stored
from bq2pg.state import schema as state_schema

# --- validation against the specification's generated classes -------------------------------


def _facet_classes() -> dict[str, type]:
    """Every facet class of the client by its ``_schemaURL``, and bq2pg's own."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"{generated.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and attr.has(value) and issubclass(value, BaseFacet):
                found[value._get_schema()] = value
    found[events.READ_SESSION_SCHEMA_URL] = events.ReadSessionRunFacet
    return found


FACETS = _facet_classes()
#: Facets bq2pg puts where the spec's class hierarchy does not (see ``lineage.events``).
ALLOWED_ELSEWHERE = {
    (DatasetFacet, data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet)
}


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            assert type(None) in args, f"{path} may not be null"
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path)
    if tp is Any:
        return value
    if origin is list:
        assert isinstance(value, list), f"{path} must be an array"
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        assert isinstance(value, dict), f"{path} must be an object"
        return {k: _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if isinstance(tp, type) and attr.has(tp):
        cls = tp
        if issubclass(tp, BaseFacet):
            cls = FACETS.get(value.get("_schemaURL"), tp)
            assert cls is not tp or tp is BaseFacet, f"{path}: unknown facet {value}"
            assert issubclass(cls, tp) or (tp, cls) in ALLOWED_ELSEWHERE, (
                f"{path}: a {cls.__name__} is not a {tp.__name__}"
            )
        return _structure(cls, value, path)
    if tp is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), path
    else:
        assert isinstance(value, tp) and not (tp is int and isinstance(value, bool)), (
            f"{path}: {value!r} is not a {tp.__name__}"
        )
    return value


def _structure(cls: type, data: Any, path: str) -> Any:
    assert isinstance(data, dict), f"{path} must be an object"
    hints = typing.get_type_hints(cls)
    known = {f.name for f in attr.fields(cls)}
    assert not set(data) - known, f"{path}: fields unknown to {cls.__name__}: {set(data) - known}"
    kwargs = {}
    for f in attr.fields(cls):
        if f.name not in data:
            assert f.default is not attr.NOTHING, f"{path}.{f.name} is required"
            if f.init and type(None) in typing.get_args(hints[f.name]):
                kwargs[f.alias] = None  # absent in JSON is null, not the class's default
            continue
        if not f.init:  # schemaURL / _schemaURL: the class's own
            assert data[f.name] == cls._get_schema(), f"{path}.{f.name}"
            continue
        kwargs[f.alias] = _convert(hints[f.name], data[f.name], f"{path}.{f.name}")
    return cls(**kwargs)


def validate(event: RunEvent | dict[str, Any]) -> dict[str, Any]:
    """The event as JSON, checked against the spec's classes (see the module docstring)."""
    data = json.loads(Serde.to_json(event) if isinstance(event, RunEvent) else json.dumps(event))
    rebuilt = _structure(RunEvent, data, "event")
    assert Serde.to_dict(rebuilt) == data, "the event does not survive a round trip"
    assert data["eventType"] in ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL")
    assert dt.datetime.fromisoformat(data["eventTime"]).tzinfo is not None
    for url in _urls(data):
        parsed = urlparse(url)
        assert parsed.scheme in ("http", "https") and parsed.netloc, url
    for facet in _facets(data, events.READ_SESSION_FACET):
        jsonschema.validate(facet, events.READ_SESSION_SCHEMA)
    return data


def _urls(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("producer", "schemaURL", "_producer", "_schemaURL"):
                yield value
            else:
                yield from _urls(value)
    elif isinstance(data, list):
        for value in data:
            yield from _urls(value)


def _facets(data: Any, name: str) -> Iterator[dict[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key == name:
                yield value
            yield from _facets(value, name)
    elif isinstance(data, list):
        for value in data:
            yield from _facets(value, name)


# --- plans ----------------------------------------------------------------------------------

FIELDS = [
    Field("id", "INT64", "REQUIRED"),
    Field("name", "STRING"),
    Field("amount", "BIGNUMERIC"),
    Field("shape", "GEOGRAPHY"),
    Field("meta", "JSON"),
    Field("tags", "STRING", "REPEATED"),
    Field("address", "RECORD", "NULLABLE", (Field("city", "STRING"),)),
    Field("items", "RECORD", "REPEATED", (Field("sku", "STRING"), Field("price", "NUMERIC"))),
]
URL = "postgresql://loader:s3cret-pw@db.example.com:6543/analytics?sslmode=require"


def copy_plan(nested: Nested = "tables") -> TablePlan:
    return plan_table(FIELDS, source="p.d.t", schema="public", name="t", key=("id",), nested=nested)


def copy_run(run_id: uuid.UUID | None = None) -> runs.LineageRun:
    plan = copy_plan()
    return runs.describe(
        run_id or uuid.uuid4(),
        source="proj.ds.t",
        fields=FIELDS,
        database_url=URL,
        plan=plan,
        edges=columns.for_plan(plan),
        version="0.1.0",
        filter_fields=("id",),
    )


def patents_run() -> runs.LineageRun:
    plan = model.model(full_text=True)
    return runs.describe(
        uuid.uuid4(),
        source=publications.SOURCE_TABLE,
        fields=publications.PUBLICATIONS,
        database_url="host=localhost port=5433 dbname=patents user=me password=pw",
        plan=plan,
        edges=patents_lineage.for_model(plan),
        job="patents-nightly",
        kind="patents",
        version="0.1.0",
    )


OUTCOME = runs.Outcome(
    rows={"t": 3, "public.t__items": 7},
    bytes={"t": 4096, "t__items": 2048},
    rows_read=3,
    bytes_read=1234,
    checks=(
        runs.Check("t", "not_null", "id is set", True, ("id",), evaluated=3, failing=0),
        runs.Check("public.t", "unique", "id, name unique", False, ("id", "name"), failing=1),
        runs.Check("t", "row_count", "some rows", True, severity="warn"),
    ),
    null_counts={"t": {"name": 1, "id": 0}},
)
SESSION = runs.ReadSession(
    dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC), "projects/p/locations/us/sessions/abc", 4
)


# --- column lineage -------------------------------------------------------------------------


def by_column(edges: list[columns.ColumnEdge]) -> dict[tuple[str, str], columns.ColumnEdge]:
    return {(e.target_table, e.target_column): e for e in edges}


def test_copy_lineage_names_each_columns_field_and_transformation() -> None:
    edges = by_column(columns.for_plan(copy_plan()))
    expected = {
        ("public.t", "id"): (("id",), "identity"),
        ("public.t", "name"): (("name",), "identity"),
        ("public.t", "amount"): (("amount",), "cast"),
        ("public.t", "shape"): (("shape",), "cast"),
        ("public.t", "meta"): (("meta",), "json_encoding"),
        ("public.t", "tags"): (("tags",), "identity"),
        ("public.t", "address"): (("address",), "json_encoding"),
        ("public.t", ""): (
            ("id", "name", "amount", "shape", "meta", "tags", "address"),
            "identity",
        ),
        ("public.t__items", ""): (("id", "items"), "array_explode"),
        ("public.t__items", "parent_id"): (("id",), "array_explode"),
        ("public.t__items", "ordinal"): (("items",), "array_explode"),
        ("public.t__items", "sku"): (("items.sku",), "identity"),
        ("public.t__items", "price"): (("items.price",), "identity"),
    }
    assert {k: (e.source_fields, e.transformation) for k, e in edges.items()} == expected
    assert edges[("public.t", "tags")].description == "ARRAY<STRING> -> text[]"


def test_copy_lineage_keeps_a_repeated_record_as_json_without_child_tables() -> None:
    edges = by_column(columns.for_plan(copy_plan("jsonb")))
    assert edges[("public.t", "items")].transformation == "json_encoding"
    assert edges[("public.t", "items")].description == "array of RECORD -> jsonb"
    assert {e[0] for e in edges} == {"public.t"}


def test_an_unknown_transformation_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of identity"):
        columns.ColumnEdge("s.t", "c", ("c",), "magic")


def _field(path: str) -> Field | None:
    fields = publications.PUBLICATIONS
    found = None
    for part in path.split("."):
        found = next((f for f in fields if f.name == part), None)
        if found is None:
            return None
        fields = found.fields
    return found


@pytest.mark.parametrize("full_text", [True, False])
def test_every_column_of_the_patents_model_has_its_sources(full_text: bool) -> None:
    plan = model.model(full_text=full_text)
    edges = patents_lineage.for_model(plan)
    found = by_column(edges)
    wanted = {(t.qualified, c.name) for t in plan.all_tables() for c in t.columns}
    wanted |= {(t.qualified, "") for t in plan.all_tables()}
    assert set(found) == wanted
    assert len(found) == len(edges), "one edge per column"
    for edge in edges:
        assert "not mapped" not in edge.description, edge
        for path in edge.source_fields:
            assert _field(path) is not None, f"{edge}: {path} is not a field of publications"
    no_source = [e for e in edges if not e.source_fields]
    assert [(e.target_column) for e in no_source] == ([] if full_text else ["claims_count"])


def test_patents_lineage_spells_out_picks_dates_and_arrays() -> None:
    edges = by_column(patents_lineage.for_model(model.model(full_text=True)))
    title = edges[("patents.publications", "title")]
    assert (title.transformation, title.source_fields) == ("pick", ("title_localized",))
    assert title.description == "the English text of title_localized, else the first"
    assert edges[("patents.publications", "filing_date")].transformation == "cast"
    assert edges[("patents.publications", "extra")].source_fields == model.EXTRA_COLUMNS
    links = ("patents.publication_family_links", "linked_publication_number")
    assert edges[links].source_fields == ("parent.publication_number", "child.publication_number")
    ordinal = edges[("patents.publication_cpc", "ordinal")]
    assert (ordinal.transformation, ordinal.source_fields) == ("array_explode", ("cpc",))
    text = edges[("patents.publication_texts", "text")]
    assert text.source_fields == tuple(f"{c}.text" for c in publications.FULL_TEXT_COLUMNS)


def test_a_column_unknown_to_the_patents_mapping_gets_an_unmapped_edge() -> None:
    plan = model.model()
    odd = type(plan.columns[0])("brand_new", "text", Field("brand_new", "STRING"))
    changed = type(plan)(plan.schema, plan.name, (*plan.columns, odd), plan.key)
    edge = by_column(patents_lineage.for_model(changed))[("patents.publications", "brand_new")]
    assert edge.source_fields == () and "not mapped" in edge.description


def test_every_exported_feature_has_its_model_columns() -> None:
    exported = {c.name: c for c in patents_lineage.export_columns("m")}
    assert list(exported) == [name for name, _, _ in features.FEATURES]
    assert exported["country_code"].transformation == "identity"
    assert exported["country_code"].sources == (("m.publications", "country_code"),)
    forward = exported["forward_citation_count"]
    assert forward.sources == (("m.publication_citations", "cited_publication_number"),)
    granted = exported["granted"]
    assert (granted.transformation, granted.description) == ("derived", "p.grant_date IS NOT NULL")
    assert all(c.sources for c in exported.values())
    model_columns = {c.name for c in model.model().columns}
    for c in exported.values():
        for table, column in c.sources:
            assert table.endswith("publication_citations") or column in model_columns


# --- events ---------------------------------------------------------------------------------


def test_copy_events_follow_the_specification() -> None:
    run = copy_run()
    started = validate(events.start(run, at=dt.datetime(2026, 11, 30, 12, 0)))
    done = validate(events.complete(run, OUTCOME, session=SESSION))
    assert [started["eventType"], done["eventType"]] == ["START", "COMPLETE"]
    assert started["run"]["runId"] == done["run"]["runId"] == run.run_id
    assert started["eventTime"] == "2026-11-30T12:00:00+00:00"
    assert done["job"] == {
        "namespace": "bq2pg",
        "name": "copy:proj.ds.t->public.t",
        "facets": {
            "jobType": {
                "_producer": "https://github.com/bq2pg/bq2pg/tree/0.1.0",
                "_schemaURL": done["job"]["facets"]["jobType"]["_schemaURL"],
                "processingType": "BATCH",
                "integration": "BQ2PG",
                "jobType": "COPY",
            }
        },
    }
    (source,) = done["inputs"]
    assert (source["namespace"], source["name"]) == ("bigquery", "proj.ds.t")
    fields = {f["name"]: f for f in source["facets"]["schema"]["fields"]}
    assert fields["items"]["type"] == "ARRAY<RECORD>"
    assert [f["name"] for f in fields["items"]["fields"]] == ["sku", "price"]
    assert source["inputFacets"]["dataQualityMetrics"]["rowCount"] == 3
    assert [(o["namespace"], o["name"]) for o in done["outputs"]] == [
        ("postgres://db.example.com:6543", "analytics.public.t"),
        ("postgres://db.example.com:6543", "analytics.public.t__items"),
    ]
    assert "s3cret" not in json.dumps(done) and "loader" not in json.dumps(done)
    session = done["run"]["facets"]["bq2pg_readSession"]
    assert session["snapshotTime"] == "2026-11-30T12:00:00+00:00" and session["streams"] == 4
    assert done["run"]["facets"]["processing_engine"]["version"] == "0.1.0"


def test_copy_events_carry_column_lineage_statistics_and_quality() -> None:
    main, child = validate(events.complete(copy_run(), OUTCOME))["outputs"]
    lineage = main["facets"]["columnLineage"]
    assert set(lineage["fields"]) == {"id", "name", "amount", "shape", "meta", "tags", "address"}
    (shape,) = lineage["fields"]["shape"]["inputFields"]
    assert shape["field"] == "shape" and shape["name"] == "proj.ds.t"
    (how,) = shape["transformations"]
    assert (how["type"], how["subtype"]) == ("DIRECT", "TRANSFORMATION")
    assert how["description"].startswith("cast: GEOGRAPHY -> text")
    identity = lineage["fields"]["id"]
    assert identity["transformationType"] == "IDENTITY"
    assert identity["inputFields"][0]["transformations"][0]["subtype"] == "IDENTITY"
    assert lineage["dataset"][0]["transformations"] == [{"type": "INDIRECT", "subtype": "FILTER"}]
    ordinal = child["facets"]["columnLineage"]["fields"]["ordinal"]
    assert ordinal["inputFields"][0]["field"] == "items"
    assert main["outputFacets"]["outputStatistics"] == {
        "_producer": "https://github.com/bq2pg/bq2pg/tree/0.1.0",
        "_schemaURL": main["outputFacets"]["outputStatistics"]["_schemaURL"],
        "rowCount": 3,
        "size": 4096,
    }
    assert child["outputFacets"]["outputStatistics"]["rowCount"] == 7
    metrics_facet = main["facets"]["dataQualityMetrics"]
    assert metrics_facet["rowCount"] == 3
    assert metrics_facet["columnMetrics"] == {"name": {"nullCount": 1}, "id": {"nullCount": 0}}
    assertions = main["facets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a["success"], a.get("column")) for a in assertions] == [
        ("not_null", True, "id"),
        ("unique", False, None),
        ("row_count", True, None),
    ]
    assert assertions[1]["params"] == {"columns": ["id", "name"]} and assertions[1]["actual"] == "1"
    assert "dataQualityAssertions" not in child["facets"]


def test_fail_and_abort_events_carry_the_error_without_secrets() -> None:
    run = copy_run()
    try:
        raise RuntimeError(f"could not connect to {URL}")
    except RuntimeError as exc:
        failed = validate(events.fail(run, exc, outcome=runs.Outcome(rows_read=2)))
    error = failed["run"]["facets"]["errorMessage"]
    assert failed["eventType"] == "FAIL"
    assert error["programmingLanguage"] == "python"
    assert "s3cret-pw" not in json.dumps(error)
    assert "could not connect" in error["message"] and "RuntimeError" in error["stackTrace"]
    aborted = validate(events.abort(run, "interrupted by SIGTERM"))
    assert aborted["eventType"] == "ABORT"
    assert aborted["run"]["facets"]["errorMessage"]["message"] == "interrupted by SIGTERM"
    assert "outputStatistics" not in json.dumps(validate(events.abort(run)))


def test_patents_events_name_every_model_table_and_column() -> None:
    run = patents_run()
    done = validate(events.complete(run, runs.Outcome(rows={"publications": 20})))
    assert done["job"]["name"] == "patents-nightly"
    assert done["job"]["facets"]["jobType"]["jobType"] == "PATENTS"
    plan = model.model(full_text=True)
    assert [o["name"] for o in done["outputs"]] == [
        f"patents.{t.qualified}" for t in plan.all_tables()
    ]
    assert {o["namespace"] for o in done["outputs"]} == {"postgres://localhost:5433"}
    for output, table in zip(done["outputs"], plan.all_tables(), strict=True):
        assert [f["name"] for f in output["facets"]["schema"]["fields"]] == table.column_names
        assert set(output["facets"]["columnLineage"]["fields"]) == set(table.column_names)
    title = done["outputs"][0]["facets"]["columnLineage"]["fields"]["title"]
    assert title["transformationDescription"] == (
        "pick: the English text of title_localized, else the first"
    )
    validate(events.start(run))


def test_a_broken_event_fails_validation() -> None:
    data = json.loads(Serde.to_json(events.start(copy_run())))
    del data["outputs"][0]["facets"]["schema"]["fields"][0]["name"]
    with pytest.raises(AssertionError, match="name is required"):
        validate(data)
    data = json.loads(Serde.to_json(events.start(copy_run())))
    data["outputs"][0]["facets"]["columnLineage"]["fields"]["id"]["inputFields"][0]["oops"] = 1
    with pytest.raises(AssertionError, match="unknown"):
        validate(data)
    data = json.loads(Serde.to_json(events.start(copy_run())))
    data["run"]["runId"] = "not-a-uuid"
    with pytest.raises(ValueError):
        validate(data)


@pytest.mark.parametrize(
    ("url", "namespace", "database"),
    [
        ("postgresql://u:pw@Host.example.com/db", "postgres://host.example.com:5432", "db"),
        ("postgres://u:p%40ss@h:6000/my%20db", "postgres://h:6000", "my db"),
        ("postgresql://[::1]:5433/d", "postgres://[::1]:5433", "d"),
        ("postgresql://h1:5000,h2:5001/d", "postgres://h1:5000", "d"),
        ("postgresql:///d?host=/var/run/postgresql", "postgres://localhost:5432", "d"),
        ("postgresql://me@/?host=db&port=7000", "postgres://db:7000", "me"),
        (
            "host=db.local port=5444 dbname='my db' password='x y'",
            "postgres://db.local:5444",
            "my db",
        ),
        ("dbname=x", "postgres://localhost:5432", "x"),
    ],
)
def test_namespace_has_host_and_port_only(url: str, namespace: str, database: str) -> None:
    assert naming.namespace(url) == namespace
    assert naming.database(url) == database


# --- delivery -------------------------------------------------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    """A lineage backend on a free local port, keeping what it was sent."""

    def __init__(self, status: int = 201) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.status = status
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, dict(self.headers), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()


def _count(status: str) -> float:
    value = metrics.LINEAGE_EVENTS.labels(status)._value.get()  # type: ignore[attr-defined]
    return float(value)


def test_events_reach_an_http_backend_with_the_api_key(receiver: Receiver) -> None:
    emitter = emit.from_settings(
        {"transport": "http", "url": receiver.url, "api_key": "k3y-for-lineage"}
    )
    assert emitter is not None and emitter.transport == "http"
    run = copy_run()
    sent = _count("sent")
    assert emitter.emit(events.start(run)) and emitter.emit(events.complete(run, OUTCOME))
    assert _count("sent") == sent + 2
    emitter.close()
    assert [path for path, _, _ in receiver.received] == ["/api/v1/lineage"] * 2
    (_, headers, body), _ = receiver.received
    assert headers["Authorization"] == "Bearer k3y-for-lineage"
    assert headers["Content-Type"] == "application/json"
    data = validate(json.loads(body))
    assert (data["eventType"], data["run"]["runId"]) == ("START", run.run_id)


def test_openlineage_url_turns_lineage_on(receiver: Receiver) -> None:
    environ = {
        "OPENLINEAGE_URL": receiver.url,
        "OPENLINEAGE_ENDPOINT": "custom/path",
        "OPENLINEAGE_API_KEY": "env-key",
    }
    emitter = emit.from_settings(None, environ)
    assert emitter is not None
    assert emitter.emit(events.start(copy_run()))
    ((path, headers, _),) = receiver.received
    assert path == "/custom/path" and headers["Authorization"] == "Bearer env-key"


def test_lineage_is_off_by_default() -> None:
    assert emit.from_settings(None, {}) is None
    assert emit.from_settings({}, {}) is None
    assert emit.from_settings({"transport": None, "url": None, "api_key": None}, {}) is None
    disabled = {"OPENLINEAGE_URL": "http://x", "OPENLINEAGE_DISABLED": "true"}
    assert emit.from_settings({"transport": "console"}, disabled) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_backend_that_is_down_does_not_fail_the_run(caplog: pytest.LogCaptureFixture) -> None:
    emitter = emit.from_settings(
        {
            "url": f"http://127.0.0.1:{_free_port()}",
            "api_key": "do-not-log-me",
            "timeout": 1,
            "retries": 0,
        }
    )
    assert emitter is not None
    failed = _count("failed")
    with caplog.at_level(logging.WARNING, logger=emit.__name__):
        assert emitter.emit(events.start(copy_run())) is False
    assert _count("failed") == failed + 1
    (record,) = [r for r in caplog.records if r.name == emit.__name__]
    assert record.msg["event"] == "lineage.failed"  # type: ignore[index]
    assert "Connection" in record.msg["error"]  # type: ignore[index]
    assert "do-not-log-me" not in caplog.text and "do-not-log-me" not in str(record.msg)


def test_a_backend_refusing_events_is_counted_as_failed() -> None:
    server = Receiver(status=500)
    try:
        emitter = emit.from_settings({"url": server.url, "retries": 0})
        assert emitter is not None
        assert emitter.emit(events.start(copy_run())) is False
        assert len(server.received) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_file_transport_appends_one_event_a_line(tmp_path: Path) -> None:
    path = tmp_path / "lineage.jsonl"
    emitter = emit.from_settings({"transport": "file", "path": str(path)})
    assert emitter is not None and emitter.transport == "file"
    run = patents_run()
    assert emitter.emit(events.start(run, session=SESSION))
    assert emitter.emit(events.fail(run, "quality gate failed"))
    lines = path.read_text().splitlines()
    assert [validate(json.loads(line))["eventType"] for line in lines] == ["START", "FAIL"]


def test_the_console_transport_logs_events(caplog: pytest.LogCaptureFixture) -> None:
    emitter = emit.from_settings({"transport": "console"})
    assert emitter is not None
    with caplog.at_level(logging.INFO, logger="openlineage.client.transport.console"):
        assert emitter.emit(events.start(copy_run()))
    assert any('"eventType": "START"' in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"transport": "kafka"}, "not one of http, file, console"),
        ({"transport": "http"}, "needs url"),
        ({"transport": "file"}, "needs path"),
        ({"transport": "http", "url": "not a url"}, "not a URL"),
        ({"transport": "console", "colour": "red"}, "unknown setting"),
    ],
)
def test_lineage_settings_are_checked(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        emit.from_settings(settings, {})


# --- recorded edges and the graph -----------------------------------------------------------


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        state_schema.ensure(c)
        yield c


def _run_row(conn: psycopg.Connection, status: str = "succeeded") -> uuid.UUID:
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO bq2pg.runs (run_id, source, target, mode, arguments, status, started_at) "
        "VALUES (%s, 'p.d.t', 'public.t', 'replace', '{}', %s, now())",
        [run_id, status],
    )
    return run_id


def _names() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"proj_{tag}.ds.t", f"s_{tag}", tag


def _record_copy(
    conn: psycopg.Connection, source: str, schema: str, status: str = "succeeded"
) -> uuid.UUID:
    plan = plan_table(FIELDS, source=source, schema=schema, name="t", key=("id",), nested="tables")
    run_id = _run_row(conn, status)
    stored.record(
        conn,
        run_id,
        source_namespace="bigquery",
        source_name=source,
        target_namespace=naming.namespace(URL),
        target_database="analytics",
        edges=columns.for_plan(plan),
    )
    return run_id


def _record_export(conn: psycopg.Connection, schema: str, path: str) -> None:
    stored.record_export(
        conn,
        source_namespace=naming.namespace(URL),
        source_database="analytics",
        target_namespace="file",
        target_name=path,
        columns=[
            stored.ExportColumn("id", ((f"{schema}.t", "id"),), "identity"),
            stored.ExportColumn(
                "items",
                ((f"{schema}.t", "id"), (f"{schema}.t__items", "sku")),
                "derived",
                "count(sku)",
            ),
        ],
    )


def test_a_run_records_one_row_per_column_and_table(conn: psycopg.Connection) -> None:
    source, schema, _ = _names()
    run_id = _record_copy(conn, source, schema)
    rows = conn.execute(
        "SELECT target_name, target_column, source_fields, transformation FROM bq2pg.lineage "
        "WHERE run_id = %s ORDER BY id",
        [run_id],
    ).fetchall()
    assert len(rows) == len(columns.for_plan(copy_plan()))
    assert rows[0] == (f"analytics.{schema}.t", "", [f.name for f in FIELDS[:-1]], "identity")
    assert (f"analytics.{schema}.t__items", "ordinal", ["items"], "array_explode") in rows
    stored.record(  # recording the run again replaces its rows
        conn,
        run_id,
        source_namespace="bigquery",
        source_name=source,
        target_namespace="postgres://x:1",
        target_database="analytics",
        edges=[columns.ColumnEdge(f"{schema}.t", "id", ("id",), "identity")],
    )
    count = conn.execute("SELECT count(*) FROM bq2pg.lineage WHERE run_id = %s", [run_id])
    assert count.fetchone() == (1,)


def test_the_graph_goes_from_bigquery_to_postgres_to_an_export_and_back(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    source, schema, _ = _names()
    _record_copy(conn, source, schema)
    export = str(tmp_path / "features.parquet")
    _record_export(conn, schema, export)
    g = graph.Graph.from_edges(stored.edges(conn))
    bq = graph.Dataset("bigquery", source)
    table = graph.Dataset("postgres://db.example.com:6543", f"analytics.{schema}.t")
    items = graph.Dataset("postgres://db.example.com:6543", f"analytics.{schema}.t__items")
    file = graph.Dataset("file", export)

    down = g.downstream(source)
    assert down.focus == (bq,)
    assert set(down.datasets()) == {bq, table, items, file}
    to_file = [link for link in down.links if link.target == file and link.target_column]
    assert {(link.source, link.source_fields, link.target_column) for link in to_file} == {
        (table, ("id",), "id"),
        (table, ("id",), "items"),
        (items, ("sku",), "items"),
    }

    up = g.upstream(export)
    assert up.focus == (file,) and set(up.datasets()) == {file, table, items, bq}
    assert g.upstream(f"{schema}.t").datasets() == [table, bq]
    assert set(g.downstream(f"analytics.{schema}.t").datasets()) == {table, file}
    both = g.around(f"{schema}.t__items")
    assert set(both.datasets()) == {items, bq, file}
    assert g.find(table.id) == [table] and g.find("features.parquet") == [file]
    with pytest.raises(ConfigError, match="no lineage is recorded"):
        g.find(f"{schema}.nowhere")


def test_the_latest_published_run_of_a_table_wins(conn: psycopg.Connection) -> None:
    source, schema, _ = _names()
    old = _record_copy(conn, source, schema)
    conn.execute(
        "UPDATE bq2pg.lineage SET recorded_at = now() - interval '1 hour' WHERE run_id = %s", [old]
    )
    newer_source = source.replace("proj_", "other_")
    new = _record_copy(conn, newer_source, schema)
    _record_copy(conn, source.replace("proj_", "failed_"), schema, status="failed")
    current = [e for e in stored.edges(conn) if e.target_name == f"analytics.{schema}.t"]
    assert {e.run_id for e in current} == {new}
    assert {e.source_name for e in current} == {newer_source}


def test_features_export_records_its_lineage(pg_url: str, tmp_path: Path) -> None:
    schema = f"m_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "features.csv"
    assert patents_lineage.record_features_export(pg_url, path, schema)
    g = graph.load(pg_url)
    up = g.upstream(str(path))
    database = naming.database(pg_url)
    sources = {link.source.name for link in up.links}
    assert sources == {
        f"{database}.{schema}.publications",
        f"{database}.{schema}.publication_citations",
    }
    assert not patents_lineage.record_features_export("postgresql://127.0.0.1:1/x", path, schema)


# --- renderers and the command --------------------------------------------------------------


@pytest.fixture
def view(conn: psycopg.Connection, tmp_path: Path) -> graph.View:
    source, schema, _ = _names()
    _record_copy(conn, source, schema)
    _record_export(conn, schema, str(tmp_path / 'with "quotes".csv'))
    return graph.Graph.from_edges(stored.edges(conn)).around(f"{schema}.t")


def test_text_lists_each_table_and_column_link(view: graph.View) -> None:
    text = graph.render(view, "text")
    assert text.startswith(f"lineage of {view.focus[0].id} (both)")
    assert re.search(r"^bigquery:proj_\w+\.ds\.t -> postgres://db\.example\.com:6543/", text, re.M)
    assert re.search(r"^  shape\s+<- shape  \[cast\] GEOGRAPHY -> text", text, re.M)
    assert re.search(r"^  items <- id  \[derived\] count\(sku\)$", text, re.M)


def test_mermaid_defines_every_node_it_links(view: graph.View) -> None:
    lines = graph.render(view, "mermaid").splitlines()
    assert lines[0] == "flowchart LR"
    defined = {
        m[1] for line in lines if (m := re.match(r"\s+(?:subgraph )?(d\d+(?:c\d+)?)\[", line))
    }
    opened = sum(line.strip().startswith("subgraph ") for line in lines)
    assert opened == sum(line.strip() == "end" for line in lines) == len(view.datasets())
    links = [re.match(r"\s+(\S+) (?:-->|==>)\|(\w+)\| (\S+)$", line) for line in lines]
    links = [m for m in links if m]
    assert links and all(m[1] in defined and m[3] in defined for m in links)
    assert {m[2] for m in links} <= set(columns.TRANSFORMATIONS)
    assert any("#quot;quotes#quot;" in line for line in lines)


def test_dot_is_a_digraph_graphviz_accepts(view: graph.View) -> None:
    text = graph.render(view, "dot")
    assert text.startswith("digraph lineage {") and text.endswith("}")
    assert text.count("{") == text.count("}")
    defined = set(re.findall(r"^\s+(d\d+(?:c\d+)?) \[label=", text, re.M))
    edges = re.findall(r"^\s+(d\S+) -> (d\S+) \[", text, re.M)
    assert edges and all(a in defined and b in defined for a, b in edges)
    assert '\\"quotes\\"' in text
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_json_lists_datasets_and_links(view: graph.View) -> None:
    data = json.loads(graph.render(view, "json"))
    assert data["direction"] == "both" and data["focus"] == [view.focus[0].id]
    ids = {d["id"] for d in data["datasets"]}
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    assert any(link["target_column"] is None for link in data["links"])


def test_the_lineage_command_draws_the_graph(conn: psycopg.Connection, pg_url: str) -> None:
    source, schema, _ = _names()
    _record_copy(conn, source, schema)
    runner = CliRunner()
    done = runner.invoke(
        cli_lineage.app, [f"{schema}.t__items", "--upstream", "--format", "json", "--to", pg_url]
    )
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["direction"] == "upstream"
    assert {d["name"] for d in data["datasets"]} == {f"analytics.{schema}.t__items", source}
    done = runner.invoke(cli_lineage.app, [source, "--downstream", "--database", pg_url])
    assert done.exit_code == 0, done.output
    assert "(downstream)" in done.output and f"analytics.{schema}.t__items" in done.output
    done = runner.invoke(cli_lineage.app, [source, "--format", "mermaid", "--to", pg_url])
    assert done.exit_code == 0 and done.output.startswith("flowchart LR")
    done = runner.invoke(cli_lineage.app, [source, "--format", "svg", "--to", pg_url])
    assert isinstance(done.exception, ConfigError)
    done = runner.invoke(cli_lineage.app, [f"{schema}.missing", "--to", pg_url])
    assert isinstance(done.exception, ConfigError)
