"""Unusual runs: a run's metrics against the history of its job and table (no I/O).

Three checks, each used only once it has the data to be trusted:

* **robust z** per metric, once the metric has ``min_history`` runs of history: Iglewicz and
  Hoaglin's modified z-score 0.6745·(x − median)/MAD. Median and MAD are not dragged by the odd
  outlier the way a mean and a standard deviation are. The volume metrics (rows, duration)
  are judged as logs, with their weekly pattern and their growth taken out (:func:`_calendar`).
* **expected rows** before that: the run's rows against the count the source gave for the
  plan (BigQuery's row count for the filter, or the plan's estimate), so that volume is checked
  from the first run.
* **isolation forest** (scikit-learn) over the run's whole metric vector, once
  ``forest_min_runs`` runs exist; with fewer the report says so instead of guessing.

Runs flagged before are left out of every baseline, so that a bad run does not make the next
one look normal. A lasting change (a table that doubled for good) is therefore flagged until it
becomes a habit: once ``usual_share`` of the latest runs, flagged ones included, were as far out
(3 of 60), it is usual again and its runs rejoin the baseline.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from statistics import median
from typing import Literal

import numpy as np

from bq2pg.state.anomalies import NULL_FRAC, RunMetrics

__all__ = [
    "METRICS", "NULL_FRAC", "Finding", "Metric", "Report", "RunMetrics", "Settings", "detect",
    "metric", "threshold",
]  # fmt: skip

Severity = Literal["error", "warn"]
Method = Literal["robust_z", "expected_rows", "isolation_forest"]
Direction = Literal["up", "down", "both"]

#: Φ⁻¹(0.75): the MAD of a normal distribution is 0.6745 σ (Iglewicz & Hoaglin 1993).
MAD_SCALE = 0.6745
#: √(π/2): the mean absolute deviation of a normal distribution is σ·√(2/π). The spread used
#: when more than half of the history shares one value (MAD 0), as IBM SPSS does.
MEAN_AD_SCALE = 1.2533
#: Asymptotic efficiency of the MAD against the standard deviation under a normal distribution
#: (Rousseeuw & Croux 1993): n runs' MAD is as sure as 0.37 n runs' standard deviation.
MAD_EFFICIENCY = 0.37
#: A weekday pattern is taken out when some weekday's median differs from the overall
#: median by at least this much (log ratio, about 10 %); a smaller one is left to the noise.
SEASON_MIN_EFFECT = 0.10
#: Runs of a weekday needed before its median says anything about that weekday.
SEASON_MIN_PEERS = 2
#: Trees of the isolation forest (scikit-learn's default): a fit on 150 runs takes 0.15 s.
FOREST_TREES = 100
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Metric:
    """How a metric is judged: which way is bad, and the smallest change worth reporting
    (``max(min_change, min_relative × usual)``), which keeps a near-constant history from
    turning a trivial change into a huge z."""

    direction: Direction
    min_change: float = 0.0
    min_relative: float = 0.0
    #: Follows the source's volume: its weekly pattern and growth are taken out first.
    volume: bool = False
    #: Takes few values (counts, scores): one the baseline already holds is not news, whatever
    #: the z (the MAD of a metric that is mostly 0 is 0, and its z meaningless).
    discrete: bool = False


#: The metrics of a run. Faster runs, fewer dead letters or retries, and better quality scores
#: are not anomalies. Runs on shared machines vary by a third in time, so only half as slow
#: again is reported; a retry or two is what the retry policy (up to 8 attempts) is for, and
#: every run reports its dead letters anyway, so only three more than usual is a pattern.
METRICS: dict[str, Metric] = {
    "rows": Metric("both", min_relative=0.02, volume=True),
    "bytes_per_row": Metric("both", min_relative=0.05),
    "duration_seconds": Metric("up", min_change=5.0, min_relative=0.5, volume=True),
    "rows_per_second": Metric("down", min_relative=1 / 3),
    "dead_letters": Metric("up", min_change=3.0, discrete=True),
    "retries": Metric("up", min_change=3.0, discrete=True),
    "quality_score": Metric("down", min_change=1.0, discrete=True),
}
#: A column's null fraction: one percentage point, and a tenth of the usual, is the least
#: change reported (ANALYZE's sample makes 22 % read as 21-23 %).
NULL_FRAC_METRIC = Metric("both", min_change=0.01, min_relative=0.1)
_OTHER_METRIC = Metric("both", min_relative=0.05)


def metric(name: str) -> Metric:
    """How the metric ``name`` is judged."""
    if name.startswith(NULL_FRAC):
        return NULL_FRAC_METRIC
    return METRICS.get(name, _OTHER_METRIC)


@dataclass(frozen=True)
class Finding:
    """One unusual metric of a run (``metric`` "run" for the isolation forest)."""

    metric: str
    value: float | None
    expected: float | None
    #: robust_z: the modified z (None against a constant history); expected_rows: the
    #: relative difference; isolation_forest: the decision function (below 0 is unusual).
    score: float | None
    method: Method
    severity: Severity
    message: str


@dataclass(frozen=True)
class Settings:
    """The thresholds of :func:`detect`; the defaults are what :func:`evaluate` was tuned on."""

    #: Runs of history before a metric gets a robust z (the issue's two weeks of daily runs).
    min_history: int = 14
    #: |modified z| above which a metric is unusual (Iglewicz & Hoaglin's recommendation).
    z_threshold: float = 3.5
    #: The latest non-anomalous runs a metric's baseline holds (two months of daily runs:
    #: long enough for a steady MAD and eight runs per weekday, short enough to follow drift).
    window: int = 60
    #: A value at least as far out as this share of the latest ``window`` runs (flagged ones
    #: included) is the job's habit, not an anomaly: a flaky rule failing one run in ten.
    usual_share: float = 0.05
    #: Rows outside expected × (1 ± this) are unusual; plan estimates from table metadata are
    #: rough, so only a halving or a 1.5× is reported.
    expected_rows_tolerance: float = 0.5
    #: Non-anomalous runs before the isolation forest is fitted: below 100, its 0.5 % tail
    #: (``forest_contamination``) is less than one run.
    forest_min_runs: int = 100
    #: The latest non-anomalous runs the forest is fitted on.
    forest_window: int = 200
    #: The forest's share of unusual training runs: a run is flagged when it scores below all
    #: but 0.5 % of its history. Of the ordinary runs it judged on 10 planted histories,
    #: 'auto' flagged 19 %, 0.01 2.1 %, 0.005 0.7 %; none found an anomaly the robust z missed.
    forest_contamination: float = 0.005
    #: Severity of the findings; "error" blocks publishing like an error rule.
    severity: Severity = "warn"


@dataclass(frozen=True)
class Report:
    """What :func:`detect` found, and why some checks were not made."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def anomalous(self) -> bool:
        return bool(self.findings)

    @property
    def blocking(self) -> bool:
        """A finding of severity error: the run must not publish."""
        return any(f.severity == "error" for f in self.findings)


