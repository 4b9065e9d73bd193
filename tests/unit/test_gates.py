"""Unit tests of the gates in ``gelu_rollout.analysis`` at their boundaries.

Every gate answers "is the candidate worse than its tolerance?", never "is it
different?": no data is never a Pass, a candidate inside its tolerance passes
however much data there is, and one clearly beyond it fails once the evidence
is there. The gate parameters below follow the spec's defaults (availability
99.9%, so an error budget of 0.1%; maxBurnRate 1; maxRatioToBaseline 2;
minRequests 500; maxRegression 10%; minTicks 3; maxKL 0.01; minOutputs 2000;
smoothing 0.5) and the default false-rollback budget of 1% split over five
tests and four steps.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from scipy import optimize, special, stats

from gelu_rollout.analysis.burn_rate import (
    BurnWindow,
    burn_rate_gate,
    burn_windows,
    required_window_seconds,
)
from gelu_rollout.analysis.divergence import divergence_gate, estimate_kl, kl_divergence
from gelu_rollout.analysis.error_rate import error_rate_gate, worse_than_baseline
from gelu_rollout.analysis.latency import (
    EFFECT_SCALE,
    PRIOR_TICKS,
    TIE_VARIANCE,
    latency_ceiling_gate,
    latency_regression_gate,
)
from gelu_rollout.analysis.nonfinite import nonfinite_gate
from gelu_rollout.analysis.observations import (
    CEILING_CLIP,
    LATENCY_NOISE_FLOOR,
    LATENCY_NOISE_SCALE,
    ArmObservation,
    ArmTotals,
    StepEvidence,
    WeightedMoments,
    WindowCounts,
    accumulate,
    latency_clip,
)
from gelu_rollout.analysis.power import binomial_plan_trials, zero_failure_proof_requests
from gelu_rollout.analysis.sequential import RATE_MULTIPLIERS, scale_free_log_evalue, spent_alpha
from gelu_rollout.analysis.verdict import GateResult, Verdict

ALPHA = 0.01 / (5 * 4)
BUDGET = 0.001
MAX_BURN = 1.0
MAX_RATIO = 2.0
MIN_REQUESTS = 500
DETECT_BURN = 6.0
POWER = 0.8
MAX_REGRESSION = 0.1
MIN_TICKS = 3
CEILING_MS = 250.0
MAX_KL = 0.01
MIN_OUTPUTS = 2000
SMOOTHING = 0.5
INTERVAL = 30.0
# The regression tolerance on the log scale, and the documented per-tick clips: a
# paired log ratio at max(4 x that tolerance, 0.3) on both sides (4 log 1.1 = 0.381,
# i.e. 1.1^4 = 1.464x), whatever the tick's traffic; a ceiling sample from above only,
# at log 2, whatever the traffic and the tolerance.
LOG_TOLERANCE = math.log1p(MAX_REGRESSION)
CLIP = max(4.0 * LOG_TOLERANCE, 0.3)
CEILING_LOG_CLIP = math.log(2.0)

PASS, FAIL, INCONCLUSIVE = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def arm(
    requests: float = 0.0,
    failures: float = 0.0,
    *,
    nonfinite: float = 0.0,
    histogram: Sequence[float] = (),
    p99: float | None = None,
    windows: Mapping[float, tuple[float, float]] | None = None,
    p99_window: float = INTERVAL,
) -> ArmObservation:
    """One arm's tick; its P99 covers the tick alone unless ``p99_window`` says otherwise."""
    return ArmObservation(
        requests=requests,
        failures=failures,
        nonfinite=nonfinite,
        histogram=tuple(float(x) for x in histogram),
        p99_ms=p99,
        windows={s: WindowCounts(r, f) for s, (r, f) in (windows or {}).items()},
        p99_window_seconds=p99_window,
    )


def build(
    ticks: Iterable[tuple[ArmObservation, ArmObservation]],
    *,
    warm: bool = True,
    start: StepEvidence | None = None,
) -> StepEvidence:
    evidence = start if start is not None else StepEvidence()
    for baseline, candidate in ticks:
        evidence = accumulate(
            evidence,
            baseline,
            candidate,
            interval_seconds=INTERVAL,
            latency_ceiling_ms=CEILING_MS,
            max_regression=MAX_REGRESSION,
            warm=warm,
        )
    return evidence


def totals(
    candidate: tuple[float, float], baseline: tuple[float, float] = (0.0, 0.0)
) -> StepEvidence:
    """Evidence with the given (requests, failures) per arm, as one tick."""
    return build([(arm(*baseline), arm(*candidate))])


def error_gate(evidence: StepEvidence, **overrides: Any) -> GateResult:
    params: dict[str, Any] = {
        "error_budget": BUDGET,
        "max_burn_rate": MAX_BURN,
        "max_ratio_to_baseline": MAX_RATIO,
        "min_requests": MIN_REQUESTS,
        "alpha": ALPHA,
        "detect_burn_rate": DETECT_BURN,
        "power": POWER,
    }
    params.update(overrides)
    return error_rate_gate(evidence, **params)


def regression_gate(evidence: StepEvidence) -> GateResult:
    return latency_regression_gate(
        evidence, max_regression=MAX_REGRESSION, min_ticks=MIN_TICKS, alpha=ALPHA
    )


def ceiling_gate(evidence: StepEvidence) -> GateResult:
    return latency_ceiling_gate(evidence, ceiling_ms=CEILING_MS, min_ticks=MIN_TICKS, alpha=ALPHA)


def kl_gate(evidence: StepEvidence) -> GateResult:
    return divergence_gate(
        evidence, max_kl=MAX_KL, min_outputs=MIN_OUTPUTS, smoothing=SMOOTHING, alpha=ALPHA
    )


def latency_noise_sd(requests: float) -> float:
    """The per-tick log-P99 ratio noise the gates model for two arms of ``requests`` each."""
    return math.sqrt(LATENCY_NOISE_SCALE**2 * 2.0 / requests + LATENCY_NOISE_FLOOR**2)


def modelled_weight(*requests: float) -> float:
    """A tick's weight: 1 / the modelled variance of a log P99 (ratio) from these arms."""
    variance = sum(LATENCY_NOISE_SCALE**2 / n for n in requests) + LATENCY_NOISE_FLOOR**2
    return 1.0 / variance


def most_evidence(n: int, weight: float) -> float:
    """The most log evidence ``n`` ticks of ``weight`` each can hold, whatever their
    values: (n - 1) / 2 x log(1 + W t^2), the scale-free e-value of identical
    samples (Q = S^2 / W), which the tie allowance only lowers."""
    return (n - 1) / 2 * math.log1p(n * weight * EFFECT_SCALE**2)


def identical_ticks_log_evalue(n: int, weight: float, above: float) -> float:
    """The latency gates' log e-value for ``n`` identical ticks of ``weight`` each,
    ``above`` the null: S = W d, and Q = W d^2 plus the tie allowance, TIE_VARIANCE
    per tick (in weight units), in BF = (1 + W t^2)^(-1/2) (Q / (Q - S^2 t^2 /
    (1 + W t^2)))^(n/2)."""
    total = n * weight
    spread = 1.0 + total * EFFECT_SCALE**2
    q = total * above**2 + TIE_VARIANCE * n
    explained = (total * above) ** 2 * EFFECT_SCALE**2 / (spread * q)
    return -0.5 * math.log(spread) - 0.5 * n * math.log1p(-explained)


def message_evidence(message: str, alpha: float = ALPHA) -> float:
    """The e-value quoted in a latency gate's message ("evidence X of 1/alpha"), as a log."""
    match = re.search(r"evidence (\S+) of (\S+)\)", message)
    assert match, message
    assert float(match.group(2)) == pytest.approx(1 / alpha, rel=1e-2), message
    quoted = match.group(1)
    return float(quoted[2:]) if quoted.startswith("e^") else math.log(float(quoted))


def latency_ticks(
    log_ratios: Iterable[float], requests: float = 1000.0, baseline_ms: float = 100.0
) -> list[tuple[ArmObservation, ArmObservation]]:
    return [
        (
            arm(requests, p99=baseline_ms),
            arm(requests, p99=baseline_ms * math.exp(r)),
        )
        for r in log_ratios
    ]


def histogram_ticks(
    baseline_counts: Iterable[float], candidate_counts: Iterable[float]
) -> list[tuple[ArmObservation, ArmObservation]]:
    baseline = [float(x) for x in baseline_counts]
    candidate = [float(x) for x in candidate_counts]
    return [
        (
            arm(sum(baseline), histogram=baseline),
            arm(sum(candidate), histogram=candidate),
        )
    ]


def assert_well_formed(result: GateResult) -> None:
    assert result.verdict in (PASS, FAIL, INCONCLUSIVE)
    assert result.message
    assert result.value is None or math.isfinite(result.value)


# Output distributions for the divergence gate: a discretised normal over 20
# buckets and an exponential tilt of it with a chosen KL(baseline || candidate).
_BUCKET_X = np.linspace(-3.0, 3.0, 20)
_BASE_P = np.exp(-(_BUCKET_X**2) / 2)
_BASE_P /= _BASE_P.sum()


def _tilted(t: float) -> np.ndarray:
    q: np.ndarray = _BASE_P * np.exp(t * _BUCKET_X)
    normalised: np.ndarray = q / q.sum()
    return normalised


