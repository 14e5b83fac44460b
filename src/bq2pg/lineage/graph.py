"""The lineage graph of recorded runs and exports: BigQuery tables and fields, to PostgreSQL
tables and columns, to exported files, walked in either direction and drawn as text, Mermaid,
Graphviz dot or JSON (``bq2pg lineage``).

A dataset is named as OpenLineage names it, shown as ``bigquery:project.dataset.table``,
``postgres://host:port/database.schema.table`` or ``file:/path``. Walking upstream from a table
follows the links into it, then into their sources, and so on; downstream the other way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bq2pg.errors import ConfigError
from bq2pg.postgres import connection
from bq2pg.state import lineage as stored
from bq2pg.state import schema

Direction = Literal["upstream", "downstream", "both"]
Format = Literal["text", "mermaid", "dot", "json"]
FORMATS: tuple[Format, ...] = ("text", "mermaid", "dot", "json")
#: Tables listed as examples when a name matches none.
_EXAMPLES = 5


@dataclass(frozen=True, order=True)
class Dataset:
    """A table or file, by its OpenLineage namespace and name."""

    namespace: str
    name: str

    @property
    def id(self) -> str:
        """How it is shown: ``namespace/name`` for URL namespaces, else ``namespace:name``."""
        return f"{self.namespace}{'/' if '://' in self.namespace else ':'}{self.name}"


@dataclass(frozen=True)
class Link:
    """A target column (or, with no ``target_column``, the table) and what it is made from."""

    source: Dataset
    source_fields: tuple[str, ...]
    target: Dataset
    target_column: str
    transformation: str
    description: str = ""


@dataclass(frozen=True)
class View:
    """The part of the graph around ``focus``: the links walked, in order."""

    focus: tuple[Dataset, ...]
    direction: Direction
    links: tuple[Link, ...]

    def datasets(self) -> list[Dataset]:
        """The focus, then every dataset the links touch, in order of appearance."""
        seen = dict.fromkeys(self.focus)
        for link in self.links:
            seen.setdefault(link.source)
            seen.setdefault(link.target)
        return list(seen)

    def pairs(self) -> dict[tuple[Dataset, Dataset], list[Link]]:
        """The links grouped by (source, target) dataset, table-level link first."""
        out: dict[tuple[Dataset, Dataset], list[Link]] = {}
        for link in self.links:
            out.setdefault((link.source, link.target), []).append(link)
        for links in out.values():
            links.sort(key=lambda link: link.target_column != "")
        return out


class Graph:
    """All current links (``state.lineage.edges``)."""

    def __init__(self, links: Iterable[Link]) -> None:
        self.links = list(links)

    @classmethod
    def from_edges(cls, edges: Iterable[stored.Edge]) -> Graph:
        return cls(
            Link(
                Dataset(e.source_namespace, e.source_name),
                tuple(e.source_fields),
                Dataset(e.target_namespace, e.target_name),
                e.target_column,
                e.transformation,
                e.description or "",
            )
            for e in edges
        )

    def datasets(self) -> list[Dataset]:
        return sorted({d for link in self.links for d in (link.source, link.target)})

    def find(self, table: str) -> list[Dataset]:
        """The datasets ``table`` names: ``schema.table``, ``database.schema.table``,
        ``project.dataset.table``, a file's path or name, or a dataset as shown.

        Raises:
            ConfigError: no dataset with lineage has that name.
        """
        spec = table.strip()
        known = self.datasets()
        found = [d for d in known if spec in (d.id, d.name)]
        if not found:
            lowered = spec.lower()
            found = [
                d
                for d in known
                if d.namespace.startswith("postgres")
                and lowered in (d.name.lower(), d.name.lower().partition(".")[2])
            ]
        if not found and (known_files := [d for d in known if d.namespace == "file"]):
            resolved = str(Path(spec).expanduser().resolve())
            found = [d for d in known_files if d.name == resolved or Path(d.name).name == spec]
        if not found:
            examples = ", ".join(d.id for d in known[:_EXAMPLES]) or "none yet"
            raise ConfigError(
                f"no lineage is recorded for {table!r}: give SCHEMA.TABLE, DATABASE.SCHEMA.TABLE, "
                f"PROJECT.DATASET.TABLE or a file of a recorded export (recorded: {examples})"
            )
        return found

    def upstream(self, table: str) -> View:
        """Everything ``table`` is made from, transitively (export <- PostgreSQL <- BigQuery)."""
        return self.around(table, "upstream")

    def downstream(self, table: str) -> View:
        """Everything made from ``table``, transitively (BigQuery -> PostgreSQL -> export)."""
        return self.around(table, "downstream")

    def around(self, table: str, direction: Direction = "both") -> View:
        """The links around ``table`` in data-flow order: the farthest sources first, then
        the table's own inputs, then what is made from it, nearest first."""
        focus = self.find(table)
        order: list[int] = []
        if direction in ("upstream", "both"):
            for layer in reversed(self._walk(focus, upstream=True)):
                order += layer
        if direction in ("downstream", "both"):
            for layer in self._walk(focus, upstream=False):
                order += layer
        return View(tuple(focus), direction, tuple(self.links[i] for i in dict.fromkeys(order)))

    def _walk(self, start: Sequence[Dataset], *, upstream: bool) -> list[list[int]]:
        """The links reached from ``start``, one list per step away (link indexes)."""
        layers: list[list[int]] = []
        seen = set(start)
        frontier = set(start)
        while frontier:
            layer, reached = [], set()
            for i, link in enumerate(self.links):
                near, far = (link.target, link.source) if upstream else (link.source, link.target)
                if near in frontier:
                    layer.append(i)
                    if far not in seen:
                        reached.add(far)
            layers.append(layer)
            seen |= reached
            frontier = reached
        return layers


