"""How much data a gate needs before its silence means something: the power plan.

A canary's data rarely suffice to *prove* a candidate healthy (a zero-failure proof that a
99.9% SLO holds needs about ``log(1/alpha) / 0.001`` requests, 4,600 at alpha 1%), but they
often suffice to have *caught* a regression of a stated size. A gate may therefore pass on
power: no evidence of harm, and enough data that the stated regression would have made its
test reject with the stated probability. These functions work that amount out for the
binomial mixture e-values the count gates use (errorRate, and the tail-latency test on
exceedance counts) and, approximately, for the sequential t-test of the latency fallback.

Planning assumes the traffic share and rates stay as they are now; the tests themselves
assume nothing of the kind, so a wrong plan makes a pass early or late, never a false
rollback.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from gelu_rollout.analysis.sequential import RATE_MULTIPLIERS, binomial_upper_tail
from gelu_rollout.analysis.tail_latency import (
    FLOOR_COST,
    RATIO_ALTERNATIVES,
    TAIL_QUANTILES,
    LatencyHistogram,
    edge_pairs,
)

MAX_PLANNED = 1e12
"""Beyond this many samples a plan is reported as infeasible rather than searched."""


def mixture_log_evalue_at(
    successes: float, trials: float, p0: float, alternatives: Sequence[float]
) -> float:
    """Log of the equal-weight mixture, over success probabilities ``alternatives`` (each
    above ``p0``), of binomial likelihood ratios against ``p0``."""
    alt = np.asarray([a for a in alternatives if p0 < a < 1.0])
    if alt.size == 0 or trials <= 0:
        return 0.0
    failures = trials - successes
    ratios = successes * np.log(alt / p0) + failures * (np.log1p(-alt) - math.log1p(-p0))
    return float(special.logsumexp(ratios) - math.log(len(alternatives)))


def _critical_successes(
    trials: float, p0: float, alternatives: Sequence[float], log_needed: float
) -> float:
    """Fewest whole successes at which the mixture reaches ``log_needed``; inf if none. The
    mixture grows with the successes, so a bisection over whole counts finds it."""
    top = math.ceil(trials)
    if mixture_log_evalue_at(min(float(top), trials), trials, p0, alternatives) < log_needed:
        return math.inf
    low, high = -1, top  # the mixture is below at low, reaches it at high
    while high - low > 1:
        middle = (low + high) // 2
        if mixture_log_evalue_at(float(middle), trials, p0, alternatives) >= log_needed:
            high = middle
        else:
            low = middle
    return float(high)


def binomial_power(
    trials: float, p0: float, alternatives: Sequence[float], p_true: float, alpha: float
) -> float:
    """Chance that the mixture e-value has reached ``1/alpha`` after ``trials`` trials when the
    success probability is ``p_true`` (judged at that count; a sequential look only adds)."""
    critical = _critical_successes(trials, p0, alternatives, math.log(1.0 / alpha))
    if not math.isfinite(critical):
        return 0.0
    return binomial_upper_tail(critical, trials, p_true)


def trials_for_power(
    p0: float, alternatives: Sequence[float], p_true: float, alpha: float, power: float
) -> float | None:
    """Fewest trials after which the test rejects with probability ``power`` at ``p_true``;
    None when no count up to :data:`MAX_PLANNED` does."""
    if p_true <= p0:
        return None
    high = 16.0
    while binomial_power(high, p0, alternatives, p_true, alpha) < power:
        high *= 2.0
        if high > MAX_PLANNED:
            return None
    low = high / 2.0
    for _ in range(40):
        if high - low <= max(1.0, 0.02 * low):  # a plan to 2% is plenty
            break
        middle = (low + high) / 2.0
        if binomial_power(middle, p0, alternatives, p_true, alpha) >= power:
            high = middle
        else:
            low = middle
    return math.ceil(high)


def zero_failure_proof_requests(tolerated_rate: float, alpha: float) -> float:
    """Requests without a failure after which "rate <= tolerated" holds at level ``alpha``."""
    return math.ceil(math.log(1.0 / alpha) / -math.log1p(-tolerated_rate))


def t_test_ticks_for_power(
    effect: float, tick_sd: float, alpha: float, power: float, minimum: int = 2
) -> float | None:
    """Ticks a one-sided test of a mean shift ``effect`` (per-tick noise ``tick_sd``) needs
    to reject at an anytime level ``alpha`` with probability ``power``. Approximate: the
    always-valid boundary grows like ``sqrt(2 log(1/alpha))`` standard errors."""
    if effect <= 0 or tick_sd <= 0:
        return None
    z = math.sqrt(2.0 * math.log(1.0 / alpha)) + float(stats.norm.ppf(power))
    return max(float(minimum), math.ceil((z * tick_sd / effect) ** 2))


@dataclass(frozen=True)
class Plan:
    """What one gate needs before it can pass on power, and when it will have it.

    ``needed`` and ``have`` count ``unit`` (requests, ticks); ``rate_per_second`` is how fast
    ``have`` grows at the current traffic (None when unknown); ``eta_seconds`` is the time
    left at that rate (0 when met, None when unknown or never).
    """

    gate: str
    detects: str
    needed: float | None
    have: float
    unit: str
    rate_per_second: float | None
    proof_needed: float | None = None
    grows_with_weight: bool = True
    """Whether ``have`` grows in proportion to the candidate's weight (requests, outputs)
    rather than with time alone (ticks)."""
    planned: bool = True
    """False while the gate cannot plan yet (the baseline has not shown enough requests to
    say how often its P99 edge is exceeded): no plan is then not a plan that cannot be
    met."""

    @property
    def met(self) -> bool:
        return self.needed is not None and self.have >= self.needed

    @property
    def eta_seconds(self) -> float | None:
        if self.met:
            return 0.0
        if self.needed is None or not self.rate_per_second:
            return None
        return (self.needed - self.have) / self.rate_per_second


def format_duration(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 2.5 h, 3 d."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def tail_requests_for_power(
    baseline: LatencyHistogram,
    candidate_share: float,
    max_regression: float,
    detect_regression: float,
    alpha: float,
    power: float,
) -> float | None:
    """Candidate requests the tail test needs to catch a candidate ``1 + detect_regression``
    times slower than the baseline (a scale shift), at the baseline's P99 edges.

    The baseline's own histogram says how often a baseline request exceeds its edge and how
    often a shifted one would exceed the candidate edge; the traffic share says how those
    exceedances split between the arms. Conservative by the averaging over quantiles.
    """
    pairs = edge_pairs(baseline, max_regression)
    if not pairs or not 0.0 < candidate_share < 1.0:
        return None
    low, high = pairs[-1]
    q_b = baseline.above(low) / baseline.requests
    q_c = baseline.fraction_above(baseline.edges[high] / (1.0 + detect_regression))
    if q_b <= 0 or q_c <= q_b:
        return None
    p0 = candidate_share
    theta = q_c / q_b
    alternatives = tuple(t * p0 / (t * p0 + 1.0 - p0) for t in RATIO_ALTERNATIVES)
    p1 = theta * p0 / (theta * p0 + 1.0 - p0)
    events = _cached_trials(p0, alternatives, p1, alpha / (len(TAIL_QUANTILES) * FLOOR_COST), power)
    if events is None:
        return None
    per_candidate_request = q_c + q_b * (1.0 - p0) / p0
    return math.ceil(events / per_candidate_request)


def _rounded(value: float) -> float:
    return float(f"{value:.2g}")


@functools.lru_cache(maxsize=4096)
def _trials(
    p0: float, alternatives: tuple[float, ...], p_true: float, alpha: float, power: float
) -> float | None:
    return trials_for_power(p0, alternatives, p_true, alpha, power)


def _cached_trials(
    p0: float, alternatives: Sequence[float], p_true: float, alpha: float, power: float
) -> float | None:
    """:func:`trials_for_power` on inputs rounded to two digits, cached: plans are asked
    for at every tick and move little from one to the next."""
    return _trials(
        _rounded(p0),
        tuple(_rounded(a) for a in alternatives),
        _rounded(p_true),
        _rounded(alpha),
        _rounded(power),
    )


def binomial_plan_trials(
    tolerated_rate: float,
    detect_rate: float,
    multipliers: Sequence[float],
    alpha: float,
    power: float,
) -> float | None:
    """Trials the binomial mixture e-value against ``tolerated_rate`` (alternatives
    ``multipliers`` x it) needs to catch ``detect_rate`` with ``power``."""
    alternatives = tuple(m * tolerated_rate for m in multipliers)
    return _cached_trials(tolerated_rate, alternatives, detect_rate, alpha, power)


def error_rate_requests_for_power(
    error_budget: float,
    max_burn_rate: float,
    detect_burn_rate: float | None,
    min_requests: int,
    alpha: float,
    power: float,
) -> float | None:
    """Candidate requests the error-rate gate needs before it may pass on power: enough for
    its e-value to catch a burn of ``detect_burn_rate`` with ``power``, and at least
    ``min_requests``. None without a stated burn above the tolerated one."""
    if detect_burn_rate is None or detect_burn_rate <= max_burn_rate:
        return None
    trials = binomial_plan_trials(
        max_burn_rate * error_budget,
        detect_burn_rate * error_budget,
        RATE_MULTIPLIERS,
        alpha,
        power,
    )
    return max(float(min_requests), trials) if trials is not None else None
