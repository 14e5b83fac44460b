"""Reading ``bq2pg.yaml`` in layers, and where each value came from.

Precedence, lowest first: built-in defaults < the file (its ``defaults``, then the job) < the
chosen environment (its ``defaults``, then the job) < environment variables (``BQ2PG_…``;
nested keys with ``__``, e.g. ``BQ2PG_JOBS__ITEMS__TABLE``) < flags. Every value keeps its
:class:`Origin` (``bq2pg.yaml:12``, ``BQ2PG_STREAMS``, ``--streams``, ``built-in``), which
``bq2pg config show`` prints. The file is found by ``--config``, else ``BQ2PG_CONFIG``, else
``./bq2pg.yaml``, and is optional. An invalid file raises :class:`ConfigFileError` naming the
file, the line and the key; nothing runs then. Secret references (``${file:…}``) stay
references here: they are resolved when a connection is made (``config.secrets``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from bq2pg.config import model
from bq2pg.errors import ConfigFileError

CONFIG_FILE = "bq2pg.yaml"
Key = tuple[str, ...]
#: Variables of the flat form that came before the file (``BQ2PG_STREAMS=4``): job keys.
FLAT_VARIABLES = {
    "BQ2PG_DATABASE_URL": "target", "BQ2PG_PROJECT": "project", "BQ2PG_STREAMS": "streams",
    "BQ2PG_BIGQUERY_ENDPOINT": "bigquery_endpoint", "BQ2PG_EXECUTOR": "executor",
    "BQ2PG_BIGQUERY_STORAGE_ENDPOINT": "bigquery_storage_endpoint", "BQ2PG_EMULATOR": "emulator",
}  # fmt: skip
#: Job keys that override the job's source (``sources.NAME``).
SOURCE_OVERRIDES = ("project", "bigquery_endpoint", "bigquery_storage_endpoint", "emulator")


@dataclass(frozen=True)
class Origin:
    """Where a value came from: ``default``, ``file``, ``env`` or ``flag``, and exactly where."""

    kind: Literal["default", "file", "env", "flag"]
    where: str

    def __str__(self) -> str:
        return self.where


BUILTIN = Origin("default", "built-in")


@dataclass
class Layer:
    """Nested values of one source of settings, and the origin of each leaf."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[Key, Origin] = field(default_factory=dict)

    def get(self, *key: str) -> Any:
        node: Any = self.data
        for k in key:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node


@dataclass(frozen=True)
class Resolved:
    """A job's values after every layer, and where each came from."""

    name: str | None
    kind: model.Kind
    values: dict[str, Any]
    origins: dict[str, Origin]


