"""Property tests of the gates: well-formed verdicts on any evidence, no Pass
without candidate data, the error-rate gate's monotonicity in failures, and the
latency gates' clipping and verdict rules over many ticks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gelu_rollout.analysis.burn_rate import BurnWindow, burn_rate_gate, burn_windows
from gelu_rollout.analysis.divergence import divergence_gate
from gelu_rollout.analysis.error_rate import error_rate_gate
from gelu_rollout.analysis.latency import (
    PRIOR_TICKS,
    latency_ceiling_gate,
    latency_regression_gate,
)
from gelu_rollout.analysis.nonfinite import nonfinite_gate
from gelu_rollout.analysis.observations import (
    LATENCY_NOISE_FLOOR,
    LATENCY_NOISE_SCALE,
    ArmObservation,
    StepEvidence,
    WindowCounts,
    accumulate,
    latency_clip,
)
from gelu_rollout.analysis.verdict import GateResult, Verdict

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INTERVAL = 30.0
STEP_SECONDS = 600.0


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------


def _count(high: float) -> st.SearchStrategy[float]:
    """A non-negative count: zero, a whole number, or a fractional one (increase())."""
    return st.one_of(
        st.just(0.0),
        st.integers(0, int(high)).map(float),
        st.floats(0.0, high, allow_nan=False, allow_infinity=False),
    )


fractions = st.floats(0.0, 1.0, allow_nan=False)
# Failure rates: often near the tolerances (a fraction of a percent), sometimes anything.
rates = st.one_of(st.floats(0.0, 0.02), fractions)
# P99s: usually of one order of magnitude (ratios near the tolerances), sometimes anything.
p99s = st.one_of(st.floats(95.0, 120.0), st.floats(80.0, 160.0), st.floats(0.01, 1e5), st.none())
# Requests per tick: rarely none, usually a realistic count, sometimes anything.
tick_requests = st.one_of(st.floats(1.0, 1e5), _count(1e7), st.just(0.0))


@dataclass(frozen=True)
class Params:
    error_budget: float
    max_burn_rate: float
    max_ratio: float
    min_requests: int
    alpha: float
    max_regression: float
    min_ticks: int
    ceiling_ms: float
    max_kl: float
    min_outputs: int
    smoothing: float
    max_per_million: float
    windows: tuple[BurnWindow, ...]
    alpha_this_look: float


@st.composite
def params(draw: st.DrawFn) -> Params:
    pairs = draw(
        st.lists(st.tuples(st.floats(1.01, 50.0), st.floats(0.01, 5.0)), min_size=1, max_size=3)
    )
    return Params(
        error_budget=draw(st.floats(1e-4, 0.2)),
        max_burn_rate=draw(st.floats(0.5, 10.0)),
        max_ratio=draw(st.floats(1.0, 5.0)),
        min_requests=draw(st.integers(1, 5000)),
        alpha=draw(st.floats(1e-5, 0.2)),
        max_regression=draw(st.floats(0.01, 2.0)),
        min_ticks=draw(st.integers(1, 6)),
        ceiling_ms=draw(st.one_of(st.floats(80.0, 200.0), st.floats(1.0, 5000.0))),
        max_kl=draw(st.floats(1e-3, 1.0)),
        min_outputs=draw(st.integers(1, 5000)),
        smoothing=draw(st.floats(0.01, 2.0)),
        max_per_million=draw(st.one_of(st.just(0.0), st.floats(0.1, 1e4))),
        windows=burn_windows(pairs, STEP_SECONDS, INTERVAL),
        alpha_this_look=draw(st.floats(1e-6, 0.2)),
    )


@st.composite
def arm_observation(
    draw: st.DrawFn, buckets: int, window_lengths: tuple[float, ...], empty: bool
) -> ArmObservation:
    """One arm's tick; ``empty``: no requests, outputs or non-finite values at all."""
    if empty:
        return ArmObservation(
            requests=0.0,
            failures=0.0,
            nonfinite=0.0,
            histogram=(0.0,) * buckets,
            p99_ms=draw(p99s),
            windows=dict.fromkeys(window_lengths, WindowCounts(0.0, 0.0)),
        )
    requests = draw(tick_requests)
    windows = {}
    all_windows = draw(st.booleans())
    for length in window_lengths:
        if all_windows or draw(st.booleans()):
            window_requests = draw(_count(1e7))
            windows[length] = WindowCounts(window_requests, draw(rates) * window_requests)
    return ArmObservation(
        requests=requests,
        failures=draw(rates) * requests,
        nonfinite=draw(_count(1e3)),
        histogram=tuple(draw(st.lists(_count(1e5), min_size=buckets, max_size=buckets))),
        p99_ms=draw(p99s),
        windows=windows,
    )


