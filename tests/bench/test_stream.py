"""The generator's statistics and the realisation of adaptive streams are what the docs say."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from gelu_lab.bench.generate import (
    BUDGET,
    CLASSIC,
    FINE_LATENCY_BOUNDS,
    ISTIO_LATENCY_BOUNDS,
    MAX_EXTENSION_SECONDS,
    SHORT,
    SHORT_FAULTS,
    SHORT_TRAFFIC_LEVELS,
    Z99,
    generate_suite,
)
from gelu_lab.bench.policies.gelu import START
from gelu_lab.bench.replay import Replay
from gelu_lab.bench.scenario import (
    ArmModel,
    ModelTick,
    P99Window,
    Scenario,
    StepPlan,
    StreamModel,
)
from gelu_lab.bench.stream import arm_shares, realise_tick, summary_window_start

BOUNDS = (0.0, 1.0)


@pytest.fixture(scope="module")
def short_suite() -> list[Scenario]:
    return generate_suite(seed=5, healthy=24, per_fault=4, families=("short",))


def _of(suite: list[Scenario], kind: str) -> list[Scenario]:
    return [s for s in suite if s.kind == kind]


def _model_scenario(
    ticks: list[ModelTick], *, window: P99Window | None = None, tick_seconds: float = 10.0
) -> Scenario:
    return Scenario(
        name="model",
        kind="healthy",
        severity="none",
        expected="promote",
        tick_seconds=tick_seconds,
        fault_onset_tick=None,
        availability_slo=0.999,
        latency_p99_ceiling_ms=250.0,
        histogram_bounds=BOUNDS,
        steps=(StepPlan(5, 2), StepPlan(50, 2)),
        ticks=(),
        latency_bounds=FINE_LATENCY_BOUNDS,
        p99_window=window,
        model=StreamModel(
            seed=3,
            outputs_per_request=16,
            output_components=((0.2, 0.5, 0.3), (0.3, 0.4, 0.3)),
            ticks=tuple(ticks),
        ),
    )


def _arm(**changes: object) -> ArmModel:
    arm = ArmModel(
        failure_ratio=0.0, median_ms=40.0, log_sd=0.45, tail_log_sd=0.45, output_mix=(1.0, 0.0)
    )
    return replace(arm, **changes)  # type: ignore[arg-type]


def _latencies(arm: ArmModel, requests: int = 400_000) -> np.ndarray:
    """Successful requests' latencies of one arm, from one large realised tick."""
    scenario = _model_scenario(
        [ModelTick(float(requests), arm, arm)], window=P99Window(), tick_seconds=60.0
    )
    _, candidate = realise_tick(scenario, 0, 50)
    return candidate.success_latencies


# --- The plan and the traffic ------------------------------------------------------------------


def test_streams_end_at_the_plan_plus_every_steps_extension(short_suite: list[Scenario]) -> None:
    assert MAX_EXTENSION_SECONDS == 600  # the spec's default maxExtensionSeconds
    assert SHORT.planned_ticks == 36
    assert SHORT.stream_ticks == 36 + 3 * 60
    assert CLASSIC.stream_ticks == 15 + 3 * 10
    assert all(s.length == SHORT.stream_ticks for s in short_suite)
    assert all(
        s.steps == (StepPlan(5, 12), StepPlan(25, 12), StepPlan(50, 12)) for s in short_suite
    )


def test_traffic_levels_and_load_shared_by_both_arms(short_suite: list[Scenario]) -> None:
    healthy = _of(short_suite, "healthy")
    levels = [s.labels["traffic"] for s in healthy]
    assert {f"{x:g} req/s" for x in SHORT_TRAFFIC_LEVELS} == set(levels)
    for scenario in healthy:
        assert scenario.model is not None
        rps = float(scenario.labels["traffic"].split()[0])
        requests = np.array([t.requests for t in scenario.model.ticks])
        mean = requests.mean() / (rps * scenario.tick_seconds)
        if scenario.labels["bursty"] == "no":
            assert mean == pytest.approx(1.0, abs=0.05)
        else:
            assert 1.0 < mean < 1.6  # log-normal load (sd 0.3) and 2-4x bursts
            assert requests.max() > 2 * np.median(requests)
    # At any weight both arms draw from the same requests: their counts move together.
    bursty = next(s for s in healthy if s.labels["bursty"] == "yes")
    replay = Replay(bursty, START)
    pairs = [replay.observe(t, weight=50) for t in range(100)]
    base = np.array([b.requests for b, _ in pairs])
    cand = np.array([c.requests for _, c in pairs])
    assert np.corrcoef(base, cand)[0, 1] > 0.8


