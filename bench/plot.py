"""docs/benchmarks.png: rows/s per contender (flat table) and peak RSS against rows."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import Sample


def plot(samples: list[Sample], memory: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, list[float]] = {}
    for s in samples:
        by.setdefault(s.contender, []).append(s.rows_per_second)
    names = list(by)
    rates = [statistics.median(by[n]) for n in names]
    fig, (bars, rss) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=[1.6, 1])
    colours = ["#1f77b4" if n.startswith("bq2pg") else "#999999" for n in names]
    bars.barh(range(len(names)), rates, color=colours)
    bars.set_yticks(range(len(names)), [n.replace(" (", "\n(", 1) for n in names], fontsize=7)
    bars.invert_yaxis()
    bars.set_xscale("log")
    bars.set_xlabel("rows/s (median, log scale)")
    bars.set_title("Flat table, same rows, same server")
    for i, rate in enumerate(rates):
        bars.text(rate, i, f" {rate:,.0f}", va="center", fontsize=7)
    rows = [m["rows"] for m in memory]
    rss.plot(rows, [m["peak_rss_mib"] for m in memory], marker="o")
    rss.axhline(1024, color="#cc4444", linestyle="--", linewidth=1)
    rss.text(rows[0], 1024, " 1 GiB", color="#cc4444", va="bottom", fontsize=8)
    rss.set_ylim(0, max(1200, *[m["peak_rss_mib"] * 1.1 for m in memory]))
    rss.set_xlabel("publications loaded (patents model)")
    rss.set_ylabel("peak RSS of the loader (MiB)")
    rss.set_title("Memory against rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
