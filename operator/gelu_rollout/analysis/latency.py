"""P99 latency gates: regression against the baseline, and the absolute ceiling.

Where a request-duration histogram exists, both gates judge counts of requests above bucket
edges (:mod:`.tail_latency` for the regression; a binomial e-value of the share above the
ceiling's edge for the ceiling) and pass on power (:mod:`.power`). Without one they fall back
on per-tick samples, described next.

Each tick after warm-up contributes one paired sample: log(candidate P99 /
baseline P99) for the regression gate, log(candidate P99 / ceiling) for the
ceiling gate (both clipped, see observations.py). The step's mean of those
samples (each tick weighted by the inverse of the noise its request count
implies) is tested with a sequential t-test: an e-value that does not need
the noise level, so a noisier service than modelled makes the gate slower,
not falsely confident (within alpha up to about five times the modelled
noise; beyond, ticks tie at the clip, and docs/analysis.md gives the measured
rates). A gate fails only when the mean is confidently above its tolerance:
"worse than tolerated", never merely "different". The regression gate passes,
after ``min_ticks``, once the mean is within the limit and its standard error is
itself within the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import replace

from gelu_rollout.analysis.observations import StepEvidence, WeightedMoments
from gelu_rollout.analysis.power import binomial_plan_trials, tail_requests_for_power
from gelu_rollout.analysis.sequential import (
    RATE_MULTIPLIERS,
    binomial_log_evalue,
    binomial_rate_lower_bound,
    format_evalue,
    scale_free_log_evalue,
)
from gelu_rollout.analysis.tail_latency import FLOOR_COST
from gelu_rollout.analysis.verdict import GateResult, Verdict, no_harm_shown

REGRESSION_GATE = "latencyRegression"
CEILING_GATE = "latencyCeiling"

# The weight (in ticks) with which the observed dispersion is shrunk towards the noise
# model, for the pass rule's standard error.
PRIOR_TICKS = 3.0
# Prior scale of the standardised effect (log P99 shift over the per-unit-weight
# noise, about 1 when the noise model is right): effects of 0.1 to 0.5 in log
# P99 are the ones worth finding fast.
EFFECT_SCALE = 0.25
# Share of each tick's modelled variance added to the t-test's sum of squares.
TIE_VARIANCE = 0.25


def _standard_error(moments: WeightedMoments) -> float:
    """Standard error of the weighted mean: the noise model scaled by the observed
    dispersion (shrunk towards 1 while ticks are few, never below 1)."""
    dof = max(moments.n - 1, 0)
    observed = moments.dispersion if dof > 0 else 1.0
    dispersion = max((PRIOR_TICKS + dof * observed) / (PRIOR_TICKS + dof), 1.0)
    return math.sqrt(dispersion / moments.weight)


def _evidence(moments: WeightedMoments, log_tolerance: float) -> float:
    """Log e-value that the mean is above ``log_tolerance``.

    Each tick adds TIE_VARIANCE of its modelled variance (1 in weight units) to
    the sum of squares: clipped ticks that tie must not look noiseless.
    """
    return scale_free_log_evalue(
        moments.n,
        moments.weight,
        moments.total,
        moments.total_sq,
        log_tolerance,
        EFFECT_SCALE,
        extra_sum_sq=TIE_VARIANCE * moments.n,
    )


# How far below the mean the bound's search goes, in log units: well past the clips, so a
# bound not found there does not exist.
BOUND_SEARCH_SPAN = 8.0


def _mean_lower_bound(moments: WeightedMoments, alpha: float) -> float | None:
    """The largest null mean the sequential t-test still rejects at ``alpha``, in the
    samples' log unit: the test's lower confidence bound on the mean. None when it rejects
    none. The e-value falls as the null mean rises (and is 1 at the mean), so bisect."""
    needed = math.log(1.0 / alpha)
    if moments.n < 2 or moments.weight <= 0:
        return None
    high = moments.mean
    low = high - BOUND_SEARCH_SPAN
    if _evidence(moments, low) < needed:
        return None
    for _ in range(24):
        middle = (low + high) / 2.0
        if _evidence(moments, middle) >= needed:
            low = middle
        else:
            high = middle
    return low


# Above the ceiling a P99 puts more than 1% of requests; the ceiling gate on a histogram
# must be able to see 5% (a P95 at the ceiling) before it passes on power.
CEILING_SHARE = 0.01
CEILING_DETECT_SHARE = 0.05


def _tail_regression_gate(
    evidence: StepEvidence,
    *,
    max_regression: float,
    detect_regression: float | None,
    alpha: float,
    power: float,
    candidate_share: float | None,
) -> GateResult:
    """The tail test; without a stated ``detect_regression`` (the spec always states one)
    there is no power plan, so no pass."""
    tail = evidence.tail
    limit = 1.0 + max_regression
    ratio = tail.exceedance_ratio
    shown = "-" if ratio is None else f"{ratio:.2f}x"
    counts = (
        f"{tail.candidate_above:.0f} of {tail.candidate_requests:.0f} candidate requests above "
        f"their edge, {tail.baseline_above:.0f} of {tail.baseline_requests:.0f} baseline"
    )
    log_e = tail.log_evalue()
    evidence_text = f"evidence {format_evalue(log_e)} of {FLOOR_COST / alpha:.3g}"
    if tail.rejects(alpha):
        return GateResult(
            REGRESSION_GATE,
            Verdict.FAIL,
            ratio,
            1.0,
            tail.candidate_requests,
            evidence.seconds,
            f"candidate slower than {limit:.2f}x the baseline in the tail: {counts} "
            f"(exceedance ratio {shown}, {evidence_text})",
        )
    needed = (
        tail_requests_for_power(
            evidence.baseline_latency,
            candidate_share,
            max_regression,
            detect_regression,
            alpha,
            power,
        )
        if evidence.baseline_latency is not None
        and candidate_share is not None
        and detect_regression is not None
        else None
    )
    detects = f"a +{detect_regression or 0:.0%} P99 regression with power {power:.0%}"
    # A pass needs the exceedance ratio's estimate within the tolerance (no more
    # exceedances per request than the baseline's); moving on needs only that the
    # evidence does not favour harm.
    below = ratio is None or ratio <= 1.0
    if needed is not None and tail.candidate_requests >= needed and below:
        return GateResult(
            REGRESSION_GATE,
            Verdict.PASS,
            ratio,
            1.0,
            tail.candidate_requests,
            evidence.seconds,
            f"no evidence of a tail slower than {limit:.2f}x the baseline ({counts}; "
            f"{evidence_text}); {needed:,.0f} requests would have caught {detects}",
            basis="power",
        )
    wanted = "no plan yet" if needed is None else f"{needed:,.0f} candidate requests needed"
    return GateResult(
        REGRESSION_GATE,
        Verdict.INCONCLUSIVE,
        ratio,
        1.0,
        tail.candidate_requests,
        evidence.seconds,
        f"{counts} (exceedance ratio {shown}, {evidence_text}); {wanted} to catch {detects}",
        harmless=no_harm_shown(below, log_e) and tail.candidate_requests > 0,
    )


def time_split(evidence: StepEvidence) -> str:
    """Where the candidate's time went over the segment, from Triton's counters ("" when
    they were not reported)."""
    if evidence.timed_requests <= 0:
        return ""
    mean, queue, compute = (t / evidence.timed_requests for t in evidence.candidate_time)
    return f"; candidate mean {mean:.3g} ms: queue {queue:.3g} ms, compute {compute:.3g} ms"


def latency_regression_gate(
    evidence: StepEvidence,
    *,
    max_regression: float,
    min_ticks: int,
    alpha: float,
    detect_regression: float | None = None,
    power: float = 0.8,
    candidate_share: float | None = None,
) -> GateResult:
    """From the histogram's tail test where there is one, else from the per-tick samples;
    the message ends with where the candidate's time went."""
    if evidence.tail.ticks > 0:
        result = _tail_regression_gate(
            evidence,
            max_regression=max_regression,
            detect_regression=detect_regression,
            alpha=alpha,
            power=power,
            candidate_share=candidate_share,
        )
    else:
        result = _sampled_regression_gate(
            evidence, max_regression=max_regression, min_ticks=min_ticks, alpha=alpha
        )
    return replace(result, message=result.message + time_split(evidence))