def candidate_distribution(kl: float) -> np.ndarray:
    """A candidate distribution with KL(_BASE_P || candidate) == kl."""
    t = optimize.brentq(lambda t: special.rel_entr(_BASE_P, _tilted(t)).sum() - kl, 0.0, 5.0)
    q = _tilted(t)
    assert special.rel_entr(_BASE_P, q).sum() == pytest.approx(kl, rel=1e-6)
    return q


# ---------------------------------------------------------------------------------------------
# Error rate
# ---------------------------------------------------------------------------------------------


def test_error_rate_without_data_is_inconclusive() -> None:
    result = error_gate(StepEvidence())
    assert result.verdict is INCONCLUSIVE
    assert result.value is None
    assert result.samples == 0


def test_error_rate_with_baseline_traffic_only_is_inconclusive() -> None:
    assert error_gate(totals((0.0, 0.0), baseline=(10_000.0, 5.0))).verdict is INCONCLUSIVE


def test_error_rate_below_min_requests_is_inconclusive() -> None:
    result = error_gate(totals((MIN_REQUESTS - 1.0, 0.0), baseline=(10_000.0, 10.0)))
    assert result.verdict is INCONCLUSIVE
    assert result.samples == MIN_REQUESTS - 1.0


def planned_requests() -> float:
    """Candidate requests after which a burn of DETECT_BURN would have shown."""
    needed = binomial_plan_trials(
        MAX_BURN * BUDGET, DETECT_BURN * BUDGET, RATE_MULTIPLIERS, ALPHA, POWER
    )
    assert needed is not None
    return max(float(MIN_REQUESTS), needed)


def test_error_rate_without_failures_waits_for_its_power_plan_then_passes_on_power() -> None:
    needed = planned_requests()
    assert needed > MIN_REQUESTS  # the plan, not the floor, is what binds here
    early = error_gate(totals((needed - 1.0, 0.0), baseline=(10_000.0, 10.0)))
    assert early.verdict is INCONCLUSIVE
    assert f"{needed:,.0f} candidate requests needed" in early.message
    result = error_gate(totals((needed, 0.0), baseline=(10_000.0, 10.0)))
    assert result.verdict is PASS
    assert result.basis == "power"
    assert result.value == 0.0


def test_error_rate_without_a_plan_passes_only_on_proof() -> None:
    unplanned = {"detect_burn_rate": None}
    some = error_gate(totals((planned_requests(), 0.0), baseline=(10_000.0, 10.0)), **unplanned)
    assert some.verdict is INCONCLUSIVE
    proof = zero_failure_proof_requests(MAX_BURN * BUDGET, ALPHA)
    many = error_gate(totals((4 * proof, 0.0), baseline=(10_000.0, 10.0)), **unplanned)
    assert many.verdict is PASS
    assert many.basis == "proof"


def test_error_rate_just_inside_tolerance_with_plenty_of_data_passes() -> None:
    # 0.9x the tolerated burn over a million requests.
    result = error_gate(totals((1_000_000.0, 900.0), baseline=(1_000_000.0, 1000.0)))
    assert result.verdict is PASS
    assert result.value == pytest.approx(0.9)
    assert result.threshold == MAX_BURN


@pytest.mark.parametrize("requests", [1e6, 1e8, 1e10])
def test_error_rate_inside_tolerance_never_fails_however_many_requests(requests: float) -> None:
    # A test of "different" would reject 0.9x with enough data; a test of
    # "worse than tolerance" must pass it, and more data only makes it safer.
    result = error_gate(totals((requests, 0.9 * BUDGET * requests), baseline=(requests, 0.0)))
    assert result.verdict is PASS


def test_error_rate_inside_tolerance_never_fails_over_a_long_sequence() -> None:
    """Tick by tick, binomial failures at 0.9x the tolerated rate: checked at
    every one of 300 looks (30 million requests), the gate never fails."""
    rng = np.random.default_rng(2026)
    evidence = StepEvidence()
    verdicts = []
    for _ in range(300):
        n_c = 100_000.0
        f_c = float(rng.binomial(int(n_c), 0.9 * BUDGET))
        f_b = float(rng.binomial(int(n_c), BUDGET))
        evidence = build([(arm(n_c, f_b), arm(n_c, f_c))], start=evidence)
        verdicts.append(error_gate(evidence).verdict)
    assert FAIL not in verdicts
    assert verdicts[-1] is PASS


def test_error_rate_clearly_beyond_tolerance_fails() -> None:
    result = error_gate(totals((100_000.0, 500.0), baseline=(100_000.0, 100.0)))
    assert result.verdict is FAIL
    assert result.value == pytest.approx(5.0)
    assert result.samples == 100_000.0
    assert result.message


def test_error_rate_moderately_beyond_tolerance_fails_with_plenty_of_data() -> None:
    # 1.5x the tolerated burn over a million requests, against a baseline at 0.5x.
    result = error_gate(totals((1_000_000.0, 1500.0), baseline=(1_000_000.0, 500.0)))
    assert result.verdict is FAIL
    assert result.value == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("requests", "failures"),
    [
        (1_000.0, 1.0),  # exactly at the tolerated burn
        (1_000.0, 2.0),  # twice the tolerated burn, two failures
        (600.0, 1.0),  # slightly above, one failure
        (5_000.0, 6.0),  # 1.2x
        (100.0, 1.0),  # 10x on a hundred requests
    ],
)
def test_error_rate_at_or_slightly_above_tolerance_with_little_data_does_not_fail(
    requests: float, failures: float
) -> None:
    result = error_gate(totals((requests, failures), baseline=(requests, 0.0)))
    assert result.verdict is not FAIL


def test_error_rate_above_tolerance_but_not_significant_is_inconclusive() -> None:
    # 2x on 1000 requests (2 failures), baseline clean: not a Pass either.
    result = error_gate(totals((1_000.0, 2.0), baseline=(10_000.0, 0.0)))
    assert result.verdict is INCONCLUSIVE
    assert result.value == pytest.approx(2.0)


def test_error_rate_strong_evidence_fails_before_min_requests() -> None:
    # The e-value is valid at any sample size: half of 200 requests failing is
    # enough, min_requests only guards the Pass.
    result = error_gate(totals((200.0, 100.0), baseline=(10_000.0, 10.0)))
    assert result.verdict is FAIL


def test_error_rate_blame_guard_both_arms_failing_equally_does_not_fail() -> None:
    # Both arms at 10x the budget over 100k requests each: an incident shared by
    # both (a bad node, a dependency), not the candidate's doing.
    result = error_gate(totals((100_000.0, 1_000.0), baseline=(100_000.0, 1_000.0)))
    assert result.verdict is not FAIL
    # Documented: a burn the baseline shares (within maxRatioToBaseline) passes.
    assert result.verdict is PASS


def test_error_rate_blame_guard_does_not_hide_a_candidate_only_fault() -> None:
    # The same candidate with a clean baseline fails.
    result = error_gate(totals((100_000.0, 1_000.0), baseline=(100_000.0, 10.0)))
    assert result.verdict is FAIL


def test_error_rate_fails_without_baseline_traffic() -> None:
    # Nothing to share the blame with.
    result = error_gate(totals((100_000.0, 1_000.0)))
    assert result.verdict is FAIL
    assert "no baseline traffic" in result.message


def test_error_rate_huge_evidence_not_blamed_on_the_candidate_does_not_raise() -> None:
    """An astronomically large e-value (log e ~ 731, beyond exp's range) with the
    blame guard not holding must still give a verdict, not an OverflowError from
    formatting the e-value in the "not yet significant" message.

    Candidate: 200 failures in 2000 requests (100x the budget). Baseline: 1
    failure in 21 requests (rate 0.048; 2x that is 0.095 < 0.1, and the
    candidate's share of the 201 failures is not significant against 2x), so
    the gate says Inconclusive: above tolerance, not shown to be the candidate's.
    """
    evidence = totals((2_000.0, 200.0), baseline=(21.0, 1.0))
    result = error_gate(evidence)
    assert result.verdict is INCONCLUSIVE
    assert_well_formed(result)


