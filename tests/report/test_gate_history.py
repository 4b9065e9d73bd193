"""What the report is drawn from: each gate's confidence bound, and the bounded per-tick gate
history decide() keeps in the status."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pytest

from gelu_rollout.analysis.divergence import divergence_gate
from gelu_rollout.analysis.error_rate import error_rate_gate
from gelu_rollout.analysis.latency import latency_regression_gate
from gelu_rollout.analysis.observations import ArmObservation, StepEvidence, accumulate
from gelu_rollout.analysis.sequential import (
    RATE_MULTIPLIERS,
    _binomial_log_evalue_scalar,
    binomial_log_evalue,
    binomial_rate_lower_bound,
)
from gelu_rollout.spec import parse_spec
from gelu_rollout.spec.status import GATE_HISTORY_LIMIT, RolloutStatus, significant
from tests.report.scenario import (
    FAILURES_AT_STEP_2,
    HEALTHY_TICKS,
    rolled_back_status,
    spec_dict,
)
from tests.rollout_helpers import Driver

ALPHA = 0.01 / 20
BUDGET = 0.001
INTERVAL = 30.0


def one_tick(baseline: ArmObservation, candidate: ArmObservation) -> StepEvidence:
    return accumulate(
        StepEvidence(),
        baseline,
        candidate,
        interval_seconds=INTERVAL,
        latency_ceiling_ms=250.0,
        max_regression=0.1,
        warm=True,
    )


def counts(
    requests: float,
    failures: float = 0.0,
    *,
    histogram: tuple[float, ...] = (),
    p99_ms: float | None = None,
) -> ArmObservation:
    return ArmObservation(
        requests=requests, failures=failures, nonfinite=0.0, histogram=histogram, p99_ms=p99_ms
    )


# --- the bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "requests"), [(1, 100), (3, 1000), (40, 20000), (500, 1000), (7.5, 123.4)]
)
def test_the_rate_bound_is_where_the_test_stops_rejecting(failures: float, requests: float) -> None:
    needed = math.log(1 / ALPHA)
    bound = binomial_rate_lower_bound(failures, requests, ALPHA)
    if bound is None:
        assert binomial_log_evalue(failures, requests, 1e-12) < needed
        return
    assert bound <= failures / requests
    assert binomial_log_evalue(failures, requests, bound * 0.999) >= needed
    assert binomial_log_evalue(failures, requests, bound * 1.001) < needed


def test_no_failures_have_no_lower_bound() -> None:
    assert binomial_rate_lower_bound(0, 10_000, ALPHA) is None
    assert binomial_rate_lower_bound(1, 0, ALPHA) is None


@pytest.mark.parametrize("requests", [600.0, 5000.0, 40000.0])
def test_the_error_rate_fails_exactly_when_its_bound_is_above_the_threshold(
    requests: float,
) -> None:
    """Without baseline traffic the blame guard never holds a failure back, so the bound
    alone says the verdict's failure, for every failure count."""
    for failures in np.linspace(0, requests * 0.02, 60):
        result = error_rate_gate(
            one_tick(counts(0.0), counts(requests, float(failures))),
            error_budget=BUDGET,
            max_burn_rate=1.0,
            max_ratio_to_baseline=2.0,
            min_requests=500,
            alpha=ALPHA,
            detect_burn_rate=6.0,
        )
        assert result.threshold == 1.0
        if result.bound is None:
            assert not result.failed
            continue
        assert result.value is not None
        assert result.bound <= result.value + 1e-12
        if abs(result.bound - 1.0) > 1e-3:  # the bisection's resolution
            assert result.failed == (result.bound > 1.0), (failures, result)


def test_the_divergence_bound_is_the_one_its_test_compares() -> None:
    baseline = [500.0, 2000.0, 5000.0, 2000.0, 500.0]
    for shift in (0.0, 100.0, 400.0, 900.0, 1500.0):
        candidate = [500.0 + shift, 2000.0, 5000.0 - 2 * shift, 2000.0, 500.0 + shift]
        result = divergence_gate(
            one_tick(
                counts(sum(baseline), histogram=tuple(baseline)),
                counts(sum(candidate), histogram=tuple(candidate)),
            ),
            max_kl=0.01,
            min_outputs=2000,
            smoothing=0.5,
            alpha=ALPHA,
        )
        assert result.bound is not None
        assert result.value is not None
        assert result.bound <= result.value
        assert result.failed == (result.bound > 0.01), result


