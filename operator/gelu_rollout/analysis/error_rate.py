"""Error-rate gate: is the candidate burning its error budget faster than tolerated?

A sequential test over the step's running totals. It fails only when the
candidate's failure rate is confidently above ``max_burn_rate`` x the error
budget (an e-value against that tolerance reaches 1 / alpha) and the candidate
is also significantly worse than ``max_ratio_to_baseline`` x the baseline, so
a failure shared by both arms (a bad node, a dependency) is not blamed on the
candidate.
"""

from __future__ import annotations

import math

from gelu_rollout.analysis.observations import StepEvidence
from gelu_rollout.analysis.power import error_rate_requests_for_power
from gelu_rollout.analysis.sequential import (
    binomial_below_log_evalue,
    binomial_log_evalue,
    binomial_rate_lower_bound,
    binomial_upper_tail,
    format_evalue,
)
from gelu_rollout.analysis.verdict import GateResult, Verdict, no_harm_shown

GATE = "errorRate"


# Significance of the blame guard. It can only hold a rollback back, so it
# spends none of the false-rollback budget; it stops a failure burst shared by
# both arms, or a handful of failures from one restarted pod, from being
# blamed on the candidate.
BLAME_LEVEL = 0.1


def worse_than_baseline(
    candidate_failures: float,
    candidate_requests: float,
    baseline_failures: float,
    baseline_requests: float,
    max_ratio: float,
) -> bool:
    """Is the candidate's failure rate significantly above ``max_ratio`` x the baseline's?

    Given the failures of both arms, the candidate's share is binomial; at a
    rate exactly ``max_ratio`` x the baseline's, its success probability is
    max_ratio n_c / (max_ratio n_c + n_b). Without baseline traffic there is
    nothing to share the blame with.
    """
    if candidate_requests <= 0 or candidate_failures <= 0:
        return False
    if baseline_requests <= 0:
        return True
    share = max_ratio * candidate_requests / (max_ratio * candidate_requests + baseline_requests)
    total = candidate_failures + baseline_failures
    return binomial_upper_tail(candidate_failures, total, share) <= BLAME_LEVEL


def error_rate_gate(
    evidence: StepEvidence,
    *,
    error_budget: float,
    max_burn_rate: float,
    max_ratio_to_baseline: float,
    min_requests: int,
    alpha: float,
    detect_burn_rate: float | None = None,
    power: float = 0.8,
) -> GateResult:
    candidate = evidence.candidate
    baseline = evidence.baseline
    n = candidate.requests
    if n <= 0:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            None,
            max_burn_rate,
            0.0,
            evidence.seconds,
            "no candidate requests in this step",
        )
    burn = candidate.failures / n / error_budget
    # The burn the failure test is confident of: above max_burn_rate exactly when it rejects.
    lower_rate = binomial_rate_lower_bound(candidate.failures, n, alpha)
    bound = lower_rate / error_budget if lower_rate is not None else None
    log_e = binomial_log_evalue(candidate.failures, n, max_burn_rate * error_budget)
    needed = math.log(1.0 / alpha)
    baseline_burn = (
        baseline.failures / baseline.requests / error_budget if baseline.requests > 0 else None
    )
    versus = f"baseline {baseline_burn:.2f}" if baseline_burn is not None else "no baseline traffic"
    if log_e >= needed and worse_than_baseline(
        candidate.failures, n, baseline.failures, baseline.requests, max_ratio_to_baseline
    ):
        return GateResult(
            GATE,
            Verdict.FAIL,
            burn,
            max_burn_rate,
            n,
            evidence.seconds,
            f"candidate burn rate {burn:.2f} is confidently above {max_burn_rate:g} "
            f"({candidate.failures:.0f} failures in {n:.0f} requests, evidence "
            f"{format_evalue(log_e)} >= {1 / alpha:.3g}; {versus})",
            bound=bound,
        )
    # Proof: the rate confidently within tolerance. Power: enough requests that a burn of
    # detect_burn_rate would have made the test above reject with the stated power.
    tolerated = max_burn_rate * error_budget
    proven = binomial_below_log_evalue(candidate.failures, n, tolerated) >= needed
    required = error_rate_requests_for_power(
        error_budget, max_burn_rate, detect_burn_rate, min_requests, alpha, power
    )
    # Within tolerance: under the tolerated burn, or no worse than the baseline
    # allows (an SLO the baseline misses as well is not the candidate's doing).
    candidate_ratio = candidate.failures / n
    baseline_ratio = baseline.failures / baseline.requests if baseline.requests > 0 else 0.0
    within = burn <= max_burn_rate or (
        baseline.requests > 0 and candidate_ratio <= max_ratio_to_baseline * baseline_ratio
    )
    if n < min_requests or not (proven or (required is not None and n >= required)):
        wanted = (
            f"{required:,.0f} candidate requests needed to catch a burn of "
            f"{detect_burn_rate:g} with power {power:.0%}"
            if required is not None
            else f"at least {min_requests} candidate requests and a proof needed"
        )
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            burn,
            max_burn_rate,
            n,
            evidence.seconds,
            f"{n:.0f} requests, burn {burn:.2f}, {versus}; {wanted}",
            harmless=no_harm_shown(within, log_e),
            bound=bound,
        )
    if not within:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            burn,
            max_burn_rate,
            n,
            evidence.seconds,
            f"candidate burn rate {burn:.2f} above {max_burn_rate:g} but not yet significant "
            f"(evidence {format_evalue(log_e)} of {1 / alpha:.3g}); {versus}",
            harmless=no_harm_shown(False, log_e),
            bound=bound,
        )
    how = (
        f"within {max_burn_rate:g}"
        if burn <= max_burn_rate
        else f"above {max_burn_rate:g} but within {max_ratio_to_baseline:g}x the baseline's"
    )
    basis = "proof" if proven else "power"
    grounds = (
        "proven within tolerance"
        if proven
        else f"a burn of {detect_burn_rate:g} would have shown with power {power:.0%}"
    )
    return GateResult(
        GATE,
        Verdict.PASS,
        burn,
        max_burn_rate,
        n,
        evidence.seconds,
        f"candidate burn rate {burn:.2f} {how} over {n:.0f} requests ({grounds}); {versus}",
        basis=basis,
        bound=bound,
    )
