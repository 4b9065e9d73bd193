"""Every condition type and reason the rollout reports, in one place.

Reasons are CamelCase, as the Kubernetes API conventions ask; Events use the
same reasons so an Event and the condition it changed read alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from gelu_rollout.spec.status import Condition


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    STALLED = "Stalled"


class Reason(StrEnum):
    ROLLOUT_STARTED = "RolloutStarted"
    PROBE_FAILED = "ProbeFailed"
    PROBE_INCONCLUSIVE = "ProbeInconclusive"
    STEP_ANALYSING = "StepAnalysing"
    STEP_ADVANCED = "StepAdvanced"
    ALL_STEPS_PASSED = "AllStepsPassed"
    MANUAL_PROMOTION = "ManualPromotion"
    PROMOTION_REFUSED = "PromotionRefused"
    ABORTED = "Aborted"
    RETRIED = "Retried"
    REQUEST_IGNORED = "RequestIgnored"
    SPEC_CHANGED = "SpecChanged"
    INSUFFICIENT_DATA = "InsufficientData"
    GATE_WITHOUT_DATA = "GateWithoutData"
    GATE_SKIPPED = "GateSkipped"
    POWER_PLAN_INFEASIBLE = "PowerPlanInfeasible"
    ANALYSIS_RESUMED = "AnalysisResumed"
    NON_FINITE_OUTPUTS = "NonFiniteOutputs"
    FAST_BURN = "FastBurn"
    ERROR_RATE_ABOVE_TOLERANCE = "ErrorRateAboveTolerance"
    LATENCY_REGRESSION = "LatencyRegression"
    LATENCY_ABOVE_CEILING = "LatencyAboveCeiling"
    OUTPUT_DIVERGENCE = "OutputDivergence"
    NOT_ROLLED_BACK = "NotRolledBack"
    NOT_PROMOTED = "NotPromoted"
    NOT_STALLED = "NotStalled"
    FINISHED = "Finished"
    # Ready: the owned resources, as the operator (not decide) sees them.
    RESOURCES_READY = "ResourcesReady"
    WAITING_FOR_PODS = "WaitingForPods"
    INVALID_SPEC = "InvalidSpec"
    REPOSITORY_MISSING = "RepositoryMissing"
    ROUTE_MISSING = "HTTPRouteMissing"
    INVALID_REQUEST = "InvalidRequest"


# The reason a rollback reports when a given gate fails.
FAILURE_REASONS: dict[str, Reason] = {
    "probe": Reason.PROBE_FAILED,
    "nonFinite": Reason.NON_FINITE_OUTPUTS,
    "burnRate": Reason.FAST_BURN,
    "errorRate": Reason.ERROR_RATE_ABOVE_TOLERANCE,
    "latencyRegression": Reason.LATENCY_REGRESSION,
    "latencyCeiling": Reason.LATENCY_ABOVE_CEILING,
    "divergence": Reason.OUTPUT_DIVERGENCE,
}


def set_condition(
    conditions: Sequence[Condition],
    type_: ConditionType,
    status: bool,
    reason: Reason,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with one set in place; its transition time moves only when its status does."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == type_.value), None)
    since = previous.last_transition_time if previous and previous.status == value else now
    updated = Condition(
        type=type_.value,
        status=value,
        reason=reason.value,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_.value else c for c in conditions]