def test_arm_shares_and_split_at_a_weight() -> None:
    assert arm_shares(5) == (0.05, 0.05)
    assert arm_shares(50) == (0.5, 0.5)
    assert arm_shares(80) == (0.8, pytest.approx(0.2))
    scenario = _model_scenario([ModelTick(100_000.0, _arm(), _arm())])
    for weight in (5, 25, 50):
        base, cand = realise_tick(scenario, 0, weight)
        for arm in (base, cand):
            assert arm.requests == pytest.approx(1000 * weight, rel=0.05)


# --- Latency -----------------------------------------------------------------------------------


def test_log_sd_and_p99_ranges(short_suite: list[Scenario]) -> None:
    for scenario in short_suite:
        assert scenario.model is not None
        first = scenario.model.ticks[0].baseline
        assert 0.3 <= first.log_sd <= 0.6
        p99 = first.median_ms * math.exp(Z99 * first.log_sd)
        assert 30.0 < p99 < 200.0  # 40 to 150 ms, times the first tick's load


def test_tail_only_regression_keeps_the_median_and_moves_the_p99(
    short_suite: list[Scenario],
) -> None:
    for scenario in _of(short_suite, "tail-p99-35"):
        assert scenario.model is not None
        assert scenario.fault_onset_tick is not None
        onset = scenario.fault_onset_tick
        ratios = []
        for t, tick in enumerate(scenario.model.ticks):
            cand = tick.candidate
            assert (cand.tail_log_sd > cand.log_sd + 0.1) == (t >= onset)
            ratios.append(cand.median_ms / tick.baseline.median_ms)
        assert max(ratios) / min(ratios) == pytest.approx(1.0, abs=1e-4)  # median untouched
    scenario = _of(short_suite, "tail-p99-35")[0]
    assert scenario.model is not None
    faulty = replace(scenario.model.ticks[-1].candidate, slow_share=0.0, output_mix=(1.0, 0.0))
    healthy = replace(faulty, tail_log_sd=faulty.log_sd)
    before, after = _latencies(healthy), _latencies(faulty)
    assert np.median(after) / np.median(before) == pytest.approx(1.0, abs=0.02)
    assert np.quantile(after, 0.99) / np.quantile(before, 0.99) == pytest.approx(1.35, abs=0.04)
    # The P90 moves less than the P99: the regression grows into the tail.
    p90 = np.quantile(after, 0.9) / np.quantile(before, 0.9)
    assert 1.05 < p90 < 1.3


@pytest.mark.parametrize(("kind", "factor"), [("latency-p99-25", 1.25), ("latency-5x", 5.0)])
def test_whole_distribution_shifts(short_suite: list[Scenario], kind: str, factor: float) -> None:
    for scenario in _of(short_suite, kind):
        assert scenario.model is not None
        assert scenario.fault_onset_tick is not None
        ticks = scenario.model.ticks
        onset = scenario.fault_onset_tick
        ratio = [t.candidate.median_ms / t.baseline.median_ms for t in ticks]
        assert ratio[onset] / ratio[onset - 1 if onset else -1] == pytest.approx(
            factor if onset else 1.0, rel=1e-4
        )
        assert ratio[-1] / ratio[0] == pytest.approx(factor if onset else 1.0, rel=1e-4)
        assert all(t.candidate.tail_log_sd == t.candidate.log_sd for t in ticks)
    arm = _arm()
    before = _latencies(arm)
    after = _latencies(replace(arm, median_ms=arm.median_ms * 1.25))
    assert np.quantile(after, 0.99) / np.quantile(before, 0.99) == pytest.approx(1.25, abs=0.04)
    assert np.median(after) / np.median(before) == pytest.approx(1.25, abs=0.02)


