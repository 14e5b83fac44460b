"""The dashboard's charts, as shapes the templates draw as SVG (no chart library, no script):
rows committed over time per read stream, the phase timeline of a run, and the lineage graph
around a run's target."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bq2pg.errors import ConfigError
from bq2pg.lineage import graph as lineage_graph
from bq2pg.state import queue as q

PALETTE = ("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777")


def short_stream(name: str) -> str:
    """A read stream's short name: the end of its path (``replay:`` kept: replayed rows)."""
    return ("replay:" if name.startswith("replay:") else "") + name.rsplit("/", 1)[-1][-12:]


def chart(chunks: list[dict[str, Any]], target: str, started: str | None) -> dict[str, Any] | None:
    """Rows committed over time per read stream (the slope is the stream's throughput)."""
    if not chunks:
        return None
    parent = target.rsplit(".", 1)[-1]
    times = [dt.datetime.fromisoformat(c["committed_at"]) for c in chunks]
    start = min([*times, *([dt.datetime.fromisoformat(started)] if started else [])])
    lines: dict[str, list[tuple[float, int]]] = {}
    for at, chunk in sorted(zip(times, chunks, strict=True), key=lambda pair: pair[0]):
        rows = chunk["rows"] if isinstance(chunk["rows"], dict) else {}
        line = lines.setdefault(chunk["stream"], [(0.0, 0)])
        done = int(rows.get(parent, 0)) + int(chunk["dead_letters"] or 0)
        line.append(((at - start).total_seconds(), line[-1][1] + done))
    width, height = 600.0, 180.0
    longest = max(p[0] for line in lines.values() for p in line) or 1.0
    most = max(line[-1][1] for line in lines.values()) or 1
    series = [
        {
            "stream": short_stream(stream), "full": stream, "rows": line[-1][1],
            "color": PALETTE[i % len(PALETTE)],
            "rate": line[-1][1] / line[-1][0] if line[-1][0] > 0 else None,
            "points": " ".join(f"{t / longest * width:.1f},{height - r / most * height:.1f}"
                               for t, r in line),
        }
        for i, (stream, line) in enumerate(sorted(lines.items()))
    ]  # fmt: skip
    return {"series": series, "seconds": longest, "rows": most, "width": width, "height": height}


def timeline(events: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's statuses and phases, each with its start (from the first) and duration."""
    marks = [(e["at"], str(e["data"].get("phase") or e["data"].get("status")), e["event"])
             for e in events if e["event"] in ("status", "phase")]  # fmt: skip
    if not marks:
        return []
    final = run["status"] in q.FINAL
    end = (dt.datetime.fromisoformat(run["finished_at"]) if final and run["finished_at"]
           else dt.datetime.now(dt.UTC))  # fmt: skip
    end = max(end, marks[-1][0])
    total = max((end - marks[0][0]).total_seconds(), 1e-3)
    found = []
    for i, (at, label, kind) in enumerate(marks):
        until = marks[i + 1][0] if i + 1 < len(marks) else (at if final else end)
        offset, length = (at - marks[0][0]).total_seconds(), (until - at).total_seconds()
        found.append({"label": label, "kind": kind, "offset": offset, "duration": length,
                      "x": 100 * offset / total, "w": max(100 * length / total, 0.3),
                      "color": PALETTE[i % len(PALETTE)]})  # fmt: skip
    return found


def lineage(database: str, target: str) -> dict[str, Any] | None:
    """The lineage around a run's target: boxes in columns by distance from the sources,
    arrows between them, and each arrow's columns."""
    try:
        view = lineage_graph.load(database).around(target, "both")
    except ConfigError:
        return None
    pairs = view.pairs()
    depth = dict.fromkeys(view.datasets(), 0)
    for _ in depth:  # longest path from a source; len(depth) passes settle any DAG
        for source, sink in pairs:
            depth[sink] = max(depth[sink], depth[source] + 1)
    columns: dict[int, list[lineage_graph.Dataset]] = {}
    for dataset, level in depth.items():
        columns.setdefault(level, []).append(dataset)
    box_w, box_h, gap_x, gap_y = 220, 34, 70, 14
    place = {d: (level * (box_w + gap_x), row * (box_h + gap_y))
             for level, found in columns.items() for row, d in enumerate(found)}  # fmt: skip
    nodes = [{"x": x, "y": y, "id": d.id, "label": d.id if len(d.id) <= 28 else "…" + d.id[-27:],
              "focus": d in view.focus} for d, (x, y) in place.items()]  # fmt: skip
    edges = [{"x1": place[s][0] + box_w, "y1": place[s][1] + box_h / 2, "x2": place[t][0] - 4,
              "y2": place[t][1] + box_h / 2} for s, t in pairs]  # fmt: skip
    links = [{"source": s.id, "target": t.id,
              "table": next((k for k in found if not k.target_column), None),
              "columns": [k for k in found if k.target_column]}
             for (s, t), found in pairs.items()]  # fmt: skip
    return {"nodes": nodes, "edges": edges, "links": links, "box_w": box_w, "box_h": box_h,
            "width": (max(columns) + 1) * (box_w + gap_x) - gap_x,
            "height": max(len(c) for c in columns.values()) * (box_h + gap_y) - gap_y}  # fmt: skip
