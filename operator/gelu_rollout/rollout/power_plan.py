"""The power plan: what each gate needs before it can pass, and when it will have it.

Worked out at every look from the traffic the rollout sees now, for the gates whose pass
rests on power (errorRate, the latency gates, divergence). It goes into the status (shown by
``kubectl gelu status``), and a gate that cannot be ready by the end of the plan (the
remaining steps' ``analysisSeconds`` at their weights, and the last step's
``maxExtensionSeconds``) is named in a Warning Event once per step, before anyone waits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gelu_rollout.analysis.observations import SAMPLED_COMPARISON, ArmObservation, StepEvidence
from gelu_rollout.analysis.power import (
    Plan,
    error_rate_requests_for_power,
    format_duration,
    t_test_ticks_for_power,
    tail_requests_for_power,
    zero_failure_proof_requests,
)
from gelu_rollout.rollout.evaluate import alpha_per_test
from gelu_rollout.spec.model import RolloutSpec

# The latency fallback's per-tick noise before ticks show their own: a mean latency over
# about a hundred requests, at the noise model of analysis/observations.py.
PRIOR_TICK_SD = 0.06

# The tail's plan rests on how often a baseline request exceeds its P99 edge: from 1,000
# baseline requests, about ten exceedances, that rate is known to about +/-30% (Poisson);
# from fewer, a plan would swing by multiples from one tick to the next.
TAIL_PLAN_BASELINE_REQUESTS = 1000.0


def plan_gates(
    spec: RolloutSpec,
    segments: Sequence[StepEvidence],
    latest: tuple[ArmObservation, ArmObservation] | None,
    interval_seconds: float,
) -> tuple[Plan, ...]:
    """Each planned gate's need, from the whole rollout's evidence and this tick's traffic."""
    gates = spec.analysis.gates
    whole = segments[0]
    alpha = alpha_per_test(spec)
    power = spec.analysis.power
    baseline_rate, candidate_rate = _arm_rates(segments[-1], latest, interval_seconds)
    total = (baseline_rate or 0.0) + (candidate_rate or 0.0)
    share = (candidate_rate or 0.0) / total if total > 0 else None
    plans: list[Plan] = []
    if gates.error_rate.enabled:
        errors = gates.error_rate
        tolerated = errors.max_burn_rate * spec.error_budget
        plans.append(
            Plan(
                "errorRate",
                f"a burn rate of {errors.detect_burn_rate:g}",
                error_rate_requests_for_power(
                    spec.error_budget,
                    errors.max_burn_rate,
                    errors.detect_burn_rate,
                    errors.min_requests,
                    alpha,
                    power,
                ),
                whole.candidate.requests,
                "candidate requests",
                candidate_rate,
                zero_failure_proof_requests(tolerated, alpha) if tolerated < 1 else None,
            )
        )
    if gates.latency.enabled:
        latency = gates.latency
        detects = f"a +{latency.detectable_regression:.0%} P99 regression"
        if whole.tail.ticks > 0 and whole.baseline_latency is not None:
            # Before the baseline has shown enough requests to know how often its P99 edge is
            # exceeded, there is no plan yet, which is not a plan that cannot be met.
            placed = whole.baseline_latency.requests >= TAIL_PLAN_BASELINE_REQUESTS
            needed = (
                tail_requests_for_power(
                    whole.baseline_latency,
                    share,
                    latency.max_regression,
                    latency.detectable_regression,
                    alpha,
                    power,
                )
                if share is not None and placed
                else None
            )
            plans.append(
                Plan(
                    "latencyRegression",
                    detects,
                    needed,
                    whole.tail.candidate_requests,
                    "candidate requests",
                    candidate_rate,
                    planned=placed,
                )
            )
        else:
            moments = whole.latency_ratio
            dispersion = moments.dispersion if moments.n >= 3 else math.nan
            tick_sd = (
                math.sqrt(dispersion * moments.n / moments.weight)
                if math.isfinite(dispersion) and moments.weight > 0
                else PRIOR_TICK_SD
            )
            effect = math.log1p(latency.detectable_regression) - math.log1p(latency.max_regression)
            needed = t_test_ticks_for_power(
                effect, max(tick_sd, 1e-3), alpha, power, latency.min_ticks
            )
            plans.append(
                Plan(
                    "latencyRegression",
                    detects,
                    needed,
                    float(moments.n),
                    "ticks",
                    1.0 / interval_seconds,
                    grows_with_weight=False,
                )
            )
    if gates.divergence.enabled:
        source = whole.outputs_for_divergence()
        sampled = source is not None and source.source == SAMPLED_COMPARISON
        if source is not None and sampled:
            # The sampled comparison's rate is the operator's own: a few rows per tick,
            # whatever the weight.
            outputs = min(source.baseline.outputs, source.candidate.outputs)
            rate = outputs / whole.seconds if whole.seconds > 0 else None
        else:
            outputs = min(whole.baseline.outputs, whole.candidate.outputs)
            rate = None
            step = segments[-1]
            if step.ticks > 0 and step.seconds > 0:
                rate = min(step.baseline.outputs, step.candidate.outputs) / step.seconds
            elif latest is not None:
                rate = min(sum(latest[0].histogram), sum(latest[1].histogram)) / interval_seconds
        plans.append(
            Plan(
                "divergence",
                f"a KL of {gates.divergence.max_kl:g}",
                float(gates.divergence.min_outputs),
                outputs,
                "outputs per arm",
                rate,
                grows_with_weight=not sampled,
            )
        )
    return tuple(plans)