def test_per_tick_mean_split_and_histogram() -> None:
    scenario = _model_scenario(
        [ModelTick(20_000.0, _arm(queue_share=0.3, failure_ratio=0.01), _arm())],
        window=P99Window(),
    )
    base, _ = realise_tick(scenario, 0, 50)
    assert base.latency_mean_ms == pytest.approx(float(base.success_latencies.mean()))
    assert base.queue_ms == pytest.approx(0.3 * base.latency_mean_ms)
    assert base.compute_ms is not None
    assert base.queue_ms is not None
    assert base.queue_ms + base.compute_ms == pytest.approx(base.latency_mean_ms)
    assert base.tick_p99_ms == pytest.approx(float(np.quantile(base.success_latencies, 0.99)))
    assert base.success_latencies.size == base.requests - base.failures
    assert base.failures == pytest.approx(0.01 * base.requests, rel=0.25)
    # The histogram counts every request (failed ones too), in le buckets.
    assert base.latency_counts is not None
    assert sum(base.latency_counts) == base.requests
    assert len(base.latency_counts) == len(FINE_LATENCY_BOUNDS) + 1
    # Outputs: 16 per successful request, in the output histogram's buckets.
    assert sum(base.histogram) + base.nonfinite == 16 * (base.requests - base.failures)


