"""The tail-latency count test and the latency fallbacks: validity by Monte Carlo under the
conditions they claim, their power, and the gross-regression fast path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gelu_rollout.analysis.latency import latency_ceiling_gate, latency_regression_gate
from gelu_rollout.analysis.observations import ArmObservation, StepEvidence, accumulate
from gelu_rollout.analysis.tail_latency import (
    LatencyHistogram,
    TailEvidence,
    edge_pairs,
    histogram_problem,
    tick_cap,
)
from gelu_rollout.analysis.verdict import Verdict

ALPHA = 0.01 / 15
MAX_REGRESSION = 0.10
FINE = tuple(float(x) for x in np.round(np.geomspace(1.0, 10_000.0, 97), 3))
ISTIO = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
TICK_SECONDS = 10.0
PLAN = ((0.05, 12), (0.25, 12), (0.5, 12))  # a short plan: 3 steps x 12 ticks of 10 s


def histogram(edges: tuple[float, ...], latencies_ms: np.ndarray) -> LatencyHistogram:
    index = np.searchsorted(np.asarray(edges), latencies_ms, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return LatencyHistogram(edges, tuple(float(c) for c in counts))


def stream(
    rng: np.random.Generator,
    *,
    shift: float = 1.0,
    tail_shift: float = 1.0,
    rate: float = 60.0,
    sd: float = 0.45,
    edges: tuple[float, ...] = FINE,
    onset: int = 0,
) -> list[tuple[LatencyHistogram, LatencyHistogram]]:
    """Per-tick (baseline, candidate) histograms of log-normal latencies over the plan, with
    load shared by the arms; the candidate is ``shift`` x slower, and its slowest tenth a
    further ``tail_shift`` x (the median unchanged), from tick ``onset``."""
    ticks = []
    for weight, count in PLAN:
        for _ in range(count):
            load = math.exp(rng.normal(0.0, 0.15))  # shared by both arms
            n = rng.poisson(rate * TICK_SECONDS * load)
            n_c = rng.binomial(n, weight)
            base = 40.0 * load
            b = base * np.exp(rng.normal(0.0, sd, n - n_c))
            c = base * np.exp(rng.normal(0.0, sd, n_c))
            if len(ticks) >= onset:
                c = c * shift
                c = np.where(c > base * shift * math.exp(1.2816 * sd), c * tail_shift, c)
            ticks.append((histogram(edges, b), histogram(edges, c)))
    return ticks


def first_rejection(
    ticks: list[tuple[LatencyHistogram, LatencyHistogram]], *, segment_ticks: int = 12
) -> int | None:
    """The first tick at which the test rejects on any segment (one from the start of each
    step, as the rollout keeps them), or None."""
    segments: list[TailEvidence] = []
    history = None
    cap = tick_cap(ALPHA)
    for index, (b, c) in enumerate(ticks):
        if index % segment_ticks == 0:
            segments.append(TailEvidence())
        segments = [s.add(history, b, c, MAX_REGRESSION, cap) for s in segments]
        history = b if history is None else history.add(b)
        if any(s.rejects(ALPHA) for s in segments):
            return index
    return None


@pytest.mark.slow
@pytest.mark.parametrize("edges", [FINE, ISTIO], ids=["fine", "istio"])
@pytest.mark.parametrize("shift", [1.0, 1.1], ids=["same", "at-the-tolerance"])
def test_the_tail_test_keeps_its_alpha_on_healthy_streams(
    edges: tuple[float, ...], shift: float
) -> None:
    """A candidate exactly at the tolerated regression is the hardest healthy case. At a
    nominal alpha of 0.05 (so that 300 streams can show a violation), rejections stay
    within it."""
    rng = np.random.default_rng([2026, len(edges), int(shift * 10)])
    alpha = 0.05
    rejected = 0
    for _ in range(300):
        ticks = stream(rng, shift=shift, rate=float(rng.choice([20.0, 60.0, 150.0])), edges=edges)
        evidence, history = TailEvidence(), None
        cap = tick_cap(alpha)
        for b, c in ticks:
            evidence = evidence.add(history, b, c, MAX_REGRESSION, cap)
            history = b if history is None else history.add(b)
            if evidence.rejects(alpha):
                rejected += 1
                break
    assert rejected / 300 <= alpha


@pytest.mark.slow
def test_the_tail_test_catches_moderate_and_tail_only_regressions_on_fine_buckets() -> None:
    rng = np.random.default_rng(7)
    whole = [first_rejection(stream(rng, shift=1.25)) for _ in range(60)]
    tail = [first_rejection(stream(rng, tail_shift=1.35)) for _ in range(60)]
    assert sum(r is not None for r in whole) / 60 >= 0.8
    assert sum(r is not None for r in tail) / 60 >= 0.9


def test_a_fivefold_regression_fails_on_its_second_tick_never_on_its_first() -> None:
    """The per-tick cap: one bad tick (a GC pause, a restart) cannot roll back alone from a
    neutral start; two can. At 25% (ticks 12 to 23) from 20 requests a second; at 5%, where
    a tick holds a handful of candidate requests, by the fault's second tick."""
    rng = np.random.default_rng(11)
    for rate in (20.0, 60.0, 150.0):
        for _ in range(10):
            at_25 = stream(rng, shift=5.0, rate=rate, onset=14)
            assert first_rejection(at_25) == 15  # caught at the fault's second tick
            at_5 = first_rejection(stream(rng, shift=5.0, rate=rate, onset=3))
            assert at_5 is not None
            assert at_5 <= 4
    blip = stream(rng, rate=150.0)
    slow = stream(rng, shift=5.0, rate=150.0)
    blip[5] = slow[5]  # one tick of a fivefold slowdown, then healthy again
    assert first_rejection(blip) is None


