"""The configuration as the commands use it: :func:`load` once, then resolve a job (its
values and their origins), its target, its source and its budget.

:meth:`Config.job` puts the layers of :mod:`bq2pg.config.file` in order for one job; a
command run without a named job (``bq2pg copy …``) is resolved the same way without the job
layers (:meth:`Config.adhoc`). ``bq2pg config show`` prints :meth:`Config.show`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bq2pg.config import file, model
from bq2pg.config.file import BUILTIN, Layer, Origin, Resolved
from bq2pg.config.secrets import has_reference, redact
from bq2pg.errors import ConfigError, ConfigFileError

#: Keys whose literal values are secrets (shown as ``***``; a reference is shown as written).
SECRET_KEYS = frozenset({"password"})
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|=", re.I)


@dataclass(frozen=True)
class Target:
    """A resolved target: its connection parts (secrets still references) and their origin."""

    name: str | None
    url: str | None
    params: dict[str, str]
    origin: Origin


@dataclass
class Config:
    """The layers of one configuration: the file, the chosen environment, the variables."""

    path: Path | None
    environment: str | None
    base: Layer
    env_section: Layer
    env_vars: Layer

    def names(self, section: str) -> list[str]:
        found: dict[str, None] = {}
        for layer in (self.base, self.env_section, self.env_vars):
            found.update(dict.fromkeys(layer.get(section) or {}))
        return list(found)

    def section(self, section: str, name: str) -> tuple[dict[str, Any], dict[str, Origin]]:
        """``targets.NAME`` / ``sources.NAME`` / ``budget`` merged over the layers."""
        values: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        key = (section, name) if name else (section,)
        for layer in (self.base, self.env_section, self.env_vars):
            for k, v in (layer.get(*key) or {}).items():
                if v is not None:
                    values[k], origins[k] = v, layer.origins.get((*key, k), BUILTIN)
        return values, origins

    def _layers(self, name: str | None) -> list[tuple[Layer, tuple[str, ...]]]:
        jobs = [("jobs", name)] if name else []
        order: list[tuple[Layer, tuple[str, ...]]] = []
        for layer in (self.base, self.env_section, self.env_vars):
            order += [(layer, ("defaults",)), *((layer, k) for k in jobs)]
        return order

    def job(self, name: str, flags: Mapping[str, Any] | None = None) -> Resolved:
        """The named job's values and origins. Raises ConfigError for an unknown job."""
        if name not in self.names("jobs"):
            known = self.names("jobs")
            where = f"in {self.path}" if self.path else "(no configuration file was found)"
            raise ConfigError(
                f"no job named {name!r} {where}"
                + (f"; jobs: {', '.join(known)}" if known else "")
                + file.did_you_mean(name, known)
            )
        kind = None
        for layer, key in self._layers(name):
            kind = (layer.get(*key) or {}).get("kind") or kind
        if kind not in ("copy", "patents"):
            raise ConfigFileError(f"{self.path}: jobs.{name}: kind is missing (copy or patents)")
        return self._resolve(name, kind, flags or {})

    def adhoc(self, kind: model.Kind, flags: Mapping[str, Any] | None = None) -> Resolved:
        """A command's values without a named job: defaults, variables and flags."""
        return self._resolve(None, kind, flags or {})

    def _resolve(self, name: str | None, kind: model.Kind, flags: Mapping[str, Any]) -> Resolved:
        keys = model.KIND_KEYS[kind]
        values: dict[str, Any] = {k: v for k, v in model.BUILTIN[kind].items() if v is not None}
        origins = dict.fromkeys(values, BUILTIN)
        for layer, key in self._layers(name):
            for k, v in (layer.get(*key) or {}).items():
                if v is not None and k in keys and k != "kind":
                    values[k], origins[k] = v, layer.origins.get((*key, k), BUILTIN)
        for k, v in flags.items():
            if v is not None:
                values[k], origins[k] = v, Origin("flag", "--" + k.replace("_", "-"))
        source, source_origins = self.section("sources", values.get("bigquery", "default"))
        for k in (*file.SOURCE_OVERRIDES, "credentials"):
            if values.get(k) is None and source.get(k) is not None:
                values[k], origins[k] = source[k], source_origins[k]
        budget, budget_origins = self.section("budget", "")
        for k in ("max_bytes", "max_usd", "price_per_tib_usd"):
            if values.get(k) is None and budget.get(k) is not None:
                values[k], origins[k] = budget[k], budget_origins[k]
        return Resolved(name, kind, _typed_all(values), origins)

    def target(self, value: str | None) -> Target | None:
        """The target a job's ``target`` names: a ``targets`` entry, or a URL / conninfo."""
        if value is None:
            return None
        if value in self.names("targets"):
            values, origins = self.section("targets", value)
            url = values.pop("url", None)
            params = {k: str(v) for k, v in values.items()}
            origin = origins.get("url") or next(iter(origins.values()), BUILTIN)
            return Target(value, url, params, origin)
        if _URL.search(value):
            return Target(None, value, {}, BUILTIN)
        known = self.names("targets")
        raise ConfigError(
            f"no target named {value!r}"
            + (f"; targets: {', '.join(known)}" if known else " (no targets are configured)")
            + file.did_you_mean(value, known)
            + "; or give a postgresql:// URL"
        )

    def show(self, flags: Mapping[str, Any] | None = None) -> list[tuple[str, str, str]]:
        """Every resolved value as (key, value, origin), secrets redacted."""
        rows: list[tuple[str, str, str]] = [("environment", str(self.environment), "")]
        for section in ("targets", "sources"):
            for name in self.names(section):
                values, origins = self.section(section, name)
                for k, v in values.items():
                    rows.append((f"{section}.{name}.{k}", display(k, v), str(origins[k])))
        values, origins = self.section("budget", "")
        rows += [(f"budget.{k}", display(k, v), str(origins[k])) for k, v in values.items()]
        for name in self.names("jobs"):
            job = self.job(name, flags)
            kinds = [
                (lay, key) for lay, key in self._layers(name) if (lay.get(*key) or {}).get("kind")
            ]
            kind_origin = (
                kinds[-1][0].origins.get((*kinds[-1][1], "kind"), BUILTIN) if kinds else BUILTIN
            )
            rows.append((f"jobs.{name}.kind", job.kind, str(kind_origin)))
            for k, v in sorted(job.values.items()):
                rows.append(
                    (f"jobs.{name}.{model.key_name(k)}", display(k, v), str(job.origins[k]))
                )
        return rows