def _sampled_regression_gate(
    evidence: StepEvidence, *, max_regression: float, min_ticks: int, alpha: float
) -> GateResult:
    m = evidence.latency_ratio
    limit = 1.0 + max_regression
    if m.n == 0:
        return GateResult(
            REGRESSION_GATE,
            Verdict.INCONCLUSIVE,
            None,
            limit,
            0.0,
            evidence.seconds,
            "no paired latency samples past warm-up yet",
        )
    ratio = math.exp(m.mean)
    log_e = _evidence(m, math.log(limit))
    lower = _mean_lower_bound(m, alpha)
    bound = math.exp(lower) if lower is not None else None
    needed = math.log(1.0 / alpha)
    evidence_text = f"evidence {format_evalue(log_e)} of {1 / alpha:.3g}"
    failed = log_e >= needed
    if failed and m.n >= min_ticks:
        return GateResult(
            REGRESSION_GATE,
            Verdict.FAIL,
            ratio,
            limit,
            m.n,
            evidence.seconds,
            f"candidate latency is {ratio:.2f}x the baseline's over {m.n} ticks, confidently "
            f"above the {limit:.2f}x limit ({evidence_text})",
            bound=bound,
        )
    if m.n < min_ticks:
        return GateResult(
            REGRESSION_GATE,
            Verdict.INCONCLUSIVE,
            ratio,
            limit,
            m.n,
            evidence.seconds,
            f"{m.n} of {min_ticks} latency ticks needed; candidate/baseline {ratio:.2f}x",
            bound=bound,
            harmless=no_harm_shown(ratio <= limit, log_e),
        )
    # Pass when the estimate is within the limit, as every gate's pass needs, and known
    # to within the tolerance: on light traffic a regression of any size hides inside
    # one standard error. Passing is not where the false-rollback guarantee lives; a
    # pass on a mean just above the limit (an earlier rule allowed one standard error)
    # promoted +25% regressions whose fail test had not yet reached its threshold.
    error = _standard_error(m)
    if m.mean > math.log(limit) or error > math.log(limit):
        return GateResult(
            REGRESSION_GATE,
            Verdict.INCONCLUSIVE,
            ratio,
            limit,
            m.n,
            evidence.seconds,
            f"candidate latency {ratio:.2f}x the baseline's over {m.n} ticks, known to "
            f"+/-{math.expm1(error):.0%}; not within the {limit:.2f}x limit yet "
            f"({evidence_text})",
            bound=bound,
            harmless=no_harm_shown(ratio <= limit, log_e),
        )
    return GateResult(
        REGRESSION_GATE,
        Verdict.PASS,
        ratio,
        limit,
        m.n,
        evidence.seconds,
        f"candidate latency {ratio:.2f}x the baseline's over {m.n} ticks (limit {limit:.2f}x)",
        bound=bound,
    )