@dataclass(frozen=True)
class Scenario:
    params: Params
    evidence: StepEvidence
    latest: tuple[ArmObservation, ArmObservation] | None
    candidate_empty: bool


@st.composite
def scenarios(draw: st.DrawFn, *, candidate_empty: bool | None = None) -> Scenario:
    p = draw(params())
    lengths = tuple(
        sorted({w.long_seconds for w in p.windows} | {w.short_seconds for w in p.windows})
    )
    buckets = draw(st.integers(1, 8))
    empty = draw(st.booleans()) if candidate_empty is None else candidate_empty
    ticks = draw(
        st.lists(
            st.tuples(
                arm_observation(buckets, lengths, empty=False),
                arm_observation(buckets, lengths, empty=empty),
                st.sampled_from([True, True, True, False]),  # warm: mostly past warm-up
            ),
            min_size=0,
            max_size=10,
        )
    )
    evidence = StepEvidence()
    for baseline, candidate, warm in ticks:
        evidence = accumulate(
            evidence,
            baseline,
            candidate,
            interval_seconds=INTERVAL,
            latency_ceiling_ms=p.ceiling_ms,
            max_regression=p.max_regression,
            warm=warm,
        )
    latest = (ticks[-1][0], ticks[-1][1]) if ticks else None
    return Scenario(p, evidence, latest, empty or not ticks)


def all_gates(s: Scenario) -> list[GateResult]:
    p, e = s.params, s.evidence
    results = [
        error_rate_gate(
            e,
            error_budget=p.error_budget,
            max_burn_rate=p.max_burn_rate,
            max_ratio_to_baseline=p.max_ratio,
            min_requests=p.min_requests,
            alpha=p.alpha,
        ),
        latency_regression_gate(
            e, max_regression=p.max_regression, min_ticks=p.min_ticks, alpha=p.alpha
        ),
        latency_ceiling_gate(e, ceiling_ms=p.ceiling_ms, min_ticks=p.min_ticks, alpha=p.alpha),
        divergence_gate(
            e,
            max_kl=p.max_kl,
            min_outputs=p.min_outputs,
            smoothing=p.smoothing,
            alpha=p.alpha,
        ),
        nonfinite_gate(e, max_per_million=p.max_per_million, alpha=p.alpha),
    ]
    empty_arm = ArmObservation(0.0, 0.0, 0.0, (), None)
    baseline, candidate = s.latest if s.latest is not None else (empty_arm, empty_arm)
    results.append(
        burn_rate_gate(
            baseline,
            candidate,
            p.windows,
            error_budget=p.error_budget,
            max_burn_rate=p.max_burn_rate,
            max_ratio_to_baseline=p.max_ratio,
            alpha_this_look=p.alpha_this_look,
        )
    )
    return results


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_every_gate_returns_a_well_formed_result(s: Scenario) -> None:
    for result in all_gates(s):
        assert isinstance(result, GateResult)
        assert result.verdict in (Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE)
        assert isinstance(result.message, str)
        assert result.message.strip(), result
        assert result.value is None or math.isfinite(result.value), result
        assert result.threshold is None or math.isfinite(result.threshold), result
        assert math.isfinite(result.samples), result
        assert result.samples >= 0, result
        assert math.isfinite(result.window_seconds), result


@SETTINGS
@given(scenarios(candidate_empty=True))
def test_no_gate_passes_without_candidate_data(s: Scenario) -> None:
    assert s.evidence.candidate.requests == 0
    assert s.evidence.candidate.outputs == 0
    for result in all_gates(s):
        assert result.verdict is not Verdict.PASS, result


@SETTINGS
@given(params())
def test_no_gate_passes_on_empty_evidence(p: Params) -> None:
    s = Scenario(p, StepEvidence(), None, True)
    for result in all_gates(s):
        assert result.verdict is Verdict.INCONCLUSIVE, result