def _typed_all(values: dict[str, Any]) -> dict[str, Any]:
    """Values from variables and flags arrive as text: coerce them to the keys' types."""
    extra = {k: values.pop(k) for k in ("credentials", "price_per_tib_usd") if k in values}
    checked = model.JobOptions.model_validate(values)
    return {k: getattr(checked, "schema_" if k == "schema" else k) for k in values} | extra


def display(key: str, value: Any) -> str:
    """A value as ``config show`` prints it: secrets as ``***`` unless they are references."""
    text = str(value)
    if key in SECRET_KEYS and not has_reference(text):
        return "***"
    return redact(text)


def load(
    config: str | os.PathLike[str] | None = None,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the configuration file (if any), choose the environment, read the variables, and
    check everything. Raises ConfigFileError naming the file, line and key of each problem."""
    environ = os.environ if environ is None else environ
    path = file.find(config, environ)
    base = file.read_yaml(path) if path else Layer()
    problems = file.check_keys(base) + file.check_types(base)
    if problems:
        raise ConfigFileError("invalid configuration:\n  " + "\n  ".join(problems))
    env = env or environ.get("BQ2PG_ENV") or None
    environments = base.get("environments") or {}
    env_section = Layer()
    if env is not None:
        if env not in environments:
            raise ConfigFileError(
                f"no environment {env!r} in {path or 'the configuration (no file found)'}"
                + (f"; environments: {', '.join(environments)}" if environments else "")
                + file.did_you_mean(env, list(environments))
            )
        prefix = ("environments", env)
        env_section = Layer(
            environments[env] or {},
            {k[2:]: o for k, o in base.origins.items() if k[:2] == prefix},
        )
    names = {s: list(base.get(s) or {}) + list(env_section.get(s) or {}) for s in model.SECTIONS}
    env_vars = file.env_layer(environ, names)
    problems = file.check_keys(env_vars) + file.check_types(env_vars)
    if problems:
        raise ConfigFileError("invalid environment variables:\n  " + "\n  ".join(problems))
    loaded = Config(path, env, base, env_section, env_vars)
    check_references(loaded)
    return loaded


def check_references(config: Config) -> None:
    """Every job has a kind, only its kind's keys, and a target that exists."""
    problems: list[str] = []
    for name in config.names("jobs"):
        kinds = [(layer.get(*key) or {}).get("kind") for layer, key in config._layers(name)]
        kind = next((k for k in reversed(kinds) if k), None)
        place = file.where(config.base, ("jobs", name), str(config.path))
        if kind is None:
            problems.append(f"{place}: jobs.{name}: kind is missing (copy or patents)")
            continue
        other = "patents" if kind == "copy" else "copy"
        wrong = [
            f"{file.where(layer, (*key, k))}: jobs.{name}.{k}: a key of {other} jobs, and "
            f"jobs.{name} is a {kind} job"
            for layer, key in config._layers(name)
            if key[0] == "jobs"
            for k in layer.get(*key) or {}
            if k not in model.KIND_KEYS[kind]
        ]
        problems += wrong
        target = None if wrong else config.job(name).values.get("target")
        if target is not None:
            try:
                config.target(target)
            except ConfigError as exc:
                origin = config.job(name).origins["target"]
                problems.append(f"{origin}: jobs.{name}.target: {exc}")
    if problems:
        raise ConfigFileError("invalid configuration:\n  " + "\n  ".join(problems))