def test_worse_than_baseline() -> None:
    # No candidate failures: never worse; no baseline traffic: always worse.
    assert not worse_than_baseline(0.0, 1000.0, 50.0, 1000.0, 2.0)
    assert not worse_than_baseline(5.0, 0.0, 0.0, 1000.0, 2.0)
    assert worse_than_baseline(1.0, 1000.0, 0.0, 0.0, 2.0)
    # Equal rates: not worse than 2x; far above: worse.
    assert not worse_than_baseline(100.0, 10_000.0, 100.0, 10_000.0, 2.0)
    assert worse_than_baseline(500.0, 10_000.0, 100.0, 10_000.0, 2.0)
    # The guard is the exact binomial test at level 0.1 of the candidate's share.
    share = 2.0 * 1000.0 / (2.0 * 1000.0 + 1000.0)
    k = 1
    while stats.binom.sf(k - 1, 30, share) > 0.1:
        k += 1
    assert worse_than_baseline(float(k), 1000.0, 30.0 - k, 1000.0, 2.0)
    assert not worse_than_baseline(float(k - 1), 1000.0, 30.0 - k + 1, 1000.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Burn rate
# ---------------------------------------------------------------------------------------------

PAIRS = ((14.4, 1.0), (6.0, 3.0))
STEP_SECONDS = 600.0
WINDOWS = burn_windows(PAIRS, STEP_SECONDS, INTERVAL)
LOOK_ALPHA = spent_alpha(ALPHA, 1)


def burn_arm(counts: Mapping[float, tuple[float, float]]) -> ArmObservation:
    return arm(windows=counts)


def burn_gate(
    baseline: Mapping[float, tuple[float, float]],
    candidate: Mapping[float, tuple[float, float]],
    *,
    alpha_this_look: float = LOOK_ALPHA,
    windows: Sequence[BurnWindow] = WINDOWS,
) -> GateResult:
    return burn_rate_gate(
        burn_arm(baseline),
        burn_arm(candidate),
        windows,
        error_budget=BUDGET,
        max_burn_rate=MAX_BURN,
        max_ratio_to_baseline=MAX_RATIO,
        alpha_this_look=alpha_this_look,
    )


def at_burn(
    burns: Mapping[float, float], requests: Mapping[float, float]
) -> dict[float, tuple[float, float]]:
    """Window counts with the given burn rate (x budget) over the given requests."""
    return {s: (requests[s], burns[s] * BUDGET * requests[s]) for s in requests}


# Requests per window: 20k per step (600 s), i.e. about 33 per second.
REQUESTS = {50.0: 1_700.0, 150.0: 5_000.0, 600.0: 20_000.0, 1800.0: 60_000.0}
HEALTHY_BASELINE = at_burn(dict.fromkeys(REQUESTS, 1.0), REQUESTS)


def test_burn_windows_scale_with_the_step() -> None:
    assert (
        BurnWindow(14.4, 600.0, 50.0),
        BurnWindow(6.0, 1800.0, 150.0),
    ) == WINDOWS
    assert required_window_seconds(WINDOWS) == (50.0, 150.0, 600.0, 1800.0)


def test_burn_windows_never_shorter_than_the_interval() -> None:
    # Short window = long / 12 = 10 s, below the 30 s interval; a long window of
    # 0.01 x 600 s = 6 s is raised to the interval as well.
    windows = burn_windows(((14.4, 1.0), (6.0, 0.01)), 120.0, INTERVAL)
    assert windows == (BurnWindow(14.4, 120.0, 30.0), BurnWindow(6.0, 30.0, 30.0))
    # Every length reported once, shortest first.
    assert required_window_seconds(windows) == (30.0, 120.0)


def test_burn_rate_without_data_is_inconclusive_and_critical() -> None:
    result = burn_gate({}, {})
    assert result.verdict is INCONCLUSIVE
    assert result.critical
    assert result.value is None


def test_burn_rate_with_zero_candidate_requests_is_inconclusive() -> None:
    zero = dict.fromkeys(REQUESTS, (0.0, 0.0))
    assert burn_gate(HEALTHY_BASELINE, zero).verdict is INCONCLUSIVE


def test_burn_rate_with_a_missing_short_window_is_inconclusive() -> None:
    candidate = at_burn(dict.fromkeys(REQUESTS, 50.0), REQUESTS)
    del candidate[50.0], candidate[150.0]
    assert burn_gate(HEALTHY_BASELINE, candidate).verdict is INCONCLUSIVE


def test_burn_rate_too_few_requests_to_see_a_burn_is_inconclusive() -> None:
    # 14.4 x 0.001 x 100 = 1.4 and 6 x 0.001 x 300 = 1.8 expected failures, below 3:
    # silence proves nothing.
    few = {50.0: (10.0, 0.0), 150.0: (30.0, 0.0), 600.0: (100.0, 0.0), 1800.0: (300.0, 0.0)}
    result = burn_gate(HEALTHY_BASELINE, few)
    assert result.verdict is INCONCLUSIVE
    assert result.critical


def test_burn_rate_one_failure_in_ten_requests_does_not_page() -> None:
    low = dict.fromkeys(REQUESTS, (10.0, 1.0))
    for look in (1, 2, 10):
        result = burn_gate({}, low, alpha_this_look=spent_alpha(ALPHA, look))
        assert result.verdict is not FAIL
        assert result.verdict is INCONCLUSIVE


def test_burn_rate_healthy_candidate_passes() -> None:
    candidate = at_burn(dict.fromkeys(REQUESTS, 1.0), REQUESTS)
    result = burn_gate(HEALTHY_BASELINE, candidate)
    assert result.verdict is PASS
    assert result.critical
    assert result.value == pytest.approx(1.0)


def test_burn_rate_just_under_each_windows_rate_passes() -> None:
    # 14x over one step (limit 14.4), 5.9x over three (limit 6).
    burns = {50.0: 14.0, 600.0: 14.0, 150.0: 5.9, 1800.0: 5.9}
    result = burn_gate(HEALTHY_BASELINE, at_burn(burns, REQUESTS))
    assert result.verdict is PASS


def test_burn_rate_fast_burn_in_both_windows_fails_critically() -> None:
    candidate = at_burn(dict.fromkeys(REQUESTS, 20.0), REQUESTS)
    result = burn_gate(HEALTHY_BASELINE, candidate)
    assert result.verdict is FAIL
    assert result.critical
    assert result.value == pytest.approx(20.0)
    assert result.window_seconds == 600.0
    assert result.samples == 20_000.0


def test_burn_rate_slow_burn_fires_the_long_pair() -> None:
    # 8x everywhere: below 14.4 but above 6, so the three-step pair fires.
    candidate = at_burn(dict.fromkeys(REQUESTS, 8.0), REQUESTS)
    result = burn_gate(HEALTHY_BASELINE, candidate)
    assert result.verdict is FAIL
    assert result.threshold == 6.0
    assert result.window_seconds == 1800.0


def test_burn_rate_only_long_window_burning_does_not_fail() -> None:
    # The burn has stopped: the short windows are clean.
    burns = {50.0: 0.0, 150.0: 0.0, 600.0: 20.0, 1800.0: 20.0}
    result = burn_gate(HEALTHY_BASELINE, at_burn(burns, REQUESTS))
    assert result.verdict is not FAIL


def test_burn_rate_only_short_window_burning_does_not_fail() -> None:
    burns = {50.0: 20.0, 150.0: 20.0, 600.0: 1.0, 1800.0: 1.0}
    result = burn_gate(HEALTHY_BASELINE, at_burn(burns, REQUESTS))
    assert result.verdict is not FAIL


def test_burn_rate_shared_by_both_arms_does_not_fail() -> None:
    burning = at_burn(dict.fromkeys(REQUESTS, 20.0), REQUESTS)
    result = burn_gate(burning, burning)
    assert result.verdict is not FAIL


def test_burn_rate_significance_uses_this_looks_alpha() -> None:
    # 2 failures in 100 requests: 20x the budget in every window; its exact
    # binomial tail against the tolerated rate decides.
    tail = stats.binom.sf(1, 100, MAX_BURN * BUDGET)
    counts = dict.fromkeys(REQUESTS, (100.0, 2.0))
    assert burn_gate({}, counts, alpha_this_look=tail * 1.01).verdict is FAIL
    assert burn_gate({}, counts, alpha_this_look=tail * 0.99).verdict is not FAIL


# ---------------------------------------------------------------------------------------------
# Latency regression
# ---------------------------------------------------------------------------------------------


def test_latency_regression_without_data_is_inconclusive() -> None:
    result = regression_gate(StepEvidence())
    assert result.verdict is INCONCLUSIVE
    assert result.value is None


def test_latency_regression_ignores_ticks_before_warm_up() -> None:
    evidence = build(latency_ticks([math.log(3.0)] * 50), warm=False)
    assert evidence.ticks == 50
    assert regression_gate(evidence).verdict is INCONCLUSIVE
    assert ceiling_gate(evidence).verdict is INCONCLUSIVE


def test_latency_regression_below_min_ticks_is_inconclusive() -> None:
    evidence = build(latency_ticks([0.0] * (MIN_TICKS - 1)))
    result = regression_gate(evidence)
    assert result.verdict is INCONCLUSIVE
    assert result.samples == MIN_TICKS - 1


def test_latency_regression_just_inside_tolerance_passes() -> None:
    evidence = build(latency_ticks([math.log(1.05)] * 30))
    result = regression_gate(evidence)
    assert result.verdict is PASS
    assert result.value == pytest.approx(1.05)
    assert result.threshold == pytest.approx(1.1)


def test_latency_regression_five_percent_slower_never_fails_however_many_ticks() -> None:
    """5% slower with tolerance 10%: noisy ticks at the modelled noise level, judged
    at each of 2000 ticks; never Fail, and Pass from min_ticks on once settled."""
    rng = np.random.default_rng(11)
    sd = latency_noise_sd(1000.0)
    evidence = StepEvidence()
    verdicts = []
    for x in math.log(1.05) + sd * rng.standard_normal(2000):
        evidence = build(latency_ticks([float(x)]), start=evidence)
        verdicts.append(regression_gate(evidence).verdict)
    assert FAIL not in verdicts
    assert all(v is PASS for v in verdicts[100:])


def test_latency_regression_clearly_beyond_tolerance_fails() -> None:
    """1.2x with 10,000 requests per arm and the modelled noise (0.041 per tick):
    log(1.2) = 0.18 is nearly five standard errors below the clip (4 x log 1.1 =
    0.381), so clipping hardly moves the mean and the value is the regression."""
    rng = np.random.default_rng(12)
    sd = latency_noise_sd(10_000.0)
    assert math.log(1.2) + 4.5 * sd < CLIP
    ticks = math.log(1.2) + sd * rng.standard_normal(20)
    result = regression_gate(build(latency_ticks(ticks, requests=10_000.0)))
    assert result.verdict is FAIL
    assert result.value == pytest.approx(1.2, rel=0.03)
    assert "confidently above the 1.10x limit" in result.message
    assert message_evidence(result.message) >= math.log(1 / ALPHA)


@pytest.mark.parametrize("requests", [1000.0, 100_000.0])
def test_latency_regression_beyond_the_clip_fails_at_the_clipped_value(requests: float) -> None:
    """1.6x on every tick: log 1.6 = 0.47 is beyond the clip, 4 x log 1.1 = 0.381,
    so each tick counts as 1.1^4 = 1.464x, on light and heavy traffic alike: ten
    identical ticks 3 x log(1.1) above the limit, whose evidence is far beyond
    1/alpha."""
    assert math.log(1.6) > CLIP
    result = regression_gate(build(latency_ticks([math.log(1.6)] * 10, requests=requests)))
    assert result.verdict is FAIL
    assert result.value == pytest.approx(1.1**4)
    log_e = identical_ticks_log_evalue(10, modelled_weight(requests, requests), 3 * LOG_TOLERANCE)
    assert log_e > math.log(1 / ALPHA)
    assert message_evidence(result.message) == pytest.approx(log_e, rel=1e-2)


@pytest.mark.parametrize("ticks", [MIN_TICKS, 5, 8])
def test_latency_regression_fails_exactly_when_the_evidence_reaches_one_over_alpha(
    ticks: int,
) -> None:
    """Identical 1.2x ticks (inside the clip) have the closed-form e-value above:
    the gate fails at an alpha just above 1 / e-value and not just below it, where
    it is Inconclusive (the mean is more than a standard error above the limit)."""
    above = math.log(1.2) - LOG_TOLERANCE
    log_e = identical_ticks_log_evalue(ticks, modelled_weight(1000.0, 1000.0), above)
    assert log_e > 0
    evidence = build(latency_ticks([math.log(1.2)] * ticks))

    def gate(alpha: float) -> GateResult:
        return latency_regression_gate(
            evidence, max_regression=MAX_REGRESSION, min_ticks=MIN_TICKS, alpha=alpha
        )

    assert gate(math.exp(-log_e) * 1.01).verdict is FAIL
    below = gate(math.exp(-log_e) / 1.01)
    assert below.verdict is INCONCLUSIVE
    assert "not within the 1.10x limit yet" in below.message
    # The quoted evidence is the e-value, and what it is compared with is 1/alpha.
    quoted = message_evidence(below.message, alpha=math.exp(-log_e) / 1.01)
    assert quoted == pytest.approx(log_e, abs=1e-2)


def test_latency_regression_does_not_fail_before_min_ticks() -> None:
    """Identical 1.331x ticks (1.1^3, inside the clip, 2 x log 1.1 above the limit):
    with alpha just above 1 / the e-value of two of them, two fail when min_ticks
    allows it, but with min_ticks 3 the gate waits and fails at the third (three
    identical ticks hold more evidence)."""
    w = modelled_weight(1000.0, 1000.0)
    two, three = (identical_ticks_log_evalue(n, w, 2 * LOG_TOLERANCE) for n in (2, 3))
    assert 0 < two < three
    alpha = math.exp(-two) * 1.01
    assert math.log(1 / alpha) < two
    assert 3 * LOG_TOLERANCE < CLIP
    ticks = latency_ticks([3 * LOG_TOLERANCE] * MIN_TICKS)

    def gate(evidence: StepEvidence, min_ticks: int) -> Verdict:
        return latency_regression_gate(
            evidence, max_regression=MAX_REGRESSION, min_ticks=min_ticks, alpha=alpha
        ).verdict

    assert gate(build(ticks[:-1]), MIN_TICKS - 1) is FAIL
    assert gate(build(ticks[:-1]), MIN_TICKS) is INCONCLUSIVE
    assert gate(build(ticks), MIN_TICKS) is FAIL


@pytest.mark.parametrize("ratio", [1.10, 1.12, 1.15])
def test_latency_regression_at_or_slightly_above_tolerance_with_few_ticks_does_not_fail(
    ratio: float,
) -> None:
    """Four ticks of 200 requests per arm cannot fail whatever their values: the
    most evidence n ticks of total weight W hold is that of identical ticks,
    (1 + W t^2)^((n - 1) / 2), which is below 1/alpha here."""
    assert most_evidence(MIN_TICKS + 1, modelled_weight(200.0, 200.0)) < math.log(1 / ALPHA)
    rng = np.random.default_rng(13)
    sd = latency_noise_sd(200.0)
    ticks = math.log(ratio) + sd * rng.standard_normal(MIN_TICKS + 1)
    evidence = build(latency_ticks(ticks, requests=200.0))
    assert regression_gate(evidence).verdict is not FAIL
    # Identical ticks at the ratio: the extreme case, still no Fail.
    assert regression_gate(build(latency_ticks([math.log(ratio)] * 4, 200.0))).verdict is not FAIL


def test_latency_gates_test_the_mean_against_their_tolerances() -> None:
    """A gate's evidence is the scale-free e-value of its moments (with the tie
    allowance, TIE_VARIANCE per tick) against log(1 + max_regression)
    (regression) or 0, the ceiling (ceiling), and it fails once that reaches
    1/alpha. Noisy ticks, so that the value depends on where the
    null is (for identical ticks it would not)."""
    noise = np.random.default_rng(18).standard_normal(12)
    sd = latency_noise_sd(1000.0)
    m = build(latency_ticks(math.log(1.18) + sd * noise)).latency_ratio
    sd_c = 1 / math.sqrt(modelled_weight(1000.0))
    c = ceiling_ticks(1.06 * CEILING_MS * np.exp(sd_c * noise)).latency_ceiling
    regression_evidence = StepEvidence(latency_ratio=m)
    ceiling_evidence = StepEvidence(latency_ceiling=c)
    for moments, null in ((m, LOG_TOLERANCE), (c, 0.0)):
        expected = scale_free_log_evalue(
            moments.n,
            moments.weight,
            moments.total,
            moments.total_sq,
            null,
            EFFECT_SCALE,
            extra_sum_sq=TIE_VARIANCE * moments.n,
        )
        assert 0.5 < expected < math.log(1 / ALPHA)
        at = math.exp(-expected)
        for alpha, verdict in ((at * 1.01, FAIL), (at / 1.01, INCONCLUSIVE)):
            if moments is m:
                result = latency_regression_gate(
                    regression_evidence,
                    max_regression=MAX_REGRESSION,
                    min_ticks=MIN_TICKS,
                    alpha=alpha,
                )
                assert message_evidence(result.message, alpha) == pytest.approx(expected, abs=5e-3)
            else:
                result = latency_ceiling_gate(
                    ceiling_evidence, ceiling_ms=CEILING_MS, min_ticks=MIN_TICKS, alpha=alpha
                )
            assert result.verdict is verdict, result.message


def test_latency_regression_faster_candidate_passes() -> None:
    evidence = build(latency_ticks([math.log(0.8)] * 10))
    assert regression_gate(evidence).verdict is PASS


def test_latency_regression_passes_on_an_estimate_within_the_limit_only() -> None:
    """Identical ticks, too few to fail: a mean a hair below the limit passes, one a
    hair above waits, however small its standard error."""
    ticks = 4
    w = modelled_weight(1000.0, 1000.0)
    se = 1.0 / math.sqrt(ticks * w)
    assert se < LOG_TOLERANCE
    # Four identical ticks hold too little evidence to fail (log e 5.0 < 7.6).
    assert most_evidence(ticks, w) < math.log(1 / ALPHA)
    inside = build(latency_ticks([LOG_TOLERANCE - 0.05 * se] * ticks))
    outside = build(latency_ticks([LOG_TOLERANCE + 0.05 * se] * ticks))
    assert regression_gate(inside).verdict is PASS
    result = regression_gate(outside)
    assert result.verdict is INCONCLUSIVE
    assert "not within the 1.10x limit yet" in result.message


def _alternating(mean: float, spread: float, ticks: int = 4) -> StepEvidence:
    """``ticks`` ticks at ``requests`` per arm alternating mean +- spread."""
    values = [mean + spread * (-1) ** i for i in range(ticks)]
    assert max(abs(v) for v in values) < CLIP  # nothing clipped
    return build(latency_ticks(values, requests=300.0))


def test_latency_regression_pass_needs_the_shrunk_standard_error_within_the_tolerance() -> None:
    """Four ticks alternating 0 +- a at 300 requests per arm have observed dispersion
    D = 4 w a^2 / 3 (the weighted residuals over n - 1); shrunk towards 1 with
    PRIOR_TICKS ticks' weight it is (3 + 3 D) / 6, and the standard error is
    sqrt(that / W). A candidate as fast as its baseline passes when that error is within
    the tolerance and waits when the seen noise makes it wider."""
    n = 4
    w = modelled_weight(300.0, 300.0)

    def shrunk_se(a: float) -> float:
        observed = n * w * a**2 / (n - 1)
        shrunk = max((PRIOR_TICKS + (n - 1) * observed) / (PRIOR_TICKS + n - 1), 1.0)
        return math.sqrt(shrunk / (n * w))

    quiet, noisy = 0.05, 0.25
    assert shrunk_se(quiet) < LOG_TOLERANCE < shrunk_se(noisy)
    assert regression_gate(_alternating(0.0, quiet)).verdict is PASS
    result = regression_gate(_alternating(0.0, noisy))
    assert result.verdict is INCONCLUSIVE
    assert "not within the 1.10x limit yet" in result.message


def test_latency_regression_a_tenfold_slower_candidate_does_not_pass_on_light_traffic() -> None:
    """Every tick 10x slower than the baseline must not Pass. Each tick is clipped
    to 4 log 1.1 = 0.381 (1.46x), above the limit; and at 20 requests per arm three
    ticks have a standard error of 1 / sqrt(3 w) = 0.366, wider than the tolerance,
    so the mean is not known well enough to pass either way."""
    w = modelled_weight(20.0, 20.0)
    assert CLIP - 1 / math.sqrt(MIN_TICKS * w) <= LOG_TOLERANCE
    assert 1 / math.sqrt(MIN_TICKS * w) > LOG_TOLERANCE
    evidence = build(latency_ticks([math.log(10.0)] * MIN_TICKS, requests=20.0))
    assert evidence.latency_ratio.mean == pytest.approx(CLIP)
    result = regression_gate(evidence)
    assert result.verdict is INCONCLUSIVE, result.message
    assert "not within the 1.10x limit yet" in result.message


def test_latency_regression_passes_only_once_the_standard_error_is_within_the_tolerance() -> None:
    """A candidate exactly as fast as the baseline, three identical ticks: the
    standard error is the model's, 1 / sqrt(3 w), and the gate passes when that is
    at most log 1.1, i.e. 3 w >= 1 / log(1.1)^2 = 110: with about 304 requests per
    arm or more. Just below that traffic it waits, just above it passes."""
    threshold = optimize.brentq(
        lambda r: MIN_TICKS * modelled_weight(r, r) - 1 / LOG_TOLERANCE**2, 50.0, 5000.0
    )
    assert 290.0 < threshold < 320.0
    for requests, verdict in ((0.98 * threshold, INCONCLUSIVE), (1.02 * threshold, PASS)):
        evidence = build(latency_ticks([0.0] * MIN_TICKS, requests=requests))
        assert regression_gate(evidence).verdict is verdict, requests
    # With more ticks the same light traffic passes: the error shrinks as 1 / sqrt(n).
    light = build(latency_ticks([0.0] * 4 * MIN_TICKS, requests=0.98 * threshold))
    assert regression_gate(light).verdict is PASS


def test_latency_regression_ticks_tied_at_the_clip_do_not_look_noiseless() -> None:
    """Four ticks clipped to the same bound (2x, clipped to 1.1^4 = 1.464x, 3 x log
    1.1 above the limit, at 1000 requests per arm) are identical. Without the tie
    allowance their log e-value would be the most four ticks can hold, 5.06 >
    log(1/0.01) = 4.6, a Fail at alpha = 1% from four ticks that say only "at
    least 1.464x". With TIE_VARIANCE of the modelled variance per tick added to
    the sum of squares it is 3.94."""
    w = modelled_weight(1000.0, 1000.0)
    alpha = 0.01
    tied = identical_ticks_log_evalue(4, w, 3 * LOG_TOLERANCE)
    assert most_evidence(4, w) > math.log(1 / alpha)
    assert tied < math.log(1 / alpha)
    evidence = build(latency_ticks([math.log(2.0)] * 4))
    assert evidence.latency_ratio.mean == pytest.approx(CLIP)
    assert evidence.latency_ratio.dispersion == pytest.approx(0.0, abs=1e-9)
    result = latency_regression_gate(
        evidence, max_regression=MAX_REGRESSION, min_ticks=MIN_TICKS, alpha=alpha
    )
    assert result.verdict is INCONCLUSIVE
    assert message_evidence(result.message, alpha) == pytest.approx(tied, abs=5e-3)


def _latency_false_fail_rate(
    rng: np.random.Generator,
    runs: int,
    ticks: int,
    noise_multiple: float,
    alpha: float,
    requests: float = 1000.0,
) -> float:
    """Fraction of runs at exactly the tolerated regression (1.10x) that ever fail."""
    sd = noise_multiple * latency_noise_sd(requests)
    failed = 0
    for _ in range(runs):
        evidence = StepEvidence()
        for x in math.log(1.0 + MAX_REGRESSION) + sd * rng.standard_normal(ticks):
            evidence = build(latency_ticks([float(x)], requests=requests), start=evidence)
            result = latency_regression_gate(
                evidence, max_regression=MAX_REGRESSION, min_ticks=MIN_TICKS, alpha=alpha
            )
            if result.verdict is FAIL:
                failed += 1
                break
    return failed / runs


def _mc_limit(alpha: float, runs: int) -> float:
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / runs)


