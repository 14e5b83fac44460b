"""OpenLineage run events of a bq2pg run (``openlineage-python``'s generated classes).

A run emits START, then one of COMPLETE, FAIL or ABORT, all with the same ``runId``:

* job: namespace ``bq2pg``, name the configured job (else derived from source and target),
  facet ``jobType`` (``BATCH``, integration ``BQ2PG``, the job's kind);
* run facets: ``processing_engine`` (bq2pg's version), ``bq2pg_readSession`` (the read
  session's snapshot time, name and streams: a custom facet, :data:`READ_SESSION_SCHEMA`),
  ``errorMessage`` on FAIL (and on ABORT when a reason is given);
* input: ``bigquery`` / ``project.dataset.table`` with ``schema`` and, once rows were read,
  the input facet ``dataQualityMetrics`` (rows and bytes read);
* outputs: ``postgres://host:port`` / ``database.schema.table`` for every table written, with
  ``schema`` and ``columnLineage`` and, at the end, ``dataQualityMetrics`` (rows, bytes, NULL
  counts), ``dataQualityAssertions`` (the quality rules' results) and the output facet
  ``outputStatistics``.

``dataQualityAssertions`` is defined by the spec as an *input* dataset facet (a checking job
reads what it checks). bq2pg checks what it writes, before publishing it, so the assertions go
in the output dataset's ``facets``: its shape is a valid dataset facet, and listing the table
as an input of the run that writes it would draw a cycle in every lineage graph.

Builds events out of a ``runs.LineageRun`` (pure); ``emit`` sends them.
"""

from __future__ import annotations

import datetime as dt
import traceback
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    data_quality_metrics_dataset,
    data_quality_metrics_input_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
)

from bq2pg.config.secrets import redact
from bq2pg.lineage.columns import TRANSFORMATIONS
from bq2pg.lineage.naming import BIGQUERY_NAMESPACE, JOB_NAMESPACE, PRODUCER
from bq2pg.lineage.runs import Check, LineageRun, Outcome, ReadSession, Target
from bq2pg.plan import typemap
from bq2pg.plan.tables import Field

#: The key of bq2pg's custom run facet (custom facets carry their producer's prefix).
READ_SESSION_FACET = "bq2pg_readSession"
READ_SESSION_SCHEMA_URL = f"{PRODUCER}/blob/main/docs/lineage.md#custom-facet-bq2pg_readsession"
#: The JSON schema of ``bq2pg_readSession`` (also in docs/lineage.md); its ``_producer`` and
#: ``_schemaURL`` are those of every OpenLineage facet.
READ_SESSION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "ReadSessionRunFacet": {
            "type": "object",
            "description": "The BigQuery Storage Read API session a bq2pg run read through.",
            "properties": {
                "_producer": {"type": "string", "format": "uri"},
                "_schemaURL": {"type": "string", "format": "uri"},
                "snapshotTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "The table snapshot every stream of the session reads.",
                },
                "session": {"type": "string", "description": "The read session's name."},
                "streams": {"type": "integer", "minimum": 0},
            },
            "required": ["_producer", "_schemaURL"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/ReadSessionRunFacet",
}


@attr.define
class ReadSessionRunFacet(RunFacet):
    """bq2pg's run facet ``bq2pg_readSession``: the read session's snapshot, name and streams."""

    snapshotTime: str | None = attr.field(default=None)  # the spec spells it in camelCase
    session: str | None = attr.field(default=None)
    streams: int | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return READ_SESSION_SCHEMA_URL


def start(
    run: LineageRun, *, session: ReadSession | None = None, at: dt.datetime | None = None
) -> RunEvent:
    """The START event (``at``: the run's start, default now)."""
    return _event(run, RunState.START, at=at, session=session)


def complete(
    run: LineageRun,
    outcome: Outcome,
    *,
    session: ReadSession | None = None,
    at: dt.datetime | None = None,
) -> RunEvent:
    """The COMPLETE event: the run published."""
    return _event(run, RunState.COMPLETE, at=at, session=session, outcome=outcome)


