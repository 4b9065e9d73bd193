"""Unit tests of the anytime-valid statistics in ``gelu_rollout.analysis.sequential``.

Besides the deterministic properties, seeded Monte-Carlo checks simulate
healthy candidates looked at many times and check that the false-alarm rate
over the whole sequence stays within alpha (Ville's inequality for the
e-values, Robbins' normal-mixture boundary for the Gaussian sums), each with a
positive control that the same design finds a real excess.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from gelu_rollout.analysis.sequential import (
    RATE_MULTIPLIERS,
    binomial_log_evalue,
    binomial_upper_tail,
    exceeds_normal_mixture,
    format_evalue,
    mixture_rho,
    normal_mixture_bound,
    scale_free_log_evalue,
    spent_alpha,
)

ALPHA = 0.05
LOG_THRESHOLD = math.log(1.0 / ALPHA)


def _mc_limit(alpha: float, runs: int) -> float:
    """alpha plus a 3-sigma Monte-Carlo margin for a rate estimated from ``runs`` runs."""
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / runs)


# ---------------------------------------------------------------------------------------------
# binomial_log_evalue
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1e-4, 1e-3, 0.01, 0.2])
def test_log_evalue_is_zero_without_data(rate: float) -> None:
    assert binomial_log_evalue(0.0, 0.0, rate) == 0.0


def test_log_evalue_is_zero_for_a_non_positive_tolerance() -> None:
    assert binomial_log_evalue(5.0, 100.0, 0.0) == 0.0


def test_log_evalue_is_zero_when_no_alternative_is_a_valid_rate() -> None:
    # Every alternative m * p0 (m >= 1.25) is >= 1 when p0 = 0.9: nothing to test against.
    assert binomial_log_evalue(90.0, 100.0, 0.9) == 0.0


def test_log_evalue_grows_with_failures_well_above_the_tolerated_rate() -> None:
    p0 = 0.001
    n = 100_000.0
    # 5x and 10x the tolerated rate over 100k requests: overwhelming evidence.
    five = binomial_log_evalue(5 * p0 * n, n, p0)
    ten = binomial_log_evalue(10 * p0 * n, n, p0)
    assert five > LOG_THRESHOLD
    assert ten > five
    # The mixture is at least the best single alternative's likelihood ratio
    # less the cost of mixing, log(len(multipliers)): check against m = 5 at 5x.
    f, s = 5 * p0 * n, n - 5 * p0 * n
    q = 5 * p0
    lr5 = f * math.log(q / p0) + s * (math.log1p(-q) - math.log1p(-p0))
    assert five >= lr5 - math.log(len(RATE_MULTIPLIERS)) - 1e-9


def test_log_evalue_grows_with_the_sample_at_a_fixed_excess_rate() -> None:
    p0 = 0.01
    values = [binomial_log_evalue(3 * p0 * n, n, p0) for n in (100.0, 1_000.0, 10_000.0)]
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("p0", [1e-4, 1e-3, 0.01, 0.1])
@pytest.mark.parametrize("n", [10.0, 100.0, 1_000.0, 10_000.0, 1_000_000.0])
def test_log_evalue_at_the_tolerated_rate_stays_below_the_threshold(p0: float, n: float) -> None:
    # With failures exactly p0 * n each alternative's log likelihood ratio is
    # -n KL(p0 || q) < 0, so the mixture is below 1 (log below 0), far from 1/alpha.
    log_e = binomial_log_evalue(p0 * n, n, p0)
    assert log_e < 0.0
    assert log_e < LOG_THRESHOLD


@pytest.mark.parametrize("p0", [1e-3, 0.01, 0.05])
def test_log_evalue_is_monotone_in_failures(p0: float) -> None:
    n = 2_000.0
    failures = np.linspace(0.0, n, 401)
    values = [binomial_log_evalue(float(f), n, p0) for f in failures]
    assert all(b > a for a, b in itertools.pairwise(values))


# ---------------------------------------------------------------------------------------------
# binomial_upper_tail
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 50, 400, 5_000])
@pytest.mark.parametrize("p", [1e-4, 0.001, 0.03, 0.5, 0.97])
def test_upper_tail_matches_scipy_for_integer_counts(n: int, p: float) -> None:
    ks = sorted({1, 2, 3, n // 10 + 1, n // 2 + 1, n - 1, n} - {0})
    for k in ks:
        if k > n or k < 1:
            continue
        expected = stats.binom.sf(k - 1, n, p)
        assert binomial_upper_tail(float(k), float(n), p) == pytest.approx(
            expected, rel=1e-7, abs=1e-300
        ), (k, n, p)


def test_upper_tail_edges() -> None:
    # P(X >= 0) = 1, and X can never exceed the number of trials.
    assert binomial_upper_tail(0.0, 100.0, 0.3) == 1.0
    assert binomial_upper_tail(-1.0, 100.0, 0.3) == 1.0
    assert binomial_upper_tail(101.0, 100.0, 0.3) == 0.0
    # P(X >= n) = p^n.
    assert binomial_upper_tail(10.0, 10.0, 0.5) == pytest.approx(0.5**10)


def test_upper_tail_is_continuous_and_monotone_for_fractional_counts() -> None:
    ks = np.linspace(0.5, 30.0, 60)
    tails = [binomial_upper_tail(float(k), 100.0, 0.1) for k in ks]
    assert all(0.0 <= t <= 1.0 for t in tails)
    assert all(b < a for a, b in itertools.pairwise(tails))
    # Between integer counts the fractional tail lies between its neighbours.
    lo, mid, hi = (binomial_upper_tail(k, 100.0, 0.1) for k in (10.0, 10.5, 11.0))
    assert hi < mid < lo


# ---------------------------------------------------------------------------------------------
# spent_alpha
# ---------------------------------------------------------------------------------------------


def test_spent_alpha_sums_to_alpha_over_many_looks() -> None:
    alpha = 0.01
    looks = 100_000
    spent = [spent_alpha(alpha, k) for k in range(1, looks + 1)]
    assert all(s > 0 for s in spent)
    assert all(b < a for a, b in itertools.pairwise(spent))
    total = math.fsum(spent)
    # alpha / (k (k + 1)) telescopes: the first N looks spend alpha (1 - 1 / (N + 1)).
    assert total == pytest.approx(alpha * (1 - 1 / (looks + 1)), rel=1e-9)
    assert total <= alpha
    assert total > alpha * 0.9999


@pytest.mark.parametrize("look", [0, -1, -10])
def test_spent_alpha_rejects_looks_before_the_first(look: int) -> None:
    with pytest.raises(ValueError, match="look"):
        spent_alpha(0.05, look)


def test_spent_alpha_first_look_spends_half() -> None:
    assert spent_alpha(0.05, 1) == pytest.approx(0.025)


# ---------------------------------------------------------------------------------------------
# normal-mixture boundary
# ---------------------------------------------------------------------------------------------


def test_mixture_rho_is_proportional_to_the_target() -> None:
    assert mixture_rho(2000.0, 0.05) == pytest.approx(2.0 * mixture_rho(1000.0, 0.05))
    assert mixture_rho(1000.0, 0.05) > 0


def test_normal_mixture_bound_at_zero_information() -> None:
    # bound(0) = sqrt(rho log(1 / alpha^2)).
    rho = 7.0
    assert normal_mixture_bound(0.0, 0.05, rho) == pytest.approx(
        math.sqrt(rho * 2 * math.log(1 / 0.05))
    )


def test_normal_mixture_bound_grows_slower_than_linearly() -> None:
    rho = mixture_rho(1000.0, ALPHA)
    vs = [10.0**e for e in range(0, 10)]
    bounds = [normal_mixture_bound(v, ALPHA, rho) for v in vs]
    # Increasing in the information...
    assert all(b > a for a, b in itertools.pairwise(bounds))
    # ...but ever smaller relative to it (so the confidence width bound / V shrinks).
    per_unit = [b / v for b, v in zip(bounds, vs, strict=True)]
    assert all(b < a for a, b in itertools.pairwise(per_unit))
    assert per_unit[-1] < 1e-3
    # And at least as wide as a fixed-level Gaussian bound (sqrt(V) z_{alpha/2}) for large V.
    assert bounds[-1] > math.sqrt(vs[-1]) * stats.norm.isf(ALPHA / 2)


def test_normal_mixture_bound_is_wider_for_smaller_alpha() -> None:
    rho = 50.0
    assert normal_mixture_bound(1000.0, 0.001, rho) > normal_mixture_bound(1000.0, 0.05, rho)


def test_exceeds_normal_mixture_lower_bound_is_below_the_estimate() -> None:
    rho = mixture_rho(1000.0, ALPHA)
    for information in (0.5, 10.0, 1e3, 1e6):
        for estimate in (-1.0, 0.0, 0.05, 2.0):
            _, lower = exceeds_normal_mixture(estimate, 0.1, information, ALPHA, rho)
            assert lower < estimate
            expected = estimate - normal_mixture_bound(information, ALPHA, rho) / information
            assert lower == pytest.approx(expected)


def test_exceeds_normal_mixture_decisions() -> None:
    rho = mixture_rho(1000.0, ALPHA)
    # No information: never exceeds, lower bound -inf.
    assert exceeds_normal_mixture(10.0, 0.1, 0.0, ALPHA, rho) == (False, -math.inf)
    # Estimate below the tolerance: never exceeds, whatever the information.
    assert not exceeds_normal_mixture(0.09, 0.1, 1e12, ALPHA, rho)[0]
    # Far above with plenty of information: exceeds.
    assert exceeds_normal_mixture(0.5, 0.1, 1e4, ALPHA, rho)[0]
    # Slightly above with little information: does not.
    assert not exceeds_normal_mixture(0.12, 0.1, 10.0, ALPHA, rho)[0]


# ---------------------------------------------------------------------------------------------
# Monte-Carlo validity under continuous monitoring
# ---------------------------------------------------------------------------------------------


def test_binomial_evalue_false_alarm_rate_over_many_looks() -> None:
    """Healthy candidates exactly at the tolerated rate, looked at 30 times each.

    By Ville's inequality the running e-value ever reaching 1/alpha has
    probability at most alpha. A fixed-level test checked 30 times would
    exceed that several times over.
    """
    rng = np.random.default_rng(20260301)
    runs, looks, p0 = 2000, 30, 0.01
    requests = rng.integers(20, 3000, size=(runs, looks)).astype(float)
    failures = rng.binomial(requests.astype(int), p0).astype(float)
    total_n = np.cumsum(requests, axis=1)
    total_f = np.cumsum(failures, axis=1)
    crossed = 0
    for run in range(runs):
        for look in range(looks):
            # At an observed rate <= p0 every alternative's likelihood ratio is
            # below 1 (it is -n KL(rate || q) plus a term that is negative when
            # rate < p0), so only looks above p0 can cross; skipping the others
            # keeps the test fast.
            if total_f[run, look] <= p0 * total_n[run, look]:
                continue
            if binomial_log_evalue(total_f[run, look], total_n[run, look], p0) >= LOG_THRESHOLD:
                crossed += 1
                break
    rate = crossed / runs
    assert rate <= _mc_limit(ALPHA, runs), rate


def test_binomial_evalue_detects_a_real_excess_in_the_same_simulation() -> None:
    """The same design at 3x the tolerated rate: the e-value must find most of them
    (guards against a validity check that passes because the e-value never moves)."""
    rng = np.random.default_rng(7)
    runs, looks, p0 = 300, 30, 0.01
    requests = rng.integers(20, 3000, size=(runs, looks)).astype(float)
    failures = rng.binomial(requests.astype(int), 3 * p0).astype(float)
    total_n = np.cumsum(requests, axis=1)
    total_f = np.cumsum(failures, axis=1)
    found = sum(
        binomial_log_evalue(total_f[run, -1], total_n[run, -1], p0) >= LOG_THRESHOLD
        for run in range(runs)
    )
    assert found / runs > 0.95


def test_normal_mixture_false_alarm_rate_over_many_looks() -> None:
    """Gaussian increments whose mean is exactly the tolerance, with varying
    precision per look; the one-sided crossing of the boundary must stay within
    alpha (it is a two-sided boundary used one-sidedly, so about alpha / 2)."""
    rng = np.random.default_rng(31337)
    runs, looks, tolerance = 2000, 30, 0.1
    rho = mixture_rho(100.0, ALPHA)
    weights = rng.uniform(0.5, 20.0, size=(runs, looks))  # 1 / variance of each increment
    samples = tolerance + rng.standard_normal((runs, looks)) / np.sqrt(weights)
    information = np.cumsum(weights, axis=1)
    means = np.cumsum(weights * samples, axis=1) / information
    crossed = 0
    for run in range(runs):
        for look in range(looks):
            exceeded, _ = exceeds_normal_mixture(
                float(means[run, look]), tolerance, float(information[run, look]), ALPHA, rho
            )
            if exceeded:
                crossed += 1
                break
    rate = crossed / runs
    assert rate <= _mc_limit(ALPHA, runs), rate


def test_normal_mixture_detects_a_real_excess_in_the_same_simulation() -> None:
    rng = np.random.default_rng(99)
    runs, looks, tolerance = 300, 30, 0.1
    rho = mixture_rho(100.0, ALPHA)
    weights = rng.uniform(0.5, 20.0, size=(runs, looks))
    samples = tolerance + 0.5 + rng.standard_normal((runs, looks)) / np.sqrt(weights)
    information = np.cumsum(weights, axis=1)
    means = np.cumsum(weights * samples, axis=1) / information
    found = sum(
        exceeds_normal_mixture(
            float(means[run, -1]), tolerance, float(information[run, -1]), ALPHA, rho
        )[0]
        for run in range(runs)
    )
    assert found / runs > 0.95


def test_format_evalue_handles_huge_evidence() -> None:
    assert format_evalue(math.log(20.0)) == "20"
    huge = format_evalue(5000.0)
    assert "5000" in huge
    assert format_evalue(-10.0)  # tiny e-values format too


# ---------------------------------------------------------------------------------------------
# scale_free_log_evalue (the sequential t-test)
# ---------------------------------------------------------------------------------------------

EFFECT = 0.25


def _sums(xs: np.ndarray, ws: np.ndarray) -> tuple[int, float, float, float]:
    """(n, W, sum w x, sum w x^2): the running sums the gates keep."""
    return len(xs), float(ws.sum()), float((ws * xs).sum()), float((ws * xs * xs).sum())


def _log_e(xs: np.ndarray, ws: np.ndarray, null: float, effect: float = EFFECT) -> float:
    return scale_free_log_evalue(*_sums(xs, ws), null, effect)


def test_scale_free_evalue_is_one_for_fewer_than_two_samples() -> None:
    assert scale_free_log_evalue(0, 0.0, 0.0, 0.0, 0.0, EFFECT) == 0.0
    # One sample however far above the null: no evidence (the scale is unknown,
    # and one sample says nothing about it).
    for x, w in ((10.0, 5.0), (1e-6, 1e6), (1e6, 1e-6)):
        assert scale_free_log_evalue(1, w, w * x, w * x * x, 0.0, EFFECT) == 0.0


@pytest.mark.parametrize(
    ("xs", "null"),
    [
        ([-1.0, 1.0], 0.0),  # the weighted mean exactly at the null
        ([0.25, 0.75, 0.25, 0.75], 0.5),  # likewise, exactly in binary
        ([0.1, 0.2, 0.3, 0.35], 0.4),  # every sample below the null
        ([-5.0, 0.5, 0.6, 0.7, 0.8, 0.9], 0.2),  # mostly above, but the mean below
        ([0.3] * 20, 0.3),  # identical samples at the null
    ],
)
def test_scale_free_evalue_is_one_when_the_mean_is_not_above_the_null(
    xs: list[float], null: float
) -> None:
    x = np.array(xs)
    ws = np.full(len(xs), 3.0)
    assert float((ws * (x - null)).sum()) <= 0
    assert _log_e(x, ws, null) == 0.0
    # The two-sided Bayes factor would count a mean far below the null as
    # evidence; the one-sided e-value does not.
    assert _log_e(null - 100.0 * (x - null) - 50.0, ws, null) == 0.0


@pytest.mark.parametrize("effect", [0.25, 0.7, 2.0])
def test_scale_free_evalue_is_the_bayes_factor_by_numerical_integration(effect: float) -> None:
    """The e-value is the Bayes factor of (mean - null) / sigma ~ N(0, effect^2) against
    mean = null, with the prior 1/sigma on sigma under both; integrated numerically
    here from the Gaussian likelihood of x_i ~ N(mean, sigma^2 / w_i)."""
    xs = [0.31, 0.05, 0.42, 0.18, 0.27]
    ws = [2.0, 0.5, 3.0, 1.0, 1.5]
    null = 0.1

    def log_likelihood(mean: float, log_sigma: float) -> float:
        return sum(
            0.5 * math.log(w / (2 * math.pi))
            - log_sigma
            - w * (x - mean) ** 2 / (2 * math.exp(2 * log_sigma))
            for x, w in zip(xs, ws, strict=True)
        )

    def prior(d: float) -> float:
        return math.exp(-d * d / (2 * effect**2)) / (effect * math.sqrt(2 * math.pi))

    # With u = log sigma the prior d sigma / sigma is du.
    null_marginal = integrate.quad(lambda u: math.exp(log_likelihood(null, u)), -12, 6)[0]
    alternative_marginal = integrate.dblquad(
        lambda d, u: math.exp(log_likelihood(null + d * math.exp(u), u)) * prior(d),
        -12,
        6,
        -8 * effect,
        8 * effect,
    )[0]
    expected = math.log(alternative_marginal / null_marginal)
    assert expected > 0
    assert _log_e(np.array(xs), np.array(ws), null, effect) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("scale", [1e-4, 0.01, 0.37, 3.0, 250.0, 1e5])
def test_scale_free_evalue_is_invariant_to_the_noise_scale(scale: float) -> None:
    """Multiplying every deviation from the null by c > 0 leaves the e-value as it
    is: it measures the mean in units of the noise, whatever the noise is."""
    rng = np.random.default_rng(3)
    ws = rng.uniform(0.5, 20.0, size=12)
    deviations = 0.4 + rng.standard_normal(12) / np.sqrt(ws)
    null = 0.1
    reference = _log_e(null + deviations, ws, null)
    assert reference > 1.0  # a real effect, so the comparison is not 0 == 0
    assert _log_e(null + scale * deviations, ws, null) == pytest.approx(reference, rel=1e-7)


def test_scale_free_evalue_grows_with_n_at_a_fixed_standardised_effect() -> None:
    """Samples null + sigma (1 +- 1): the mean is one (per-unit-weight) standard
    deviation above the null at every even n, so more samples are more evidence."""
    null, sigma = 0.1, 0.05
    values = []
    for n in (4, 8, 16, 32, 64):
        xs = null + sigma * (1.0 + np.array([1.0, -1.0] * (n // 2)))
        values.append(_log_e(xs, np.ones(n), null))
    assert all(b > a for a, b in itertools.pairwise(values))
    assert values[-1] > LOG_THRESHOLD


def test_scale_free_evalue_is_at_most_that_of_identical_samples() -> None:
    """Given n and W, identical samples above the null (no spread at all) carry the
    most evidence: (1 + W t^2)^((n - 1) / 2); any spread carries less."""
    rng = np.random.default_rng(4)
    for n in (2, 3, 5, 10, 30):
        ws = rng.uniform(0.5, 20.0, size=n)
        bound = (n - 1) / 2 * math.log1p(ws.sum() * EFFECT**2)
        identical = _log_e(np.full(n, 0.7), ws, 0.2)
        assert identical == pytest.approx(bound, rel=1e-9)
        for _ in range(50):
            xs = 0.2 + rng.normal(rng.uniform(0.0, 2.0), 1.0, size=n) / np.sqrt(ws)
            assert _log_e(xs, ws, 0.2) <= bound + 1e-9


def test_scale_free_evalue_never_falls_when_the_null_is_lowered() -> None:
    """Lowering the null (equivalently, raising every sample by the same amount)
    never lowers the evidence that the mean is above it. (Below the weighted mean
    the Bayes factor itself is monotone; at and above it the e-value is 1, while
    the Bayes factor just below it is under 1, so compare evidence, max(log e, 0).)"""
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(2, 20))
        ws = rng.uniform(0.5, 20.0, size=n)
        xs = rng.normal(0.0, 1.0, size=n) / np.sqrt(ws)
        mean = float((ws * xs).sum() / ws.sum())
        below_mean = [_log_e(xs, ws, mean - d) for d in np.linspace(1e-6, 1.0, 21)]
        assert all(b >= a - 1e-9 for a, b in itertools.pairwise(below_mean))
        evidence = [max(_log_e(xs, ws, float(null)), 0.0) for null in np.linspace(1, -1, 41)]
        assert all(b >= a - 1e-9 for a, b in itertools.pairwise(evidence))


def test_scale_free_evalue_extra_sum_of_squares_only_lowers_it() -> None:
    """``extra_sum_sq`` is added to Q (the spread): 0 is the plain e-value, and
    more of it never raises the e-value, so an e-value that is valid stays valid.
    Identical samples, the most evidence without it, fall below that bound."""
    rng = np.random.default_rng(6)
    for _ in range(100):
        n = int(rng.integers(2, 25))
        ws = rng.uniform(0.5, 20.0, size=n)
        xs = 0.1 + rng.normal(rng.uniform(0.0, 1.0), 1.0, size=n) / np.sqrt(ws)
        sums = _sums(xs, ws)
        plain = scale_free_log_evalue(*sums, 0.1, EFFECT)
        assert scale_free_log_evalue(*sums, 0.1, EFFECT, extra_sum_sq=0.0) == plain
        values = [
            scale_free_log_evalue(*sums, 0.1, EFFECT, extra_sum_sq=extra)
            for extra in (0.0, 0.01, 0.1, 1.0, 10.0, 1e3)
        ]
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values))
        if plain > 0:
            assert values[-1] < plain
    ws = np.full(4, 100.0)
    bound = 3 / 2 * math.log1p(ws.sum() * EFFECT**2)
    identical = scale_free_log_evalue(*_sums(np.full(4, 0.3), ws), 0.1, EFFECT, extra_sum_sq=1.0)
    assert identical < bound - 0.5
    # It is still one for a single sample and when the mean is not above the null.
    assert scale_free_log_evalue(1, 2.0, 2.0, 2.0, 0.0, EFFECT, extra_sum_sq=1.0) == 0.0
    below = _sums(np.array([0.0, 0.05]), np.ones(2))
    assert scale_free_log_evalue(*below, 0.1, EFFECT, extra_sum_sq=1.0) == 0.0


def _t_test_runs(
    rng: np.random.Generator, runs: int, looks: int, sigma: float, effect: float, null: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running (W, sum w x, sum w x^2) of ``runs`` sequences of ``looks`` samples
    x_i ~ N(null + effect sigma, sigma^2 / w_i), with w_i varying per sample."""
    ws = rng.uniform(0.5, 20.0, size=(runs, looks))
    xs = null + sigma * (effect + rng.standard_normal((runs, looks)) / np.sqrt(ws))
    return (
        np.cumsum(ws, axis=1),
        np.cumsum(ws * xs, axis=1),
        np.cumsum(ws * xs * xs, axis=1),
    )


