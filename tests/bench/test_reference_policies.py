"""The two reference policies on tiny synthetic scenarios built here, tick by tick."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest

from gelu_lab.bench.policies.flagger import FlaggerStylePolicy, kl_divergence
from gelu_lab.bench.policies.kayenta import (
    METRICS,
    KayentaStylePolicy,
    MetricResult,
    classify_metric,
    histogram_quantile,
    mann_whitney,
    remove_outliers,
    score_results,
)
from gelu_lab.bench.policies.promql import request_duration_p99
from gelu_lab.bench.scenario import ArmTick, Scenario, StepPlan, Tick
from gelu_rollout.analysis.observations import ArmObservation
from gelu_rollout.analysis.tail_latency import LatencyHistogram

BOUNDS = (-0.1, 0.5, 1.0, 2.0)
# Share of outputs per bucket (len(BOUNDS) + 1 buckets). Sixteenths, and arms of 1024 and
# 128 requests, keep every derived ratio and quantile exactly equal between the two arms.
SHAPE = (1 / 16, 7 / 16, 4 / 16, 3 / 16, 1 / 16)
SHIFTED = (0.01, 0.14, 0.25, 0.4, 0.2)
BASE_REQUESTS = 1024.0
CAND_REQUESTS = 128.0


@dataclass(frozen=True)
class Inc:
    """What one arm did during one tick."""

    requests: float
    failures: float = 0.0
    nonfinite: float = 0.0
    p99: float | None = 100.0
    shape: Sequence[float] | None = SHAPE  # None: no histogram observations


def _healthy(ticks: int) -> list[tuple[Inc, Inc]]:
    """Both arms serve traffic with the same error ratio, latency and output distribution."""
    return [
        (
            Inc(BASE_REQUESTS, failures=0.25 * (1 + t % 3)),
            Inc(CAND_REQUESTS, failures=0.03125 * (1 + t % 3)),
        )
        for t in range(ticks)
    ]


def _bad_errors(ticks: int) -> list[tuple[Inc, Inc]]:
    """The candidate fails about 4% of its requests, the baseline about 0.05%."""
    return [
        (
            Inc(BASE_REQUESTS, failures=0.25 * (1 + t % 3)),
            Inc(CAND_REQUESTS, failures=5.0 + 0.5 * (t % 4)),
        )
        for t in range(ticks)
    ]


def build(
    increments: Sequence[tuple[Inc, Inc]],
    *,
    steps: Sequence[tuple[int, int]] | None = None,
    availability: float = 0.999,
    ceiling_ms: float = 250.0,
) -> Scenario:
    """A scenario whose cumulative counters add up the given per-tick increments."""
    totals = {"baseline": np.zeros(3 + len(BOUNDS) + 1), "candidate": np.zeros(3 + len(BOUNDS) + 1)}
    ticks = []
    for base, cand in increments:
        arms = {}
        for arm, inc in (("baseline", base), ("candidate", cand)):
            running = totals[arm]
            running[0] += inc.requests
            running[1] += inc.failures
            running[2] += inc.nonfinite
            if inc.shape is not None:
                running[3:] += inc.requests * np.asarray(inc.shape)
            arms[arm] = ArmTick(
                float(running[0]),
                float(running[1]),
                float(running[2]),
                tuple(float(v) for v in running[3:]),
                inc.p99,
            )
        ticks.append(Tick(arms["baseline"], arms["candidate"]))
    plan = (
        steps
        if steps is not None
        else [(10, len(increments) // 2), (50, len(increments) - len(increments) // 2)]
    )
    return Scenario(
        name="synthetic",
        kind="test",
        severity="none",
        expected="promote",
        tick_seconds=60.0,
        fault_onset_tick=None,
        availability_slo=availability,
        latency_p99_ceiling_ms=ceiling_ms,
        histogram_bounds=BOUNDS,
        steps=tuple(StepPlan(w, n) for w, n in plan),
        ticks=tuple(ticks),
    )


def _with_candidate(
    increments: list[tuple[Inc, Inc]], ticks: Sequence[int], **changes: object
) -> list[tuple[Inc, Inc]]:
    out = list(increments)
    for t in ticks:
        base, cand = out[t]
        out[t] = (base, replace(cand, **changes))  # type: ignore[arg-type]
    return out


# --- Flagger ------------------------------------------------------------------------------------


def test_flagger_promotes_a_clean_scenario_at_the_last_planned_tick() -> None:
    scenario = build(_healthy(12))
    outcome = FlaggerStylePolicy().run(scenario)
    assert outcome.decision == "promote"
    assert outcome.tick == scenario.planned_ticks - 1


def test_flagger_ignores_ticks_past_the_plan_when_the_last_interval_passes() -> None:
    scenario = build(_healthy(14), steps=[(10, 5), (50, 5)])
    outcome = FlaggerStylePolicy().run(scenario)
    assert (outcome.decision, outcome.tick) == ("promote", 9)


@pytest.mark.parametrize("threshold", [1, 3, 5])
def test_flagger_rolls_back_after_exactly_threshold_failed_intervals(threshold: int) -> None:
    failing = [1, 4, 5, 8, 10, 13][:threshold]  # not consecutive: failedChecks is cumulative
    policy = FlaggerStylePolicy(threshold=threshold)
    bad = _with_candidate(_healthy(16), failing, failures=5.0)
    outcome = policy.run(build(bad))
    assert outcome.decision == "rollback"
    assert outcome.tick == failing[-1]
    assert f"failedChecks {threshold}" in outcome.reason
    # One failed interval fewer is not enough: the canary is promoted at the end.
    almost = _with_candidate(_healthy(16), failing[:-1], failures=5.0)
    scenario = build(almost)
    outcome = policy.run(scenario)
    assert (outcome.decision, outcome.tick) == ("promote", scenario.planned_ticks - 1)


def test_flagger_counts_at_most_one_failure_per_interval() -> None:
    # Every check fails in ticks 2 and 3, but that is two failed intervals, not eight.
    everything = {"failures": 50.0, "p99": 900.0, "nonfinite": 3.0, "shape": SHIFTED}
    bad = _with_candidate(_healthy(12), [2, 3], **everything)
    outcome = FlaggerStylePolicy(threshold=3).run(build(bad))
    assert outcome.decision == "promote"
    outcome = FlaggerStylePolicy(threshold=2).run(build(bad))
    assert (outcome.decision, outcome.tick) == ("rollback", 3)


@pytest.mark.parametrize(
    ("arm", "changes", "message"),
    [
        ("candidate", {"failures": 5.0}, "success rate"),
        ("candidate", {"p99": 251.0}, "request duration"),
        ("candidate", {"nonfinite": 1.0}, "nonfinite-outputs"),
        ("candidate", {"shape": SHIFTED}, "output-kl-divergence"),
        ("candidate", {"requests": 0.0, "failures": 0.0}, "no values found for request-success"),
        ("candidate", {"p99": None}, "no values found for request-duration"),
        ("candidate", {"shape": None}, "no values found for output-kl"),
        (
            "baseline",
            {"requests": 0.0, "failures": 0.0, "p99": None},
            "no values found for output-kl",
        ),
    ],
)
def test_flagger_each_check_and_each_no_data_case_fails_the_interval(
    arm: str, changes: dict[str, object], message: str
) -> None:
    increments = _healthy(8)
    base, cand = increments[3]
    if arm == "candidate":
        increments[3] = (base, replace(cand, **changes))  # type: ignore[arg-type]
    else:
        increments[3] = (replace(base, **changes), cand)  # type: ignore[arg-type]
    scenario = build(increments)
    outcome = FlaggerStylePolicy(threshold=1).run(scenario)
    assert (outcome.decision, outcome.tick) == ("rollback", 3)
    assert message in outcome.reason


def test_flagger_no_data_intervals_add_up_to_a_rollback() -> None:
    silent = _with_candidate(_healthy(12), [0, 2, 6, 7, 9], requests=0.0, failures=0.0, p99=None)
    outcome = FlaggerStylePolicy().run(build(silent))
    assert (outcome.decision, outcome.tick) == ("rollback", 9)
    assert "no values found" in outcome.reason


def test_flagger_thresholds_come_from_the_scenario_slo() -> None:
    policy = FlaggerStylePolicy()
    strict = build(_healthy(4), availability=0.9995, ceiling_ms=120.0)
    loose = build(_healthy(4), availability=0.99, ceiling_ms=400.0)
    assert policy.thresholds(strict)["request-success-rate"]["min"] == pytest.approx(99.95)
    assert policy.thresholds(strict)["request-duration"]["max"] == 120.0
    assert policy.thresholds(loose)["request-success-rate"]["min"] == pytest.approx(99.0)
    assert policy.thresholds(loose)["request-duration"]["max"] == 400.0
    assert policy.thresholds(loose)["nonfinite-outputs"]["max"] == 0.0
    assert policy.thresholds(loose)["output-kl-divergence"]["max"] == 0.01
    # The same candidate passes the loose SLO and fails the strict one.
    slow = _with_candidate(_healthy(4), [1], p99=200.0)
    assert FlaggerStylePolicy(threshold=1).run(build(slow, ceiling_ms=400.0)).decision == "promote"
    assert FlaggerStylePolicy(threshold=1).run(build(slow, ceiling_ms=120.0)).decision == "rollback"


def test_flagger_threshold_range_edges_are_inclusive() -> None:
    policy = FlaggerStylePolicy()
    # availability 0.75 keeps the arithmetic exact: 75 of 100 succeed -> 75.0%.
    scenario = build(_healthy(2), availability=0.75, ceiling_ms=200.0)

    def candidate(failures: float, p99: float) -> ArmObservation:
        return ArmObservation(100.0, failures, 0.0, tuple(100 * s for s in SHAPE), p99)

    baseline = ArmObservation(900.0, 0.0, 0.0, tuple(900 * s for s in SHAPE), 100.0)
    assert policy.check_interval(scenario, baseline, candidate(25.0, 200.0)) is None
    assert policy.check_interval(scenario, baseline, candidate(26.0, 200.0)) is not None
    assert policy.check_interval(scenario, baseline, candidate(25.0, 200.001)) is not None


def test_flagger_kl_divergence_matches_a_hand_computation() -> None:
    # p = (1.5, 0.5) / 2, q = (0.5, 1.5) / 2: KL = 0.75 ln 3 + 0.25 ln(1/3) = 0.5 ln 3.
    assert kl_divergence([1, 0], [0, 1], 0.5) == pytest.approx(0.5 * math.log(3))
    assert kl_divergence([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert kl_divergence([10, 20, 30], [20, 40, 60]) > 0  # pseudo-counts weigh differently
    assert kl_divergence([10, 20, 30], [30, 20, 10]) > 0.1


def test_flagger_keeps_analysing_past_the_plan_when_the_last_interval_fails() -> None:
    increments = _with_candidate(_healthy(12), [9], failures=5.0)
    policy = FlaggerStylePolicy()
    outcome = policy.run(build(increments, steps=[(10, 5), (50, 5)]))
    assert (outcome.decision, outcome.tick) == ("promote", 10)
    outcome = policy.run(build(increments[:10], steps=[(10, 5), (50, 5)]))
    assert (outcome.decision, outcome.tick) == ("stalled", None)


def test_flagger_parameters() -> None:
    parameters = FlaggerStylePolicy().parameters()
    assert parameters["threshold"] == 5
    assert parameters["kl_max"] == 0.01
    assert parameters["kl_pseudo_count"] == 0.5
    assert parameters["nonfinite_max"] == 0.0
    assert FlaggerStylePolicy.name == "flagger-style"
    with pytest.raises(ValueError, match="threshold"):
        FlaggerStylePolicy(threshold=0)


# --- Kayenta: building blocks -------------------------------------------------------------------


def test_histogram_quantile_follows_prometheus() -> None:
    bounds = (0.0, 1.0, 2.0)
    assert histogram_quantile(0.5, bounds, (0, 10, 10, 0)) == pytest.approx(1.0)
    assert histogram_quantile(0.25, bounds, (0, 10, 10, 0)) == pytest.approx(0.5)
    assert histogram_quantile(0.75, bounds, (0, 10, 10, 0)) == pytest.approx(1.5)
    # In the +Inf bucket: the highest finite bound.
    assert histogram_quantile(0.5, bounds, (0, 0, 0, 5)) == 2.0
    # Lowest bucket with a bound <= 0: that bound; with a positive bound: from 0.
    assert histogram_quantile(0.25, (-0.5, 1.0), (4, 4, 0)) == -0.5
    assert histogram_quantile(0.5, (2.0, 4.0), (10, 0, 0)) == pytest.approx(1.0)
    assert math.isnan(histogram_quantile(0.5, bounds, (0, 0, 0, 0)))


def test_outlier_removal_uses_iqr_factor_3_with_the_p99_guard() -> None:
    # Q1 = Q3 = 1, so the fence is p99 = 1 + 0.91 * 99: the 100 is an outlier.
    values = np.array([1.0] * 9 + [100.0])
    assert remove_outliers(values).tolist() == [1.0] * 9
    # Inside max(p99, Q3 + 3 IQR): nothing removed.
    # [1, 2, 3, 4, 5, x]: Q1 = 2.25, Q3 = 4.75, so Q3 + 3 IQR = 12.25; p99 lies below x.
    spread = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 12.0])
    assert remove_outliers(spread).tolist() == spread.tolist()
    assert remove_outliers(np.append(spread[:-1], 12.5)).tolist() == spread[:-1].tolist()
    # The lower fence mirrors it.
    assert remove_outliers(-spread).tolist() == (-spread).tolist()
    assert remove_outliers(-np.append(spread[:-1], 12.5)).tolist() == (-spread[:-1]).tolist()
    assert remove_outliers(np.array([], dtype=np.float64)).size == 0


def test_mann_whitney_matches_kayentas_reference_values() -> None:
    # kayenta-mannwhitney MannWhitneySuite "returns expected values" (R's wilcox.test).
    result = mann_whitney(np.array([10.0, 20, 30, 40]), np.array([1.0, 2, 3, 4]), 0.95)
    assert result.lower == pytest.approx(6.0)
    assert result.upper == pytest.approx(39.0)
    assert result.estimate == pytest.approx(22.5)


def _wilcoxon_difference(mu: float, zq: float, x: np.ndarray, y: np.ndarray) -> float:
    """R's ``wdiff``, written from ranks, independently of the policy's pairwise shortcut."""
    from scipy.stats import rankdata

    n, m = len(x), len(y)
    ranks = rankdata(np.concatenate((x - mu, y)))
    _, ties = np.unique(ranks, return_counts=True)
    dz = ranks[:n].sum() - n * (n + 1) / 2 - n * m / 2
    sigma = math.sqrt(n * m / 12 * ((n + m + 1) - np.sum(ties**3 - ties) / ((n + m) * (n + m - 1))))
    return float((dz - 0.5 * np.sign(dz)) / sigma - zq)


def test_mann_whitney_interval_matches_a_bisection_on_the_rank_statistic() -> None:
    from scipy.stats import norm

    rng = np.random.default_rng(7)
    z = float(norm.ppf(0.99))
    for _ in range(40):
        n, m = (int(v) for v in rng.integers(5, 16, 2))
        x = np.round(rng.normal(rng.normal(0, 1), 1, n), int(rng.integers(0, 3)))
        y = np.round(rng.normal(0, 1, m), int(rng.integers(0, 3)))
        low, high = float(x.min() - y.max()), float(x.max() - y.min())

        def root(
            zq: float, x: np.ndarray = x, y: np.ndarray = y, low: float = low, high: float = high
        ) -> float:
            if _wilcoxon_difference(low, zq, x, y) <= 0:
                return low
            if _wilcoxon_difference(high, zq, x, y) >= 0:
                return high
            a, b = low, high
            for _ in range(100):
                mid = (a + b) / 2
                a, b = (mid, b) if _wilcoxon_difference(mid, zq, x, y) > 0 else (a, mid)
            return (a + b) / 2

        result = mann_whitney(x, y, 0.98)
        assert result.lower == pytest.approx(root(z), abs=1e-9)
        assert result.upper == pytest.approx(root(-z), abs=1e-9)
        assert result.lower <= result.estimate <= result.upper


KAYENTA_CLASSIFIER_SUITE = [
    # (control, experiment, keyword arguments, label, critical) from kayenta-judge ClassifierSuite
    ([1.0, 2.2, 1.1, 2.5, 3.0], [20.0, 22.0, 21.0, 25.0, 30.0], {}, "High", False),
    (
        [20.0, 22.0, 21.0, 25.0, 30.0],
        [10.0, 12.2, 10.1, 12.5, 23.0],
        {"allowed_decrease": 0.5},
        "Pass",
        False,
    ),
    (
        [10.0, 20.2, 10.1, 20.5, 30.0],
        [2.0, 2.0, 2.0, 2.0, 3.0],
        {"critical": True, "critical_decrease": 1.2},
        "Low",
        True,
    ),
    (
        [1.0, 2.2, 1.1, 2.5, 3.0],
        [20.0, 22.0, 21.0, 25.0, 30.0],
        {"critical": True, "allowed_increase": 5.0, "critical_increase": 13.0},
        "High",
        False,
    ),
    (
        [1.0, 2.2, 1.1, 2.5, 3.0],
        [20.0, 22.0, 21.0, 25.0, 30.0],
        {"critical": True, "allowed_increase": 13.0, "critical_increase": 15.0},
        "Pass",
        False,
    ),
    ([1.0, 2.2, 1.1, 2.5, 3.0], [20.0, 22.0, 21.0, 25.0, 30.0], {"critical": True}, "High", True),
    ([1.0, 1.0], [1.0, 1.0, 1.0], {}, "Pass", False),
]


@pytest.mark.parametrize(
    ("control", "experiment", "options", "label", "critical"), KAYENTA_CLASSIFIER_SUITE
)
def test_classifier_reproduces_kayentas_own_test_cases(
    control: list[float],
    experiment: list[float],
    options: dict[str, object],
    label: str,
    critical: bool,
) -> None:
    result = classify_metric(
        "m",
        np.array(control),
        np.array(experiment),
        tolerance=0.10,
        confidence=0.95,
        **options,  # type: ignore[arg-type]
    )
    assert (result.label, result.critical) == (label, critical)


def test_classifier_bounds_are_a_fraction_of_the_shift_estimate() -> None:
    """High needs the interval's lower end above tolerance x |HL shift estimate|."""
    control = np.linspace(0.9, 1.1, 20)
    # A fault in the second half of a growing window: 8 normal points, 12 high ones.
    experiment = np.concatenate((np.linspace(0.91, 1.09, 8), np.linspace(1.9, 2.1, 12)))
    result = mann_whitney(experiment, control, 0.98)
    assert 0 < result.lower < 0.25 * abs(result.estimate)  # significant, but not by the rule
    assert classify_metric("m", control, experiment, tolerance=0.25).label == "Pass"
    assert classify_metric("m", control, experiment, tolerance=0.0).label == "High"
    # A shift of the whole sample clears the bound.
    assert classify_metric("m", control, control + 0.5, tolerance=0.25).label == "High"
    assert classify_metric("m", control, control - 0.5, tolerance=0.25).label == "Low"


