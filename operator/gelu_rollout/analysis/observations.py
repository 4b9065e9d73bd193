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

from gelu_rollout.analysis.tail_latency import LatencyHistogram, TailEvidence, histogram_problem

NONFINITE_SIGNAL = "nonfinite"
"""The model's count of non-finite outputs (NaN, Inf)."""
OUTPUTS_SIGNAL = "outputs"
"""The model's histogram of output values."""

SUMMARY_WINDOW_SECONDS = 60.0
"""Triton 2.51's summary quantiles cover the last 60 s (prometheus-cpp's default: five age
buckets rotated every 12 s)."""


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

    Latency comes from up to three sources, best first: ``latency_histogram``, the
    per-bucket request counts of a request-duration histogram (a Gateway's or mesh's);
    ``latency_mean_ms``, the exact mean over the interval from Triton's cumulative duration
    and success counters, with its ``queue_ms`` and ``compute_ms`` parts; and ``p99_ms``,
    Triton's summary quantile, computed over ``p99_window_seconds`` ending now (a sliding
    window longer than a tick, so consecutive values overlap).

    A model nobody instrumented for this tool exports no output metrics: its
    ``nonfinite`` is None and its ``histogram`` empty, and ``gaps`` says which series are
    missing; the traffic and latency signals are Triton's own and always there.
    """

    requests: float
    failures: float
    nonfinite: float | None
    histogram: tuple[float, ...]
    p99_ms: float | None
    windows: Mapping[float, WindowCounts] = field(default_factory=dict)
    latency_mean_ms: float | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    latency_histogram: LatencyHistogram | None = None
    p99_window_seconds: float = SUMMARY_WINDOW_SECONDS
    # Signals the model does not export (NONFINITE_SIGNAL, OUTPUTS_SIGNAL), each with why:
    # ``nonfinite`` is then None, ``histogram`` empty, and the gates that need them say so.
    gaps: Mapping[str, str] = field(default_factory=dict)


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
        if value is not None and (not math.isfinite(value) or value < 0):
            return f"{name} is {value}"
    if observation.failures > observation.requests:
        return f"{observation.failures} failures exceed {observation.requests} requests"
    if any(not math.isfinite(x) or x < 0 for x in observation.histogram):
        return "a histogram bucket count is negative or not finite"
    if (mismatch := _bucket_mismatch(observation.histogram, totals.histogram)) is not None:
        return mismatch
    timings: dict[str, float | None] = {
        "p99": observation.p99_ms,
        "mean latency": observation.latency_mean_ms,
        "queue time": observation.queue_ms,
        "compute time": observation.compute_ms,
    }
    for name, timing in timings.items():
        if timing is not None and (not math.isfinite(timing) or timing < 0):
            return f"{name} is {timing}"
    if observation.latency_histogram is not None:
        return histogram_problem(observation.latency_histogram)
    return None


def _add_optional(total: float | None, value: float | None) -> float | None:
    return total if value is None else (total or 0.0) + value


@dataclass(frozen=True)
class ArmTotals:
    """Running totals of one arm over the current step. ``nonfinite`` is None and
    ``histogram`` empty while the arm has never reported them."""

    requests: float = 0.0
    failures: float = 0.0
    nonfinite: float | None = None
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
            nonfinite=_add_optional(self.nonfinite, observation.nonfinite),
            histogram=histogram,
        )

    def add_sample(self, rows: float, nonfinite: float, histogram: tuple[float, ...]) -> ArmTotals:
        return self.add(ArmObservation(rows, 0.0, nonfinite, histogram, None))

    @property
    def outputs(self) -> float:
        return sum(self.histogram)


@dataclass(frozen=True)
class SampledOutputs:
    """One tick of the sampled comparison: the operator sent the same ``rows`` inputs to both
    arms and counted their answers itself.

    ``*_histogram`` are per-bucket counts of the finite answers; ``baseline_nonfinite`` the
    baseline's non-finite answers, ``candidate_nonfinite`` the candidate's where the
    baseline's answer to the same input is finite (a NaN both arms give is the input's, not
    the candidate's); ``max_abs_error`` the largest difference where both are finite.
    """

    rows: int
    baseline_histogram: tuple[float, ...]
    candidate_histogram: tuple[float, ...]
    baseline_nonfinite: float
    candidate_nonfinite: float
    max_abs_error: float


def sample_problem(sample: SampledOutputs, totals: ArmTotals) -> str | None:
    """Why a sampled comparison cannot be added to the sampled totals, or None."""
    numbers = (
        sample.rows,
        sample.baseline_nonfinite,
        sample.candidate_nonfinite,
        sample.max_abs_error,
        *sample.baseline_histogram,
        *sample.candidate_histogram,
    )
    if any(not math.isfinite(x) or x < 0 for x in numbers):
        return "a sampled count or error is negative or not finite"
    if len(sample.baseline_histogram) != len(sample.candidate_histogram):
        return "the sampled histograms have different buckets"
    return _bucket_mismatch(sample.candidate_histogram, totals.histogram)


@dataclass(frozen=True)
class OutputEvidence:
    """What the output gates judge: both arms' output counts from one source, named in
    ``source``; ``max_abs_error`` is the paired difference (sampled comparison only)."""

    baseline: ArmTotals
    candidate: ArmTotals
    source: str
    max_abs_error: float | None = None


OUTPUT_METRICS = "the model's output metrics"
SAMPLED_COMPARISON = "the sampled comparison"


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
    # Without a latency histogram: log(candidate / baseline) of the mean latency per tick
    # (of the summary P99 where no mean is reported, one sample per summary window),
    # clipped; ticks after warm-up only.
    latency_ratio: WeightedMoments = WeightedMoments()
    # Without a latency histogram: log(candidate summary P99 / ceiling), one sample per
    # summary window, clipped above; ticks after warm-up only.
    latency_ceiling: WeightedMoments = WeightedMoments()
    # With a latency histogram: the tail test's evidence (ticks after warm-up only), the
    # candidate's requests above the ceiling's edge, and the baseline's histogram totals
    # (every tick: they place the edges).
    tail: TailEvidence = field(default_factory=TailEvidence)
    ceiling_above: float = 0.0
    ceiling_requests: float = 0.0
    baseline_latency: LatencyHistogram | None = None
    # Seconds into the segment of the last summary-P99 sample (-1: none yet).
    p99_sampled_at: float = -1.0
    # Where the candidate's time went, summed over the segment's ticks (ms x requests).
    candidate_time: tuple[float, float, float] = (0.0, 0.0, 0.0)
    timed_requests: float = 0.0
    # The sampled comparison's totals (``requests`` counts rows), and its largest paired
    # difference so far.
    sampled_baseline: ArmTotals = ArmTotals()
    sampled_candidate: ArmTotals = ArmTotals()
    sampled_max_abs_error: float = 0.0

    def outputs_for_nonfinite(self) -> OutputEvidence | None:
        """The candidate's outputs from its own metrics where it exports both the non-finite
        counter and the output histogram, else from the sampled comparison, else None.

        The metrics win where they exist: they count every request, the sample's included.
        """
        if self.candidate.nonfinite is not None and self.candidate.histogram:
            return OutputEvidence(self.baseline, self.candidate, OUTPUT_METRICS)
        return self._sampled()

    def outputs_for_divergence(self) -> OutputEvidence | None:
        """Both arms' output histograms from their metrics where both export one, else from
        the sampled comparison, else None."""
        if self.baseline.histogram and self.candidate.histogram:
            return OutputEvidence(self.baseline, self.candidate, OUTPUT_METRICS)
        return self._sampled()

    def _sampled(self) -> OutputEvidence | None:
        if self.sampled_candidate.requests <= 0:
            return None
        return OutputEvidence(
            self.sampled_baseline,
            self.sampled_candidate,
            SAMPLED_COMPARISON,
            self.sampled_max_abs_error,
        )

    def add_sample(self, sample: SampledOutputs) -> StepEvidence:
        """This segment with one more tick of the sampled comparison."""
        return replace(
            self,
            sampled_baseline=self.sampled_baseline.add_sample(
                sample.rows, sample.baseline_nonfinite, sample.baseline_histogram
            ),
            sampled_candidate=self.sampled_candidate.add_sample(
                sample.rows, sample.candidate_nonfinite, sample.candidate_histogram
            ),
            sampled_max_abs_error=max(self.sampled_max_abs_error, sample.max_abs_error),
        )

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

        data: dict[str, Any] = {
            "ticks": self.ticks,
            "seconds": self.seconds,
            "baseline": arm(self.baseline),
            "candidate": arm(self.candidate),
            "latencyRatio": moments(self.latency_ratio),
            "latencyCeiling": moments(self.latency_ceiling),
            "p99SampledAt": self.p99_sampled_at,
            "candidateTime": list(self.candidate_time),
            "timedRequests": self.timed_requests,
        }
        if self.sampled_candidate.requests > 0:
            data["sampled"] = {
                "baseline": arm(self.sampled_baseline),
                "candidate": arm(self.sampled_candidate),
                "maxAbsError": self.sampled_max_abs_error,
            }
        if self.baseline_latency is not None:
            data["tail"] = self.tail.to_dict()
            data["ceiling"] = [self.ceiling_above, self.ceiling_requests]
            data["baselineLatency"] = {
                "edges": list(self.baseline_latency.edges),
                "counts": self.baseline_latency.to_list(),
            }
        return data

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
                    None if d["nonfinite"] is None else count(d["nonfinite"]),
                    tuple(count(x) for x in d["histogram"]),
                )

            def moments(v: list[float]) -> WeightedMoments:
                return WeightedMoments(int(count(v[0])), count(v[1]), finite(v[2]), count(v[3]))

            latency = data.get("baselineLatency")
            baseline_latency, tail, ceiling = None, TailEvidence(), [0.0, 0.0]
            if latency is not None:  # written together with the tail test's evidence
                baseline_latency = LatencyHistogram(
                    tuple(float(e) for e in latency["edges"]),
                    tuple(count(c) for c in latency["counts"]),
                )
                if histogram_problem(baseline_latency) is not None:
                    raise ValueError("unreadable baseline latency histogram")
                tail, ceiling = TailEvidence.from_dict(data["tail"]), data["ceiling"]
            spent = data["candidateTime"]
            sampled = data.get("sampled")
            sampled_arms = (
                (arm(sampled["baseline"]), arm(sampled["candidate"]), count(sampled["maxAbsError"]))
                if sampled is not None
                else (ArmTotals(), ArmTotals(), 0.0)
            )
            return StepEvidence(
                ticks=int(count(data["ticks"])),
                seconds=count(data["seconds"]),
                baseline=arm(data["baseline"]),
                candidate=arm(data["candidate"]),
                latency_ratio=moments(data["latencyRatio"]),
                latency_ceiling=moments(data["latencyCeiling"]),
                tail=tail,
                ceiling_above=count(ceiling[0]),
                ceiling_requests=count(ceiling[1]),
                baseline_latency=baseline_latency,
                p99_sampled_at=finite(data["p99SampledAt"]),
                candidate_time=(count(spent[0]), count(spent[1]), count(spent[2])),
                timed_requests=count(data["timedRequests"]),
                sampled_baseline=sampled_arms[0],
                sampled_candidate=sampled_arms[1],
                sampled_max_abs_error=sampled_arms[2],
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
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
# A mean latency over n requests has a log-scale standard error near MEAN_NOISE_SCALE /
# sqrt(n): the coefficient of variation of a log-normal latency with a log-spread of 0.5
# is 0.53. Only the weights use it; the test learns the actual noise level.
MEAN_NOISE_SCALE = 0.6


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


def _mean_weight(*requests: float) -> float:
    variance = MEAN_NOISE_SCALE**2 * sum(1.0 / max(n, 1.0) for n in requests)
    return 1.0 / (variance + LATENCY_NOISE_FLOOR**2)


def ceiling_edge(edges: tuple[float, ...], ceiling_ms: float) -> int | None:
    """The first bucket edge at or above the ceiling: a P99 at or below the ceiling puts at
    most 1% of requests above it. None when every edge is below the ceiling."""
    for index, edge in enumerate(edges):
        if edge >= ceiling_ms * (1.0 - 1e-12):
            return index
    return None


def _with_baseline_latency(
    totals: LatencyHistogram | None, histogram: LatencyHistogram | None
) -> LatencyHistogram | None:
    if histogram is None:
        return totals
    if totals is None or totals.edges != histogram.edges:
        return histogram  # a new bucket layout starts the totals afresh
    return totals.add(histogram)


def accumulate(
    evidence: StepEvidence,
    baseline: ArmObservation,
    candidate: ArmObservation,
    *,
    interval_seconds: float,
    latency_ceiling_ms: float,
    max_regression: float,
    warm: bool,
    baseline_history: LatencyHistogram | None = None,
    tail_tick_cap: float = math.inf,
) -> StepEvidence:
    """Add one tick to a segment's evidence. ``warm``: latency samples count (past warm-up).
    ``baseline_history``: the baseline's latency histogram over the whole rollout before
    this tick, where the tail test's edges come from."""
    ratio, ceiling, tail = evidence.latency_ratio, evidence.latency_ceiling, evidence.tail
    above, timed = evidence.ceiling_above, evidence.ceiling_requests
    sampled_at = evidence.p99_sampled_at
    seconds = evidence.seconds + interval_seconds
    hb, hc = baseline.latency_histogram, candidate.latency_histogram
    edge = ceiling_edge(hc.edges, latency_ceiling_ms) if hc is not None else None
    # Summary quantiles cover a sliding window longer than a tick: one sample per window,
    # so consecutive samples do not share most of their requests.
    summary_due = sampled_at < 0 or seconds - sampled_at >= candidate.p99_window_seconds - 1e-9
    if warm and candidate.requests > 0:
        if hb is not None and hc is not None and hb.edges == hc.edges:
            tail = tail.add(baseline_history, hb, hc, max_regression, tail_tick_cap)
        elif (
            baseline.latency_mean_ms is not None
            and candidate.latency_mean_ms is not None
            and baseline.requests > 0
        ):
            ratio = ratio.add(
                _clipped_log_ratio(
                    candidate.latency_mean_ms,
                    baseline.latency_mean_ms,
                    latency_clip(max_regression),
                ),
                _mean_weight(candidate.requests, baseline.requests),
            )
        elif (
            summary_due
            and candidate.p99_ms is not None
            and baseline.p99_ms is not None
            and baseline.requests > 0
        ):
            ratio = ratio.add(
                _clipped_log_ratio(candidate.p99_ms, baseline.p99_ms, latency_clip(max_regression)),
                _latency_weight(candidate.requests, baseline.requests),
            )
        if hc is not None and edge is not None:
            above += hc.above(edge)
            timed += hc.requests
        elif summary_due and candidate.p99_ms is not None:
            # Only blips above the ceiling are clipped: clipping from one side lowers the
            # mean, so the ceiling test stays conservative.
            ceiling = ceiling.add(
                _clipped_log_ratio(
                    candidate.p99_ms, latency_ceiling_ms, CEILING_CLIP, clip_below=False
                ),
                _latency_weight(candidate.requests),
            )
        if summary_due and candidate.p99_ms is not None:
            sampled_at = seconds
    spent = evidence.candidate_time
    timed_requests = evidence.timed_requests
    parts = (candidate.latency_mean_ms, candidate.queue_ms, candidate.compute_ms)
    if parts[0] is not None and candidate.requests > 0:
        spent = tuple(  # type: ignore[assignment]
            total + (part or 0.0) * candidate.requests
            for total, part in zip(spent, parts, strict=True)
        )
        timed_requests += candidate.requests
    return replace(
        evidence,
        ticks=evidence.ticks + 1,
        seconds=seconds,
        baseline=evidence.baseline.add(baseline),
        candidate=evidence.candidate.add(candidate),
        latency_ratio=ratio,
        latency_ceiling=ceiling,
        tail=tail,
        ceiling_above=above,
        ceiling_requests=timed,
        baseline_latency=_with_baseline_latency(evidence.baseline_latency, hb),
        p99_sampled_at=sampled_at,
        candidate_time=spent,
        timed_requests=timed_requests,
    )
