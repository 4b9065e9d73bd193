"""Everything ``decide`` learns from outside in one tick."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gelu_rollout.analysis.observations import ArmObservation, SampledOutputs
from gelu_rollout.analysis.verdict import GateResult
from gelu_rollout.rollout.requests import ManualRequest


@dataclass(frozen=True)
class Observations:
    """One tick's view of the world.

    ``baseline`` and ``candidate`` are None when the metrics could not be read
    (``missing_reason`` says why): the gates then say Inconclusive, never Pass.
    ``sample`` is this tick's sampled comparison of outputs, or None with
    ``sample_missing`` saying why (disabled, an arm not answering); it feeds the output
    gates even when the metrics are missing.
    ``probe`` is the paired probe's result, given while the rollout is Pending once the
    candidate is ready. ``at`` is when the observation window ended; an observation not newer than
    the last one used is ignored, so replaying a tick changes nothing.
    """

    at: datetime
    interval_seconds: float
    baseline: ArmObservation | None
    candidate: ArmObservation | None
    missing_reason: str | None = None
    request: ManualRequest | None = None
    probe: GateResult | None = None
    sample: SampledOutputs | None = None
    sample_missing: str = ""