def test_latency_regression_false_fail_rate_at_tolerance_with_modelled_noise() -> None:
    """A candidate exactly at the tolerated regression, per-tick noise as modelled,
    judged at each of 15 ticks: it may fail at most alpha of the time."""
    alpha, runs = 0.01, 2000
    rate = _latency_false_fail_rate(np.random.default_rng(41), runs, 15, 1.0, alpha)
    assert rate <= _mc_limit(alpha, runs), rate


def test_latency_regression_false_fail_rate_when_noise_exceeds_the_model() -> None:
    """The same with per-tick noise twice the modelled level. The sequential t-test
    estimates the noise scale instead of trusting the model, so the false-Fail rate
    must stay within alpha."""
    alpha, runs = 0.01, 2000
    rate = _latency_false_fail_rate(np.random.default_rng(42), runs, 15, 2.0, alpha)
    assert rate <= _mc_limit(alpha, runs), rate


def test_latency_regression_false_fail_rate_when_noise_is_below_the_model() -> None:
    """Per-tick noise half the modelled level: still within alpha."""
    alpha, runs = 0.01, 2000
    rate = _latency_false_fail_rate(np.random.default_rng(44), runs, 15, 0.5, alpha)
    assert rate <= _mc_limit(alpha, runs), rate


def test_latency_regression_false_fail_rate_when_noise_is_five_times_the_model() -> None:
    """Per-tick noise five times the modelled level (an actual per-tick sd of 0.47
    at 1000 requests per arm): the clip, 4 x log 1.1 = 0.381, catches about 27%
    of the ticks at +0.381 and 16% at -0.381; the tie allowance keeps runs of
    tied ticks from looking noiseless, and the false-Fail rate is within alpha
    (about 1.0% over 10,000 runs)."""
    alpha, runs = 0.01, 2000
    rate = _latency_false_fail_rate(np.random.default_rng(45), runs, 15, 5.0, alpha)
    assert rate <= _mc_limit(alpha, runs), rate


