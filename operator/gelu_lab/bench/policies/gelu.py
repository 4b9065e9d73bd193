"""Our own policy in the benchmark: the rollout state machine, driven tick by tick."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from gelu_lab.bench.policies.base import Outcome
from gelu_lab.bench.replay import Replay
from gelu_lab.bench.scenario import Scenario
from gelu_rollout.analysis.burn_rate import required_window_seconds
from gelu_rollout.rollout.conditions import Reason
from gelu_rollout.rollout.decide import Decision, decide
from gelu_rollout.rollout.evaluate import step_burn_windows
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.spec import RolloutSpec, parse_spec
from gelu_rollout.spec.status import RolloutStatus, Stage

START = datetime(2026, 1, 1, tzinfo=UTC)
# The benchmark judges decisions, not deployments: any two distinct variants do.
ARMS: dict[str, Any] = {
    "model": {"name": "gelu-mlp"},
    "baseline": {"variant": "exact"},
    "candidate": {"variant": "tanh"},
}

MESH_HISTOGRAM: dict[str, Any] = {
    "metric": "istio_request_duration_milliseconds_bucket",
    "armLabel": "destination_service_name",
    "unit": "milliseconds",
}


def spec_for(scenario: Scenario, analysis: dict[str, Any] | None = None) -> RolloutSpec:
    """The spec a user would write for the scenario's plan and SLO, defaults elsewhere."""
    tick = round(scenario.tick_seconds)
    return parse_spec(
        {
            **ARMS,
            "traffic": {
                "steps": [
                    {"weight": s.weight, "analysisSeconds": s.ticks * tick} for s in scenario.steps
                ]
            },
            "analysis": {
                "intervalSeconds": tick,
                "slo": {
                    "availability": scenario.availability_slo,
                    "latencyP99Ms": scenario.latency_p99_ceiling_ms,
                },
                # Scenarios replay metrics only; the pre-traffic probe has nothing to run on.
                "probe": {"enabled": False},
                # Where the scenario has a request-duration histogram, say so as a user
                # behind a mesh would (the replay hands the histogram to decide() itself).
                **({"latencyHistogram": MESH_HISTOGRAM} if scenario.latency_bounds else {}),
                **(analysis or {}),
            },
        }
    )


class GeluRolloutPolicy:
    name = "gelu-rollout"

    def __init__(self, analysis: dict[str, Any] | None = None) -> None:
        self.analysis = analysis or {}

    def parameters(self) -> dict[str, object]:
        analysis = parse_spec({**ARMS, "analysis": self.analysis}).analysis
        gates = analysis.gates
        return {
            "falseRollbackBudget": analysis.false_rollback_budget,
            "errorRate.maxBurnRate": gates.error_rate.max_burn_rate,
            "latency.maxRegression": gates.latency.max_regression,
            "divergence.maxKL": gates.divergence.max_kl,
            "nonFinite.maxPerMillion": gates.non_finite.max_per_million,
            "other settings": "spec defaults" if not self.analysis else self.analysis,
            "method": "anytime-valid sequential tests per gate (docs/analysis.md)",
            "replayed at": "the weight its status is at (a step it extends keeps its weight)",
        }

    def run(self, scenario: Scenario) -> Outcome:
        status = RolloutStatus()
        feasible: bool | None = None
        for tick, decision in replay_decisions(scenario, spec_for(scenario, self.analysis)):
            status = decision.status
            said = plan_feasibility(decision)
            if said is not None:
                feasible = said if feasible is None else feasible and said
            if status.stage is Stage.ROLLED_BACK:
                return Outcome("rollback", tick, status.message, feasible)
            if status.stage is Stage.PROMOTED:
                return Outcome("promote", tick, status.message, feasible)
        return Outcome("stalled", None, status.message, feasible)


def plan_feasibility(decision: Decision) -> bool | None:
    """Whether the rollout says, at this decision, that its power plan lets every gate pass
    within the planned time: False on a ``PowerPlanInfeasible`` Warning (or any Warning
    saying a gate "cannot decide") or a ``PowerPlanNeedsExtension`` Event (a gate needs the
    last step's extension), True when the status carries a power plan and neither came,
    None when it says nothing. Read from what an on-call engineer reads, never from the
    data.
    """
    for event in decision.events:
        if event.reason == Reason.POWER_PLAN_NEEDS_EXTENSION.value:
            return False
        if event.type == "Warning" and (
            event.reason == Reason.POWER_PLAN_INFEASIBLE.value or "cannot decide" in event.message
        ):
            return False
    return True if decision.status.power_plan else None


def replay_decisions(
    scenario: Scenario, spec: RolloutSpec, replay: Replay | None = None
) -> Iterator[tuple[int, Decision]]:
    """Each tick's decision as the scenario unfolds; tick -1 starts the rollout.

    Every tick is observed at the weight the rollout is at (its status after the previous
    decision): a step that waits for data keeps its weight, on an adaptive stream the data
    are drawn at that weight.
    """
    replay = replay if replay is not None else Replay(scenario, START)
    decision = decide(
        spec, RolloutStatus(), Observations(START, scenario.tick_seconds, None, None), START
    )
    yield -1, decision
    for tick in range(len(replay)):
        status = decision.status
        if status.stage in (Stage.PROMOTED, Stage.ROLLED_BACK):
            return
        windows = required_window_seconds(step_burn_windows(spec, status.step_index))
        baseline, candidate = replay.observe(tick, windows, status.candidate_weight)
        at = replay.at(tick)
        decision = decide(
            spec, status, Observations(at, scenario.tick_seconds, baseline, candidate), at
        )
        yield tick, decision
