"""What a gate says, and the evidence it says it on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict with everything an on-call engineer needs to check it.

    ``value`` and ``threshold`` are in the gate's own unit (burn rate, P99 ratio,
    KL in nats, non-finite count); ``samples`` is what the verdict rests on
    (requests, ticks or outputs, named in ``message``); ``window_seconds`` is how
    much time the evidence covers.
    """

    gate: str
    verdict: Verdict
    value: float | None
    threshold: float | None
    samples: float
    window_seconds: float
    message: str
    critical: bool = False

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL


def inconclusive(gate: str, message: str, *, critical: bool = False) -> GateResult:
    """A gate that has nothing to judge on."""
    return GateResult(gate, Verdict.INCONCLUSIVE, None, None, 0.0, 0.0, message, critical)