# ---------------------------------------------------------------------------------------------
# Latency ceiling
# ---------------------------------------------------------------------------------------------


def ceiling_ticks(p99s: Iterable[float], requests: float = 1000.0) -> StepEvidence:
    # No baseline P99: only the ceiling samples.
    return build([(arm(requests), arm(requests, p99=p)) for p in p99s])


def test_latency_ceiling_without_data_is_inconclusive() -> None:
    result = ceiling_gate(StepEvidence())
    assert result.verdict is INCONCLUSIVE
    assert result.value is None


def test_latency_ceiling_below_min_ticks_is_inconclusive() -> None:
    assert ceiling_gate(ceiling_ticks([100.0] * (MIN_TICKS - 1))).verdict is INCONCLUSIVE


def test_latency_ceiling_just_inside_passes() -> None:
    rng = np.random.default_rng(21)
    sd = math.sqrt(LATENCY_NOISE_SCALE**2 / 1000.0 + LATENCY_NOISE_FLOOR**2)
    p99s = 0.95 * CEILING_MS * np.exp(sd * rng.standard_normal(500))
    result = ceiling_gate(ceiling_ticks(p99s))
    assert result.verdict is PASS
    assert result.value == pytest.approx(0.95 * CEILING_MS, rel=0.02)


def test_latency_ceiling_clearly_above_fails() -> None:
    """1.25x the ceiling at 1000 requests: inside the ceiling clip (2x), so the
    value is exact."""
    assert math.log(1.25) < CEILING_LOG_CLIP
    result = ceiling_gate(ceiling_ticks([1.25 * CEILING_MS] * 10))
    assert result.verdict is FAIL
    assert result.value == pytest.approx(1.25 * CEILING_MS)
    assert result.threshold == CEILING_MS
    assert f"confidently above the {CEILING_MS:g} ms ceiling" in result.message
    log_e = identical_ticks_log_evalue(10, modelled_weight(1000.0), math.log(1.25))
    assert message_evidence(result.message) == pytest.approx(log_e, rel=1e-2)


@pytest.mark.parametrize("requests", [200.0, 1000.0, 100_000.0])
def test_latency_ceiling_beyond_the_clip_fails_at_twice_the_ceiling(requests: float) -> None:
    """5x the ceiling on every tick counts as 2x, on light and heavy traffic alike;
    1.9x (inside the clip) counts in full. Ten identical ticks log 2 above the
    ceiling hold evidence far beyond 1/alpha even at 200 requests."""
    clipped = ceiling_gate(ceiling_ticks([5 * CEILING_MS] * 10, requests=requests))
    assert clipped.verdict is FAIL
    assert clipped.value == pytest.approx(2 * CEILING_MS)
    log_e = identical_ticks_log_evalue(10, modelled_weight(requests), CEILING_LOG_CLIP)
    assert log_e > math.log(1 / ALPHA)
    assert message_evidence(clipped.message) == pytest.approx(log_e, rel=1e-2)
    inside = ceiling_gate(ceiling_ticks([1.9 * CEILING_MS] * 10, requests=requests))
    assert inside.verdict is FAIL
    assert inside.value == pytest.approx(1.9 * CEILING_MS)


