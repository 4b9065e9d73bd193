"""What ``decide`` asks the outside world to do. The handlers carry these out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ScaleCandidate:
    """Run the candidate with this many replicas (0 removes it)."""

    replicas: int


@dataclass(frozen=True)
class SetWeight:
    """Send this percentage of traffic to the candidate."""

    weight: int


@dataclass(frozen=True)
class Promote:
    """Make the candidate the new baseline and send it all traffic."""


@dataclass(frozen=True)
class Rollback:
    """Return all traffic to the baseline and remove the candidate."""


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the rollout object."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = ScaleCandidate | SetWeight | Promote | Rollback | EmitEvent
