"""From a spec and the rollout's evidence to every enabled gate's verdict.

Evidence is kept in segments: one from the start of each step reached so far
to now, the first covering the whole rollout. A gate fails on any segment, so
harm seen at a step's own weight fails it however clean the steps before were,
and evidence against a candidate carries across steps. It passes on the whole
rollout's segment: evidence of health accumulates over the steps for the same
candidate revision (a spec change starts the evidence afresh), so a clean step
at 5% counts at 25%. A step still advances only when its own data show no harm
(no segment fails), and only after its analysis time.

The false-rollback budget is split evenly: each statistical test (burn rate,
error rate, latency regression, latency ceiling, divergence, and non-finite
outputs when it tolerates some) gets an equal share for each segment, and a
rollout has at most one segment per step. Every test is valid however often it
is looked at, so by the union bound the chance that a healthy candidate is
rolled back anywhere in the rollout stays within the budget. docs/analysis.md
has the reasoning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gelu_rollout.analysis.burn_rate import BurnWindow, burn_rate_gate, burn_windows
from gelu_rollout.analysis.divergence import divergence_gate
from gelu_rollout.analysis.error_rate import error_rate_gate
from gelu_rollout.analysis.latency import latency_ceiling_gate, latency_regression_gate
from gelu_rollout.analysis.nonfinite import nonfinite_gate
from gelu_rollout.analysis.observations import ArmObservation, StepEvidence
from gelu_rollout.analysis.sequential import spent_alpha
from gelu_rollout.analysis.verdict import GateResult, inconclusive
from gelu_rollout.spec.model import RolloutSpec


def alpha_per_test(spec: RolloutSpec) -> float:
    """Each statistical test's share of the false-rollback budget, per segment."""
    tests = max(spec.statistical_gate_count, 1)
    return spec.analysis.false_rollback_budget / (tests * len(spec.traffic.steps))


def step_burn_windows(spec: RolloutSpec, step_index: int) -> tuple[BurnWindow, ...]:
    """The burn-rate windows of a step; observers must report these lengths."""
    gate = spec.analysis.gates.burn_rate
    pairs = [(w.burn_rate, w.long_window_factor) for w in gate.windows]
    step = spec.traffic.steps[step_index]
    return burn_windows(pairs, step.analysis_seconds, spec.analysis.interval_seconds)


def gate_names(spec: RolloutSpec) -> tuple[str, ...]:
    """Names of the enabled gates, in the order they are reported."""
    gates = spec.analysis.gates
    names: list[str] = []
    if gates.non_finite.enabled:
        names.append("nonFinite")
    if gates.burn_rate.enabled:
        names.append("burnRate")
    if gates.error_rate.enabled:
        names.append("errorRate")
    if gates.latency.enabled:
        names += ["latencyRegression", "latencyCeiling"]
    if gates.divergence.enabled:
        names.append("divergence")
    return tuple(names)


def _judge(
    gate: Callable[[StepEvidence], GateResult], segments: Sequence[StepEvidence]
) -> GateResult:
    """A failure on any segment (the current step's first), else the whole rollout's
    verdict."""
    for segment in reversed(segments[1:]):
        result = gate(segment)
        if result.failed:
            return result
    return gate(segments[0])


def evaluate_gates(
    spec: RolloutSpec,
    step_index: int,
    segments: Sequence[StepEvidence],
    latest: tuple[ArmObservation, ArmObservation] | None,
    look: int,
) -> list[GateResult]:
    """Every enabled gate's verdict.

    ``segments`` holds the evidence since the start of each step reached, the
    current step's last; ``latest`` is this tick's (baseline, candidate)
    observation, for the sliding burn-rate windows; ``look`` counts this
    step's looks from 1.
    """
    gates = spec.analysis.gates
    alpha = alpha_per_test(spec)
    budget = spec.error_budget
    power = spec.analysis.power
    share = None
    if latest is not None and latest[0].requests + latest[1].requests > 0:
        share = latest[1].requests / (latest[0].requests + latest[1].requests)
    results: list[GateResult] = []
    if gates.non_finite.enabled:
        nonfinite = gates.non_finite
        results.append(
            _judge(
                lambda e: nonfinite_gate(e, max_per_million=nonfinite.max_per_million, alpha=alpha),
                segments,
            )
        )
    if gates.burn_rate.enabled:
        if latest is None:
            results.append(inconclusive("burnRate", "no observation this tick", critical=True))
        else:
            results.append(
                burn_rate_gate(
                    latest[0],
                    latest[1],
                    step_burn_windows(spec, step_index),
                    error_budget=budget,
                    max_burn_rate=gates.error_rate.max_burn_rate,
                    max_ratio_to_baseline=gates.error_rate.max_ratio_to_baseline,
                    alpha_this_look=spent_alpha(alpha, max(look, 1)),
                )
            )
    if gates.error_rate.enabled:
        errors = gates.error_rate
        results.append(
            _judge(
                lambda e: error_rate_gate(
                    e,
                    error_budget=budget,
                    max_burn_rate=errors.max_burn_rate,
                    max_ratio_to_baseline=errors.max_ratio_to_baseline,
                    min_requests=errors.min_requests,
                    alpha=alpha,
                    detect_burn_rate=errors.detect_burn_rate,
                    power=power,
                ),
                segments,
            )
        )
    if gates.latency.enabled:
        latency = gates.latency
        results.append(
            _judge(
                lambda e: latency_regression_gate(
                    e,
                    max_regression=latency.max_regression,
                    min_ticks=latency.min_ticks,
                    alpha=alpha,
                    detect_regression=latency.detectable_regression,
                    power=power,
                    candidate_share=share,
                ),
                segments,
            )
        )
        ceiling = spec.analysis.slo.latency_p99_ms
        results.append(
            _judge(
                lambda e: latency_ceiling_gate(
                    e, ceiling_ms=ceiling, min_ticks=latency.min_ticks, alpha=alpha, power=power
                ),
                segments,
            )
        )
    if gates.divergence.enabled:
        divergence = gates.divergence
        results.append(
            _judge(
                lambda e: divergence_gate(
                    e,
                    max_kl=divergence.max_kl,
                    min_outputs=divergence.min_outputs,
                    smoothing=divergence.smoothing,
                    alpha=alpha,
                ),
                segments,
            )
        )
    return results