@pytest.mark.parametrize("ticks", [MIN_TICKS, 6])
def test_latency_ceiling_fails_exactly_when_the_evidence_reaches_one_over_alpha(
    ticks: int,
) -> None:
    log_e = identical_ticks_log_evalue(ticks, modelled_weight(1000.0), math.log(1.2))
    evidence = ceiling_ticks([1.2 * CEILING_MS] * ticks)

    def gate(alpha: float) -> GateResult:
        return latency_ceiling_gate(
            evidence, ceiling_ms=CEILING_MS, min_ticks=MIN_TICKS, alpha=alpha
        )

    assert gate(math.exp(-log_e) * 1.01).verdict is FAIL
    # Not significant, and above the ceiling, so not a Pass either.
    assert gate(math.exp(-log_e) / 1.01).verdict is INCONCLUSIVE


def test_latency_ceiling_passes_with_min_ticks_and_a_mean_below_the_ceiling() -> None:
    # No significance needed for the Pass: three light ticks 1% under the ceiling.
    assert ceiling_gate(ceiling_ticks([0.99 * CEILING_MS] * MIN_TICKS, 200.0)).verdict is PASS
    # ... but min_ticks are.
    early = ceiling_ticks([0.99 * CEILING_MS] * (MIN_TICKS - 1), 200.0)
    assert ceiling_gate(early).verdict is INCONCLUSIVE


@pytest.mark.parametrize("factor", [1.0, 1.02, 1.05])
def test_latency_ceiling_at_or_slightly_above_with_few_ticks_does_not_fail(factor: float) -> None:
    # Three ticks of 200 requests can hold at most (1 + W t^2) evidence: below 1/alpha.
    assert most_evidence(MIN_TICKS, modelled_weight(200.0)) < math.log(1 / ALPHA)
    result = ceiling_gate(ceiling_ticks([factor * CEILING_MS] * MIN_TICKS, requests=200.0))
    assert result.verdict is not FAIL


@pytest.mark.parametrize("factor", [1.002, 1.02])
def test_latency_ceiling_slightly_above_is_not_a_pass(factor: float) -> None:
    result = ceiling_gate(ceiling_ticks([factor * CEILING_MS] * MIN_TICKS, requests=200.0))
    assert result.verdict is INCONCLUSIVE


@pytest.mark.parametrize(("noise_multiple", "seed"), [(1.0, 51), (2.0, 52)])
def test_latency_ceiling_false_fail_rate_at_the_ceiling(noise_multiple: float, seed: int) -> None:
    """A candidate whose P99 is exactly at the ceiling, noise as modelled and twice
    that, judged at each of 15 ticks: it may fail at most alpha of the time."""
    alpha, runs = 0.01, 2000
    rate = _ceiling_false_fail_rate(np.random.default_rng(seed), runs, 1000.0, noise_multiple)
    assert rate <= _mc_limit(alpha, runs), rate


def _ceiling_false_fail_rate(
    rng: np.random.Generator, runs: int, requests: float, noise_multiple: float
) -> float:
    """Fraction of 15-tick runs exactly at the ceiling that ever fail at alpha = 1%."""
    sd = noise_multiple / math.sqrt(modelled_weight(requests))
    failed = 0
    for _ in range(runs):
        evidence = StepEvidence()
        for x in sd * rng.standard_normal(15):
            evidence = build(
                [(arm(requests), arm(requests, p99=CEILING_MS * math.exp(x)))], start=evidence
            )
            result = latency_ceiling_gate(
                evidence, ceiling_ms=CEILING_MS, min_ticks=MIN_TICKS, alpha=0.01
            )
            if result.verdict is FAIL:
                failed += 1
                break
    return failed / runs


def test_latency_regression_false_fail_rate_when_noise_is_ten_times_the_model() -> None:
    """Per-tick noise ten times the modelled level (10,000 requests per arm, an
    actual per-tick sd of 0.41), the candidate exactly at the tolerance, 15 ticks
    judged at alpha = 1%. About a quarter of the ticks tie at +0.381 and an eighth
    at -0.381; the rate over many runs is about 1.5% (20,000 runs), above alpha:
    the documented limit (docs/analysis.md) is twice alpha at this noise level.
    """
    alpha, runs = 0.01, 3000
    rng = np.random.default_rng(61)
    rate = _latency_false_fail_rate(rng, runs, 15, 10.0, alpha, requests=10_000.0)
    assert rate <= _mc_limit(2 * alpha, runs), rate


def test_latency_ceiling_false_fail_rate_when_noise_is_ten_times_the_model() -> None:
    """The same for the ceiling gate, 1000 requests per tick, P99 exactly at the
    ceiling, noise ten times the model's (an actual per-tick sd of 0.70). With
    the old clip from above at 0.286 a third of the ticks tied there and the rate
    was about 2.6%; with the fixed clip at log 2 = 0.693 a sixth tie, and the
    rate is about 0.7% (10,000 runs)."""
    alpha, runs = 0.01, 3000
    rate = _ceiling_false_fail_rate(np.random.default_rng(62), runs, 1000.0, 10.0)
    assert rate <= _mc_limit(alpha, runs), rate


def test_latency_regression_false_fail_rate_when_noise_is_twenty_times_the_model() -> None:
    """As the ten-times test, with noise twenty times the model's (an actual per-tick
    sd of 0.82 at 10,000 requests per arm). The documented limit of the latency
    tests (docs/analysis.md, "Assumptions and limits"): far beyond the modelled
    noise, ticks tie at the clip (here 36% at +0.381 and 28% at -0.381), tied
    ticks look less noisy than they are, and the false-Fail rate rises above
    alpha: about 3% (10,000 runs) against alpha = 1%; about 0.1% without
    clipping, which costs too much power at ordinary noise. The documented
    bound is five times alpha.
    """
    alpha, runs = 0.01, 3000
    rng = np.random.default_rng(63)
    rate = _latency_false_fail_rate(rng, runs, 15, 20.0, alpha, requests=10_000.0)
    assert rate <= _mc_limit(5 * alpha, runs), rate


def test_latency_ceiling_false_fail_rate_when_noise_is_twenty_times_the_model() -> None:
    """The same for the ceiling gate: 1000 requests per tick, P99 exactly at the
    ceiling, noise twenty times the model's (an actual per-tick sd of 1.4): 31% of
    the ticks tie at the clip, log 2, and the rate is about 2.4% (10,000 runs)
    against alpha = 1%, within the documented bound of five times alpha.
    """
    alpha, runs = 0.01, 3000
    rate = _ceiling_false_fail_rate(np.random.default_rng(63), runs, 1000.0, 20.0)
    assert rate <= _mc_limit(5 * alpha, runs), rate


# ---------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------


def test_kl_divergence_matches_a_hand_computation() -> None:
    baseline = [10.0, 0.0, 30.0, 60.0]
    candidate = [20.0, 5.0, 0.0, 75.0]
    s = 0.5
    p = [(b + s) / (sum(baseline) + s * len(baseline)) for b in baseline]
    q = [(c + s) / (sum(candidate) + s * len(candidate)) for c in candidate]
    by_hand = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    with_scipy = float(special.rel_entr(np.array(p), np.array(q)).sum())
    assert by_hand == pytest.approx(with_scipy)
    assert kl_divergence(baseline, candidate, s) == pytest.approx(by_hand, rel=1e-12)