def test_classifier_labels_follow_the_documented_rule_on_random_samples() -> None:
    rng = np.random.default_rng(11)
    for _ in range(60):
        control = rng.normal(1.0, 0.2, int(rng.integers(5, 15)))
        experiment = rng.normal(1.0 + rng.normal(0, 0.3), 0.2, int(rng.integers(5, 15)))
        result = mann_whitney(experiment, control, 0.98)
        bound = 0.25 * abs(result.estimate)
        ratio = experiment.mean() / control.mean()
        expected = (
            "High"
            if result.lower > bound and ratio >= 1
            else "Low"
            if result.upper < -bound and ratio <= 1
            else "Pass"
        )
        assert classify_metric("m", control, experiment).label == expected
        increase_only = classify_metric("m", control, experiment, direction="increase").label
        decrease_only = classify_metric("m", control, experiment, direction="decrease").label
        assert increase_only == (expected if expected == "High" else "Pass")
        assert decrease_only == (expected if expected == "Low" else "Pass")


def test_classifier_needs_the_mean_ratio_to_agree_with_the_shift() -> None:
    control = np.concatenate((np.linspace(1.0, 1.6, 11), [60.0]))
    experiment = np.linspace(1.0, 1.6, 11) + 1.0  # shifted up, but the control's mean is higher
    result = mann_whitney(experiment, control, 0.98)
    assert result.lower > 0.25 * abs(result.estimate)  # the rank test alone says High
    assert experiment.mean() / control.mean() < 1.0
    assert classify_metric("m", control, experiment).label == "Pass"
    assert classify_metric("m", control, experiment, allowed_increase=0.3).label == "High"