def detect(
    current: RunMetrics,
    history: list[RunMetrics],
    *,
    expected_rows: float | None = None,
    settings: Settings = Settings(),
) -> Report:
    """The unusual metrics of ``current`` against its job's ``history`` (any order).

    Args:
        current: the run to judge.
        history: earlier runs of the same job and table; anomalous ones are ignored.
        expected_rows: the source's row count for the run (or the plan's estimate), used for
            the volume while ``rows`` has less than ``settings.min_history`` runs of history.
        settings: thresholds.
    """
    ordered = sorted((h for h in history if h.run_id != current.run_id), key=lambda h: h.started_at)
    baseline = [h for h in ordered if not h.anomalous]
    findings: list[Finding] = []
    short: dict[int, list[str]] = defaultdict(list)
    for name, x in sorted(current.metrics.items()):
        values = _values(baseline, name)[-settings.window :]
        if not math.isfinite(x):
            continue
        if len(values) < settings.min_history:
            short[len(values)].append(name)
            continue
        recent = _values(ordered, name)[-settings.window :]
        if found := _robust(name, x, current.started_at, values, recent, settings):
            findings.append(found)
    notes = [
        f"robust z: {n} run(s) of history for {_names(names)}, needs {settings.min_history}"
        for n, names in sorted(short.items())
    ]
    if any("rows" in names for names in short.values()):
        if expected_rows is not None and expected_rows > 0:
            notes.append("volume checked against the source's row count instead")
            if found := _expected(current.metrics["rows"], expected_rows, settings):
                findings.append(found)
        else:
            notes.append("no row count from the source: volume not checked")
    found, note = _forest(current, baseline, settings)
    findings += [found] if found else []
    notes += [note] if note else []
    return Report(findings, notes)