def test_the_sampled_latency_fails_exactly_when_its_bound_is_above_the_limit() -> None:
    rng = np.random.default_rng(1)
    verdicts = set()
    for ratio in (1.0, 1.1, 1.25, 1.35):
        evidence = StepEvidence()
        for _ in range(30):
            jitter = float(np.exp(rng.normal(0.0, 0.03)))
            evidence = accumulate(
                evidence,
                counts(2000.0, p99_ms=100.0),
                counts(2000.0, p99_ms=100.0 * ratio * jitter),
                interval_seconds=INTERVAL,
                latency_ceiling_ms=250.0,
                max_regression=0.1,
                warm=True,
            )
            result = latency_regression_gate(evidence, max_regression=0.1, min_ticks=3, alpha=ALPHA)
            verdicts.add(result.verdict.value)
            assert result.value is not None
            assert result.threshold == pytest.approx(1.1)
            if result.bound is None:
                assert not result.failed
                continue
            assert result.bound <= result.value
            if abs(result.bound - 1.1) > 1e-3:
                assert result.failed == (result.bound > 1.1), result
    assert {"Pass", "Fail"} <= verdicts


# --- the history --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def status() -> RolloutStatus:
    return rolled_back_status()


def test_every_judged_tick_is_in_the_history_with_where_it_was_judged(
    status: RolloutStatus,
) -> None:
    history = status.gate_history
    assert [(t.step, t.weight) for t in history] == [(0, 0)] + [(0, 10)] * 3 + [(1, 50)] * (
        len(history) - 4
    )
    # The probe, the step's advance and the rollback decided; the other ticks did not.
    assert [i for i, t in enumerate(history) if t.decided] == [0, 3, len(history) - 1]
    assert list(history[0].gates) == ["probe"]
    assert history[-1].time == status.finished_at
    last = history[-1].gates
    assert last["errorRate"][3] == "F"
    assert {g: v[3] for g, v in last.items() if g != "errorRate"} == dict.fromkeys(
        ("nonFinite", "burnRate", "latencyRegression", "latencyCeiling", "divergence"), "P"
    )
    value, bound, threshold, _ = last["errorRate"]
    assert value is not None
    assert bound is not None
    assert threshold == 1.0
    assert bound > threshold  # the bound crossed the threshold at the tick that decided
    # The probe, the healthy ticks, then the third tick with failures rolled back.
    assert len(history) == 1 + HEALTHY_TICKS + 3
    assert len(FAILURES_AT_STEP_2) > 3


def test_the_history_is_compact_and_survives_the_api_server(status: RolloutStatus) -> None:
    written = status.to_dict()["gateHistory"]
    assert json.loads(json.dumps(written)) == written
    for tick in written:
        for value, bound, threshold, letter in tick["gates"].values():
            assert letter in ("P", "F", "I")
            for number in (value, bound, threshold):
                assert number is None or significant(number) == number
    # Six gates at a tick fit in under 400 bytes of JSON.
    assert max(len(json.dumps(t, separators=(",", ":"))) for t in written) < 400
    again = RolloutStatus.model_validate(status.to_dict())
    assert again.gate_history == status.gate_history


def test_the_same_ticks_make_the_same_history(status: RolloutStatus) -> None:
    assert rolled_back_status().to_dict() == status.to_dict()


def test_significant_digits() -> None:
    assert significant(1.234567) == 1.235
    assert significant(0.000123456) == 0.0001235
    assert significant(123456.0) == 123500.0
    assert significant(math.nan) is None
    assert significant(math.inf) is None
    assert significant(None) is None


def test_the_history_keeps_the_newest_ticks_and_skips_stale_ones() -> None:
    raw = spec_dict()
    raw["traffic"]["steps"] = [{"weight": 10, "analysisSeconds": 86400}]
    raw["analysis"]["probe"] = {"enabled": False}
    driver = Driver(parse_spec(raw), through_dict=False)
    driver.tick(missing=True, advance=False)  # starts the step
    for _ in range(GATE_HISTORY_LIMIT + 15):
        driver.tick(missing=True)
    history = driver.status.gate_history
    assert len(history) == GATE_HISTORY_LIMIT
    assert history[-1].time == driver.now
    assert history[0].time == driver.now - timedelta(seconds=60 * (GATE_HISTORY_LIMIT - 1))
    # A tick whose observation is not newer judges nothing, and adds nothing.
    driver.tick(missing=True, advance=False)
    assert driver.status.gate_history == history


def test_the_bisections_evalue_is_the_gates_evalue() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        requests = float(rng.uniform(1, 1e6))
        failures = float(rng.uniform(0, requests))
        rate = float(10 ** rng.uniform(-9, 0))
        assert _binomial_log_evalue_scalar(
            failures, requests - failures, rate, RATE_MULTIPLIERS
        ) == pytest.approx(binomial_log_evalue(failures, requests, rate), rel=1e-9, abs=1e-9)
