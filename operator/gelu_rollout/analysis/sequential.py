"""Statistics that stay valid however often they are looked at.

A canary is judged at every tick. A fixed-level test checked that often raises
false alarms far above its nominal level, so every gate here tests with one of
two tools whose error rate holds under continuous monitoring:

* test martingales (e-values): a likelihood ratio mixed over alternatives is a
  non-negative supermartingale under the null, so by Ville's inequality it ever
  reaching ``1 / alpha`` has probability at most ``alpha``;
* Robbins' normal-mixture boundary for sums with (asymptotically) Gaussian
  increments, which gives time-uniform confidence sequences;
* for a mean whose noise scale is unknown, the Bayes factor of a Gaussian
  prior on the standardised effect with the right-Haar prior on the scale,
  which is an e-process whatever the scale (the sequential t-test);

and, for the windowed burn-rate check whose windows slide, explicit alpha
spending: look ``k`` spends ``alpha / (k (k + 1))``, which sums to ``alpha``
over any number of looks. docs/analysis.md explains the choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

# Alternatives the error-rate e-value mixes over: the candidate's failure rate as
# a multiple of the tolerated rate. Wide, so both a slow and a fast burn build
# evidence quickly; uniform weights, so the cost of mixing is log(len) nats.
RATE_MULTIPLIERS: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def binomial_log_evalue(
    failures: float,
    requests: float,
    tolerated_rate: float,
    multipliers: Sequence[float] = RATE_MULTIPLIERS,
) -> float:
    """Log e-value against "failure rate <= tolerated_rate" from running totals.

    The likelihood ratio of each alternative ``m * tolerated_rate`` (m > 1) is a
    supermartingale under any rate at or below the tolerated one (the binomial
    family has a monotone likelihood ratio), and so is their average. Counts
    may be fractional, as Prometheus' ``increase()`` extrapolates.
    """
    if requests <= 0 or tolerated_rate <= 0:
        return 0.0
    p0 = min(tolerated_rate, 1.0 - 1e-12)
    alternatives = np.array([m * p0 for m in multipliers if m * p0 < 1.0])
    if alternatives.size == 0:
        return 0.0
    successes = requests - failures
    log_ratios = (
        failures * np.log(alternatives / p0)
        + successes * np.log1p(-alternatives)
        - successes * math.log1p(-p0)
    )
    return float(special.logsumexp(log_ratios) - math.log(len(multipliers)))


def _binomial_log_evalue_scalar(
    failures: float, successes: float, rate: float, multipliers: Sequence[float]
) -> float:
    """:func:`binomial_log_evalue` in plain floats: the same sum, some fifty times faster
    than numpy on nine alternatives, for the bisection below that calls it many times."""
    p0 = min(rate, 1.0 - 1e-12)
    base = successes * math.log1p(-p0)
    terms = [
        failures * math.log(m) + successes * math.log1p(-m * p0) - base
        for m in multipliers
        if m * p0 < 1.0
    ]
    if not terms:
        return 0.0
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms)) - math.log(len(multipliers))


def binomial_rate_lower_bound(
    failures: float,
    requests: float,
    alpha: float,
    multipliers: Sequence[float] = RATE_MULTIPLIERS,
) -> float | None:
    """The largest tolerated rate that :func:`binomial_log_evalue` still rejects at ``alpha``:
    the lower end of the confidence sequence its test implies. None when it rejects none.

    The e-value only falls as the tolerated rate rises (each alternative's likelihood ratio
    does, and alternatives at or above 1 drop out), so the rates it rejects are an interval
    from 0 and bisection finds its end; at the observed rate itself no alternative above it
    is likelier, so the end lies below it. Comparing the bound with a tolerated rate gives
    the test's own answer; the gates report it so a chart can show how close a test came.
    """
    if requests <= 0 or failures <= 0:
        return None
    needed = math.log(1.0 / alpha)
    successes = requests - failures
    low, high = math.log(1e-12), math.log(min(failures / requests, 1.0 - 1e-12))
    if (
        low >= high
        or _binomial_log_evalue_scalar(failures, successes, math.exp(low), multipliers) < needed
    ):
        return None
    # 22 halvings of at most 28 nats: finer than the 4 digits the status keeps.
    for _ in range(22):
        middle = (low + high) / 2.0
        if _binomial_log_evalue_scalar(failures, successes, math.exp(middle), multipliers) >= (
            needed
        ):
            low = middle
        else:
            high = middle
    return math.exp(low)


PROOF_MULTIPLIERS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75)
"""Alternatives of the proof that a rate is within tolerance: fractions of the tolerated rate."""


def binomial_below_log_evalue(failures: float, requests: float, tolerated_rate: float) -> float:
    """Log e-value against "failure rate >= tolerated_rate": evidence that the rate is
    within tolerance. The mirror of :func:`binomial_log_evalue`, over alternatives below the
    tolerated rate (a supermartingale under any rate at or above it, by the same monotone
    likelihood ratio)."""
    if requests <= 0 or tolerated_rate <= 0 or tolerated_rate >= 1:
        return 0.0
    p0 = tolerated_rate
    alternatives = np.array([m * p0 for m in PROOF_MULTIPLIERS])
    successes = requests - failures
    log_ratios = (
        failures * np.log(alternatives / p0)
        + successes * np.log1p(-alternatives)
        - successes * math.log1p(-p0)
    )
    return float(special.logsumexp(log_ratios) - math.log(len(PROOF_MULTIPLIERS)))


def scale_free_log_evalue(
    n: int,
    weight: float,
    weighted_sum: float,
    weighted_sum_sq: float,
    null_mean: float,
    effect_scale: float,
    extra_sum_sq: float = 0.0,
) -> float:
    """Log e-value against "mean <= null_mean" for x_i ~ N(mean, sigma^2 / w_i), sigma unknown.

    The Bayes factor of H1: (mean - null_mean) / sigma ~ N(0, effect_scale^2) against
    H0: mean = null_mean, both with the right-Haar prior 1/sigma on the scale:

        BF = (1 + W t^2)^(-1/2) x (Q / (Q - S^2 t^2 / (1 + W t^2)))^(n / 2)

    with W = sum w_i, S = sum w_i (x_i - null_mean), Q = sum w_i (x_i - null_mean)^2.
    It is an e-process under H0 for any sigma (Perez-Ortiz, Lardy, de Heide and
    Grunwald, 2022), so noise larger than modelled makes it slower, never
    falsely confident. It is one, no evidence, for a single sample. Only
    evidence of a mean above ``null_mean`` counts: with S <= 0 it returns 0.

    ``extra_sum_sq`` is added to Q. The factor only shrinks as Q grows, so the
    result stays below a valid e-value and so stays valid; it keeps samples
    that tie (clipped to the same bound) from looking noiseless.
    """
    if n < 2 or weight <= 0:
        return 0.0
    centred_sum = weighted_sum - null_mean * weight
    centred_sq = (
        weighted_sum_sq - 2.0 * null_mean * weighted_sum + null_mean**2 * weight + extra_sum_sq
    )
    if centred_sum <= 0 or centred_sq <= 0:
        return 0.0
    spread = 1.0 + weight * effect_scale**2
    explained = centred_sum**2 * effect_scale**2 / (spread * centred_sq)
    # Cauchy-Schwarz keeps explained below W t^2 / (1 + W t^2) < 1; guard rounding.
    explained = min(explained, 1.0 - 1e-15)
    return -0.5 * math.log(spread) - 0.5 * n * math.log1p(-explained)


def format_evalue(log_evalue: float) -> str:
    """An e-value for people: 3 significant digits, or a power of e when too large."""
    if log_evalue > 230:  # beyond 1e100
        return f"e^{log_evalue:.0f}"
    return f"{math.exp(log_evalue):.3g}"


def binomial_upper_tail(failures: float, requests: float, rate: float) -> float:
    """P(X >= failures) for X ~ Binomial(requests, rate), for fractional counts too."""
    if failures <= 0:
        return 1.0
    if failures > requests:
        return 0.0
    # The regularised incomplete beta is the binomial tail, continuous in its arguments.
    return float(special.betainc(failures, requests - failures + 1.0, rate))


def spent_alpha(alpha: float, look: int) -> float:
    """Alpha spent at look ``look`` (1-based); the sum over all looks is ``alpha``."""
    if look < 1:
        raise ValueError(f"look must be 1 or more, got {look}")
    return alpha / (look * (look + 1))


def mixture_rho(target_information: float, alpha: float) -> float:
    """Mixing precision that makes the normal-mixture boundary tightest near a target.

    Howard et al. (2021), eq. for the two-sided normal mixture: choosing
    rho = V / (2 log(1/alpha) + log(1 + 2 log(1/alpha))) optimises the boundary
    at intrinsic time V.
    """
    log_inv = math.log(1.0 / alpha)
    return target_information / (2.0 * log_inv + math.log1p(2.0 * log_inv))


def normal_mixture_bound(information: float, alpha: float, rho: float) -> float:
    """Time-uniform boundary for a sum S with variance ``information``.

    P(exists t: |S_t| >= bound(V_t)) <= alpha for Gaussian increments (and
    asymptotically otherwise), with bound(V) = sqrt((V + rho) log((V + rho) / (rho alpha^2))).
    Used one-sided here, which makes it conservative by a factor of two.
    """
    total = information + rho
    return math.sqrt(total * math.log(total / (rho * alpha * alpha)))


def exceeds_normal_mixture(
    estimate: float,
    tolerance: float,
    information: float,
    alpha: float,
    rho: float,
) -> tuple[bool, float]:
    """Is ``estimate`` confidently above ``tolerance``? Also returns the lower bound.

    ``information`` is 1 / variance of the estimate; the sum tracked by the
    boundary is (estimate - tolerance) * information.
    """
    if information <= 0:
        return False, -math.inf
    bound = normal_mixture_bound(information, alpha, rho)
    lower = estimate - bound / information
    return lower > tolerance, lower