def _values(runs: list[RunMetrics], name: str) -> list[tuple[datetime, float]]:
    """(start, value) of the runs that have a finite ``name``."""
    return [
        (r.started_at, r.metrics[name])
        for r in runs
        if name in r.metrics and math.isfinite(r.metrics[name])
    ]


def _robust(
    name: str,
    x: float,
    at: datetime,
    values: list[tuple[datetime, float]],
    recent: list[tuple[datetime, float]],
    settings: Settings,
) -> Finding | None:
    """A finding when ``x`` is far from the baseline ``values`` in the harmful direction, by
    modified z.

    The threshold grows as the baseline shrinks (:func:`threshold`). Two guards keep it from
    flagging what the job does anyway: a discrete metric's value no further out than some
    baseline run is usual, and so is any value that ``usual_share`` of the ``recent`` runs,
    flagged ones included, reached (else a flaky rule failing one run in ten would be flagged,
    and so left out, for ever). Continuous metrics get no first guard: an anomaly missed once
    (in the first ``min_history`` runs, unjudged) would hide every smaller one after it.
    """
    kind = metric(name)
    offset = 0.0
    if kind.volume:  # as logs: see _calendar
        ys, others, offset = _calendar(values, recent, at)
        y = math.log1p(x) - offset
    else:
        ys, others, y = [v for _, v in values], [v for _, v in recent], x
    centre = median(ys)
    expected = math.expm1(centre + offset) if kind.volume else centre
    change = x - expected
    harmful = {"up": change > 0, "down": change < 0, "both": change != 0}[kind.direction]
    if not harmful or abs(change) < max(kind.min_change, kind.min_relative * abs(expected)):
        return None
    side = 1 if change > 0 else -1
    if kind.discrete and any((v - y) * side >= 0 for v in ys):
        return None
    if sum((v - y) * side >= 0 for v in others) >= settings.usual_share * len(others):
        return None
    spread = _spread(ys, centre)
    z = (y - centre) / spread if spread > 0 else None
    if z is not None and abs(z) < threshold(settings.z_threshold, len(ys)):
        return None
    where = "above" if change > 0 else "below"
    usual = f"the usual {_fmt(name, expected)}"
    if offset:
        usual += f" for a {_DAYS[at.weekday()]}"
    if z is None:  # a constant history: any change past the floors is new
        usual = f"{_fmt(name, expected)}, the value of each of the last {len(ys)} runs"
    how = f" (robust z {z:.1f})" if z is not None else ""
    message = f"{_label(name)} {_fmt(name, x)} is far {where} {usual}{how}"
    score = None if z is None else float(z)
    return Finding(name, float(x), float(expected), score, "robust_z", settings.severity, message)


def threshold(z: float, runs: int) -> float:
    """The |modified z| needed with ``runs`` runs of baseline for the false-alarm rate that
    ``z`` has with an exactly known spread: the Student t quantile with MAD_EFFICIENCY × runs
    degrees of freedom (8.0 at 14 runs, 4.9 at 30, 4.1 at 60 for 3.5).

    A MAD of 14 runs is often a third off; taken at face value, 3.5 flagged 0.43 % of ordinary
    runs' rows on the planted histories (a normal has 0.05 % beyond it), this 0.075 %. The
    quantile is a closed-form normal-to-t approximation, within 2 % above the exact one from 5
    degrees of freedom on (checked against scipy.stats.t).
    """
    df = max(MAD_EFFICIENCY * runs, 1.0)
    return math.sqrt(df * math.expm1(z * z * (df - 5 / 6) / (df - 2 / 3 + 0.11 / df) ** 2))


