"""Builders shared by the rollout tests: specs, observations and a tick driver."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from gelu_rollout.analysis.burn_rate import required_window_seconds
from gelu_rollout.analysis.observations import ArmObservation, SampledOutputs, WindowCounts
from gelu_rollout.analysis.verdict import GateResult
from gelu_rollout.resources.desired import arm_replicas, candidate_traffic_weight
from gelu_rollout.rollout.decide import Decision, decide
from gelu_rollout.rollout.evaluate import step_burn_windows
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.rollout.requests import ManualRequest
from gelu_rollout.spec import RolloutSpec, parse_spec
from gelu_rollout.spec.status import RolloutStatus

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 60
BUCKETS = (5.0, 20.0, 50.0, 20.0, 5.0)


def make_spec(**analysis: Any) -> RolloutSpec:
    return parse_spec(
        {
            "model": {"name": "gelu-mlp"},
            "baseline": {"variant": "exact"},
            "candidate": {"variant": "tanh", "replicas": 2},
            "traffic": {
                "steps": [
                    {"weight": 10, "analysisSeconds": 180},
                    {"weight": 50, "analysisSeconds": 180},
                ]
            },
            "analysis": {
                "intervalSeconds": INTERVAL,
                "warmupSeconds": 0,
                "probe": {"enabled": False},
                **analysis,
            },
        }
    )


def arm(
    *,
    requests: float = 5000.0,
    failures: float = 0.0,
    nonfinite: float = 0.0,
    p99_ms: float | None = 50.0,
    histogram_scale: float = 200.0,
    histogram: Sequence[float] | None = None,
    windows: Sequence[float] = (),
) -> ArmObservation:
    counts = histogram if histogram is not None else [b * histogram_scale for b in BUCKETS]
    return ArmObservation(
        requests=requests,
        failures=failures,
        nonfinite=nonfinite,
        histogram=tuple(counts),
        p99_ms=p99_ms,
        windows={w: WindowCounts(requests * max(w / INTERVAL, 1.0), failures) for w in windows},
    )


class Driver:
    """Feeds ticks to ``decide`` the way the operator does, keeping the status."""

    def __init__(self, spec: RolloutSpec, *, through_dict: bool = True) -> None:
        self.spec = spec
        self.status = RolloutStatus()
        self.now = T0
        self.through_dict = through_dict
        self.decisions: list[Decision] = []

    def windows(self) -> tuple[float, ...]:
        return required_window_seconds(step_burn_windows(self.spec, self.status.step_index))

    def tick(
        self,
        baseline: ArmObservation | None = None,
        candidate: ArmObservation | None = None,
        *,
        missing: bool = False,
        request: ManualRequest | None = None,
        generation: int | None = None,
        advance: bool = True,
        probe: GateResult | None = None,
        sample: SampledOutputs | None = None,
        sample_missing: str = "",
    ) -> Decision:
        if advance and self.decisions:
            self.now += timedelta(seconds=INTERVAL)
        windows = self.windows()
        if not missing:
            baseline = baseline or arm(windows=windows)
            candidate = candidate or arm(windows=windows)
        observations = Observations(
            at=self.now,
            interval_seconds=INTERVAL,
            baseline=None if missing else baseline,
            candidate=None if missing else candidate,
            missing_reason="Prometheus unreachable" if missing else None,
            request=request,
            probe=probe,
            sample=sample,
            sample_missing=sample_missing,
        )
        decision = decide(self.spec, self.status, observations, self.now, generation=generation)
        self.decisions.append(decision)
        # The operator stores status in the API server and reads it back.
        self.status = (
            RolloutStatus.model_validate(decision.status.to_dict())
            if self.through_dict
            else decision.status
        )
        return decision


def candidate_replicas(spec: RolloutSpec, decision: Decision) -> int:
    """How many candidate pods the operator renders for the status ``decision`` returned."""
    return arm_replicas(spec, decision.status)[1]


def traffic_weight(decision: Decision) -> int:
    """The candidate's share of traffic the operator renders for ``decision``'s status."""
    return candidate_traffic_weight(decision.status)
