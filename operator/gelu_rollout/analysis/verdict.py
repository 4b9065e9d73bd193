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
    basis: str = ""
    """What a Pass rests on: "proof" (the candidate is confidently within tolerance) or
    "power" (no evidence of harm, with enough data that the stated regression would have
    shown); empty for other verdicts."""
    harmless: bool | None = None
    """Whether the evidence so far shows no harm; None: judged from value and threshold."""
    no_data: bool = False
    """The gate has no source for its evidence at all (the series it needs do not exist),
    as opposed to not enough of it yet; ``message`` says which series and what to do."""
    bound: float | None = None
    """The confidence bound the gate's failure test compares with ``threshold``, in the
    same unit: the lower end of what the evidence allows (the gate fails when it is above the
    threshold, other conditions such as the blame guard or ``min_ticks`` permitting). None
    where the gate's test has no such bound (a p-value per window, a count with no
    tolerance) or no evidence yet. It reports, it never decides."""

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL

    @property
    def shows_no_harm(self) -> bool:
        """A Pass, or data whose estimate is within the gate's tolerance: enough to move on to
        the next step (a promotion needs every gate's Pass)."""
        if self.verdict is Verdict.PASS:
            return True
        if self.failed:
            return False
        if self.harmless is not None:
            return self.harmless
        return (
            self.samples > 0
            and self.value is not None
            and self.threshold is not None
            and self.value <= self.threshold
        )


def no_harm_shown(within_tolerance: bool, log_evalue: float) -> bool:
    """Whether a gate's evidence so far shows no harm: its estimate is within the tolerance,
    or its failure test's e-value is at most one (the data favour the tolerance over the
    alternatives the test looks for). A point estimate above the tolerance from a handful
    of requests (one failure in 300 is a burn of 3.3 at a 99.9% SLO) is not harm; a step
    moves on, and the failure test keeps judging at the higher weight."""
    return within_tolerance or log_evalue <= 0.0


def inconclusive(
    gate: str, message: str, *, critical: bool = False, no_data: bool = False
) -> GateResult:
    """A gate that has nothing to judge on."""
    return GateResult(
        gate, Verdict.INCONCLUSIVE, None, None, 0.0, 0.0, message, critical, no_data=no_data
    )