def _histogram_ceiling_gate(
    evidence: StepEvidence, *, ceiling_ms: float, min_ticks: int, alpha: float, power: float
) -> GateResult:
    above, requests = evidence.ceiling_above, evidence.ceiling_requests
    share = above / requests
    log_e = binomial_log_evalue(above, requests, CEILING_SHARE)
    bound = binomial_rate_lower_bound(above, requests, alpha)
    counts = f"{above:.0f} of {requests:.0f} candidate requests above {ceiling_ms:g} ms"
    if log_e >= math.log(1.0 / alpha) and evidence.ticks >= min_ticks:
        return GateResult(
            CEILING_GATE,
            Verdict.FAIL,
            share,
            CEILING_SHARE,
            requests,
            evidence.seconds,
            f"candidate P99 confidently above the {ceiling_ms:g} ms ceiling: {counts} "
            f"(evidence {format_evalue(log_e)} of {1 / alpha:.3g})",
            bound=bound,
        )
    needed = binomial_plan_trials(
        CEILING_SHARE, CEILING_DETECT_SHARE, RATE_MULTIPLIERS, alpha, power
    )
    if needed is not None and requests >= needed and share <= CEILING_SHARE:
        return GateResult(
            CEILING_GATE,
            Verdict.PASS,
            share,
            CEILING_SHARE,
            requests,
            evidence.seconds,
            f"candidate P99 within the {ceiling_ms:g} ms ceiling: {counts}",
            basis="power",
            bound=bound,
        )
    return GateResult(
        CEILING_GATE,
        Verdict.INCONCLUSIVE,
        share,
        CEILING_SHARE,
        requests,
        evidence.seconds,
        f"{counts}; at most 1% and {needed or 0:,.0f} requests needed to pass",
        bound=bound,
        harmless=no_harm_shown(share <= CEILING_SHARE, log_e),
    )