def test_latency_bucket_layouts(short_suite: list[Scenario]) -> None:
    layouts = {s.labels["latencyBuckets"]: s.latency_bounds for s in short_suite}
    assert layouts["fine"] == FINE_LATENCY_BOUNDS
    assert layouts["istio-coarse"] == ISTIO_LATENCY_BOUNDS
    assert layouts["none"] is None
    assert ISTIO_LATENCY_BOUNDS == (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
    ratios = np.diff(np.log(FINE_LATENCY_BOUNDS))
    assert np.allclose(ratios, math.log(2) / 4, atol=1e-3)  # 2^(1/4) apart
    shares = [s.labels["latencyBuckets"] for s in generate_suite(seed=9, healthy=200,
                                                                  per_fault=0,
                                                                  families=("short",))]  # fmt: skip
    assert shares.count("fine") / 200 == pytest.approx(0.5, abs=0.1)
    assert shares.count("istio-coarse") / 200 == pytest.approx(0.25, abs=0.08)


# --- The 60 s summary window -------------------------------------------------------------------


def test_summary_window_start_follows_prometheus_cpp_rotation() -> None:
    # Five buckets rotated every 12 s: the window read covers 48 to 60 s.
    assert summary_window_start(60.0, 60.0, 5, 0.0) == pytest.approx(12.0)
    assert summary_window_start(70.0, 60.0, 5, 0.0) == pytest.approx(12.0)
    assert summary_window_start(72.0, 60.0, 5, 0.0) == pytest.approx(24.0)
    assert summary_window_start(10.0, 60.0, 5, 3.0) == 0.0  # young: everything so far
    for end in np.arange(60.0, 300.0, 10.0):
        for phase in (0.0, 5.5, 11.9):
            length = end - summary_window_start(float(end), 60.0, 5, phase)
            assert 48.0 - 1e-9 <= length <= 60.0 + 1e-9


def _stationary(requests: float, ticks: int, **arm: object) -> list[ModelTick]:
    return [ModelTick(requests, _arm(**arm), _arm(**arm)) for _ in range(ticks)]


def test_summary_p99_is_the_quantile_of_the_window_requests() -> None:
    scenario = _model_scenario(_stationary(2000.0, 30), window=P99Window(60.0, 5, 4.0))
    replay = Replay(scenario, START)
    for t in range(30):
        base, cand = replay.observe(t, weight=25)
        start = summary_window_start((t + 1) * 10.0, 60.0, 5, 4.0)
        pooled = np.concatenate(
            [
                replay.realised(j)[1].success_latencies[
                    replay.realised(j)[1].success_times + 10.0 * j >= start
                ]
                for j in range(t + 1)
            ]
        )
        assert cand.p99_ms == pytest.approx(float(np.quantile(pooled, 0.99)))
        assert cand.p99_window_seconds == 60.0
        assert base.p99_ms is not None


def test_a_slow_tick_stays_in_the_summary_for_its_window() -> None:
    ticks = _stationary(2000.0, 20)
    ticks[5] = replace(ticks[5], candidate=_arm(median_ms=400.0))
    summary = Replay(_model_scenario(ticks, window=P99Window(60.0, 5, 0.0)), START)
    per_tick = Replay(_model_scenario(ticks), START)
    high_summary, high_tick = [], []
    for t in range(20):
        _, cand = summary.observe(t, weight=25)
        _, own = per_tick.observe(t, weight=25)
        assert cand.p99_ms is not None
        assert own.p99_ms is not None
        high_summary.append(cand.p99_ms > 200.0)
        high_tick.append(own.p99_ms > 200.0)
        assert own.p99_window_seconds == 10.0
    assert [t for t, high in enumerate(high_tick) if high] == [5]
    # Tick 5 holds requests from 50 s to 60 s; the window read at the end of tick t
    # starts 48 to 60 s earlier, so they are in it up to the read at 108 s (start 60).
    assert [t for t, high in enumerate(high_summary) if high] == [5, 6, 7, 8, 9]


def test_consecutive_summary_p99s_overlap() -> None:
    ticks = _stationary(400.0, 200)
    summary = Replay(_model_scenario(ticks, window=P99Window()), START)
    per_tick = Replay(_model_scenario(ticks), START)
    s_values, t_values = [], []
    for t in range(200):
        s_values.append(summary.observe(t, weight=25)[1].p99_ms)
        t_values.append(per_tick.observe(t, weight=25)[1].p99_ms)

    def lag1(values: list[float | None]) -> float:
        x = np.log(np.asarray(values[10:], dtype=float))
        return float(np.corrcoef(x[:-1], x[1:])[0, 1])

    assert lag1(s_values) > 0.6  # five of six ticks shared with the previous read
    assert abs(lag1(t_values)) < 0.25  # each tick's own requests: independent


# --- Failures and outputs ----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "budgets"), [("errors-3x", 3.0), ("errors-10x", 10.0)])
def test_error_faults_burn_at_their_rate(
    short_suite: list[Scenario], kind: str, budgets: float
) -> None:
    ratios = []
    for scenario in _of(short_suite, kind):
        assert scenario.model is not None
        assert scenario.fault_onset_tick is not None
        ratios += [
            t.candidate.failure_ratio for t in scenario.model.ticks[scenario.fault_onset_tick :]
        ]
    assert np.mean(ratios) / BUDGET == pytest.approx(budgets, rel=0.1)


def test_slow_burn_and_bursty_errors(short_suite: list[Scenario]) -> None:
    for scenario in _of(short_suite, "slow-burn-3x"):
        assert scenario.model is not None
        assert scenario.fault_onset_tick is not None
        late = [
            t.candidate.failure_ratio
            for t in scenario.model.ticks[scenario.fault_onset_tick + 12 :]
        ]
        assert np.mean(late) / BUDGET == pytest.approx(3.0, rel=0.2)
    bursts = []
    for scenario in _of(short_suite, "errors-bursty"):
        assert scenario.model is not None
        assert scenario.fault_onset_tick is not None
        after = scenario.model.ticks[scenario.fault_onset_tick :]
        bursts += [t.candidate.failure_ratio > 8 * BUDGET for t in after]
    assert np.mean(bursts) == pytest.approx(0.2, abs=0.05)


def test_nan_at_one_in_100000_outputs(short_suite: list[Scenario]) -> None:
    scenario = _of(short_suite, "nan-1e-5")[0]
    assert scenario.model is not None
    assert scenario.fault_onset_tick is not None
    onset = scenario.fault_onset_tick
    rates = [t.candidate.nonfinite_rate for t in scenario.model.ticks]
    assert all(r == 0.0 for r in rates[:onset])
    assert all(r == 1e-5 for r in rates[onset:])
    heavy = replace(
        scenario,
        model=replace(
            scenario.model,
            ticks=tuple(replace(t, requests=3000.0) for t in scenario.model.ticks),
        ),
    )
    replay = Replay(heavy, START)
    outputs = nonfinite = 0.0
    for t in range(heavy.length):
        _, cand = replay.observe(t, weight=50)
        if t >= onset:
            outputs += sum(cand.histogram) + cand.nonfinite
            nonfinite += cand.nonfinite
    expected = 1e-5 * outputs
    assert abs(nonfinite - expected) < 4.5 * math.sqrt(expected)
    assert heavy.model is not None
    assert heavy.model.outputs_per_request == 16


def test_every_short_fault_is_generated(short_suite: list[Scenario]) -> None:
    assert {s.kind for s in short_suite} == {"healthy"} | {f.kind for f in SHORT_FAULTS}
    severity = {f.kind: f.severity for f in SHORT_FAULTS}
    assert severity["latency-5x"] == severity["errors-10x"] == severity["nan-1e-5"] == "severe"
    assert severity["tail-p99-35"] == severity["latency-p99-25"] == "moderate"
    for scenario in short_suite:
        if scenario.fault_onset_tick is not None:
            assert 0 <= scenario.fault_onset_tick < SHORT.onset_ticks