def test_classifier_nodata_identical_and_degenerate_samples() -> None:
    empty = np.array([], dtype=np.float64)
    some = np.array([1.0, 2.0, 3.0])
    assert classify_metric("m", empty, some).label == "Nodata"
    assert classify_metric("m", some, empty, critical=True) == MetricResult(
        "m", "Nodata", True, "Missing data for m"
    )
    assert classify_metric("m", some, some[::-1].copy()).label == "Pass"
    # One distinct value per arm: Kayenta adds tiny noise and then compares.
    assert classify_metric("m", np.full(6, 1.0), np.full(6, 2.0)).label == "High"
    assert classify_metric("m", np.full(6, 2.0), np.full(6, 1.0)).label == "Low"
    # Deterministic: the same input gives the same answer every time.
    first = classify_metric("m", np.full(6, 1.0), np.full(6, 1.0 + 1e-3))
    assert classify_metric("m", np.full(6, 1.0), np.full(6, 1.0 + 1e-3)) == first


def _result(name: str, label: str, critical: bool = False) -> MetricResult:
    return MetricResult(name, label, critical, "")  # type: ignore[arg-type]


def test_scorer_passing_share_nodata_and_critical_rules() -> None:
    passes = [_result(f"m{i}", "Pass") for i in range(6)]
    assert score_results(passes)[0] == 100.0
    one_high = [*passes[:5], _result("m5", "High")]
    assert score_results(one_high)[0] == pytest.approx(round(500 / 6, 2))
    # Nodata is left out of the share ...
    two_nodata = [*passes[:3], _result("a", "Nodata"), _result("b", "Nodata"), _result("c", "Low")]
    assert score_results(two_nodata)[0] == pytest.approx(75.0)
    # ... until half of the metrics have none.
    three_nodata = [*passes[:3], *(_result(n, "Nodata") for n in "abc")]
    assert score_results(three_nodata)[0] == 0.0
    # A critical metric that is not Pass zeroes the score.
    assert score_results([*passes[:5], _result("m5", "High", critical=True)])[0] == 0.0
    assert score_results([*passes[:5], _result("m5", "Nodata", critical=True)])[0] == 0.0
    # Error counts neither as data nor as Nodata.
    assert score_results([*passes[:5], _result("m5", "Error")])[0] == 100.0