def _calendar(
    values: list[tuple[datetime, float]], recent: list[tuple[datetime, float]], at: datetime
) -> tuple[list[float], list[float], float]:
    """A volume metric's baseline and recent values as logs (``log1p``) with the weekly
    pattern taken out and the growth carried forward to ``at`` (Theil–Sen: the median of the
    pairwise slopes, which ignores up to 29 % of outliers), and the offset of ``at``'s weekday.

    Volumes vary by factors (a weekend at half volume, growth of some % a day, noise of some
    %), which logs make offsets and slopes; they also put a halving and a doubling equally far
    out. Without the trend a steadily growing table scores about 1.35 at best (its MAD grows
    with the slope), so a 10 % loss could hide in two months of growth.
    """
    logs = [(when, math.log1p(v)) for when, v in values]
    own, offsets = _weekdays(logs, at)
    ys = [v - o for (_, v), o in zip(logs, own, strict=True)]
    days = [(when - at).total_seconds() / 86400 for when, _ in values]
    slope = _theil_sen(days, ys)
    base = [y - slope * d for y, d in zip(ys, days, strict=True)]
    others = [
        math.log1p(v)
        - offsets.get(when.weekday(), 0.0)
        - slope * (when - at).total_seconds() / 86400
        for when, v in recent
    ]
    return base, others, offsets.get(at.weekday(), 0.0)


def _weekdays(
    logs: list[tuple[datetime, float]], at: datetime
) -> tuple[list[float], dict[int, float]]:
    """The weekday offset of each (log) value, and each weekday's (its median less the overall
    median), when the values show a weekly pattern; else offsets of 0 and no weekdays.

    A value's own offset leaves it out (its weekday's other runs only): with two runs a weekday,
    an offset that included the value would halve the spread and double the z.
    """
    none: tuple[list[float], dict[int, float]] = [0.0] * len(logs), {}
    overall = median(v for _, v in logs)
    days: dict[int, list[float]] = defaultdict(list)
    for when, v in logs:
        days[when.weekday()].append(v)
    offsets = {d: median(vs) - overall for d, vs in days.items() if len(vs) >= SEASON_MIN_PEERS}
    if at.weekday() not in offsets or max(abs(o) for o in offsets.values()) < SEASON_MIN_EFFECT:
        return none
    own = []
    for when, v in logs:
        peers = list(days[when.weekday()])
        peers.remove(v)
        own.append(median(peers) - overall if peers else 0.0)
    return own, offsets


def _theil_sen(x: list[float], y: list[float]) -> float:
    """The median of the slopes between every two points with different ``x`` (0 if none)."""
    xs, ys = np.asarray(x), np.asarray(y)
    i, j = np.triu_indices(len(xs), 1)
    dx = xs[j] - xs[i]
    ok = np.abs(dx) > 1e-9
    return float(np.median((ys[j] - ys[i])[ok] / dx[ok])) if ok.any() else 0.0


def _spread(ys: list[float], centre: float) -> float:
    """σ estimated from the MAD, or from the mean absolute deviation when the MAD is 0;
    0 when every value is the same."""
    deviations = [abs(v - centre) for v in ys]
    mad = median(deviations)
    return mad / MAD_SCALE if mad > 0 else MEAN_AD_SCALE * sum(deviations) / len(deviations)


