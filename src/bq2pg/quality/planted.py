"""How well :mod:`bq2pg.quality.anomaly` finds unusual runs: generated histories of daily runs
(volume with weekly seasonality, growth and noise) with planted anomalies — volume drops and
spikes, slowdowns, a column's null rate jumping — and the precision and recall of
:func:`~bq2pg.quality.anomaly.detect` walking them in time order (``python -m bench.anomalies``,
``tests/test_anomaly.py``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np

from bq2pg.quality.anomaly import Settings, detect
from bq2pg.state.anomalies import NULL_FRAC, RunMetrics

#: The kinds of planted anomaly: volume drop and spike, a slowdown, a column's null rate jump.
KINDS = ("drop", "spike", "slowdown", "null_jump")
#: Rows PostgreSQL's ANALYZE samples (300 × default_statistics_target): profiles' null
#: fractions are estimates from that many rows.
ANALYZE_SAMPLE_ROWS = 30_000


_VOLUME = {
    "drop": lambda rng: rng.uniform(0.1, 0.5),
    "spike": lambda rng: rng.uniform(2, 5),
}


class PlantedRun(NamedTuple):
    """A generated run, whether an anomaly was planted in it and of which kind."""

    run: RunMetrics
    planted: bool
    kind: str | None
    #: What the plan estimated (within about 10 % of the run's ordinary rows).
    expected_rows: float


def planted_histories(
    seed: int, histories: int = 10, runs: int = 200, rate: float = 0.04
) -> list[list[PlantedRun]]:
    """Histories of daily runs with anomalies planted in about ``rate`` of them.

    Each history is one job with its own volume (10⁴–10⁷ rows, lognormal noise of 2–8 %,
    growth of up to 0.3 % a run, on half of them weekends at 40–80 % of weekdays), row width,
    throughput, dead letters (none, rare or a few a run), retries, a quality score (half of
    them have a flaky warn rule failing one run in ten) and 2–6 columns' null fractions
    (sampled as ANALYZE does). Planted: rows × 0.1–0.5 (drop) or × 2–5 (spike), duration ×
    3–8 (slowdown), a column's null fraction + 0.15–0.5 (null_jump); the plan's estimate
    keeps the ordinary volume, as the source did not change.
    """
    rng = np.random.default_rng(seed)
    return [_history(rng, index, runs, rate) for index in range(histories)]


def _history(rng: np.random.Generator, index: int, runs: int, rate: float) -> list[PlantedRun]:
    base, growth = 10 ** rng.uniform(4, 7), rng.uniform(0, 0.003)
    weekend = 1.0 if rng.random() < 0.5 else rng.uniform(0.4, 0.8)
    noise, width = rng.uniform(0.02, 0.08), rng.uniform(50, 2000)
    speed, overhead = 10 ** rng.uniform(3.7, 5), rng.uniform(2, 10)
    letters = float(rng.choice([0.0, 0.0, 0.2, 2.0]))
    flaky = rng.random() < 0.5
    columns = [
        (f"public.t{index}.c{i}", 0.0 if rng.random() < 0.4 else rng.uniform(0.001, 0.3))
        for i in range(int(rng.integers(2, 7)))
    ]
    start = datetime(2025, 1, 1, 2, tzinfo=UTC)
    out = []
    for i in range(runs):
        at = start + timedelta(days=i, minutes=float(rng.normal(0, 20)))
        usual = base * (1 + growth) ** i * (weekend if at.weekday() >= 5 else 1.0)
        usual *= math.exp(rng.normal(0, noise))
        kind = str(rng.choice(KINDS)) if rng.random() < rate else None
        rows = round(usual * _VOLUME[kind](rng)) if kind in _VOLUME else round(usual)
        seconds = (overhead + rows / speed) * math.exp(rng.normal(0, 0.1))
        seconds *= rng.uniform(3, 8) if kind == "slowdown" else 1
        metrics = {
            "rows": float(rows),
            "bytes_per_row": width * math.exp(rng.normal(0, 0.01)),
            "duration_seconds": seconds,
            "rows_per_second": rows / seconds,
            "dead_letters": float(rng.poisson(letters)),
            "retries": float(rng.poisson(0.1)),
            "quality_score": 100 * 3 / 4 if flaky and rng.random() < 0.1 else 100.0,
        }
        jumped = int(rng.integers(len(columns))) if kind == "null_jump" else -1
        for c, (name, p) in enumerate(columns):
            sampled = min(rows, ANALYZE_SAMPLE_ROWS)
            value = rng.binomial(sampled, p) / sampled if sampled else 0.0
            value += rng.uniform(0.15, 0.5) if c == jumped else 0.0
            metrics[f"{NULL_FRAC}{name}"] = min(1.0, value)
        run = RunMetrics(f"h{index}-r{i}", at, metrics)
        out.append(PlantedRun(run, kind is not None, kind, usual * math.exp(rng.normal(0, 0.1))))
    return out


@dataclass(frozen=True)
class Evaluation:
    """Precision and recall of :func:`detect` on planted histories (a run is flagged when it
    has a finding)."""

    runs: int
    planted: int
    flagged: int
    true_positives: int
    planted_by_kind: dict[str, int]
    found_by_kind: dict[str, int]
    #: Ordinary runs flagged, by the method of their findings.
    false_positives_by_method: dict[str, int]
    #: Planted, and found, among the first ``min_history`` runs of each history (before the
    #: robust z: only volume is checked there, against the plan's estimate).
    planted_early: int = 0
    found_early: int = 0

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.planted if self.planted else 1.0

    @property
    def recall_by_kind(self) -> dict[str, float]:
        return {kind: self.recall_of(kind) for kind in KINDS}

    @property
    def recall_later(self) -> float:
        """Recall past the first ``min_history`` runs of each history."""
        planted = self.planted - self.planted_early
        return (self.true_positives - self.found_early) / planted if planted else 1.0

    def recall_of(self, kind: str) -> float:
        planted = self.planted_by_kind.get(kind, 0)
        return self.found_by_kind.get(kind, 0) / planted if planted else 1.0


def evaluate(histories: list[list[PlantedRun]], settings: Settings = Settings()) -> Evaluation:
    """Walk each history in time order, judging every run against the runs before it (those
    flagged leave the baseline, as in production), and count what was found."""
    runs = planted = flagged = hits = planted_early = found_early = 0
    planted_by: dict[str, int] = defaultdict(int)
    found_by: dict[str, int] = defaultdict(int)
    false_by: dict[str, int] = defaultdict(int)
    for history in histories:
        seen: list[RunMetrics] = []
        for index, (run, is_planted, kind, expected) in enumerate(history):
            report = detect(run, seen, expected_rows=expected, settings=settings)
            if index < settings.min_history:
                planted_early += is_planted
                found_early += is_planted and report.anomalous
            seen.append(replace(run, anomalous=report.anomalous))
            runs += 1
            planted += is_planted
            flagged += report.anomalous
            hits += is_planted and report.anomalous
            if kind is not None:
                planted_by[kind] += 1
                found_by[kind] += report.anomalous
            elif report.anomalous:
                for method in {f.method for f in report.findings}:
                    false_by[method] += 1
    return Evaluation(
        runs, planted, flagged, hits, dict(planted_by), dict(found_by), dict(false_by),
        planted_early, found_early,
    )  # fmt: skip