# --- Kayenta: the policy ------------------------------------------------------------------------


def _wavy(ticks: int, phase: float) -> list[Inc]:
    """An arm whose error ratio and latency wander within the same band as the other arm's."""
    return [
        Inc(
            100,
            failures=0.1 * (1 + 0.3 * math.sin(1.7 * t + phase)),
            p99=100 + 5 * math.sin(2.3 * t + phase),
        )
        for t in range(ticks)
    ]


def test_kayenta_scores_a_clean_scenario_100_and_promotes() -> None:
    identical = build(_healthy(10))
    policy = KayentaStylePolicy()
    outcome = policy.run(identical)
    assert (outcome.decision, outcome.tick) == ("promote", identical.planned_ticks - 1)
    assert "final score 100" in outcome.reason
    # Same behaviour, different values: the test itself runs, and finds nothing.
    base, cand = _wavy(12, 0.0), _wavy(12, 0.9)
    wavy = build(list(zip(base, cand, strict=True)))
    outcome = policy.run(wavy)
    assert (outcome.decision, outcome.tick) == ("promote", wavy.planned_ticks - 1)
    assert "final score 100" in outcome.reason


@pytest.mark.parametrize("min_points", [3, 5, 7])
def test_kayenta_rolls_back_a_clearly_worse_error_ratio_at_the_first_judgement(
    min_points: int,
) -> None:
    outcome = KayentaStylePolicy(min_points=min_points).run(build(_bad_errors(12)))
    assert (outcome.decision, outcome.tick) == ("rollback", min_points - 1)
    assert "score 0" in outcome.reason
    assert "error-ratio" in outcome.reason


