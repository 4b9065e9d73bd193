"""What the observers report each tick, and what the gates accumulate from it.

Observers (the Prometheus adapter, the benchmark's scenario replay) report
increments since the previous observation, plus the sliding windows the
burn-rate check needs. The evidence of a step is the running total of those
increments; it is plain data so that it can be stored in the resource's status
and survive an operator restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class WindowCounts:
    """Requests and failures over one sliding window ending now."""

    requests: float
    failures: float


@dataclass(frozen=True)
class ArmObservation:
    """One arm (baseline or candidate) over the last interval.

    ``histogram`` holds per-bucket increments of the model's output histogram
    (not Prometheus' le-cumulative form); ``windows`` maps a window length in
    seconds to the counts over that window.
    """

    requests: float
    failures: float
    nonfinite: float
    histogram: tuple[float, ...]
    p99_ms: float | None
    windows: Mapping[float, WindowCounts] = field(default_factory=dict)


def _bucket_mismatch(new: tuple[float, ...], old: tuple[float, ...]) -> str | None:
    """Why a histogram cannot be added to earlier ones, or None (either may be absent)."""
    if new and old and len(new) != len(old):
        return f"histogram has {len(new)} buckets, earlier ticks had {len(old)}"
    return None


def observation_problem(observation: ArmObservation, totals: ArmTotals) -> str | None:
    """Why an arm's observation cannot be added to its totals, or None if it can.

    Observers are outside the functional core; what they report is checked
    here so a bad scrape is set aside as missing data instead of crashing the
    rollout or corrupting its evidence.
    """
    counts = {
        "requests": observation.requests,
        "failures": observation.failures,
        "nonfinite": observation.nonfinite,
    }
    for name, value in counts.items():
        if not math.isfinite(value) or value < 0:
            return f"{name} is {value}"
    if observation.failures > observation.requests:
        return f"{observation.failures} failures exceed {observation.requests} requests"
    if any(not math.isfinite(x) or x < 0 for x in observation.histogram):
        return "a histogram bucket count is negative or not finite"
    if (mismatch := _bucket_mismatch(observation.histogram, totals.histogram)) is not None:
        return mismatch
    p99 = observation.p99_ms
    if p99 is not None and (not math.isfinite(p99) or p99 < 0):
        return f"p99 is {p99}"
    return None


@dataclass(frozen=True)
class ArmTotals:
    """Running totals of one arm over the current step."""

    requests: float = 0.0
    failures: float = 0.0
    nonfinite: float = 0.0
    histogram: tuple[float, ...] = ()

    def add(self, observation: ArmObservation) -> ArmTotals:
        histogram = observation.histogram
        if (mismatch := _bucket_mismatch(histogram, self.histogram)) is not None:
            raise ValueError(mismatch)
        if self.histogram and histogram:
            histogram = tuple(a + b for a, b in zip(self.histogram, histogram, strict=True))
        elif self.histogram:
            histogram = self.histogram
        return ArmTotals(
            requests=self.requests + observation.requests,
            failures=self.failures + observation.failures,
            nonfinite=self.nonfinite + observation.nonfinite,
            histogram=histogram,
        )

    @property
    def outputs(self) -> float:
        return sum(self.histogram)


@dataclass(frozen=True)
class WeightedMoments:
    """Inverse-variance weighted sums of a per-tick statistic.

    Each sample x comes with a weight w = 1 / (its modelled variance); the
    weighted mean is the best linear estimate, ``weight`` its information, and
    ``dispersion`` how much noisier the samples are than modelled.
    """

    n: int = 0
    weight: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, x: float, w: float) -> WeightedMoments:
        return WeightedMoments(
            self.n + 1, self.weight + w, self.total + w * x, self.total_sq + w * x * x
        )

    @property
    def mean(self) -> float:
        return self.total / self.weight if self.weight > 0 else math.nan

    @property
    def dispersion(self) -> float:
        """Pearson estimate of (actual / modelled) variance; NaN below two samples."""
        if self.n < 2 or self.weight <= 0:
            return math.nan
        residual = max(self.total_sq - self.total**2 / self.weight, 0.0)
        return residual / (self.n - 1)


@dataclass(frozen=True)
class StepEvidence:
    """Everything the gates judge a step on, accumulated tick by tick."""

    ticks: int = 0
    seconds: float = 0.0
    baseline: ArmTotals = ArmTotals()
    candidate: ArmTotals = ArmTotals()
    # log(candidate P99 / baseline P99) per tick, clipped; ticks after warm-up only.
    latency_ratio: WeightedMoments = WeightedMoments()
    # log(candidate P99 / ceiling) per tick, clipped above; ticks after warm-up only.
    latency_ceiling: WeightedMoments = WeightedMoments()

    def to_dict(self) -> dict[str, Any]:
        def arm(t: ArmTotals) -> dict[str, Any]:
            return {
                "requests": t.requests,
                "failures": t.failures,
                "nonfinite": t.nonfinite,
                "histogram": list(t.histogram),
            }

        def moments(m: WeightedMoments) -> list[float]:
            return [m.n, m.weight, m.total, m.total_sq]

        return {
            "ticks": self.ticks,
            "seconds": self.seconds,
            "baseline": arm(self.baseline),
            "candidate": arm(self.candidate),
            "latencyRatio": moments(self.latency_ratio),
            "latencyCeiling": moments(self.latency_ceiling),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> StepEvidence:
        """Read back what ``to_dict`` wrote; anything unreadable or impossible (negative,
        NaN, infinite) starts afresh: a hand-edited status must not make a gate pass."""
        if not data:
            return StepEvidence()

        def count(value: Any) -> float:
            number = float(value)
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"not a count: {value!r}")
            return number

        def finite(value: Any) -> float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"not finite: {value!r}")
            return number

        try:

            def arm(d: Mapping[str, Any]) -> ArmTotals:
                return ArmTotals(
                    count(d["requests"]),
                    count(d["failures"]),
                    count(d["nonfinite"]),
                    tuple(count(x) for x in d["histogram"]),
                )

            def moments(v: list[float]) -> WeightedMoments:
                return WeightedMoments(int(count(v[0])), count(v[1]), finite(v[2]), count(v[3]))

            return StepEvidence(
                ticks=int(count(data["ticks"])),
                seconds=count(data["seconds"]),
                baseline=arm(data["baseline"]),
                candidate=arm(data["candidate"]),
                latency_ratio=moments(data["latencyRatio"]),
                latency_ceiling=moments(data["latencyCeiling"]),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return StepEvidence()


# A per-tick P99 estimated from n requests has a log-scale standard error of
# about LATENCY_NOISE_SCALE / sqrt(n) (the sample-quantile variance of a
# log-normal latency with a log-spread near 0.5); LATENCY_NOISE_FLOOR covers
# what does not shrink with traffic (load drift, scrape timing). Ticks are
# weighted by the inverse of that variance. The latency tests do not trust the
# model's absolute level: the fail test is scale-free, the pass rule scales it
# up by the dispersion the ticks show.
LATENCY_NOISE_SCALE = 2.0
LATENCY_NOISE_FLOOR = 0.03


# Per-tick clips of the latency samples. A blip (cold start, restart, GC
# pause) then moves a mean by a bounded amount. Clipping at +/-c with c above
# the tolerance pulls a symmetric error towards zero, which keeps the tests
# conservative. The clips are wide, and do not shrink with the modelled noise,
# so that on a service much noisier than modelled few ticks tie at the clip
# (tied ticks look noiseless to a t-test).
CEILING_CLIP = math.log(2.0)


def latency_clip(max_regression: float) -> float:
    """Clip of a tick's log(candidate P99 / baseline P99): four times the
    tolerance, at least 0.3, so a regression of three times the tolerance
    still shows in full."""
    return max(4.0 * math.log1p(max_regression), 0.3)


def _clipped_log_ratio(
    numerator: float, denominator: float, clip: float, *, clip_below: bool = True
) -> float:
    ratio = math.log(max(numerator, 1e-9) / max(denominator, 1e-9))
    return max(-clip, min(clip, ratio)) if clip_below else min(clip, ratio)


def _latency_weight(*requests: float) -> float:
    variance = LATENCY_NOISE_SCALE**2 * sum(1.0 / max(n, 1.0) for n in requests)
    return 1.0 / (variance + LATENCY_NOISE_FLOOR**2)


def accumulate(
    evidence: StepEvidence,
    baseline: ArmObservation,
    candidate: ArmObservation,
    *,
    interval_seconds: float,
    latency_ceiling_ms: float,
    max_regression: float,
    warm: bool,
) -> StepEvidence:
    """Add one tick to a step's evidence. ``warm``: latency samples count (past warm-up)."""
    latency_ratio = evidence.latency_ratio
    latency_ceiling = evidence.latency_ceiling
    if warm and candidate.p99_ms is not None and candidate.requests > 0:
        latency_ceiling = latency_ceiling.add(
            # Only blips above the ceiling are clipped: clipping from one side
            # lowers the mean, so the ceiling test stays conservative.
            _clipped_log_ratio(
                candidate.p99_ms, latency_ceiling_ms, CEILING_CLIP, clip_below=False
            ),
            _latency_weight(candidate.requests),
        )
        if baseline.p99_ms is not None and baseline.requests > 0:
            latency_ratio = latency_ratio.add(
                _clipped_log_ratio(candidate.p99_ms, baseline.p99_ms, latency_clip(max_regression)),
                _latency_weight(candidate.requests, baseline.requests),
            )
    return replace(
        evidence,
        ticks=evidence.ticks + 1,
        seconds=evidence.seconds + interval_seconds,
        baseline=evidence.baseline.add(baseline),
        candidate=evidence.candidate.add(candidate),
        latency_ratio=latency_ratio,
        latency_ceiling=latency_ceiling,
    )
