"""Statistics that stay valid however often they are looked at.

A canary is judged at every tick. A fixed-level test checked that often raises
false alarms far above its nominal level, so every gate here tests with one of
two tools whose error rate holds under continuous monitoring:

* test martingales (e-values): a likelihood ratio mixed over alternatives is a
  non-negative supermartingale under the null, so by Ville's inequality it ever
  reaching ``1 / alpha`` has probability at most ``alpha``;
* Robbins' normal-mixture boundary for sums with (asymptotically) Gaussian
  increments, which gives time-uniform confidence sequences;

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