def test_edges_come_from_the_baseline_quantiles_and_the_tolerance() -> None:
    rng = np.random.default_rng(3)
    baseline = histogram(FINE, 40.0 * np.exp(rng.normal(0.0, 0.45, 20_000)))
    pairs = edge_pairs(baseline, MAX_REGRESSION)
    assert len(pairs) == 3
    for (low, high), q in zip(pairs, (0.9, 0.95, 0.99), strict=True):
        assert FINE[high] >= 1.1 * FINE[low]
        assert FINE[high - 1] < 1.1 * FINE[low] * (1 - 1e-9)
        assert baseline.above(low) / baseline.requests == pytest.approx(1 - q, abs=0.02)
    assert edge_pairs(histogram(FINE, np.array([40.0] * 10)), MAX_REGRESSION) == ()


def test_bad_histograms_are_named() -> None:
    assert histogram_problem(LatencyHistogram((), (1.0,))) is not None
    assert histogram_problem(LatencyHistogram((2.0, 1.0), (0.0, 0.0, 0.0))) is not None
    assert histogram_problem(LatencyHistogram((1.0, 2.0), (0.0, -1.0, 0.0))) is not None
    assert histogram_problem(LatencyHistogram((1.0, 2.0), (0.0, 1.0, 0.0))) is None
    with pytest.raises(ValueError, match="counts"):
        LatencyHistogram((1.0, 2.0), (0.0, 1.0))


def test_tail_evidence_round_trips_and_refuses_damage() -> None:
    rng = np.random.default_rng(5)
    ticks = stream(rng, shift=1.3)
    evidence, history = TailEvidence(), None
    for b, c in ticks[:6]:
        evidence = evidence.add(history, b, c, MAX_REGRESSION)
        history = b if history is None else history.add(b)
    assert TailEvidence.from_dict(evidence.to_dict()) == evidence
    damaged = evidence.to_dict()
    damaged["logRatios"] = [[1.0, 2.0]]
    with pytest.raises(ValueError, match="shape"):
        TailEvidence.from_dict(damaged)


def arm(
    hist: LatencyHistogram | None = None,
    *,
    mean: float | None = None,
    p99: float | None = None,
    requests: float | None = None,
) -> ArmObservation:
    n = requests if requests is not None else (hist.requests if hist else 100.0)
    return ArmObservation(n, 0.0, 0.0, (), p99, latency_mean_ms=mean, latency_histogram=hist)


def judge(evidence: StepEvidence, share: float | None = 0.25) -> Verdict:
    return latency_regression_gate(
        evidence,
        max_regression=MAX_REGRESSION,
        min_ticks=3,
        alpha=ALPHA,
        detect_regression=0.5,
        power=0.8,
        candidate_share=share,
    ).verdict


def test_the_regression_gate_uses_the_histogram_and_passes_on_power() -> None:
    rng = np.random.default_rng(13)
    evidence = StepEvidence()
    history = None
    verdicts = []
    for b, c in stream(rng, rate=150.0):
        evidence = accumulate(
            evidence,
            arm(b, mean=40.0),
            arm(c, mean=40.0),
            interval_seconds=TICK_SECONDS,
            latency_ceiling_ms=250.0,
            max_regression=MAX_REGRESSION,
            warm=True,
            baseline_history=history,
        )
        history = evidence.baseline_latency
        verdicts.append(judge(evidence))
    assert evidence.tail.ticks == len(verdicts) - 1  # no edges before the first tick
    assert evidence.latency_ratio.n == 0  # the mean is not used beside a histogram
    assert verdicts[0] is Verdict.INCONCLUSIVE
    assert verdicts[-1] is Verdict.PASS
    result = latency_regression_gate(
        evidence,
        max_regression=MAX_REGRESSION,
        min_ticks=3,
        alpha=ALPHA,
        detect_regression=0.5,
        power=0.8,
        candidate_share=0.5,
    )
    assert result.basis == "power"
    # Without a traffic share there is no plan, and no pass on power.
    assert judge(evidence, share=None) is Verdict.INCONCLUSIVE


