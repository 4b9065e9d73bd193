"""Reference policy: Spinnaker canary analysis judged by Kayenta's NetflixACAJudge.

What it imitates, and from which sources (spinnaker/kayenta):

* ``kayenta-judge/.../NetflixACAJudge.scala``: per metric, NaN values are removed
  (``nanStrategy`` "remove", also the parser's fallback), outliers are removed with
  ``IQRDetector(factor = 3.0, reduceSensitivity = true)``, and the metric is classified
  by ``MannWhitneyClassifier(tolerance = 0.25, confLevel = 0.98, effectSizeThresholds,
  criticalThresholds)`` with the per-metric ``direction`` and ``critical`` flags.
* ``kayenta-judge/.../detectors/IQRDetector.scala``: a value is an outlier when it lies
  outside ``[min(p1, Q1 - 3 IQR), max(p99, Q3 + 3 IQR)]``, percentiles estimated the R-7
  way (``DescriptiveStatistics.percentile``), which is numpy's default.
* ``kayenta-judge/.../classifiers/metric/MannWhitneyClassifier.scala``:

  - either arm empty -> ``Nodata`` (critical if the metric is critical);
  - the two samples identical as multisets, or a single distinct value overall -> ``Pass``;
  - both arms degenerate (one distinct value each) -> Gaussian noise with standard
    deviation ``1e-5 x value`` is added before the test. Kayenta draws it at random;
    here a fixed table of standard normal draws is used so the policy stays
    deterministic;
  - Mann-Whitney U test of experiment (candidate) against control (baseline) with a
    confidence interval for the location shift ``experiment - control``;
  - **the allowed-shift bounds are ``+/- tolerance x |HL estimate of the shift|``**, not a
    fraction of the baseline's level: ``calculateBounds`` takes ``abs(testResult.estimate)``
    where ``estimate`` is the Hodges-Lehmann shift estimate returned by the test;
  - ``High`` when direction is increase/either, the interval's lower end is above
    ``+tolerance x |estimate|`` and the mean ratio (experiment/control, ``1.0`` when the
    control mean is 0, NaN when the experiment mean is 0) is at least ``allowedIncrease``
    (default 1.0); ``Low`` symmetrically with the upper end below
    ``-tolerance x |estimate|`` and the ratio at most ``allowedDecrease`` (default 1.0);
    otherwise ``Pass``. A critical metric classified High/Low is a critical failure when
    the ratio passes ``criticalIncrease``/``criticalDecrease`` (defaults 1.0, i.e. always);
  - a failure inside the test (all observations tied) is ``Error``, which the scorer
    neither counts as data nor as Nodata.
* ``kayenta-mannwhitney/.../MannWhitney.scala``: the interval is R's asymptotic
  ``wilcox.test(conf.int = TRUE, correct = TRUE)`` interval, used for every sample size:
  the roots in ``mu`` of ``(dz - 0.5 sign(dz)) / sigma - zq`` (tie-corrected sigma), with
  the data range ``[min(x) - max(y), max(x) - min(y)]`` returned when the root lies
  outside it. That function of ``mu`` is a step function that changes only at the
  pairwise differences, so its roots are found exactly here from the sorted pairwise
  differences instead of with Brent's solver (which converges to the same jump point).
  When the function is exactly zero on a whole interval (only possible for the point
  estimate), the solver would return some point of it; this returns the median of the
  pairwise differences, the classic Hodges-Lehmann estimate, which lies in that interval.
* ``kayenta-judge/.../scorers/WeightedSumScorer.scala``: any critical metric that is not
  ``Pass`` (High, Low or Nodata) -> score 0; 50% or more metrics ``Nodata`` -> score 0;
  otherwise 100 x Pass / (Pass + High + Low) in one group (all metrics in a single
  group; a group without data counts as 100), rounded to two decimals.
* ``ThresholdScoreClassifier`` and Spinnaker's canary stage: every interval is judged over
  the data from the start of the analysis to the end of the interval (no lookback); an
  interval scoring below ``marginal`` fails the canary at once; at the end of the
  lifetime the last score must be ``>= pass`` (``score >= passThreshold`` in the
  classifier) to succeed, otherwise it fails.

Data points: one per tick and arm, from that tick's increments (the replay's
observations at the plan's weights: a Spinnaker pipeline's stages have fixed weights and
durations), the way a Prometheus query with a step equal to the tick would give them. A
tick in which an arm had no requests gives that arm no data point for any metric (the
query is NaN and ``nanStrategy`` "remove" drops it); a tick without a P99 or without
histogram observations gives no point for those metrics only. ``p99-ms`` is
``histogram_quantile(0.99, ...)`` over the tick's request-duration buckets where the
scenario has a latency histogram (what a canary config on a mesh's metrics queries, as
Flagger's builtin does), otherwise the scenario's P99.

``min_points``: Spinnaker's best-practices page asks for at least 50 data points per
metric per canary run; a per-tick series of ~20 ticks never gets there, so that advice
cannot be followed in this benchmark and the judge is run on far smaller samples than
it was designed for. The default of 5 is the smallest per-arm sample for which the 98%
interval is a real interval: with ``n = m = k`` points the largest attainable
``(nm/2 - 0.5) / sqrt(nm (2k + 1) / 12)`` is 2.165 for ``k = 4`` and 2.507 for ``k = 5``,
against the ``z`` of 2.326 the interval needs. Below that Kayenta returns the data range
and the classifier reduces to "the two samples do not overlap (by a margin)", which with
3 points per arm happens by chance in up to 1 case out of 20 per direction and judgement.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from gelu_lab.bench.policies.base import Outcome
from gelu_lab.bench.policies.promql import histogram_quantile, request_duration_p99
from gelu_lab.bench.replay import Replay
from gelu_lab.bench.scenario import Scenario
from gelu_rollout.analysis.observations import ArmObservation

FloatArray = npt.NDArray[np.float64]
Direction = Literal["increase", "decrease", "either"]
Label = Literal["High", "Low", "Pass", "Nodata", "Error"]

NODATA_THRESHOLD_PERCENT = 50.0  # WeightedSumScorer.NODATA_THRESHOLD
IQR_FACTOR = 3.0  # NetflixACAJudge: IQRDetector(factor = 3.0, reduceSensitivity = true)
NOISE_SCALE = 1e-5  # MannWhitneyClassifier.addGaussianNoise scalingFactor

# Fixed standard normal draws standing in for Kayenta's random noise (degenerate samples).
_NOISE = np.random.default_rng(20170801).standard_normal(4096)
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: Direction
    critical: bool


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("error-ratio", "increase", critical=True),
    MetricSpec("p99-ms", "increase", critical=False),
    MetricSpec("nonfinite-per-request", "increase", critical=True),
    MetricSpec("output-p10", "either", critical=False),
    MetricSpec("output-p50", "either", critical=False),
    MetricSpec("output-p90", "either", critical=False),
)


# --- Judge pieces ------------------------------------------------------------------------------


def _percentile_r7(ordered: Sequence[float], p: float) -> float:
    """The R-7 percentile (numpy's default) of already sorted values."""
    h = (len(ordered) - 1) * p / 100.0
    low = math.floor(h)
    if low + 1 >= len(ordered):
        return float(ordered[-1])
    return float(ordered[low] + (h - low) * (ordered[low + 1] - ordered[low]))


def remove_outliers(values: FloatArray) -> FloatArray:
    """``IQRDetector(factor = 3.0, reduceSensitivity = true)`` then drop the outliers."""
    if values.size == 0:
        return values
    ordered = sorted(values.tolist())
    p25 = _percentile_r7(ordered, 25.0)
    p75 = _percentile_r7(ordered, 75.0)
    iqr = p75 - p25
    lower = min(_percentile_r7(ordered, 1.0), p25 - IQR_FACTOR * iqr)
    upper = max(_percentile_r7(ordered, 99.0), p75 + IQR_FACTOR * iqr)
    if ordered[0] >= lower and ordered[-1] <= upper:
        return values
    kept: FloatArray = values[(values >= lower) & (values <= upper)]
    return kept


@dataclass(frozen=True)
class MannWhitneyResult:
    lower: float
    upper: float
    estimate: float


class AllTiedError(ValueError):
    """Kayenta: "cannot compute confidence interval when all observations are tied"."""


def _tie_term(values: FloatArray) -> float:
    """Sum of ``t^3 - t`` over the groups of tied values."""
    return float(sum(t * t * t - t for t in Counter(values.tolist()).values() if t > 1))


def _wilcoxon_z(mu: float, x: FloatArray, y: FloatArray) -> float:
    """``(dz - correction) / sigma`` of Kayenta's ``wilcoxonDiff`` at ``mu`` (x shifted by mu)."""
    n, m = x.size, y.size
    shifted = x - mu
    u = np.count_nonzero(shifted[:, None] > y[None, :]) + 0.5 * np.count_nonzero(
        shifted[:, None] == y[None, :]
    )
    dz = u - n * m / 2.0
    total = n + m
    variance = (n * m / 12.0) * (
        (total + 1) - _tie_term(np.concatenate((shifted, y))) / (total * (total - 1))
    )
    if variance <= 0:
        raise AllTiedError("cannot compute confidence interval when all observations are tied")
    return float((dz - 0.5 * np.sign(dz)) / math.sqrt(variance))


def mann_whitney(
    experiment: FloatArray, control: FloatArray, confidence: float
) -> MannWhitneyResult:
    """Kayenta's ``MannWhitney`` confidence interval and estimate for ``experiment - control``."""
    x, y = experiment, control
    n, m = x.size, y.size
    nm = n * m
    mu_min = float(x.min() - y.max())
    mu_max = float(x.max() - y.min())
    z_at_min = _wilcoxon_z(mu_min, x, y)
    z_at_max = _wilcoxon_z(mu_max, x, y)

    differences = np.sort(np.subtract.outer(x, y).ravel())
    ends = np.flatnonzero(differences[1:] != differences[:-1])
    values = np.append(differences[ends], differences[-1])  # distinct, increasing
    # Strictly between two consecutive distinct differences there is no tie between the
    # shifted experiment and the control: U counts the differences above mu.
    total = n + m
    variance = (nm / 12.0) * ((total + 1) - (_tie_term(x) + _tie_term(y)) / (total * (total - 1)))
    if variance <= 0:
        raise AllTiedError("cannot compute confidence interval when all observations are tied")
    dz = (nm - (ends + 1)) - nm / 2.0  # U = number of differences above mu
    z_between = (dz - 0.5 * np.sign(dz)) / math.sqrt(variance)

    def root(zq: float) -> float:
        if z_at_min - zq <= 0:
            return mu_min
        if z_at_max - zq >= 0:
            return mu_max
        f = z_between - zq
        crossing = np.flatnonzero(f <= 0)
        if crossing.size == 0:
            return float(values[-1])
        first = int(crossing[0])
        if f[first] < 0:
            return float(values[first])
        # f is exactly zero on (values[first], values[last + 1]): a flat root.
        last = first
        while last + 1 < f.size and f[last + 1] == 0:
            last += 1
        low, high = float(values[first]), float(values[last + 1])
        return min(max(float(np.median(differences)), low), high)

    z = float(-ndtri((1.0 - confidence) / 2.0))
    return MannWhitneyResult(lower=root(z), upper=root(-z), estimate=root(0.0))


@dataclass(frozen=True)
class MetricResult:
    name: str
    label: Label
    critical: bool  # a critical failure (the scorer zeroes the score)
    reason: str


def _mean_ratio(control: FloatArray, experiment: FloatArray) -> float:
    """``calculateDeviation``: 1.0 when the control mean is 0, else ``EffectSizes.meanRatio``."""
    control_mean = float(np.mean(control))
    if control_mean == 0.0:
        return 1.0
    experiment_mean = float(np.mean(experiment))
    if experiment_mean == 0.0:
        return math.nan
    return experiment_mean / control_mean


def classify_metric(
    name: str,
    control: FloatArray,
    experiment: FloatArray,
    *,
    direction: Direction = "either",
    critical: bool = False,
    tolerance: float = 0.25,
    confidence: float = 0.98,
    allowed_decrease: float = 1.0,
    allowed_increase: float = 1.0,
    critical_decrease: float = 1.0,
    critical_increase: float = 1.0,
) -> MetricResult:
    """``MannWhitneyClassifier.classify`` on already transformed (NaN- and outlier-free) data."""
    if experiment.size == 0 or control.size == 0:
        return MetricResult(name, "Nodata", critical, f"Missing data for {name}")
    if np.array_equal(np.sort(experiment), np.sort(control)):
        return MetricResult(name, "Pass", False, "The Canary and Baseline data are identical")
    if experiment.min() == experiment.max() == control.min() == control.max():
        return MetricResult(name, "Pass", False, "")
    x, y = experiment, control
    if x.min() == x.max() and y.min() == y.max():
        x = x + _NOISE[: x.size] * (x[0] * NOISE_SCALE)
        y = y + _NOISE[x.size : x.size + y.size] * (y[0] * NOISE_SCALE)
    try:
        result = mann_whitney(x, y, confidence)
    except AllTiedError:
        return MetricResult(name, "Error", False, "Metric Classification Failed")
    deviation = _mean_ratio(y, x)
    bound = tolerance * abs(result.estimate)
    label: Label = "Pass"
    if (
        direction in ("increase", "either")
        and result.lower > bound
        and deviation >= allowed_increase
    ):
        label = "High"
    elif (
        direction in ("decrease", "either")
        and result.upper < -bound
        and deviation <= allowed_decrease
    ):
        label = "Low"
    if label == "Pass":
        return MetricResult(name, "Pass", False, "")
    is_critical = critical and (
        deviation >= critical_increase if label == "High" else deviation <= critical_decrease
    )
    suffix = " (Critical)" if is_critical else ""
    reason = (
        f"{name} was classified as {label}{suffix}: shift CI [{result.lower:.6g}, "
        f"{result.upper:.6g}], estimate {result.estimate:.6g}, mean ratio {deviation:.4g}"
    )
    return MetricResult(name, label, is_critical, reason)


def _round_half_up(value: float, places: int) -> float:
    scale = 10.0**places
    return math.floor(value * scale + 0.5) / scale


def score_results(results: Sequence[MetricResult]) -> tuple[float, str]:
    """``WeightedSumScorer.score`` with every metric in one group."""
    failures = [r for r in results if r.critical and r.label != "Pass"]
    if failures:
        first = failures[0]
        reason = first.reason or f"{first.name} was classified as {first.label} (Critical)"
        return 0.0, f"Canary Failed: {reason}"
    nodata = sum(1 for r in results if r.label == "Nodata")
    if results and nodata / len(results) * 100 >= NODATA_THRESHOLD_PERCENT:
        return 0.0, (
            f"Canary Failed: {NODATA_THRESHOLD_PERCENT:g}% or more metrics returned NODATA"
        )
    passed = sum(1 for r in results if r.label == "Pass")
    counted = sum(1 for r in results if r.label in ("Pass", "High", "Low"))
    score = 100.0 if counted == 0 else passed / counted * 100.0
    failed = ", ".join(f"{r.name}={r.label}" for r in results if r.label in ("High", "Low"))
    return _round_half_up(score, 2), failed


@dataclass(frozen=True)
class Judgement:
    score: float
    results: tuple[MetricResult, ...]
    reason: str


def _arm_points(delta: ArmObservation, bounds: Sequence[float]) -> tuple[float, ...] | None:
    """One data point per metric (NaN: no value) or None when the arm had no requests."""
    if not delta.requests > 0:
        return None
    return (
        delta.failures / delta.requests,
        math.nan if (p99 := request_duration_p99(delta)) is None else p99,
        math.nan if delta.nonfinite is None else delta.nonfinite / delta.requests,
        histogram_quantile(0.10, bounds, delta.histogram),
        histogram_quantile(0.50, bounds, delta.histogram),
        histogram_quantile(0.90, bounds, delta.histogram),
    )


class KayentaStylePolicy:
    """Spinnaker canary analysis with Kayenta's NetflixACAJudge, replayed tick by tick."""

    name = "kayenta-style"

    def __init__(
        self,
        confidence: float = 0.98,
        tolerance: float = 0.25,
        marginal: float = 75.0,
        pass_score: float = 95.0,
        min_points: int = 5,
    ) -> None:
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if not 0 <= marginal <= pass_score <= 100:
            raise ValueError("need 0 <= marginal <= pass_score <= 100")
        if min_points < 1:
            raise ValueError(f"min_points must be >= 1, got {min_points}")
        self.confidence = confidence
        self.tolerance = tolerance
        self.marginal = marginal
        self.pass_score = pass_score
        self.min_points = min_points

    def parameters(self) -> dict[str, object]:
        return {
            "confidence": self.confidence,
            "tolerance": self.tolerance,
            "marginal": self.marginal,
            "pass_score": self.pass_score,
            "min_points": self.min_points,
            "window": "cumulative from the first tick (no lookback)",
            "nan_strategy": "remove",
            "outliers": f"IQR factor {IQR_FACTOR:g}, reduced sensitivity (p1/p99)",
            "effect_size": "mean ratio, allowed and critical increase/decrease 1.0",
            "metrics": [
                f"{m.name} ({m.direction}{', critical' if m.critical else ''})" for m in METRICS
            ],
        }

    def judge(self, control: Sequence[FloatArray], experiment: Sequence[FloatArray]) -> Judgement:
        """One NetflixACAJudge run: ``control``/``experiment`` are per-metric raw series."""
        results: list[MetricResult] = []
        for spec, base, cand in zip(METRICS, control, experiment, strict=True):
            results.append(
                classify_metric(
                    spec.name,
                    remove_outliers(base[~np.isnan(base)]),
                    remove_outliers(cand[~np.isnan(cand)]),
                    direction=spec.direction,
                    critical=spec.critical,
                    tolerance=self.tolerance,
                    confidence=self.confidence,
                )
            )
        score, reason = score_results(results)
        return Judgement(score, tuple(results), reason)

    def run(self, scenario: Scenario) -> Outcome:
        planned = scenario.planned_ticks
        bounds = scenario.histogram_bounds
        base_rows: list[tuple[float, ...]] = []
        cand_rows: list[tuple[float, ...]] = []
        last: Judgement | None = None
        replay = Replay(scenario, START)
        for tick in range(min(planned, len(replay))):
            # The plan's weights: a Spinnaker pipeline's stages are fixed.
            base, cand = replay.observe(tick)
            base_point = _arm_points(base, bounds)
            cand_point = _arm_points(cand, bounds)
            if base_point is not None:
                base_rows.append(base_point)
            if cand_point is not None:
                cand_rows.append(cand_point)
            if len(base_rows) >= self.min_points and len(cand_rows) >= self.min_points:
                base_series = np.asarray(base_rows, dtype=np.float64).T
                cand_series = np.asarray(cand_rows, dtype=np.float64).T
                last = self.judge(list(base_series), list(cand_series))
                if last.score < self.marginal:
                    return Outcome(
                        "rollback",
                        tick,
                        f"score {last.score:g} < marginal {self.marginal:g}: {last.reason}",
                    )
            if tick == planned - 1:
                if last is None:
                    return Outcome(
                        "rollback",
                        tick,
                        f"no judgement: fewer than {self.min_points} data points per arm",
                    )
                if last.score >= self.pass_score:
                    return Outcome(
                        "promote", tick, f"final score {last.score:g} >= pass {self.pass_score:g}"
                    )
                return Outcome(
                    "rollback",
                    tick,
                    f"final score {last.score:g} < pass {self.pass_score:g}: {last.reason}",
                )
        return Outcome("stalled", None, f"scenario ended before planned tick {planned - 1}")