def load(database_url: str) -> Graph:
    """The graph of the lineage recorded in ``database_url``'s state tables."""
    with connection.session(database_url, "reading lineage") as conn:
        schema.ensure(conn)
        return Graph.from_edges(stored.edges(conn))


def render(view: View, fmt: Format = "text") -> str:
    """``view`` as ``text``, ``mermaid`` (flowchart), ``dot`` (Graphviz) or ``json``."""
    renderers = {"text": text, "mermaid": mermaid, "dot": dot, "json": as_json}
    if fmt not in renderers:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return renderers[fmt](view)


def text(view: View) -> str:
    """One block per (source, target) pair: the table's link, then each column's."""
    focus = ", ".join(d.id for d in view.focus)
    lines = [f"lineage of {focus} ({view.direction})"]
    pairs = view.pairs()
    if not pairs:
        lines.append(f"  no {view.direction} lineage recorded")
    for (source, target), links in pairs.items():
        lines.append("")
        table = next((link for link in links if not link.target_column), None)
        how = f"  [{table.transformation}: {table.description}]" if table else ""
        lines.append(f"{source.id} -> {target.id}{how}")
        columns = [link for link in links if link.target_column]
        width = max((len(link.target_column) for link in columns), default=0)
        for link in columns:
            sources = ", ".join(link.source_fields) or "(no source field)"
            detail = f" {link.description}" if link.description else ""
            lines.append(
                f"  {link.target_column:<{width}} <- {sources}  [{link.transformation}]{detail}"
            )
    return "\n".join(lines)


def _nodes(view: View) -> dict[Dataset, dict[str, str]]:
    """Node ids: ``dN`` for each dataset, ``dNcM`` for each of its fields or columns."""
    ids = {d: f"d{i}" for i, d in enumerate(view.datasets())}
    nodes: dict[Dataset, dict[str, str]] = {d: {} for d in ids}
    for link in view.links:
        if not link.target_column:
            continue
        for f in link.source_fields:
            nodes[link.source].setdefault(f, f"{ids[link.source]}c{len(nodes[link.source])}")
        columns = nodes[link.target]
        columns.setdefault(link.target_column, f"{ids[link.target]}c{len(columns)}")
    return {d: {"": ids[d], **columns} for d, columns in nodes.items()}


def _mermaid_label(label: str) -> str:
    return '"' + label.replace('"', "#quot;") + '"'


def mermaid(view: View) -> str:
    """A Mermaid ``flowchart LR``: a subgraph per dataset holding its columns; ``==>`` between
    tables, ``-->`` between columns, labelled with the transformation."""
    nodes = _nodes(view)
    lines = ["flowchart LR"]
    for dataset, columns in nodes.items():
        lines.append(f"    subgraph {columns['']}[{_mermaid_label(dataset.id)}]")
        lines += [
            f"        {node}[{_mermaid_label(name)}]" for name, node in columns.items() if name
        ]
        lines.append("    end")
    for link in view.links:
        source, target = nodes[link.source], nodes[link.target]
        if not link.target_column:
            lines.append(f"    {source['']} ==>|{link.transformation}| {target['']}")
            continue
        lines += [
            f"    {source[f]} -->|{link.transformation}| {target[link.target_column]}"
            for f in link.source_fields
        ]
    return "\n".join(lines)


def _dot_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(view: View) -> str:
    """A Graphviz ``digraph``: a cluster per dataset with a node for the table and one per
    column; bold edges between tables, plain ones between columns."""
    nodes = _nodes(view)
    lines = ["digraph lineage {", "    rankdir=LR;", "    node [shape=box, fontsize=10];"]
    for dataset, columns in nodes.items():
        lines.append(f"    subgraph cluster_{columns['']} {{")
        lines.append(f"        label={_dot_string(dataset.id)};")
        lines.append(f"        {columns['']} [label={_dot_string(dataset.name)}, shape=folder];")
        lines += [
            f"        {node} [label={_dot_string(name)}];" for name, node in columns.items() if name
        ]
        lines.append("    }")
    for link in view.links:
        source, target = nodes[link.source], nodes[link.target]
        label = _dot_string(link.transformation)
        if not link.target_column:
            lines.append(f"    {source['']} -> {target['']} [label={label}, style=bold];")
            continue
        lines += [
            f"    {source[f]} -> {target[link.target_column]} [label={label}];"
            for f in link.source_fields
        ]
    lines.append("}")
    return "\n".join(lines)


def as_json(view: View) -> str:
    """``{"focus", "direction", "datasets", "links"}``; a table-level link has
    ``"target_column": null``."""
    return json.dumps(
        {
            "focus": [d.id for d in view.focus],
            "direction": view.direction,
            "datasets": [
                {"id": d.id, "namespace": d.namespace, "name": d.name} for d in view.datasets()
            ],
            "links": [
                {
                    "source": link.source.id,
                    "source_fields": list(link.source_fields),
                    "target": link.target.id,
                    "target_column": link.target_column or None,
                    "transformation": link.transformation,
                    "description": link.description or None,
                }
                for link in view.links
            ],
        },
        indent=2,
    )
