"""Non-finite outputs: NaN or Inf from the candidate.

With the default tolerance of zero per million, any non-finite output fails
at once: a healthy model never produces one, so no statistics are needed and
no alpha is spent. A positive tolerance turns this into a sequential test of
the non-finite rate, like the error-rate gate's.

The outputs come from the model's own metrics where the candidate exports them, else from
the sampled comparison (:meth:`StepEvidence.outputs_for_nonfinite`); with neither the gate
has no data and says which series it lacks.
"""

from __future__ import annotations

import math

from gelu_rollout.analysis.observations import StepEvidence
from gelu_rollout.analysis.sequential import binomial_log_evalue, binomial_rate_lower_bound
from gelu_rollout.analysis.verdict import GateResult, Verdict, inconclusive

GATE = "nonFinite"


def nonfinite_gate(
    evidence: StepEvidence,
    *,
    max_per_million: float,
    alpha: float,
    missing: str = "the candidate exports no non-finite counter and no sample was compared",
) -> GateResult:
    """``missing``: what to say when there is no source of outputs at all."""
    source = evidence.outputs_for_nonfinite()
    if source is None:
        return inconclusive(GATE, missing, critical=True, no_data=True)
    count = source.candidate.nonfinite or 0.0
    outputs = source.candidate.outputs + count
    per_million = count / outputs * 1e6 if outputs > 0 else 0.0
    origin = f"(from {source.source})"
    # With a tolerance the test has a lower bound on the rate (per million); without one any
    # non-finite output fails and there is no bound to show.
    lower_rate = binomial_rate_lower_bound(count, outputs, alpha) if max_per_million > 0 else None
    bound = lower_rate * 1e6 if lower_rate is not None else None
    if max_per_million <= 0:
        if count > 0:
            return GateResult(
                GATE,
                Verdict.FAIL,
                count,
                0.0,
                outputs,
                evidence.seconds,
                f"candidate produced {count:.0f} non-finite outputs (NaN/Inf) {origin}; "
                "none are allowed",
                critical=True,
            )
    else:
        log_e = binomial_log_evalue(count, outputs, max_per_million / 1e6)
        if log_e >= math.log(1.0 / alpha):
            return GateResult(
                GATE,
                Verdict.FAIL,
                per_million,
                max_per_million,
                outputs,
                evidence.seconds,
                f"candidate non-finite rate {per_million:.1f} per million is confidently above "
                f"{max_per_million:g} {origin}",
                critical=True,
                bound=bound,
            )
    if outputs <= 0:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            None,
            max_per_million,
            0.0,
            evidence.seconds,
            f"no candidate outputs observed yet {origin}",
            critical=True,
        )
    if per_million > max_per_million:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            per_million,
            max_per_million,
            outputs,
            evidence.seconds,
            f"{per_million:.1f} non-finite per million, above {max_per_million:g} but not yet "
            f"significant {origin}",
            critical=True,
            bound=bound,
        )
    return GateResult(
        GATE,
        Verdict.PASS,
        per_million if max_per_million > 0 else count,
        max_per_million,
        outputs,
        evidence.seconds,
        f"{count:.0f} non-finite outputs in {outputs:.0f} {origin}",
        critical=True,
        bound=bound,
    )