def fail(
    run: LineageRun,
    error: BaseException | str,
    *,
    outcome: Outcome | None = None,
    session: ReadSession | None = None,
    at: dt.datetime | None = None,
) -> RunEvent:
    """The FAIL event, with the error (message and stack trace, secrets redacted)."""
    return _event(run, RunState.FAIL, at=at, session=session, outcome=outcome, error=error)


def abort(
    run: LineageRun,
    reason: BaseException | str | None = None,
    *,
    outcome: Outcome | None = None,
    session: ReadSession | None = None,
    at: dt.datetime | None = None,
) -> RunEvent:
    """The ABORT event: the run was stopped (a signal, Ctrl-C) before it ended."""
    return _event(run, RunState.ABORT, at=at, session=session, outcome=outcome, error=reason)


def _event(
    run: LineageRun,
    state: RunState,
    *,
    at: dt.datetime | None,
    session: ReadSession | None,
    outcome: Outcome | None = None,
    error: BaseException | str | None = None,
) -> RunEvent:
    producer = run.producer
    run_facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=run.version or "unknown",
            name="bq2pg",
            openlineageAdapterVersion=_client_version(),
            producer=producer,
        )
    }
    if session is not None:
        run_facets[READ_SESSION_FACET] = ReadSessionRunFacet(
            snapshotTime=_iso(session.snapshot_time) if session.snapshot_time else None,
            session=session.name,
            streams=session.streams,
            producer=producer,
        )
    if error is not None:
        run_facets["errorMessage"] = _error(error, producer)
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH",
            integration="BQ2PG",
            jobType=run.kind.upper(),
            producer=producer,
        )
    }
    return RunEvent(
        eventType=state,
        eventTime=_iso(at or dt.datetime.now(dt.UTC)),
        run=Run(runId=run.run_id, facets=run_facets),
        job=Job(namespace=JOB_NAMESPACE, name=run.job_name, facets=job_facets),
        inputs=[_input(run, outcome)],
        outputs=[_output(run, t, outcome) for t in run.targets],
        producer=producer,
    )


def _iso(at: dt.datetime) -> str:
    """ISO 8601 with a zone (the spec's ``date-time``); a naive time is taken as UTC."""
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).isoformat()


def _client_version() -> str:
    try:
        return metadata.version("openlineage-python")
    except metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "unknown"


def _error(error: BaseException | str, producer: str) -> Any:
    if isinstance(error, BaseException):
        message = str(error) or type(error).__name__
        trace = "".join(traceback.format_exception(error)) if error.__traceback__ else None
    else:
        message, trace = error, None
    return error_message_run.ErrorMessageRunFacet(
        message=redact(message),
        programmingLanguage="python",
        stackTrace=redact(trace) if trace else None,
        producer=producer,
    )


def _schema_fields(fields: Sequence[Field]) -> list[Any]:
    out = []
    for i, f in enumerate(fields, 1):
        base = typemap.canonical(f.type, f.range_element_type)
        out.append(
            schema_dataset.SchemaDatasetFacetFields(
                name=f.name,
                type=f"ARRAY<{base}>" if f.repeated else base,
                ordinal_position=i,
                fields=_schema_fields(f.fields) or None,
            )
        )
    return out


def _input(run: LineageRun, outcome: Outcome | None) -> InputDataset:
    facets: dict[str, Any] = {
        "schema": schema_dataset.SchemaDatasetFacet(
            fields=_schema_fields(run.source_fields), producer=run.producer
        )
    }
    input_facets: dict[str, Any] = {}
    if outcome is not None and outcome.rows_read is not None:
        input_facets["dataQualityMetrics"] = (
            data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                columnMetrics={},
                rowCount=outcome.rows_read,
                bytes=outcome.bytes_read,
                producer=run.producer,
            )
        )
    return InputDataset(
        namespace=BIGQUERY_NAMESPACE,
        name=run.source,
        facets=facets,
        inputFacets=input_facets,
    )