def test_kayenta_waits_for_min_points_with_traffic_in_each_arm() -> None:
    silent = _with_candidate(
        _bad_errors(12), [0, 1, 2], requests=0.0, failures=0.0, p99=None, shape=None
    )
    policy = KayentaStylePolicy()
    outcome = policy.run(build(silent))
    assert (outcome.decision, outcome.tick) == ("rollback", 3 + policy.min_points - 1)


def test_kayenta_nodata_metric_is_left_out_of_the_score() -> None:
    no_latency = _with_candidate(_healthy(10), range(10), p99=None)
    scenario = build(no_latency)
    outcome = KayentaStylePolicy().run(scenario)
    assert (outcome.decision, outcome.tick) == ("promote", scenario.planned_ticks - 1)
    assert "final score 100" in outcome.reason


def test_kayenta_half_the_metrics_without_data_scores_zero() -> None:
    no_histogram = _with_candidate(_healthy(10), range(10), shape=None)  # p10, p50, p90: 3 of 6
    policy = KayentaStylePolicy()
    outcome = policy.run(build(no_histogram))
    assert (outcome.decision, outcome.tick) == ("rollback", policy.min_points - 1)
    assert "NODATA" in outcome.reason


def test_kayenta_critical_metric_failing_gives_zero_but_a_normal_one_does_not() -> None:
    policy = KayentaStylePolicy()
    ticks = 10
    nonfinite = _with_candidate(_healthy(ticks), range(ticks), nonfinite=2.0)
    outcome = policy.run(build(nonfinite))
    assert (outcome.decision, outcome.tick) == ("rollback", policy.min_points - 1)
    assert "nonfinite-per-request" in outcome.reason
    assert "score 0 " in outcome.reason
    # P99 is not critical: one High metric of six gives 83.33, above marginal and
    # below pass, so the canary runs to the end and then fails.
    slow = _healthy(ticks)
    slow = [
        (replace(base, p99=100.0 + t % 3), replace(cand, p99=180.0 + t % 3))
        for t, (base, cand) in enumerate(slow)
    ]
    scenario = build(slow)
    outcome = policy.run(scenario)
    expected_score = round(100 * 5 / 6, 2)
    assert (outcome.decision, outcome.tick) == ("rollback", scenario.planned_ticks - 1)
    assert f"final score {expected_score:g} < pass" in outcome.reason
    assert policy.marginal <= expected_score < policy.pass_score


