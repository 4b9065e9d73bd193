"""Turn a scenario's ticks into the observations an observer would report each tick."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from gelu_lab.bench.scenario import Scenario, deltas
from gelu_rollout.analysis.observations import ArmObservation, WindowCounts


class Replay:
    """A scenario as a sequence of per-tick increments with sliding-window sums."""

    def __init__(self, scenario: Scenario, start: datetime) -> None:
        self.scenario = scenario
        self.start = start
        self.deltas: list[tuple[ArmObservation, ArmObservation]] = list(deltas(scenario))

    def __len__(self) -> int:
        return len(self.deltas)

    def at(self, tick: int) -> datetime:
        """When tick ``tick`` (0-based) ends."""
        return self.start + timedelta(seconds=(tick + 1) * self.scenario.tick_seconds)

    def _window(self, tick: int, seconds: float, arm: int) -> WindowCounts:
        span = max(1, math.ceil(seconds / self.scenario.tick_seconds - 1e-9))
        first = max(0, tick - span + 1)
        chosen = [self.deltas[i][arm] for i in range(first, tick + 1)]
        return WindowCounts(sum(d.requests for d in chosen), sum(d.failures for d in chosen))

    def observe(self, tick: int, windows: Sequence[float]) -> tuple[ArmObservation, ArmObservation]:
        """(baseline, candidate) at the end of ``tick`` with the given sliding windows."""
        baseline, candidate = (
            replace(
                delta,
                p99_ms=delta.p99_ms if delta.requests > 0 else None,
                windows={w: self._window(tick, w, arm) for w in windows},
            )
            for arm, delta in enumerate(self.deltas[tick])
        )
        return baseline, candidate