def find(config: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """The configuration file: ``--config``, else ``BQ2PG_CONFIG``, else ``./bq2pg.yaml``."""
    given = config or environ.get("BQ2PG_CONFIG")
    if given:
        path = Path(given)
        if not path.is_file():
            how = "--config" if config else "BQ2PG_CONFIG"
            raise ConfigFileError(f"{how} names {path}, which is not a file", value=str(path))
        return path
    default = Path(CONFIG_FILE)
    return default if default.is_file() else None


def did_you_mean(word: str, choices: Iterator[str] | list[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_yaml(path: Path) -> Layer:
    """The file's values (keys normalized: ``-`` is ``_``, a job's ``to`` is ``target``) with
    the line of each key. YAML errors and duplicate keys name their line."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) if node is not None else {}
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror}", value=str(path)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigFileError(f"{where}: YAML syntax error: {exc.problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{path}:1: the file must be a mapping of {', '.join(model.TOP_KEYS)}"
        )
    layer = Layer()
    lines: dict[Key, int] = {}
    _lines(node, (), lines, path)
    layer.data = _normalize(data, (), lines, layer.origins, path)
    return layer


def _lines(node: yaml.Node | None, key: Key, out: dict[Key, int], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            child = (*key, str(k.value))
            if child in out:
                raise ConfigFileError(
                    f"{path}:{k.start_mark.line + 1}: {'.'.join(child)}: duplicate key "
                    f"(first at line {out[child]})"
                )
            out[child] = k.start_mark.line + 1
            _lines(v, child, out, path)


def is_name(parent: Key) -> bool:
    """Whether the keys under ``parent`` are names a user chose (of targets, jobs, …)."""
    if parent == ("environments",):
        return True
    if parent and parent[0] == "environments":
        parent = parent[2:]
    return parent in (("targets",), ("sources",), ("jobs",), ("quality",))


def _container(key: Key) -> bool:
    """Whether ``key`` holds keys (a section, a named entry, an environment's section)."""
    return (
        (len(key) == 1 and key[0] in model.TOP_KEYS)
        or is_name(key[:-1])
        or (key[0] == "environments" and len(key) == 3)
    )


def _normalize(
    data: Any, key: Key, lines: dict[Key, int], origins: dict[Key, Origin], path: Path
) -> Any:
    if not isinstance(data, dict) or (key and not _container(key)):
        origins[key] = Origin("file", f"{path}:{lines.get(key, 1)}")
        return data
    out: dict[str, Any] = {}
    for raw, value in data.items():
        written = str(raw)
        name = written
        if not is_name(key):
            name = name.replace("-", "_")
            name = "target" if name == "to" and _job_position(key) else name
        lines.setdefault((*key, name), lines.get((*key, written), 1))
        out[name] = _normalize(value, (*key, name), lines, origins, path)
    origins.setdefault(key, Origin("file", f"{path}:{lines.get(key, 1)}"))
    return out


def _job_position(key: Key) -> bool:
    if key and key[0] == "environments":
        key = key[2:]
    return key == ("defaults",) or (len(key) == 2 and key[0] == "jobs")


def allowed(parent: Key) -> frozenset[str] | None:
    """The keys allowed under ``parent`` (None: names, anything goes)."""
    if parent and parent[0] == "environments":
        if len(parent) == 1:
            return None
        if len(parent) == 2:
            return frozenset(model.SECTIONS)
        parent = parent[2:]
    if parent == ():
        return frozenset(model.TOP_KEYS)
    if is_name(parent):
        return None
    section = parent[0]
    if section in ("defaults", "jobs"):
        return model.JOB_KEYS | {"target"}
    return {
        "targets": model.TARGET_KEYS,
        "sources": model.SOURCE_KEYS,
        "budget": model.BUDGET_KEYS,
        "lineage": model.LINEAGE_KEYS,
        "service": model.SERVICE_KEYS,
    }.get(section, frozenset())


def check_keys(layer: Layer, what: str = "") -> list[str]:
    """Unknown keys of ``layer``, each with its place and a "did you mean"."""
    problems: list[str] = []

    def walk(node: Any, key: Key) -> None:
        ok = allowed(key)
        for k, v in node.items():
            child = (*key, k)
            if ok is not None and k not in ok:
                problems.append(
                    f"{where(layer, child, what)}: {'.'.join(child)}: unknown key"
                    + did_you_mean(k, ok)
                )
            elif isinstance(v, dict) and _container(child):
                walk(v, child)

    walk(layer.data, ())
    return problems


def where(layer: Layer, key: Key, fallback: str = "") -> str:
    """The origin of ``key`` in ``layer`` (or of its nearest parent that has one)."""
    for n in range(len(key), 0, -1):
        found = layer.origins.get(key[:n])
        if found is not None:
            return found.where
    return fallback or "configuration"


def check_types(layer: Layer, what: str = "") -> list[str]:
    """Values of the wrong type, each with its place (pydantic's message)."""
    try:
        model.Document.model_validate(layer.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = tuple(_field_key(str(p)) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                continue  # check_keys says it with a "did you mean"
            problems.append(f"{where(layer, key, what)}: {'.'.join(key)}: {error['msg']}")
        return problems
    return []


def _field_key(part: str) -> str:
    return {"schema_": "schema", "to": "target"}.get(part, part)


def env_layer(environ: Mapping[str, str], names: Mapping[str, list[str]]) -> Layer:
    """The ``BQ2PG_…`` variables as a layer: nested ones (``__``) by their path, the flat ones
    of :data:`FLAT_VARIABLES` as ``defaults``. Names are matched without regard to case, and
    ``_`` matches ``-`` (variables cannot hold ``-``)."""
    layer = Layer()
    for var, value in sorted(environ.items()):
        if not var.startswith("BQ2PG_") or value == "":
            continue  # an empty variable is an unset one
        if var in FLAT_VARIABLES:
            key: Key = ("defaults", FLAT_VARIABLES[var])
        elif "__" in var:
            parts = var.removeprefix("BQ2PG_").lower().split("__")
            if parts[0] in ("jobs", "targets", "sources") and len(parts) >= 2:
                known = {n.lower().replace("-", "_"): n for n in names.get(parts[0], [])}
                parts[1] = known.get(parts[1], parts[1])
            if parts[0] == "environments" or parts[0] not in model.SECTIONS:
                raise ConfigFileError(
                    f"{var}: {parts[0]!r} is not a section ({', '.join(model.SECTIONS)})"
                    + did_you_mean(parts[0], list(model.SECTIONS))
                )
            key = tuple(_field_key(p) for p in parts)
        else:
            continue
        node = layer.data
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = value
        layer.origins[key] = Origin("env", var)
    return layer