def latency_ceiling_gate(
    evidence: StepEvidence,
    *,
    ceiling_ms: float,
    min_ticks: int,
    alpha: float,
    power: float = 0.8,
) -> GateResult:
    """From the share of requests above the ceiling's histogram edge where there is a
    histogram reaching the ceiling, else from sampled summary P99s."""
    if evidence.ceiling_requests > 0:
        return _histogram_ceiling_gate(
            evidence, ceiling_ms=ceiling_ms, min_ticks=min_ticks, alpha=alpha, power=power
        )
    m = evidence.latency_ceiling
    if m.n == 0:
        return GateResult(
            CEILING_GATE,
            Verdict.INCONCLUSIVE,
            None,
            ceiling_ms,
            0.0,
            evidence.seconds,
            "no candidate P99 samples past warm-up yet",
        )
    typical = ceiling_ms * math.exp(m.mean)
    log_e = _evidence(m, 0.0)
    lower = _mean_lower_bound(m, alpha)
    bound = ceiling_ms * math.exp(lower) if lower is not None else None
    failed = log_e >= math.log(1.0 / alpha)
    if failed and m.n >= min_ticks:
        return GateResult(
            CEILING_GATE,
            Verdict.FAIL,
            typical,
            ceiling_ms,
            m.n,
            evidence.seconds,
            f"candidate P99 {typical:.1f} ms over {m.n} ticks, confidently above the "
            f"{ceiling_ms:g} ms ceiling (evidence {format_evalue(log_e)} of {1 / alpha:.3g})",
            bound=bound,
        )
    if m.n < min_ticks or typical > ceiling_ms:
        return GateResult(
            CEILING_GATE,
            Verdict.INCONCLUSIVE,
            typical,
            ceiling_ms,
            m.n,
            evidence.seconds,
            f"candidate P99 {typical:.1f} ms over {m.n} ticks (ceiling {ceiling_ms:g} ms, "
            f"{min_ticks} ticks and a mean under the ceiling needed to pass)",
            bound=bound,
            harmless=no_harm_shown(typical <= ceiling_ms, log_e),
        )
    return GateResult(
        CEILING_GATE,
        Verdict.PASS,
        typical,
        ceiling_ms,
        m.n,
        evidence.seconds,
        f"candidate P99 {typical:.1f} ms over {m.n} ticks (ceiling {ceiling_ms:g} ms)",
        bound=bound,
    )