def test_kayenta_judge_reports_every_metric() -> None:
    policy = KayentaStylePolicy()
    base = [np.array([1.0, 2.0, 3.0, 4.0, 5.0]) for _ in METRICS]
    judgement = policy.judge(base, [b.copy() for b in base])
    assert judgement.score == 100.0
    assert [r.name for r in judgement.results] == [m.name for m in METRICS]
    worse = [b.copy() for b in base]
    worse[0] = base[0] + 10.0  # error-ratio: critical
    assert policy.judge(base, worse).score == 0.0


def test_kayenta_final_judgement_needs_enough_points() -> None:
    scenario = build(_healthy(4), steps=[(10, 2), (50, 2)])
    outcome = KayentaStylePolicy().run(scenario)
    assert (outcome.decision, outcome.tick) == ("rollback", 3)
    assert "no judgement" in outcome.reason
    short = build(_healthy(6), steps=[(10, 5), (50, 5)])
    assert KayentaStylePolicy().run(short).decision == "stalled"


def test_kayenta_parameters() -> None:
    parameters = KayentaStylePolicy().parameters()
    assert parameters["confidence"] == 0.98
    assert parameters["tolerance"] == 0.25
    assert parameters["marginal"] == 75.0
    assert parameters["pass_score"] == 95.0
    assert parameters["min_points"] == 5
    assert KayentaStylePolicy.name == "kayenta-style"
    with pytest.raises(ValueError, match="marginal"):
        KayentaStylePolicy(marginal=96, pass_score=95)