@pytest.mark.parametrize(("sigma", "seed"), [(0.01, 101), (1.0, 102), (100.0, 103)])
def test_scale_free_evalue_false_alarm_rate_over_many_looks(sigma: float, seed: int) -> None:
    """Gaussian data exactly at the null, whatever its noise scale, looked at after
    every one of 30 samples: the e-value ever reaching 1/alpha has probability at
    most alpha (it is an e-process for every sigma)."""
    rng = np.random.default_rng(seed)
    runs, looks, null = 2000, 30, 0.3
    weight, total, total_sq = _t_test_runs(rng, runs, looks, sigma, 0.0, null)
    crossed = 0
    naive = 0  # a one-sided fixed-level t-test at each look, for comparison
    for run in range(runs):
        if any(
            scale_free_log_evalue(
                look + 1,
                float(weight[run, look]),
                float(total[run, look]),
                float(total_sq[run, look]),
                null,
                EFFECT,
            )
            >= LOG_THRESHOLD
            for look in range(1, looks)
        ):
            crossed += 1
        n = np.arange(2, looks + 1)
        w, s, q = weight[run, 1:], total[run, 1:], total_sq[run, 1:]
        mean = s / w
        variance = np.maximum(q - s * s / w, 0.0) / (n - 1)
        t = (mean - null) / np.sqrt(variance / w)
        naive += bool(np.any(stats.t.sf(t, n - 1) < ALPHA))
    rate = crossed / runs
    assert rate <= _mc_limit(ALPHA, runs), rate
    # The simulation can tell: checked 29 times, a fixed-level test fails far more often.
    assert naive / runs > 2 * _mc_limit(ALPHA, runs), naive / runs


@pytest.mark.parametrize(("sigma", "seed"), [(0.01, 201), (1.0, 202), (100.0, 203)])
def test_scale_free_evalue_finds_a_real_effect_in_the_same_simulation(
    sigma: float, seed: int
) -> None:
    """The same design with the mean 0.3 (per-unit-weight) noise sds above the null:
    about 5 standard errors after 30 samples. The e-value must find most of them."""
    rng = np.random.default_rng(seed)
    runs, looks, null = 300, 30, 0.3
    weight, total, total_sq = _t_test_runs(rng, runs, looks, sigma, 0.3, null)
    found = sum(
        scale_free_log_evalue(
            looks,
            float(weight[run, -1]),
            float(total[run, -1]),
            float(total_sq[run, -1]),
            null,
            EFFECT,
        )
        >= LOG_THRESHOLD
        for run in range(runs)
    )
    assert found / runs > 0.9, found / runs