def test_the_ceiling_gate_counts_requests_above_its_edge() -> None:
    rng = np.random.default_rng(17)
    evidence = StepEvidence()
    for _ in range(6):
        b = histogram(FINE, 40.0 * np.exp(rng.normal(0.0, 0.45, 900)))
        c = histogram(FINE, 400.0 * np.exp(rng.normal(0.0, 0.45, 300)))
        evidence = accumulate(
            evidence,
            arm(b),
            arm(c),
            interval_seconds=TICK_SECONDS,
            latency_ceiling_ms=250.0,
            max_regression=MAX_REGRESSION,
            warm=True,
        )
    result = latency_ceiling_gate(evidence, ceiling_ms=250.0, min_ticks=3, alpha=ALPHA)
    assert result.verdict is Verdict.FAIL
    assert evidence.latency_ceiling.n == 0
    assert result.value is not None
    assert result.value > 0.5


def p99_of_window(latencies: list[np.ndarray]) -> float:
    return float(np.quantile(np.concatenate(latencies), 0.99))


@pytest.mark.slow
def test_the_summary_fallback_keeps_its_alpha_with_overlapping_windows() -> None:
    """Triton's summary P99 covers the last 60 s; sampled every 10 s tick, neighbours share
    most of their requests. The gate takes one sample per window, and so keeps its alpha
    (nominal 0.05 here, a healthy candidate at the tolerance's edge, 200 streams)."""
    rng = np.random.default_rng(19)
    alpha = 0.05
    rejected = 0
    for _ in range(200):
        evidence = StepEvidence()
        recent_b: list[np.ndarray] = []
        recent_c: list[np.ndarray] = []
        for _tick in range(60):
            load = math.exp(rng.normal(0.0, 0.15))
            n_b, n_c = rng.poisson(450 * load), rng.poisson(150 * load)
            recent_b = [*recent_b[-5:], 40 * load * np.exp(rng.normal(0, 0.45, n_b))]
            recent_c = [*recent_c[-5:], 44 * load * np.exp(rng.normal(0, 0.45, n_c))]
            evidence = accumulate(
                evidence,
                arm(p99=p99_of_window(recent_b), requests=float(n_b)),
                arm(p99=p99_of_window(recent_c), requests=float(n_c)),
                interval_seconds=TICK_SECONDS,
                latency_ceiling_ms=1000.0,
                max_regression=MAX_REGRESSION,
                warm=True,
            )
            verdict = latency_regression_gate(
                evidence, max_regression=MAX_REGRESSION, min_ticks=3, alpha=alpha
            ).verdict
            if verdict is Verdict.FAIL:
                rejected += 1
                break
        assert evidence.latency_ratio.n == 10  # one sample per 60 s window
    assert rejected / 200 <= alpha


@pytest.mark.slow
def test_the_mean_fallback_keeps_its_alpha_and_catches_a_slow_candidate() -> None:
    rng = np.random.default_rng(23)
    alpha = 0.05

    def run(shift: float) -> bool:
        evidence = StepEvidence()
        for _tick in range(36):
            load = math.exp(rng.normal(0.0, 0.15))
            n_b, n_c = rng.poisson(450 * load), rng.poisson(150 * load)
            b = 40 * load * np.exp(rng.normal(0, 0.45, n_b))
            c = 40 * shift * load * np.exp(rng.normal(0, 0.45, n_c))
            evidence = accumulate(
                evidence,
                arm(mean=float(b.mean()), requests=float(n_b)),
                arm(mean=float(c.mean()), requests=float(n_c)),
                interval_seconds=TICK_SECONDS,
                latency_ceiling_ms=1000.0,
                max_regression=MAX_REGRESSION,
                warm=True,
            )
            result = latency_regression_gate(
                evidence, max_regression=MAX_REGRESSION, min_ticks=3, alpha=alpha
            )
            if result.verdict is Verdict.FAIL:
                return True
        return False

    assert sum(run(1.1) for _ in range(200)) / 200 <= alpha
    assert sum(run(1.5) for _ in range(50)) / 50 >= 0.9


def test_the_regression_gate_says_where_the_candidates_time_went() -> None:
    evidence = StepEvidence()
    for _ in range(4):
        evidence = accumulate(
            evidence,
            ArmObservation(900.0, 0.0, 0.0, (), None, latency_mean_ms=20.0),
            ArmObservation(
                300.0, 0.0, 0.0, (), None, latency_mean_ms=22.0, queue_ms=5.0, compute_ms=16.0
            ),
            interval_seconds=TICK_SECONDS,
            latency_ceiling_ms=250.0,
            max_regression=MAX_REGRESSION,
            warm=True,
        )
    result = latency_regression_gate(
        evidence, max_regression=MAX_REGRESSION, min_ticks=3, alpha=ALPHA
    )
    assert result.message.endswith("candidate mean 22 ms: queue 5 ms, compute 16 ms")
    assert result.value == pytest.approx(1.1)  # judged on the means: 22 ms against 20 ms
