"""Anomaly detection on generated run histories with planted anomalies: precision and recall.

``python -m bench.anomalies [--seed N] [--histories K] [--runs R] [--workers W]`` generates K
histories of R daily runs (:func:`bq2pg.quality.planted.planted_histories`: volume with noise,
growth and weekly patterns, throughput, dead letters, retries, a quality score and null
fractions), plants drops, spikes, slowdowns and null-rate jumps in about 4 % of the runs, and
walks each history in time order through :func:`~bq2pg.quality.anomaly.detect` with the
default settings, as a job's runs would be judged. Histories are spread over W processes (the
isolation forest is refitted for every run past the 100th).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from bq2pg.quality import anomaly, planted
from bq2pg.quality.planted import KINDS, Evaluation, PlantedRun


def _evaluate(histories: list[list[PlantedRun]]) -> Evaluation:
    return planted.evaluate(histories)


def combined(parts: list[Evaluation]) -> Evaluation:
    """One evaluation of the histories that ``parts`` evaluated separately."""

    def total(name: str) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for p in parts:
            counts.update(getattr(p, name))
        return dict(counts)

    return Evaluation(
        runs=sum(p.runs for p in parts),
        planted=sum(p.planted for p in parts),
        flagged=sum(p.flagged for p in parts),
        true_positives=sum(p.true_positives for p in parts),
        planted_by_kind=total("planted_by_kind"),
        found_by_kind=total("found_by_kind"),
        false_positives_by_method=total("false_positives_by_method"),
        planted_early=sum(p.planted_early for p in parts),
        found_early=sum(p.found_early for p in parts),
    )


def run(seed: int, histories: int, runs: int, workers: int) -> Evaluation:
    """Evaluate the default settings on ``histories`` generated from ``seed``."""
    generated = planted.planted_histories(seed, histories=histories, runs=runs)
    with ProcessPoolExecutor(max(1, workers)) as pool:
        return combined(list(pool.map(_evaluate, [[h] for h in generated])))


def table(result: Evaluation) -> str:
    """Precision and recall, overall and per kind, as a markdown table."""
    ordinary = result.runs - result.planted
    false_positives = result.flagged - result.true_positives
    lines = [
        "| planted kind | planted | found | recall |",
        "|---|---:|---:|---:|",
    ]
    for kind in KINDS:
        planted = result.planted_by_kind.get(kind, 0)
        found = result.found_by_kind.get(kind, 0)
        lines.append(f"| {kind} | {planted} | {found} | {result.recall_of(kind):.3f} |")
    lines += [
        f"| **all** | {result.planted} | {result.true_positives} | **{result.recall:.3f}** |",
        "",
        f"- runs: {result.runs:,}; flagged: {result.flagged:,}; "
        f"**precision {result.precision:.3f}**, recall {result.recall:.3f}",
        f"- recall in the first {anomaly.Settings().min_history} runs of a history (volume "
        f"against the plan's estimate only): {result.found_early} of {result.planted_early}; "
        f"after them: {result.recall_later:.3f}",
        f"- ordinary runs flagged: {false_positives} of {ordinary:,} "
        f"({false_positives / ordinary:.2%}); by method: "
        + (
            ", ".join(f"{m} {n}" for m, n in sorted(result.false_positives_by_method.items()))
            or "none"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    """``python -m bench.anomalies``: this section alone."""
    parser = argparse.ArgumentParser(prog="python -m bench.anomalies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--histories", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args.seed, args.histories, args.runs, args.workers)
    seconds = time.perf_counter() - started
    print(f"{args.histories} histories of {args.runs} runs, seed {args.seed} ({seconds:.0f} s)\n")
    print(table(result))


if __name__ == "__main__":
    main()