@SETTINGS
@given(scenarios(candidate_empty=False))
def test_gates_without_their_own_data_do_not_pass(s: Scenario) -> None:
    """Per gate: no Pass without the data that gate judges on."""
    error, regression, ceiling, divergence, nonfinite, burn = all_gates(s)
    e = s.evidence
    if e.candidate.requests <= 0:
        assert error.verdict is not Verdict.PASS
    if e.latency_ratio.n == 0:
        assert regression.verdict is not Verdict.PASS
    if e.latency_ceiling.n == 0:
        assert ceiling.verdict is not Verdict.PASS
    if e.candidate.outputs <= 0 or e.baseline.outputs <= 0:
        assert divergence.verdict is not Verdict.PASS
    if e.candidate.outputs + (e.candidate.nonfinite or 0.0) <= 0:
        assert nonfinite.verdict is not Verdict.PASS
    if s.latest is None or all(w.requests <= 0 for w in s.latest[1].windows.values()):
        assert burn.verdict is not Verdict.PASS


def _error_gate(evidence: StepEvidence, kw: dict[str, Any]) -> GateResult:
    return error_rate_gate(evidence, **kw)


def _totals(
    c_requests: float, c_failures: float, b_requests: float, b_failures: float
) -> StepEvidence:
    """Evidence of one tick with the given counts, through ``accumulate``."""
    return accumulate(
        StepEvidence(),
        ArmObservation(b_requests, b_failures, 0.0, (), None),
        ArmObservation(c_requests, c_failures, 0.0, (), None),
        interval_seconds=INTERVAL,
        latency_ceiling_ms=250.0,
        max_regression=0.1,
        warm=True,
    )


error_kwargs = st.fixed_dictionaries(
    {
        "error_budget": st.floats(1e-4, 0.2),
        "max_burn_rate": st.floats(0.5, 10.0),
        "max_ratio_to_baseline": st.floats(1.0, 5.0),
        "min_requests": st.integers(1, 5000),
        "alpha": st.floats(1e-5, 0.2),
    }
)

DEFAULTS = {
    "error_budget": 0.001,
    "max_burn_rate": 1.0,
    "max_ratio_to_baseline": 2.0,
    "min_requests": 500,
    "alpha": 0.0005,
}


@SETTINGS
@given(
    kw=error_kwargs,
    c_requests=_count(1e7),
    c_rate=rates,
    b_requests=_count(1e7),
    b_rate=rates,
    extra=fractions,
)
# An e-value far beyond exp()'s range (log e ~ 731) with the blame guard not holding.
@example(kw=DEFAULTS, c_requests=2000.0, c_rate=0.1, b_requests=21.0, b_rate=1 / 21, extra=0.5)
# Both arms burning alike, at 10x the budget.
@example(kw=DEFAULTS, c_requests=1e5, c_rate=0.01, b_requests=1e5, b_rate=0.01, extra=0.001)
def test_error_rate_gate_adding_failures_never_turns_fail_into_pass(
    kw: dict[str, Any],
    c_requests: float,
    c_rate: float,
    b_requests: float,
    b_rate: float,
    extra: float,
) -> None:
    c_failures = c_rate * c_requests
    b_failures = b_rate * b_requests
    before = _error_gate(_totals(c_requests, c_failures, b_requests, b_failures), kw)
    more = c_failures + extra * (c_requests - c_failures)
    after = _error_gate(_totals(c_requests, more, b_requests, b_failures), kw)
    for result in (before, after):
        assert result.verdict in (Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE)
        assert result.message
    if before.verdict is Verdict.FAIL:
        assert after.verdict is not Verdict.PASS
        # Stronger, and what the construction gives: with the requests fixed, the
        # e-value increases with failures and so does the blame guard's significance.
        assert after.verdict is Verdict.FAIL


@SETTINGS
@given(kw=error_kwargs, c_requests=_count(1e7), b_requests=_count(1e7), b_rate=rates)
def test_error_rate_gate_never_fails_without_candidate_failures(
    kw: dict[str, Any], c_requests: float, b_requests: float, b_rate: float
) -> None:
    result = _error_gate(_totals(c_requests, 0.0, b_requests, b_rate * b_requests), kw)
    assert result.verdict is not Verdict.FAIL


latency_tick = st.tuples(
    st.floats(1.0, 1e5),  # baseline requests
    st.floats(1.0, 1e5),  # candidate requests
    st.floats(50.0, 200.0),  # baseline P99
    st.floats(0.5, 2.0),  # candidate / baseline
)


