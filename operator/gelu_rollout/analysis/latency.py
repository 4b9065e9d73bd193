"""P99 latency gates: regression against the baseline, and the absolute ceiling.

Each tick after warm-up contributes one paired sample: log(candidate P99 /
baseline P99) for the regression gate, log(candidate P99 / ceiling) for the
ceiling gate (both clipped, see observations.py). The step's mean of those
samples is tested with a normal-mixture confidence sequence whose scale is the
noise expected from each tick's request count (ticks are weighted by it),
scaled up by the dispersion actually seen.
A gate fails only when the lower confidence bound of the mean is above its
tolerance: "worse than tolerated", never merely "different". The regression
gate passes, after ``min_ticks``, once the mean is within one standard error
of the limit.
"""

from __future__ import annotations

import math

from gelu_rollout.analysis.observations import StepEvidence, WeightedMoments
from gelu_rollout.analysis.sequential import exceeds_normal_mixture, mixture_rho
from gelu_rollout.analysis.verdict import GateResult, Verdict

REGRESSION_GATE = "latencyRegression"
CEILING_GATE = "latencyCeiling"

# While there are few ticks the observed dispersion is unreliable: it is
# shrunk towards 1 (the noise model) with this many ticks' weight, and never
# taken below MIN_DISPERSION (the model may overstate the noise, not by much).
PRIOR_TICKS = 3.0
MIN_DISPERSION = 0.5
# The boundary is tightest near this information (a standard error of 0.05 in
# log P99, about 3%).
TARGET_INFORMATION = 1000.0


def _information(moments: WeightedMoments) -> float:
    dof = max(moments.n - 1, 0)
    observed = moments.dispersion if dof > 0 else 1.0
    dispersion = max((PRIOR_TICKS + dof * observed) / (PRIOR_TICKS + dof), MIN_DISPERSION)
    return moments.weight / dispersion


def _mean_exceeds(
    moments: WeightedMoments, log_tolerance: float, alpha: float
) -> tuple[bool, float]:
    rho = mixture_rho(TARGET_INFORMATION, alpha)
    return exceeds_normal_mixture(moments.mean, log_tolerance, _information(moments), alpha, rho)


def latency_regression_gate(
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
            "no paired P99 samples past warm-up yet",
        )
    ratio = math.exp(m.mean)
    failed, lower = _mean_exceeds(m, math.log(limit), alpha)
    if failed and m.n >= min_ticks:
        return GateResult(
            REGRESSION_GATE,
            Verdict.FAIL,
            ratio,
            limit,
            m.n,
            evidence.seconds,
            f"candidate P99 is {ratio:.2f}x the baseline's over {m.n} ticks; lower bound "
            f"{math.exp(lower):.2f}x exceeds the {limit:.2f}x limit",
        )
    if m.n < min_ticks:
        return GateResult(
            REGRESSION_GATE,
            Verdict.INCONCLUSIVE,
            ratio,
            limit,
            m.n,
            evidence.seconds,
            f"{m.n} of {min_ticks} P99 ticks needed; candidate/baseline {ratio:.2f}x",
        )
    # Pass unless the estimate is more than one standard error above the
    # limit: per-tick P99s are noisy, and a candidate close to the limit
    # should not wait forever for its noise to average out.
    if m.mean - 1.0 / math.sqrt(_information(m)) > math.log(limit):
        return GateResult(
            REGRESSION_GATE,
            Verdict.INCONCLUSIVE,
            ratio,
            limit,
            m.n,
            evidence.seconds,
            f"candidate P99 {ratio:.2f}x the baseline's, above {limit:.2f}x but not yet "
            f"significant (lower bound {math.exp(lower):.2f}x)",
        )
    return GateResult(
        REGRESSION_GATE,
        Verdict.PASS,
        ratio,
        limit,
        m.n,
        evidence.seconds,
        f"candidate P99 {ratio:.2f}x the baseline's over {m.n} ticks (limit {limit:.2f}x)",
    )


def latency_ceiling_gate(
    evidence: StepEvidence, *, ceiling_ms: float, min_ticks: int, alpha: float
) -> GateResult:
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
    failed, lower = _mean_exceeds(m, 0.0, alpha)
    if failed and m.n >= min_ticks:
        return GateResult(
            CEILING_GATE,
            Verdict.FAIL,
            typical,
            ceiling_ms,
            m.n,
            evidence.seconds,
            f"candidate P99 {typical:.1f} ms over {m.n} ticks; lower bound "
            f"{ceiling_ms * math.exp(lower):.1f} ms exceeds the {ceiling_ms:g} ms ceiling",
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
        )
    return GateResult(
        CEILING_GATE,
        Verdict.PASS,
        typical,
        ceiling_ms,
        m.n,
        evidence.seconds,
        f"candidate P99 {typical:.1f} ms over {m.n} ticks (ceiling {ceiling_ms:g} ms)",
    )