def _arm_rates(
    step: StepEvidence,
    latest: tuple[ArmObservation, ArmObservation] | None,
    interval_seconds: float,
) -> tuple[float | None, float | None]:
    """Requests per second to (baseline, candidate) at the current weight: over the current
    step so far, so that one bursty or quiet tick does not swing the plan; this tick's
    alone before the step has any."""
    if step.ticks > 0 and step.seconds > 0:
        return step.baseline.requests / step.seconds, step.candidate.requests / step.seconds
    if latest is None:
        return None, None
    return latest[0].requests / interval_seconds, latest[1].requests / interval_seconds


def infeasible(
    plans: Sequence[Plan], schedule: Sequence[tuple[float, int]], weight: int
) -> list[str]:
    """Why each gate that cannot be ready by the end of the plan cannot, in a sentence.

    ``schedule`` is the rest of the plan as (seconds, weight) pairs, the last step's
    extension included; ``weight`` is the candidate's weight now, at which the plans'
    rates were measured (later steps at higher weights bring requests faster).
    """
    problems = []
    seconds_left = sum(seconds for seconds, _ in schedule)
    for plan in plans:
        if plan.met or not plan.planned:
            continue
        if plan.needed is None:
            problems.append(f"{plan.gate} cannot plan to detect {plan.detects} on this traffic")
            continue
        rate = plan.rate_per_second or 0.0
        expected = sum(
            seconds * rate * (w / max(weight, 1) if plan.grows_with_weight else 1.0)
            for seconds, w in schedule
        )
        if plan.have + expected >= plan.needed:
            continue
        if rate <= 0:
            problems.append(f"{plan.gate} needs about {plan.needed:,.0f} {plan.unit}; no traffic")
            continue
        problems.append(
            f"{plan.gate} needs about {plan.needed:,.0f} {plan.unit} to detect {plan.detects} "
            f"and has {plan.have:,.0f}; at {rate:.3g}/s now the plan's remaining "
            f"{format_duration(seconds_left)} bring about {expected:,.0f}"
        )
    return problems


def plan_to_status(plans: Sequence[Plan]) -> list[dict[str, object]]:
    """The plan as the status carries it."""
    entries: list[dict[str, object]] = []
    for plan in plans:
        entry: dict[str, object] = {
            "gate": plan.gate,
            "detects": plan.detects,
            "unit": plan.unit,
            "have": round(plan.have, 1),
            "met": plan.met,
        }
        if plan.needed is not None:
            entry["needed"] = plan.needed
        eta = plan.eta_seconds
        if eta is not None:
            entry["etaSeconds"] = round(eta, 1)
        if plan.proof_needed is not None:
            entry["proofNeeded"] = plan.proof_needed
        if not plan.planned:
            entry["planned"] = False
        entries.append(entry)
    return entries
