"""The status of a GeluModelRollout.

Status models are frozen and use camelCase aliases like the spec, but ignore unknown fields:
the API server, or a newer operator, may have written fields this version does not know.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_serializer,
)
from pydantic.alias_generators import to_camel


class Stage(StrEnum):
    """Where a rollout is in its life."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"

    @property
    def terminal(self) -> bool:
        """Whether the rollout is over (promoted or rolled back)."""
        return self in {Stage.PROMOTED, Stage.ROLLED_BACK}


ConditionStatus = Literal["True", "False", "Unknown"]
Verdict = Literal["Pass", "Fail", "Inconclusive"]


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; fractional seconds only when there are some."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Timestamp = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]
"""A timezone-aware datetime, held in UTC and written as ``2026-11-25T20:00:00Z``."""

# The Kubernetes pattern for metav1.Condition.reason.
_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class StatusModel(BaseModel):
    """Base of the status types: frozen, unknown fields ignored, camelCase aliases."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Condition(StatusModel):
    """A Kubernetes-style status condition."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=_REASON_PATTERN)
    message: str = ""
    last_transition_time: Timestamp
    observed_generation: int | None = None


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class LedgerEntry(StatusModel):
    """One gate decision at one look, as recorded in the decision ledger."""

    time: Timestamp
    step: int = Field(ge=0)
    weight: int = Field(ge=0, le=100)
    gate: str
    verdict: Verdict
    value: float | None = None
    threshold: float | None = None
    samples: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    window_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    message: str = ""
    basis: str | None = None
    """What a Pass rests on: "proof" or "power" (docs/analysis.md)."""

    @field_serializer("value", "threshold", when_used="json")
    def _json_number(self, value: float | None) -> float | None:
        # JSON has no NaN or infinity: a non-finite value is written as absent.
        return _finite_or_none(value)


GATE_HISTORY_LIMIT = 200
"""How many ticks ``status.gateHistory`` keeps (the newest): at a minute a tick, over three
hours, in about 60 KB with six gates."""

HISTORY_VERDICTS: dict[str, str] = {"Pass": "P", "Fail": "F", "Inconclusive": "I"}
"""A verdict's one letter in ``gateHistory``."""
HistoryVerdict = Literal["P", "F", "I"]
GateSample = tuple[float | None, float | None, float | None, HistoryVerdict]
"""One gate at one tick: value, bound, threshold (in the gate's unit; null when absent or
not finite) and the verdict's letter."""


def significant(value: float | None, digits: int = 4) -> float | None:
    """``value`` to ``digits`` significant digits, None when it is absent or not finite: the
    history keeps what a chart can show, in as few bytes as that takes."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


class GateHistoryTick(StatusModel):
    """One judged tick, compactly: where the evidence was gathered and each gate's numbers."""

    time: Timestamp
    step: int = Field(ge=0)
    weight: int = Field(ge=0, le=100)
    gates: dict[str, GateSample] = Field(default_factory=dict)
    decided: bool | None = None
    """True at a tick that decided (a step advanced, promoted, rolled back, paused, or the
    probe's answer); absent otherwise."""


class RolloutStatus(StatusModel):
    """The status of a GeluModelRollout."""

    observed_generation: int | None = None
    """The newest ``metadata.generation`` the operator has judged: set on every status write,
    a spec it cannot act on included, so a tool comparing it with the generation knows the
    conditions speak of the current spec."""
    started_generation: int | None = None
    """The generation the rollout (its probe, steps and evidence) started from; a newer valid
    spec starts it again."""
    stage: Stage = Stage.PENDING
    step_index: int = Field(default=0, ge=0)
    candidate_weight: int = Field(default=0, ge=0, le=100)
    started_at: Timestamp | None = None
    step_started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    conditions: list[Condition] = Field(default_factory=list)
    ledger: list[LedgerEntry] = Field(default_factory=list)
    gate_history: list[GateHistoryTick] = Field(default_factory=list)
    """Every judged tick's gate values, bounds, thresholds and verdicts, the newest
    :data:`GATE_HISTORY_LIMIT`: what the decision report charts (the ledger keeps only the
    changes)."""
    last_verdict: Verdict | None = None
    message: str = ""
    handled_request: str | None = None
    power_plan: list[dict[str, Any]] = Field(default_factory=list)
    """Per gate: what it needs before it can pass on power, what it has, and how long the
    rest takes at the current traffic (rollout/power_plan.py)."""
    original_backend_refs: list[list[dict[str, Any]]] | None = None
    """HTTPRoute mode: each rule's ``backendRefs`` as the route had them before the operator
    first set its weights, put back when the rollout is deleted."""
    not_ready_since: Timestamp | None = None
    """Since when the arms' pods have not been ready, while the rollout is unfinished (null
    while they are): what ``spec.progressDeadlineSeconds`` is measured from. Kept in the
    status, so an operator restarted meanwhile measures from the same moment."""
    analysis: dict[str, Any] = Field(default_factory=dict)

    def rollout_generation(self) -> int | None:
        """The generation the rollout started from. A status written before
        ``startedGeneration`` existed kept it in ``observedGeneration``."""
        if self.started_generation is not None:
            return self.started_generation
        return self.observed_generation if self.started_at is not None else None

    def condition(self, type_: str) -> Condition | None:
        """The condition of the given type, if there is one."""
        return next((c for c in self.conditions if c.type == type_), None)

    def to_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready camelCase mapping; None fields are left out.

        ``analysis`` is written as given (only made JSON-ready), nulls inside it included.
        """
        data = self.model_dump(mode="json", by_alias=True, exclude={"analysis"})
        result = _drop_none(data)
        result["conditions"] = [_drop_none(c) for c in data["conditions"]]
        result["ledger"] = [_drop_none(e) for e in data["ledger"]]
        # Left out while empty: the history only ever grows, and a status that never
        # judged a tick (or one from an operator before it) stays as it was.
        history = [_drop_none(t) for t in result.pop("gateHistory")]
        if history:
            result["gateHistory"] = history
        result["analysis"] = self.model_dump(mode="json", include={"analysis"})["analysis"]
        return result


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