# --- Latency from a request-duration histogram, where the scenario has one ----------------------

LATENCY_BOUNDS = (50.0, 100.0, 250.0, 500.0)


def _with_latency(
    scenario: Scenario, shapes: Sequence[tuple[Sequence[float], Sequence[float]]]
) -> Scenario:
    """The scenario with a cumulative latency histogram per arm: per tick, the share of the
    arm's requests in each latency bucket (baseline shape, candidate shape)."""
    totals = {"baseline": np.zeros(len(LATENCY_BOUNDS) + 1), "candidate": np.zeros(5)}
    ticks = []
    previous = {"baseline": 0.0, "candidate": 0.0}
    for tick, (base_shape, cand_shape) in zip(scenario.ticks, shapes, strict=True):
        arms = {}
        for name, arm, shape in (
            ("baseline", tick.baseline, base_shape),
            ("candidate", tick.candidate, cand_shape),
        ):
            requests = arm.requests - previous[name]
            previous[name] = arm.requests
            totals[name] = totals[name] + requests * np.asarray(shape)
            arms[name] = replace(arm, latency_histogram=tuple(float(x) for x in totals[name]))
        ticks.append(Tick(arms["baseline"], arms["candidate"]))
    return replace(scenario, latency_bounds=LATENCY_BOUNDS, ticks=tuple(ticks))


