"""What a run request may ask, checked before it is queued, and how a queued request becomes
the job the command line would have run.

A request names a job of bq2pg.yaml (``{"job": "NAME"}``, with options that override it) or
is an ad-hoc ``copy``/``patents`` with the CLI's option names. Options that would make the
server connect somewhere or read a file of the caller's choosing are not options of a request:
a target and a source are *names* the configuration defines (``to``, ``bigquery``), and there
is no database URL, endpoint, credentials file, rule file or executor address in a request
(no server-side request forgery, no reading the server's files). A raw ``where`` filter needs
the admin role (RELIABILITY.md: raw filters are an admin's, with an audit row).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bq2pg.config import jobs as config_jobs
from bq2pg.config.file import Resolved
from bq2pg.errors import ConfigError
from bq2pg.runner import target_table

__all__ = ["RunCreate", "RunOptions", "flags", "from_stored", "resolve", "stored", "target_table"]

_Strict = ConfigDict(extra="forbid", populate_by_name=True)


class RunOptions(BaseModel):
    """The options a request may give (the CLI's names; all optional)."""

    model_config = _Strict

    to: str | None = Field(default=None, description="A target's name in bq2pg.yaml.")
    bigquery: str | None = Field(default=None, description="A source's name in bq2pg.yaml.")
    source: str | None = Field(default=None, max_length=1024, description="PROJECT.DATASET.TABLE")
    limit: int | None = Field(default=None, ge=0)
    streams: int | None = Field(default=None, ge=1, le=64)
    checksum: bool | None = None
    resume: bool | None = None
    skip_quality: bool | None = None
    quality_samples: int | None = Field(default=None, ge=0, le=1000)
    profile: bool | None = None
    anomaly_severity: Literal["warn", "error"] | None = None
    max_bytes: int | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, ge=0)
    # copy
    table: str | None = Field(default=None, max_length=200)
    columns: list[str] | None = Field(default=None, max_length=10_000)
    where: str | None = Field(default=None, max_length=100_000)
    mode: Literal["replace", "append", "merge"] | None = None
    key: list[str] | None = Field(default=None, max_length=64)
    nested: Literal["jsonb", "tables"] | None = None
    drop: bool | None = None
    incremental: str | None = Field(default=None, max_length=300)
    lag: str | None = Field(default=None, max_length=100)
    # patents
    schema_: str | None = Field(default=None, alias="schema", max_length=63)
    test: bool | None = None
    year: int | None = Field(default=None, ge=1700, le=2200)
    recent_days: int | None = Field(default=None, ge=0)
    country: list[str] | None = Field(default=None, max_length=300)
    kind_codes: list[str] | None = Field(default=None, max_length=300)
    full_text: bool | None = None
    drop_tables: bool | None = None
    with_cpc_definitions: bool | None = None
    default_rules: bool | None = None


class RunCreate(BaseModel):
    """``POST /api/v1/runs``: a configured job, or an ad-hoc copy/patents."""

    model_config = _Strict

    job: str | None = Field(default=None, max_length=200, description="A job of bq2pg.yaml.")
    kind: Literal["copy", "patents"] | None = Field(
        default=None, description="An ad-hoc run (instead of `job`)."
    )
    options: RunOptions = Field(default_factory=RunOptions)


def flags(options: RunOptions) -> dict[str, Any]:
    """The request's options as configuration keys (given ones only)."""
    given = options.model_dump(exclude_none=True, by_alias=True)
    if "to" in given:
        given["target"] = given.pop("to")
    for key in ("columns", "key", "country", "kind_codes"):
        if key in given:
            given[key] = ",".join(given[key])
    return given


def resolve(body: RunCreate, cfg: config_jobs.Config, role: str) -> Resolved:
    """The request as a resolved job; checks that it names only what the configuration
    defines.

    Raises:
        ConfigError: an unknown job, target or source, neither or both of job and kind, or
            a raw filter without the admin role.
    """
    if (body.job is None) == (body.kind is None):
        raise ConfigError("give either `job` (a job of bq2pg.yaml) or `kind` (copy or patents)")
    options = body.options
    if options.to is not None and options.to not in cfg.names("targets"):
        raise ConfigError(
            f"options.to: {options.to!r} is not a target of the configuration; a request names "
            "a target of bq2pg.yaml (never a URL)",
            value=options.to[:100],
            hint="targets: " + (", ".join(cfg.names("targets")) or "none"),
        )
    if options.bigquery is not None and options.bigquery not in [*cfg.names("sources"),
                                                                  "default"]:  # fmt: skip
        raise ConfigError(
            f"options.bigquery: {options.bigquery!r} is not a source of the configuration",
            value=options.bigquery[:100],
        )
    if options.where is not None and role != "admin":
        raise ConfigError("options.where: a raw filter needs an admin key")
    given = flags(options)
    if body.job is not None:
        return cfg.job(body.job, given)
    assert body.kind is not None
    return cfg.adhoc(body.kind, given)


def stored(body: RunCreate) -> dict[str, Any]:
    """What the queue keeps of a request (to resolve it again in the worker)."""
    return {
        "job": body.job,
        "kind": body.kind,
        "options": body.options.model_dump(exclude_none=True, by_alias=True),
    }


def from_stored(request: dict[str, Any]) -> RunCreate:
    """The request as the queue kept it."""
    return RunCreate.model_validate(request)
