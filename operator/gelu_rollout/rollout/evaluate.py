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
from gelu_rollout.analysis.observations import (
    NONFINITE_SIGNAL,
    OUTPUTS_SIGNAL,
    ArmObservation,
    StepEvidence,
)
from gelu_rollout.analysis.sequential import spent_alpha
from gelu_rollout.analysis.verdict import GateResult, inconclusive
from gelu_rollout.spec.model import (
    BurnRateGate,
    DivergenceGate,
    ErrorRateGate,
    LatencyGate,
    NonFiniteGate,
    RolloutSpec,
)


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


TRAFFIC_GATES = frozenset({"burnRate", "errorRate", "latencyRegression", "latencyCeiling"})
"""The gates fed by the metrics of the served traffic (the output gates also take the
sampled comparison)."""


def gate_required(spec: RolloutSpec, gate: str) -> bool:
    """Whether the rollout must wait for ``gate``'s verdict (``required`` in its spec)."""
    gates = spec.analysis.gates
    specs: dict[str, BurnRateGate | ErrorRateGate | LatencyGate | DivergenceGate | NonFiniteGate]
    specs = {
        "nonFinite": gates.non_finite,
        "burnRate": gates.burn_rate,
        "errorRate": gates.error_rate,
        "latencyRegression": gates.latency,
        "latencyCeiling": gates.latency,
        "divergence": gates.divergence,
    }
    gate_spec = specs.get(gate)
    return True if gate_spec is None else gate_spec.required


def output_gap(
    spec: RolloutSpec,
    latest: tuple[ArmObservation, ArmObservation] | None,
    signals: Sequence[str],
    sample_missing: str,
) -> str:
    """What an output gate without any data says: which series are missing, why the sampled
    comparison gave nothing, and what to do."""
    reasons = list(
        dict.fromkeys(
            arm.gaps[signal] for arm in latest or () for signal in signals if signal in arm.gaps
        )
    )
    if latest is None:
        reasons.append("no metrics this tick")
    sampling = spec.analysis.output_sample.enabled
    reasons.append(
        f"sampled comparison: {sample_missing or 'no answers yet'}"
        if sampling
        else "the sampled comparison is off"
    )
    advice = (
        "export the output metrics (docs/models.md)"
        if sampling
        else "enable analysis.outputSample or export the output metrics (docs/models.md)"
    )
    return "no data: " + "; ".join(reasons) + f". To judge it, {advice}"


def sample_error_limit(spec: RolloutSpec) -> float | None:
    """The sampled comparison's limit on the arms' paired difference: its own, else the
    probe's where the probe runs (the candidate met it before any traffic), else none."""
    sample, probe = spec.analysis.output_sample, spec.analysis.probe
    if sample.max_abs_error is not None:
        return sample.max_abs_error
    return probe.max_abs_error if probe.enabled else None


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
    *,
    missing: str = "no observation this tick",
    sample_missing: str = "",
) -> list[GateResult]:
    """Every enabled gate's verdict.

    ``segments`` holds the evidence since the start of each step reached, the
    current step's last; ``latest`` is this tick's (baseline, candidate)
    observation, for the sliding burn-rate windows, or None when the metrics are missing
    (``missing`` says why): the traffic gates then say Inconclusive, and the output gates
    judge what the sampled comparison brought. ``sample_missing`` says why this tick has no
    sampled comparison. ``look`` counts this step's looks from 1.
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
        gap = output_gap(spec, latest, (NONFINITE_SIGNAL, OUTPUTS_SIGNAL), sample_missing)
        results.append(
            _judge(
                lambda e: nonfinite_gate(
                    e, max_per_million=nonfinite.max_per_million, alpha=alpha, missing=gap
                ),
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
        gap = output_gap(spec, latest, (OUTPUTS_SIGNAL,), sample_missing)
        results.append(
            _judge(
                lambda e: divergence_gate(
                    e,
                    max_kl=divergence.max_kl,
                    min_outputs=divergence.min_outputs,
                    smoothing=divergence.smoothing,
                    alpha=alpha,
                    max_abs_error=sample_error_limit(spec),
                    missing=gap,
                ),
                segments,
            )
        )
    if latest is None:
        # Evidence from earlier ticks is not this tick's: without metrics the traffic gates
        # wait, as they always have.
        results = [
            inconclusive(r.gate, f"no observation: {missing}", critical=r.critical)
            if r.gate in TRAFFIC_GATES
            else r
            for r in results
        ]
    return results
