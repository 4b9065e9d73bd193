"""What every policy in the decision benchmark is: scenario in, outcome out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from gelu_lab.bench.scenario import Scenario

Decision = Literal["promote", "rollback", "stalled"]


@dataclass(frozen=True)
class Outcome:
    """How a policy ended a scenario.

    ``tick`` is the index of the tick at whose end the decision was made (None when
    the policy neither promoted nor rolled back by the last tick: ``stalled``).
    ``plan_feasible``: whether the policy said, before deciding, that its plan gives every
    gate the data it needs in time (None: it says nothing of the kind).
    """

    decision: Decision
    tick: int | None
    reason: str
    plan_feasible: bool | None = None


class Policy(Protocol):
    """A rollout policy replayed over a scenario's ticks, one look per tick."""

    name: str

    def parameters(self) -> dict[str, object]:
        """Its settings, printed with the results so readers can judge the comparison."""
        ...

    def run(self, scenario: Scenario) -> Outcome: ...