def test_kl_divergence_is_zero_for_identical_histograms_and_asymmetric() -> None:
    # Equal histograms give equal smoothed distributions (scaling one would not: the
    # pseudo-counts do not scale with it).
    assert kl_divergence([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.5) == pytest.approx(0.0, abs=1e-15)
    a, b = [90.0, 10.0, 0.0], [30.0, 30.0, 40.0]
    assert kl_divergence(a, b, 0.5) > 0
    assert kl_divergence(a, b, 0.5) != pytest.approx(kl_divergence(b, a, 0.5))


def test_kl_with_empty_buckets_is_finite() -> None:
    baseline = [1000.0, 0.0, 0.0, 0.0]
    candidate = [0.0, 0.0, 0.0, 1000.0]
    assert math.isfinite(kl_divergence(baseline, candidate, SMOOTHING))
    est = estimate_kl(baseline, candidate, SMOOTHING)
    for x in (est.value, est.raw, est.variance):
        assert math.isfinite(x)
    assert est.variance >= 0
    result = kl_gate(build(histogram_ticks(baseline, candidate)))
    assert_well_formed(result)
    assert result.verdict is not PASS


def test_kl_estimate_of_two_samples_from_one_distribution_is_near_zero() -> None:
    rng = np.random.default_rng(5)
    n = 100_000
    values = []
    for _ in range(50):
        b = rng.multinomial(n, _BASE_P).astype(float).tolist()
        c = rng.multinomial(n, _BASE_P).astype(float).tolist()
        est = estimate_kl(b, c, SMOOTHING)
        # The plug-in value is biased upwards by about (K - 1)/2 (1/n_b + 1/n_c).
        assert est.raw > est.value
        assert est.raw - est.value == pytest.approx(19 / 2 * (2 / n))
        assert abs(est.value) < 4 * math.sqrt(est.variance)
        values.append(est.value)
    # Averaged over 50 pairs, the corrected estimate is centred on 0 and the
    # raw one is not.
    assert abs(np.mean(values)) < 2e-5
    assert np.mean(values) + 19 / 2 * (2 / n) > 1.5e-4


def test_divergence_without_data_is_inconclusive() -> None:
    result = kl_gate(StepEvidence())
    assert result.verdict is INCONCLUSIVE
    assert result.value is None


def test_divergence_with_one_arm_only_is_inconclusive() -> None:
    counts = [100.0] * 20
    assert kl_gate(build(histogram_ticks(counts, [0.0] * 20))).verdict is INCONCLUSIVE
    assert kl_gate(build(histogram_ticks([0.0] * 20, counts))).verdict is INCONCLUSIVE


def test_divergence_below_min_outputs_is_inconclusive() -> None:
    rng = np.random.default_rng(6)
    b = rng.multinomial(MIN_OUTPUTS - 100, _BASE_P)
    c = rng.multinomial(MIN_OUTPUTS - 100, _BASE_P)
    result = kl_gate(build(histogram_ticks(b, c)))
    assert result.verdict is INCONCLUSIVE


def test_divergence_inside_tolerance_with_a_million_outputs_passes() -> None:
    rng = np.random.default_rng(8)
    q = candidate_distribution(0.003)
    b = rng.multinomial(1_000_000, _BASE_P)
    c = rng.multinomial(1_000_000, q)
    result = kl_gate(build(histogram_ticks(b, c)))
    assert result.verdict is PASS
    assert result.value == pytest.approx(0.003, abs=5e-4)


def test_divergence_inside_tolerance_never_fails_over_many_ticks() -> None:
    """True KL 0.008 (tolerance 0.01), 20k outputs per arm per tick, 100 ticks."""
    rng = np.random.default_rng(9)
    q = candidate_distribution(0.008)
    evidence = StepEvidence()
    verdicts = []
    for _ in range(100):
        ticks = histogram_ticks(rng.multinomial(20_000, _BASE_P), rng.multinomial(20_000, q))
        evidence = build(ticks, start=evidence)
        verdicts.append(kl_gate(evidence).verdict)
    assert FAIL not in verdicts
    assert verdicts[-1] is PASS


def test_divergence_clearly_beyond_tolerance_fails() -> None:
    rng = np.random.default_rng(10)
    q = candidate_distribution(0.05)
    b = rng.multinomial(100_000, _BASE_P)
    c = rng.multinomial(100_000, q)
    result = kl_gate(build(histogram_ticks(b, c)))
    assert result.verdict is FAIL
    assert result.value == pytest.approx(0.05, rel=0.1)


def test_divergence_false_fail_rate_at_tolerance() -> None:
    """True KL exactly at the tolerance, 500 outputs per arm per tick, judged at each
    of 20 ticks: the gate may fail at most alpha of the time."""
    rng = np.random.default_rng(43)
    alpha, runs = 0.05, 300
    q = candidate_distribution(MAX_KL)
    failed = 0
    for _ in range(runs):
        evidence = StepEvidence()
        for _ in range(20):
            ticks = histogram_ticks(rng.multinomial(500, _BASE_P), rng.multinomial(500, q))
            evidence = build(ticks, start=evidence)
            result = divergence_gate(
                evidence, max_kl=MAX_KL, min_outputs=MIN_OUTPUTS, smoothing=SMOOTHING, alpha=alpha
            )
            if result.verdict is FAIL:
                failed += 1
                break
    assert failed / runs <= _mc_limit(alpha, runs)


@pytest.mark.parametrize("kl", [0.01, 0.012])
def test_divergence_at_or_slightly_above_tolerance_with_little_data_does_not_fail(
    kl: float,
) -> None:
    rng = np.random.default_rng(14)
    q = candidate_distribution(kl)
    for _ in range(20):
        b = rng.multinomial(MIN_OUTPUTS, _BASE_P)
        c = rng.multinomial(MIN_OUTPUTS, q)
        assert kl_gate(build(histogram_ticks(b, c))).verdict is not FAIL


# ---------------------------------------------------------------------------------------------
# Non-finite outputs
# ---------------------------------------------------------------------------------------------


def nonfinite_evidence(outputs: float, nonfinite: float) -> StepEvidence:
    """``outputs`` finite outputs in the histogram plus ``nonfinite`` NaN/Inf."""
    return build([(arm(1.0, histogram=[1.0]), arm(1.0, histogram=[outputs], nonfinite=nonfinite))])


@pytest.mark.parametrize("max_per_million", [0.0, 10.0])
def test_nonfinite_without_outputs_is_inconclusive(max_per_million: float) -> None:
    for evidence in (StepEvidence(), nonfinite_evidence(0.0, 0.0)):
        result = nonfinite_gate(evidence, max_per_million=max_per_million, alpha=ALPHA)
        assert result.verdict is INCONCLUSIVE
        assert result.critical


@pytest.mark.parametrize("outputs", [0.0, 10.0, 1e6])
def test_nonfinite_any_nan_with_zero_tolerance_fails_at_once(outputs: float) -> None:
    result = nonfinite_gate(nonfinite_evidence(outputs, 1.0), max_per_million=0.0, alpha=ALPHA)
    assert result.verdict is FAIL
    assert result.critical
    assert result.value == 1.0


def test_nonfinite_zero_tolerance_passes_without_nan() -> None:
    result = nonfinite_gate(nonfinite_evidence(1e6, 0.0), max_per_million=0.0, alpha=ALPHA)
    assert result.verdict is PASS
    assert result.critical


def test_nonfinite_rate_under_a_positive_tolerance_passes() -> None:
    # 5 per million over ten million outputs, tolerance 10 per million.
    result = nonfinite_gate(nonfinite_evidence(1e7 - 50, 50.0), max_per_million=10.0, alpha=ALPHA)
    assert result.verdict is PASS
    assert result.value == pytest.approx(5.0)


@pytest.mark.parametrize("outputs", [1e7, 1e9])
def test_nonfinite_rate_under_a_positive_tolerance_never_fails(outputs: float) -> None:
    count = 9e-6 * outputs
    result = nonfinite_gate(
        nonfinite_evidence(outputs - count, count), max_per_million=10.0, alpha=ALPHA
    )
    assert result.verdict is not FAIL


def test_nonfinite_rate_clearly_above_a_positive_tolerance_fails() -> None:
    result = nonfinite_gate(
        nonfinite_evidence(1e6 - 1000, 1000.0), max_per_million=10.0, alpha=ALPHA
    )
    assert result.verdict is FAIL
    assert result.critical
    assert result.value == pytest.approx(1000.0)


@pytest.mark.parametrize(
    ("outputs", "nonfinite"),
    [(1e5, 1.0), (1000.0, 1.0), (1e6, 12.0)],  # 10, 1000 and 12 per million
)
def test_nonfinite_at_or_above_a_positive_tolerance_with_little_data_does_not_fail(
    outputs: float, nonfinite: float
) -> None:
    result = nonfinite_gate(
        nonfinite_evidence(outputs - nonfinite, nonfinite), max_per_million=10.0, alpha=ALPHA
    )
    assert result.verdict is not FAIL


# ---------------------------------------------------------------------------------------------
# StepEvidence and accumulate
# ---------------------------------------------------------------------------------------------


def rich_evidence() -> StepEvidence:
    ticks = [
        (
            arm(1000.0, 1.0, histogram=[1.0, 2.0, 3.0], p99=100.0),
            arm(250.5, 3.0, nonfinite=1.0, histogram=[0.0, 4.0, 1.5], p99=120.0),
        ),
        (
            arm(900.0, 0.0, histogram=[2.0, 2.0, 2.0], p99=90.0),
            arm(300.0, 0.25, histogram=[1.0, 1.0, 1.0], p99=80.0),
        ),
    ]
    return build(ticks)


def test_step_evidence_round_trips_through_a_dict_and_json() -> None:
    evidence = rich_evidence()
    assert evidence.latency_ratio.n == 2
    assert StepEvidence.from_dict(evidence.to_dict()) == evidence
    assert StepEvidence.from_dict(json.loads(json.dumps(evidence.to_dict()))) == evidence
    assert StepEvidence.from_dict(StepEvidence().to_dict()) == StepEvidence()


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        {},
        {"ticks": 3},
        {"ticks": "three", "seconds": 1.0},
        "not a mapping",
        [1, 2, 3],
    ],
)
def test_step_evidence_from_garbage_starts_afresh(garbage: Any) -> None:
    assert StepEvidence.from_dict(garbage) == StepEvidence()


def test_step_evidence_from_damaged_dicts_starts_afresh() -> None:
    good = rich_evidence().to_dict()
    damaged: list[dict[str, Any]] = []
    for key in good:
        d = dict(good)
        del d[key]
        damaged.append(d)
    d = json.loads(json.dumps(good))
    d["latencyRatio"] = [1, 2.0]
    damaged.append(d)
    d = json.loads(json.dumps(good))
    d["candidate"]["histogram"] = None
    damaged.append(d)
    d = json.loads(json.dumps(good))
    d["baseline"]["requests"] = "lots"
    damaged.append(d)
    d = json.loads(json.dumps(good))
    d["candidate"] = 5
    damaged.append(d)
    for d in damaged:
        assert StepEvidence.from_dict(d) == StepEvidence(), d


