"""Every condition type and reason the rollout reports, in one place.

Reasons are CamelCase, as the Kubernetes API conventions ask; Events use the
same reasons so an Event and the condition it changed read alike.

Two kinds of condition. ``Progressing``, ``Promoted`` and ``RolledBack`` say where
the rollout is; ``decide`` sets them. ``Reconciling``, ``Stalled`` and ``Ready`` sum
that up for tools that know nothing of rollouts (kstatus, and through it Flux and
``kubectl wait``): :func:`summarize` derives them on every status write, from the
stage, those conditions and ``ResourcesReady`` (what applying the owned objects found),
so they can never disagree with the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gelu_rollout.spec.status import Condition, RolloutStatus, Stage


class ConditionType(StrEnum):
    PROGRESSING = "Progressing"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    # The kstatus summary: exactly one of Reconciling, Stalled and Ready is True.
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    READY = "Ready"
    RESOURCES_READY = "ResourcesReady"


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
    POWER_PLAN_NEEDS_EXTENSION = "PowerPlanNeedsExtension"
    ANALYSIS_RESUMED = "AnalysisResumed"
    NON_FINITE_OUTPUTS = "NonFiniteOutputs"
    FAST_BURN = "FastBurn"
    ERROR_RATE_ABOVE_TOLERANCE = "ErrorRateAboveTolerance"
    LATENCY_REGRESSION = "LatencyRegression"
    LATENCY_ABOVE_CEILING = "LatencyAboveCeiling"
    OUTPUT_DIVERGENCE = "OutputDivergence"
    NOT_ROLLED_BACK = "NotRolledBack"
    NOT_PROMOTED = "NotPromoted"
    FINISHED = "Finished"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    """Rolled back: the arms' pods were not ready for longer than spec.progressDeadlineSeconds."""
    # The summary's False sides.
    NOT_RECONCILING = "NotReconciling"
    NOT_STALLED = "NotStalled"
    # ResourcesReady: the owned resources, as the operator (not decide) sees them.
    RESOURCES_APPLIED = "ResourcesApplied"
    APPLYING = "Applying"  # a decision recorded, the owned objects not yet made to follow it
    WAITING_FOR_PODS = "WaitingForPods"
    PODS_FAILING = "PodsFailing"
    RESOURCE_CONFLICT = "ResourceConflict"
    """An object of a name the rollout renders exists and is another's (another rollout's,
    or the user's own): the operator never takes it over."""
    INVALID_SPEC = "InvalidSpec"
    REPOSITORY_MISSING = "RepositoryMissing"
    ROUTE_MISSING = "HTTPRouteMissing"
    INVALID_REQUEST = "InvalidRequest"
    # The API server refused a request in a way that retrying the same request cannot mend
    # (the error policy, docs/operator.md): the operator waits for a change.
    FORBIDDEN = "Forbidden"
    """403: the operator's service account may not do what the rollout needs."""
    APPLY_REJECTED = "ApplyRejected"
    """400 or 422 on a write: the object the operator rendered was refused as invalid."""
    NOT_FOUND = "NotFound"
    """404 on a write: the namespace, the kind or the object went away under the operator."""
    REQUEST_REJECTED = "RequestRejected"
    """Any other 4xx that no retry mends (405, 410, 415 ...)."""


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

API_REFUSALS: frozenset[Reason] = frozenset(
    {Reason.FORBIDDEN, Reason.APPLY_REJECTED, Reason.NOT_FOUND, Reason.REQUEST_REJECTED}
)
"""The reasons of a request the API server refused for good (the error policy's permanent
failures)."""

PODS_NOT_READY: frozenset[Reason] = frozenset({Reason.WAITING_FOR_PODS, Reason.PODS_FAILING})
"""ResourcesReady reasons that say an arm's pods are not ready: while one lasts, the progress
deadline runs (rollout/progress.py)."""

BLOCKING_REASONS: frozenset[Reason] = (
    frozenset(
        {
            Reason.INVALID_SPEC,
            Reason.REPOSITORY_MISSING,
            Reason.ROUTE_MISSING,
            Reason.PODS_FAILING,
            Reason.RESOURCE_CONFLICT,
        }
    )
    | API_REFUSALS
)
"""ResourcesReady reasons that stall the rollout: nothing moves until a person fixes the spec,
creates the object it names, mends what keeps the pods from starting (a bucket, a
credential, an image), or what made the API server refuse the operator (its RBAC, an
admission policy)."""


