"""What ``decide`` has to say besides the status: Kubernetes Events on the rollout.

The status is ``decide``'s only instruction to the world: the controller renders the owned
resources (replicas, Services, traffic weights) from it, so nothing else needs carrying out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the rollout object."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