def test_accumulate_sums_counts_and_time() -> None:
    evidence = rich_evidence()
    assert evidence.ticks == 2
    assert evidence.seconds == 2 * INTERVAL
    assert evidence.candidate == ArmTotals(550.5, 3.25, 1.0, (1.0, 5.0, 2.5))
    assert evidence.baseline == ArmTotals(1900.0, 1.0, 0.0, (3.0, 4.0, 5.0))
    assert evidence.candidate.outputs == 8.5


def test_accumulate_skips_latency_samples_when_not_warm() -> None:
    ticks = latency_ticks([0.2, 0.1])
    cold = build(ticks, warm=False)
    assert cold.latency_ratio == WeightedMoments()
    assert cold.latency_ceiling == WeightedMoments()
    # Counts still accumulate.
    assert cold.ticks == 2
    assert cold.candidate.requests == 2000.0
    warm = build(ticks, warm=True, start=cold)
    assert warm.latency_ratio.n == 2
    assert warm.latency_ceiling.n == 2


def test_accumulate_skips_latency_without_p99_or_requests() -> None:
    no_p99 = build([(arm(100.0, p99=100.0), arm(100.0))])
    assert no_p99.latency_ratio.n == 0
    assert no_p99.latency_ceiling.n == 0
    no_requests = build([(arm(100.0, p99=100.0), arm(0.0, p99=100.0))])
    assert no_requests.latency_ratio.n == 0
    assert no_requests.latency_ceiling.n == 0
    # Without a baseline P99 there is a ceiling sample but no paired sample.
    ceiling_only = build([(arm(100.0), arm(100.0, p99=100.0))])
    assert ceiling_only.latency_ratio.n == 0
    assert ceiling_only.latency_ceiling.n == 1


def test_latency_clip_is_four_tolerances_and_at_least_0_3() -> None:
    assert latency_clip(MAX_REGRESSION) == pytest.approx(4 * math.log(1.1))
    assert latency_clip(0.5) == pytest.approx(4 * math.log(1.5))
    assert latency_clip(2.0) == pytest.approx(4 * math.log(3.0))
    # Small tolerances: the floor, 0.3.
    assert latency_clip(0.01) == pytest.approx(0.3)
    assert latency_clip(0.0) == pytest.approx(0.3)
    # The two meet where 4 log(1 + r) = 0.3, at r = e^0.075 - 1 = 7.8%.
    meet = math.expm1(0.075)
    assert latency_clip(meet * 0.99) == pytest.approx(0.3)
    assert latency_clip(meet * 1.01) == pytest.approx(4 * math.log1p(meet * 1.01))
    assert latency_clip(meet * 1.01) > 0.3
    # A regression of three times the tolerance always shows in full.
    for r in np.geomspace(1e-3, 10.0, 50):
        assert 3 * math.log1p(r) < latency_clip(float(r))


def test_ceiling_clip_is_log_two() -> None:
    assert math.isclose(CEILING_CLIP, math.log(2.0), rel_tol=1e-12)


@pytest.mark.parametrize("requests", [20.0, 1000.0, 100_000.0])
def test_accumulate_clips_paired_log_ratios_on_both_sides(requests: float) -> None:
    """At 4 x log 1.1 = 0.381, whatever the tick's traffic; 0.37, which the old
    clip (three modelled errors, down to 3 x log 1.1 = 0.286) cut, is inside."""
    slow = build(latency_ticks([math.log(10.0)], requests=requests))
    assert slow.latency_ratio.mean == pytest.approx(CLIP)
    fast = build(latency_ticks([math.log(0.1)], requests=requests))
    assert fast.latency_ratio.mean == pytest.approx(-CLIP)
    for inside in (0.37, -0.37, 0.25):
        evidence = build(latency_ticks([inside], requests=requests))
        assert evidence.latency_ratio.mean == pytest.approx(inside)


def test_accumulate_clips_paired_and_ceiling_samples_at_their_own_clips() -> None:
    """One tick, 300 candidate and 3000 baseline requests, the candidate at 2500 ms
    (25x a 100 ms baseline, 10x the ceiling): the paired sample is clipped at 4 x
    log 1.1, the ceiling sample at log 2; each is weighted by its own arms'
    traffic."""
    tick = (arm(3000.0, p99=100.0), arm(300.0, p99=10 * CEILING_MS))
    evidence = build([tick])
    assert evidence.latency_ratio.mean == pytest.approx(CLIP)
    assert evidence.latency_ceiling.mean == pytest.approx(CEILING_LOG_CLIP)
    assert evidence.latency_ratio.weight == pytest.approx(modelled_weight(300.0, 3000.0))
    assert evidence.latency_ceiling.weight == pytest.approx(modelled_weight(300.0))


def test_accumulate_clips_ceiling_samples_from_above_only() -> None:
    over = ceiling_ticks([10 * CEILING_MS])
    assert over.latency_ceiling.mean == pytest.approx(CEILING_LOG_CLIP)
    # Just inside the clip, and far below the ceiling (beyond -log 2): unclipped.
    inside = ceiling_ticks([1.9 * CEILING_MS])
    assert inside.latency_ceiling.mean == pytest.approx(math.log(1.9))
    under = ceiling_ticks([0.1 * CEILING_MS])
    assert under.latency_ceiling.mean == pytest.approx(math.log(0.1))


def _one_tick(
    baseline: ArmObservation, candidate: ArmObservation, max_regression: float
) -> StepEvidence:
    return accumulate(
        StepEvidence(),
        baseline,
        candidate,
        interval_seconds=INTERVAL,
        latency_ceiling_ms=CEILING_MS,
        max_regression=max_regression,
        warm=True,
    )


def test_accumulate_clip_follows_max_regression() -> None:
    """A 3x tick: with a 50% tolerance the clip, 4 log 1.5 = 1.62, lets it through
    unclipped; with 10% it is cut to 4 log 1.1; with 1% to the floor, 0.3."""
    tick = (arm(1000.0, p99=100.0), arm(1000.0, p99=300.0))
    assert _one_tick(*tick, 0.5).latency_ratio.mean == pytest.approx(math.log(3.0))
    assert _one_tick(*tick, 0.1).latency_ratio.mean == pytest.approx(4 * math.log(1.1))
    assert _one_tick(*tick, 0.01).latency_ratio.mean == pytest.approx(0.3)


@pytest.mark.parametrize("max_regression", [0.01, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("requests", [1.0, 20.0, 1000.0, 1e6])
def test_accumulate_ceiling_clip_does_not_depend_on_traffic_or_tolerance(
    requests: float, max_regression: float
) -> None:
    """A ceiling sample 5x over is clipped at log 2 and one 1.9x over is not,
    whatever the candidate's traffic and maxRegression (with 2.0, a paired clip of
    4 log 3 = 4.4 would not have cut 5x)."""
    baseline = arm(1000.0, p99=100.0)
    over = _one_tick(baseline, arm(requests, p99=5 * CEILING_MS), max_regression)
    assert over.latency_ceiling.n == 1
    assert over.latency_ceiling.mean == pytest.approx(CEILING_LOG_CLIP)
    assert over.latency_ceiling.weight == pytest.approx(modelled_weight(requests))
    inside = _one_tick(baseline, arm(requests, p99=1.9 * CEILING_MS), max_regression)
    assert inside.latency_ceiling.mean == pytest.approx(math.log(1.9))


@pytest.mark.parametrize("requests", [1.0, 20.0, 1000.0, 1e6])
def test_accumulate_paired_clip_does_not_depend_on_traffic(requests: float) -> None:
    for candidate_requests in (requests, 1000.0):
        tick = (arm(requests, p99=100.0), arm(candidate_requests, p99=1000.0))
        evidence = _one_tick(*tick, MAX_REGRESSION)
        assert evidence.latency_ratio.mean == pytest.approx(CLIP)
        assert evidence.latency_ratio.weight == pytest.approx(
            modelled_weight(requests, candidate_requests)
        )


def test_accumulate_weights_ticks_by_traffic() -> None:
    light = build(latency_ticks([0.0], requests=30.0))
    heavy = build(latency_ticks([0.0], requests=3000.0))
    assert heavy.latency_ratio.weight > 10 * light.latency_ratio.weight
    expected = 1.0 / (LATENCY_NOISE_SCALE**2 * (2 / 3000.0) + LATENCY_NOISE_FLOOR**2)
    assert heavy.latency_ratio.weight == pytest.approx(expected)


def test_accumulate_raises_on_histogram_length_change() -> None:
    evidence = build([(arm(1.0, histogram=[1.0, 2.0]), arm(1.0, histogram=[1.0, 2.0]))])
    with pytest.raises(ValueError, match="bucket"):
        build(
            [(arm(1.0, histogram=[1.0, 2.0]), arm(1.0, histogram=[1.0, 2.0, 3.0]))], start=evidence
        )
    with pytest.raises(ValueError, match="bucket"):
        build([(arm(1.0, histogram=[1.0]), arm(1.0, histogram=[1.0, 2.0]))], start=evidence)


def test_weighted_moments_dispersion() -> None:
    m = WeightedMoments()
    assert math.isnan(m.mean)
    m = m.add(1.0, 4.0)
    assert m.mean == 1.0
    assert math.isnan(m.dispersion)
    m = m.add(3.0, 4.0)
    assert m.mean == pytest.approx(2.0)
    # Residuals of +-1 with weight 4 each: sum w r^2 / (n - 1) = 8.
    assert m.dispersion == pytest.approx(8.0)