def set_condition(
    conditions: Sequence[Condition],
    type_: ConditionType,
    status: bool,
    reason: Reason | str,
    message: str,
    now: datetime,
    generation: int | None,
    *,
    previous: Sequence[Condition] | None = None,
) -> list[Condition]:
    """Conditions with one set in place; its transition time moves only when its status does.

    ``previous`` (by default ``conditions``) is the status as last written: a condition set
    twice in one tick keeps its transition time unless the written one changes.
    """
    value = "True" if status else "False"
    written = previous if previous is not None else conditions
    before = next((c for c in written if c.type == type_.value), None)
    since = before.last_transition_time if before and before.status == value else now
    current = next((c for c in conditions if c.type == type_.value), None)
    if current is not None and (
        current.status,
        current.reason,
        current.message,
        current.last_transition_time,
        current.observed_generation,
    ) == (value, str(reason), message, since, generation):
        # Unchanged: every tick sets the summary, most of them to what it was.
        return list(conditions)
    updated = Condition(
        type=type_.value,
        status=value,
        reason=str(reason),
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    if current is None:
        return [*conditions, updated]
    return [updated if c.type == type_.value else c for c in conditions]


@dataclass(frozen=True)
class Resources:
    """What applying the owned resources found: the ResourcesReady condition."""

    ready: bool
    reason: Reason
    message: str


@dataclass(frozen=True)
class Health:
    """The one summary state a rollout is in (Reconciling, Stalled or Ready), and why."""

    state: ConditionType
    reason: str
    message: str


SUMMARY: tuple[ConditionType, ...] = (
    ConditionType.RECONCILING,
    ConditionType.STALLED,
    ConditionType.READY,
)


def health(status: RolloutStatus, resources: Resources | None = None) -> Health:
    """Reconciling, Stalled or Ready, from the stage, the rollout's own conditions and the
    owned resources (``None``: not known, as in ``decide``; taken as ready)."""
    if resources is not None and not resources.ready and resources.reason in BLOCKING_REASONS:
        return Health(ConditionType.STALLED, resources.reason.value, resources.message)
    stage = status.stage
    if stage is Stage.PROMOTED:
        reason, message = _cause(status, ConditionType.PROMOTED, Reason.ALL_STEPS_PASSED)
        if resources is not None and not resources.ready:
            # The baseline now rolls to the candidate's model: not done until its pods are.
            return Health(
                ConditionType.RECONCILING,
                resources.reason.value,
                f"{message}; {resources.message}",
            )
        return Health(ConditionType.READY, reason, message)
    if stage is Stage.ROLLED_BACK:
        reason, message = _cause(status, ConditionType.ROLLED_BACK, Reason.ABORTED)
        return Health(ConditionType.STALLED, reason, message)
    reason, message = _cause(status, ConditionType.PROGRESSING, Reason.ROLLOUT_STARTED)
    # Paused waits for a person, or for data that did not come in its time; so does a probe
    # still inconclusive past its deadline.
    probe_stuck = stage is Stage.PENDING and reason == Reason.PROBE_INCONCLUSIVE.value
    if stage is Stage.PAUSED or probe_stuck:
        return Health(ConditionType.STALLED, reason, message)
    return Health(ConditionType.RECONCILING, reason, message)


def _cause(status: RolloutStatus, type_: ConditionType, fallback: Reason) -> tuple[str, str]:
    found = status.condition(type_.value)
    if found is None:
        return fallback.value, status.message
    return found.reason, found.message or status.message


def summarize(
    status: RolloutStatus,
    now: datetime,
    generation: int | None,
    *,
    resources: Resources | None = None,
    previous: Sequence[Condition] | None = None,
) -> RolloutStatus:
    """The status as it is written: ResourcesReady (when known), Reconciling, Stalled and Ready
    derived afresh, and ``observedGeneration``, the status's and every condition's, set to
    ``generation`` (when known): every condition was judged against that spec.

    ``previous`` is the status as last written, for the transition times.
    """
    conditions = list(status.conditions)
    if resources is not None:
        conditions = set_condition(
            conditions,
            ConditionType.RESOURCES_READY,
            resources.ready,
            resources.reason,
            resources.message,
            now,
            generation,
            previous=previous,
        )
    summary = health(status, resources)
    for type_ in SUMMARY:
        true = summary.state is type_
        # Ready says why on both sides (kubectl wait shows it); the other two only when True.
        explained = true or type_ is ConditionType.READY
        otherwise = (
            Reason.NOT_RECONCILING if type_ is ConditionType.RECONCILING else Reason.NOT_STALLED
        )
        conditions = set_condition(
            conditions,
            type_,
            true,
            summary.reason if explained else otherwise,
            summary.message if explained else "",
            now,
            generation,
            previous=previous,
        )
    observed = generation if generation is not None else status.observed_generation
    conditions = [
        c
        if c.observed_generation == observed
        else c.model_copy(update={"observed_generation": observed})
        for c in conditions
    ]
    return status.model_copy(update={"conditions": conditions, "observed_generation": observed})