def _modelled_weight(*requests: float) -> float:
    """1 / the modelled variance of a log P99 (ratio) from arms of these request counts."""
    variance = sum(LATENCY_NOISE_SCALE**2 / n for n in requests) + LATENCY_NOISE_FLOOR**2
    return 1.0 / variance


@SETTINGS
@given(
    ticks=st.lists(latency_tick, max_size=40),
    max_regression=st.floats(0.01, 2.0),
    min_ticks=st.integers(1, 10),
    ceiling_ms=st.floats(50.0, 400.0),
    alpha=st.floats(1e-5, 0.2),
)
def test_latency_gates_are_well_formed_over_many_ticks(
    ticks: list[tuple[float, float, float, float]],
    max_regression: float,
    min_ticks: int,
    ceiling_ms: float,
    alpha: float,
) -> None:
    evidence = StepEvidence()
    for n_b, n_c, p99_b, ratio in ticks:
        evidence = accumulate(
            evidence,
            ArmObservation(n_b, 0.0, 0.0, (), p99_b, p99_window_seconds=INTERVAL),
            ArmObservation(n_c, 0.0, 0.0, (), p99_b * ratio, p99_window_seconds=INTERVAL),
            interval_seconds=INTERVAL,
            latency_ceiling_ms=ceiling_ms,
            max_regression=max_regression,
            warm=True,
        )
    assert evidence.latency_ratio.n == evidence.latency_ceiling.n == len(ticks)
    regression = latency_regression_gate(
        evidence, max_regression=max_regression, min_ticks=min_ticks, alpha=alpha
    )
    ceiling = latency_ceiling_gate(
        evidence, ceiling_ms=ceiling_ms, min_ticks=min_ticks, alpha=alpha
    )
    for result in (regression, ceiling):
        assert result.verdict in (Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE)
        assert result.message.strip()
        assert result.value is None or math.isfinite(result.value)
        assert math.isfinite(result.samples)
        if len(ticks) < min_ticks:
            # Neither verdict before min_ticks ticks.
            assert result.verdict is Verdict.INCONCLUSIVE
        if len(ticks) < 2:
            # One tick says nothing about the noise: the t-test cannot fail on it.
            assert result.verdict is not Verdict.FAIL
    # Each paired tick's log ratio is clipped on both sides at max(4 x the log
    # tolerance, 0.3), whatever its traffic, and weighted by both arms' requests;
    # each ceiling sample is clipped from above only, at log 2, and weighted by the
    # candidate's requests. The values are the weighted means of those samples.
    tolerance = math.log1p(max_regression)
    clip = max(4 * tolerance, 0.3)
    assert latency_clip(max_regression) == clip
    paired = [
        (min(max(math.log(p99_b * ratio / p99_b), -clip), clip), _modelled_weight(n_c, n_b))
        for n_b, n_c, p99_b, ratio in ticks
    ]
    above = [
        (min(math.log(p99_b * ratio / ceiling_ms), math.log(2.0)), _modelled_weight(n_c))
        for _, n_c, p99_b, ratio in ticks
    ]
    for samples, moments in ((paired, evidence.latency_ratio), (above, evidence.latency_ceiling)):
        assert moments.weight == pytest.approx(sum(w for _, w in samples), rel=1e-9)
        assert moments.total == pytest.approx(sum(x * w for x, w in samples), rel=1e-9, abs=1e-9)
        assert moments.total_sq == pytest.approx(
            sum(x * x * w for x, w in samples), rel=1e-9, abs=1e-9
        )
    if ticks:
        assert regression.value is not None
        assert regression.value == pytest.approx(math.exp(evidence.latency_ratio.mean), rel=1e-12)
        assert ceiling.value is not None
        assert ceiling.value == pytest.approx(
            ceiling_ms * math.exp(evidence.latency_ceiling.mean), rel=1e-12
        )
    # Fail only when the mean is above the tolerance (the e-value is 1 at or below it).
    if regression.verdict is Verdict.FAIL:
        assert regression.value is not None
        assert regression.value > 1 + max_regression
    if ceiling.verdict is Verdict.FAIL:
        assert ceiling.value is not None
        assert ceiling.value > ceiling_ms
    # The ceiling passes exactly when min_ticks are in, the mean is not above the
    # ceiling, and it has not failed (which needs a mean above it).
    if ticks and len(ticks) >= min_ticks and ceiling.value is not None:
        assert (ceiling.verdict is Verdict.PASS) == (ceiling.value <= ceiling_ms)
    # After min_ticks, the regression gate passes exactly when it has not failed, the
    # mean is within the limit, and its standard error is itself within the tolerance
    # (the error: the model's, scaled by the dispersion shrunk towards 1 with
    # PRIOR_TICKS ticks' weight, never below 1).
    m = evidence.latency_ratio
    if ticks and len(ticks) >= min_ticks and regression.verdict is not Verdict.FAIL:
        dof = m.n - 1
        observed = m.dispersion if dof > 0 else 1.0
        dispersion = max((PRIOR_TICKS + dof * observed) / (PRIOR_TICKS + dof), 1.0)
        error = math.sqrt(dispersion / m.weight)
        within = m.mean <= tolerance and error <= tolerance
        assert (regression.verdict is Verdict.PASS) == within, (regression, m, error)