def _output(run: LineageRun, target: Target, outcome: Outcome | None) -> OutputDataset:
    producer = run.producer
    facets: dict[str, Any] = {
        "schema": schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=n, type=t, ordinal_position=i)
                for i, (n, t) in enumerate(target.columns, 1)
            ],
            producer=producer,
        ),
        "columnLineage": _column_lineage(run, target),
    }
    output_facets: dict[str, Any] = {}
    if outcome is not None:
        rows, size = _lookup(outcome.rows, target.table), _lookup(outcome.bytes, target.table)
        nulls = _lookup(outcome.null_counts, target.table) or {}
        facets["dataQualityMetrics"] = data_quality_metrics_dataset.DataQualityMetricsDatasetFacet(
            columnMetrics={
                c: data_quality_metrics_dataset.ColumnMetrics(nullCount=n, quantiles=None)
                for c, n in nulls.items()
            },
            rowCount=rows,
            bytes=size,
            producer=producer,
        )
        checks = [c for c in outcome.checks if _same_table(c.table, target.table)]
        if checks:
            facets["dataQualityAssertions"] = (
                data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
                    assertions=[_assertion(c) for c in checks], producer=producer
                )
            )
        if rows is not None or size is not None:
            output_facets["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=rows, size=size, producer=producer
                )
            )
    return OutputDataset(
        namespace=run.pg_namespace,
        name=run.output_name(target.table),
        facets=facets,
        outputFacets=output_facets,
    )


def _column_lineage(run: LineageRun, target: Target) -> Any:
    fields = {}
    for edge in run.edges:
        if edge.table_level or edge.target_table != target.table or not edge.source_fields:
            continue
        kind = TRANSFORMATIONS[edge.transformation]
        description = f"{edge.transformation}: {edge.description}" if edge.description else None
        fields[edge.target_column] = column_lineage_dataset.Fields(
            inputFields=[
                column_lineage_dataset.InputField(
                    namespace=BIGQUERY_NAMESPACE,
                    name=run.source,
                    field=source,
                    transformations=[
                        column_lineage_dataset.Transformation(
                            type=kind.ol_type,
                            subtype=kind.ol_subtype,
                            description=description,
                            masking=False,
                        )
                    ],
                )
                for source in edge.source_fields
            ],
            transformationDescription=description,
            # the deprecated field knows IDENTITY and MASKED only
            transformationType="IDENTITY" if kind.ol_subtype == "IDENTITY" else None,
        )
    dataset = [
        column_lineage_dataset.InputField(
            namespace=BIGQUERY_NAMESPACE,
            name=run.source,
            field=f,
            transformations=[
                column_lineage_dataset.Transformation(type="INDIRECT", subtype="FILTER")
            ],
        )
        for f in run.filter_fields
    ]
    return column_lineage_dataset.ColumnLineageDatasetFacet(
        fields=fields, dataset=dataset or None, producer=run.producer
    )


def _assertion(check: Check) -> Any:
    params: dict[str, Any] = {}
    if len(check.columns) > 1:
        params["columns"] = list(check.columns)
    if check.evaluated is not None:
        params["evaluated"] = check.evaluated
    return data_quality_assertions_dataset.Assertion(
        assertion=check.kind,
        success=check.passed,
        column=check.columns[0] if len(check.columns) == 1 else None,
        severity=check.severity,
        name=check.name,
        description=check.description or None,
        # the failing rows (a rule may allow some: whether that passed is ``success``)
        actual=str(check.failing) if check.failing is not None else None,
        params=params or None,
    )


def _same_table(name: str, qualified: str) -> bool:
    return name == qualified or name == qualified.partition(".")[2]


def _lookup(values: Mapping[str, Any], qualified: str) -> Any:
    """A per-table value keyed ``schema.table`` or ``table``."""
    if qualified in values:
        return values[qualified]
    return values.get(qualified.partition(".")[2])