FAST = (0.5, 0.495, 0.005, 0.0, 0.0)  # P99 inside (50, 100]: about 99 ms
SLOW_TAIL = (0.5, 0.45, 0.0, 0.05, 0.0)  # 5% of requests in (250, 500]: P99 about 450 ms


def test_request_duration_is_the_histogram_quantile_where_a_histogram_exists() -> None:
    arm = ArmObservation(
        100, 0, 0, (), 80.0, latency_histogram=LatencyHistogram(LATENCY_BOUNDS, (50, 45, 0, 5, 0))
    )
    assert request_duration_p99(arm) == pytest.approx(
        histogram_quantile(0.99, LATENCY_BOUNDS, (50, 45, 0, 5, 0))
    )
    assert request_duration_p99(arm) == pytest.approx(450.0)
    empty = replace(arm, latency_histogram=LatencyHistogram(LATENCY_BOUNDS, (0, 0, 0, 0, 0)))
    assert request_duration_p99(empty) is None  # no values found
    assert request_duration_p99(replace(arm, latency_histogram=None)) == 80.0


def test_flagger_judges_request_duration_from_the_histogram() -> None:
    ticks = 10
    # p99Ms says 100 ms everywhere; the candidate's histogram puts 5% above 250 ms.
    slow = _with_latency(build(_healthy(ticks)), [(FAST, SLOW_TAIL)] * ticks)
    policy = FlaggerStylePolicy()
    outcome = policy.run(slow)
    assert (outcome.decision, outcome.tick) == ("rollback", policy.threshold - 1)
    assert "request duration 450ms > 250ms" in outcome.reason
    # The other way round: p99Ms above the ceiling, the histogram well below it.
    fast = _with_latency(
        build([(b, replace(c, p99=400.0)) for b, c in _healthy(ticks)]), [(FAST, FAST)] * ticks
    )
    assert policy.run(fast).decision == "promote"
    assert policy.run(build([(b, replace(c, p99=400.0)) for b, c in _healthy(ticks)])).decision == (
        "rollback"
    )


def test_flagger_empty_latency_histogram_is_no_values() -> None:
    ticks = 10
    scenario = _with_latency(build(_healthy(ticks)), [(FAST, (0, 0, 0, 0, 0))] * ticks)
    outcome = FlaggerStylePolicy().run(scenario)
    assert outcome.decision == "rollback"
    assert "no values found for request-duration" in outcome.reason


def test_kayenta_takes_p99_points_from_the_histogram() -> None:
    ticks = 10
    policy = KayentaStylePolicy()
    clean = _with_latency(build(_healthy(ticks)), [(FAST, FAST)] * ticks)
    assert policy.run(clean).decision == "promote"
    # Same p99Ms in both arms, but the candidate's histogram tail is slower: p99-ms High.
    slow_shape = [(FAST, SLOW_TAIL if t % 2 else (0.5, 0.46, 0.0, 0.04, 0.0)) for t in range(10)]
    slow = _with_latency(build(_healthy(ticks)), slow_shape)
    outcome = policy.run(slow)
    assert (outcome.decision, outcome.tick) == ("rollback", slow.planned_ticks - 1)
    assert "p99-ms=High" in outcome.reason