@SETTINGS
@given(
    base=st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=30),
    requests=st.floats(50.0, 1e5),
    max_regression=st.floats(0.03, 0.5),
    alpha=st.floats(1e-4, 0.2),
)
def test_latency_regression_verdict_never_improves_when_every_tick_gets_slower(
    base: list[float], requests: float, max_regression: float, alpha: float
) -> None:
    """Raising every tick's log ratio by the same amount (a uniformly slower
    candidate) never turns a Fail into a Pass or Inconclusive, nor an
    Inconclusive into a Pass: the e-value never falls when all samples rise, and
    the Pass rule's standard error does not change."""
    verdicts = []
    tolerance = math.log1p(max_regression)
    clip = latency_clip(max_regression)
    order = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.FAIL: 2}
    for shift in (0.0, 0.02, 0.05):
        values = [x * tolerance + shift for x in base]
        # Inside the clip (max(4 tolerances, 0.3), and every value is at most a
        # tolerance plus 0.05), so the shift moves every sample alike.
        assert max(abs(v) for v in values) < clip
        evidence = StepEvidence()
        for v in values:
            evidence = accumulate(
                evidence,
                ArmObservation(requests, 0.0, 0.0, (), 100.0),
                ArmObservation(requests, 0.0, 0.0, (), 100.0 * math.exp(v)),
                interval_seconds=INTERVAL,
                latency_ceiling_ms=250.0,
                max_regression=max_regression,
                warm=True,
            )
        result = latency_regression_gate(
            evidence, max_regression=max_regression, min_ticks=2, alpha=alpha
        )
        verdicts.append(order[result.verdict])
    assert verdicts == sorted(verdicts), verdicts


@SETTINGS
@given(
    p99=st.one_of(st.floats(1.0, 1e5), st.floats(0.01, 1e6)),
    ceiling_ms=st.floats(1.0, 5000.0),
    requests=st.lists(
        st.one_of(st.floats(1e-3, 1e7), st.integers(1, 10**7).map(float)), min_size=2, max_size=4
    ),
    max_regressions=st.lists(st.floats(0.0, 5.0), min_size=2, max_size=4),
)
def test_latency_ceiling_sample_depends_on_neither_traffic_nor_tolerance(
    p99: float, ceiling_ms: float, requests: list[float], max_regressions: list[float]
) -> None:
    """A tick's ceiling sample is log(candidate P99 / ceiling) clipped from above at
    log 2, the same for every request count and maxRegression (only its weight
    follows the candidate's traffic)."""
    expected = min(math.log(p99 / ceiling_ms), math.log(2.0))
    for n in requests:
        for max_regression in max_regressions:
            evidence = accumulate(
                StepEvidence(),
                ArmObservation(n, 0.0, 0.0, (), 100.0),
                ArmObservation(n, 0.0, 0.0, (), p99),
                interval_seconds=INTERVAL,
                latency_ceiling_ms=ceiling_ms,
                max_regression=max_regression,
                warm=True,
            )
            m = evidence.latency_ceiling
            assert m.n == 1
            assert m.weight == pytest.approx(_modelled_weight(max(n, 1.0)), rel=1e-12)
            assert m.total / m.weight == pytest.approx(expected, rel=1e-12, abs=1e-12)