def _expected(rows: float, expected: float, settings: Settings) -> Finding | None:
    """A finding when ``rows`` is outside the tolerance around the source's count."""
    tolerance = settings.expected_rows_tolerance
    if expected * (1 - tolerance) <= rows <= expected * (1 + tolerance):
        return None
    ratio = rows / expected - 1
    how = f"{-ratio:.0%} below" if ratio < 0 else f"{rows / expected:.1f}× above"
    message = (
        f"rows {rows:,.0f} is {how} the {expected:,.0f} expected from the source"
        f" (tolerance ±{tolerance:.0%})"
    )
    return Finding(
        "rows", float(rows), float(expected), float(ratio), "expected_rows", settings.severity,
        message,
    )  # fmt: skip


def _forest(
    current: RunMetrics, baseline: list[RunMetrics], settings: Settings
) -> tuple[Finding | None, str | None]:
    """The isolation forest's finding on ``current``, or a note on why it was not fitted."""
    runs = baseline[-settings.forest_window :]
    if len(runs) < settings.forest_min_runs:
        need = settings.forest_min_runs
        return None, f"isolation forest: {len(runs)} run(s) of history, needs {need}; not evaluated"
    names = [
        n
        for n in sorted(current.metrics)
        if not metric(n).discrete
        and math.isfinite(current.metrics[n])
        and all(n in r.metrics and math.isfinite(r.metrics[n]) for r in runs)
    ]
    columns = [_feature(n, runs, current) for n in names]
    kept = [(n, col, x) for n, (col, x) in zip(names, columns, strict=True) if np.ptp(col) > 0]
    if not kept:
        return None, "isolation forest: no metric varied over the history; not evaluated"
    try:
        from sklearn.ensemble import IsolationForest  # heavy: imported once a forest is needed
    except ImportError:
        return None, (
            "isolation forest: scikit-learn is not installed (pip install 'bq2pg[anomaly]'); "
            "not evaluated"
        )

    train = np.column_stack([col for _, col, _ in kept])
    point = np.array([[x for _, _, x in kept]])
    forest = IsolationForest(
        n_estimators=FOREST_TREES, contamination=settings.forest_contamination, random_state=0
    ).fit(train)
    score = float(forest.decision_function(point)[0])
    if score >= 0:
        return None, None
    furthest = sorted(kept, key=lambda k: -abs(k[2]))[:3]
    listed = ", ".join(f"{n} {x:+.1f}" for n, _, x in furthest)
    message = (
        f"the run as a whole is unlike its last {len(runs)} runs (isolation forest score"
        f" {score:.3f}); furthest from usual, in IQRs: {listed}"
    )
    return Finding("run", None, None, score, "isolation_forest", settings.severity, message), None


def _feature(name: str, runs: list[RunMetrics], current: RunMetrics) -> tuple[np.ndarray, float]:
    """One metric as the forest sees it: the history's values and the current one, in IQRs
    from the median (the forest itself is blind to units; the IQRs make its message readable).

    Volume metrics are taken relative to their weekly pattern and trend first, or the newest
    run of a growing table would always sit at the edge of the history, easy to isolate.
    """
    pairs = [(r.started_at, r.metrics[name]) for r in runs]
    x = current.metrics[name]
    if metric(name).volume:
        _, adjusted, offset = _calendar(pairs, pairs, current.started_at)
        values, x = np.array(adjusted), math.log1p(x) - offset
    else:
        values = np.array([v for _, v in pairs])
    centre = float(np.median(values))
    q75, q25 = np.percentile(values, [75, 25])
    unit = float(q75 - q25) or MEAN_AD_SCALE * float(np.mean(np.abs(values - centre))) or 1.0
    return (values - centre) / unit, (x - centre) / unit


def _names(names: Iterable[str]) -> str:
    listed = list(names)
    return (
        ", ".join(listed)
        if len(listed) <= 4
        else f"{', '.join(listed[:3])} and {len(listed) - 3} more"
    )


def _label(name: str) -> str:
    if name.startswith(NULL_FRAC):
        return f"null fraction of {name.removeprefix(NULL_FRAC)}"
    return name.replace("_", " ")


def _fmt(name: str, value: float) -> str:
    if name.startswith(NULL_FRAC):
        return f"{value:.1%}"
    if name == "duration_seconds":
        return f"{value:,.1f} s"
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.3g}"
