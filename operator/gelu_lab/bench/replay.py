"""Turn a scenario into the observations an observer would report each tick.

A ``Replay`` is one policy's pass over one scenario. The policy asks for the ticks in
order and says at which candidate weight it is (``observe(tick, windows, weight)``):

* a fixed stream is replayed as recorded, whatever the weight (it was recorded at the
  plan's weights, or elsewhere);
* an adaptive stream is realised at that weight (``gelu_lab.bench.stream``), so a policy
  that extends a step keeps getting the step's weight, and one that advances early gets
  the next step's weight early.

Sliding windows (the burn-rate windows, the summary P99's 60 s) are taken over what this
policy observed, at the weights it was at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from gelu_lab.bench.scenario import Scenario, Slowdown, deltas
from gelu_lab.bench.stream import (
    RealisedArm,
    realise_tick,
    sample_quantile,
    summary_window_start,
)
from gelu_rollout.analysis.observations import ArmObservation, WindowCounts
from gelu_rollout.analysis.tail_latency import LatencyHistogram


class _Memo:
    """Realised ticks of the scenario replayed last, shared by the policies run on it one
    after another in one process: (tick, weight, cold start) -> (baseline, candidate). It
    holds the scenario itself, so a new scenario object can never be mistaken for it."""

    owner: Scenario | None = None
    ticks: dict[tuple[int, int, Slowdown | None], tuple[RealisedArm, RealisedArm]] = {}  # noqa: RUF012


def _realised(
    scenario: Scenario, tick: int, weight: int, slowdown: Slowdown | None
) -> tuple[RealisedArm, RealisedArm]:
    if _Memo.owner is not scenario:
        _Memo.owner = scenario
        _Memo.ticks = {}
    entry = (tick, weight, slowdown)
    if entry not in _Memo.ticks:
        _Memo.ticks[entry] = realise_tick(scenario, tick, weight, slowdown)
    return _Memo.ticks[entry]


def _observation(arm: RealisedArm, scenario: Scenario) -> ArmObservation:
    histogram = (
        LatencyHistogram(scenario.latency_bounds, arm.latency_counts)
        if scenario.latency_bounds is not None and arm.latency_counts is not None
        else None
    )
    return ArmObservation(
        float(arm.requests),
        float(arm.failures),
        float(arm.nonfinite),
        arm.histogram,
        arm.tick_p99_ms,
        latency_mean_ms=arm.latency_mean_ms,
        queue_ms=arm.queue_ms,
        compute_ms=arm.compute_ms,
        latency_histogram=histogram,
        p99_window_seconds=scenario.p99_window_seconds,
    )


class Replay:
    """One policy's pass over a scenario: per-tick increments with sliding-window sums."""

    def __init__(self, scenario: Scenario, start: datetime) -> None:
        self.scenario = scenario
        self.start = start
        self.weights: list[int] = []  # the weight each observed tick was realised at
        self.deltas: list[tuple[ArmObservation, ArmObservation]] = []
        self._fixed = list(deltas(scenario)) if scenario.model is None else None
        self._realised: list[tuple[RealisedArm, RealisedArm]] = []

    def __len__(self) -> int:
        return self.scenario.length

    def at(self, tick: int) -> datetime:
        """When tick ``tick`` (0-based) ends."""
        return self.start + timedelta(seconds=(tick + 1) * self.scenario.tick_seconds)

    def _window(self, tick: int, seconds: float, arm: int) -> WindowCounts:
        span = max(1, math.ceil(seconds / self.scenario.tick_seconds - 1e-9))
        first = max(0, tick - span + 1)
        chosen = [self.deltas[i][arm] for i in range(first, tick + 1)]
        return WindowCounts(sum(d.requests for d in chosen), sum(d.failures for d in chosen))

    def _cold_start(self, weight: int) -> Slowdown | None:
        """The candidate's cold start in the tick about to be realised at ``weight``."""
        model = self.scenario.model
        if model is None or weight <= 0:
            return None
        earlier = [w for w in self.weights if w > 0]
        if not earlier:
            return model.cold_start if model.cold_start.share > 0 else None
        if weight != self.weights[-1]:
            return model.step_start if model.step_start.share > 0 else None
        return None

    def _summary_p99(self, tick: int, arm: int) -> float | None:
        """The summary P99 read at the end of ``tick`` over this pass's requests."""
        window = self.scenario.p99_window
        assert window is not None
        seconds = self.scenario.tick_seconds
        end = (tick + 1) * seconds
        start = summary_window_start(end, window.seconds, window.age_buckets, window.phase_seconds)
        parts = []
        for past in range(max(0, math.floor(start / seconds)), tick + 1):
            realised = self._realised[past][arm]
            offset = past * seconds
            keep = realised.success_times + offset >= start
            parts.append(realised.success_latencies[keep])
        return sample_quantile(np.concatenate(parts) if parts else np.zeros(0), 0.99)

    def realised(self, tick: int) -> tuple[RealisedArm, RealisedArm]:
        """The requests behind an observed tick of an adaptive stream."""
        return self._realised[tick]

    def observe(
        self, tick: int, windows: Sequence[float] = (), weight: int | None = None
    ) -> tuple[ArmObservation, ArmObservation]:
        """(baseline, candidate) at the end of ``tick``, realised at ``weight`` (the plan's
        weight when None), with the given sliding windows. Ticks come in order."""
        if tick != len(self.deltas):
            raise ValueError(
                f"ticks are observed in order: expected {len(self.deltas)}, got {tick}"
            )
        if not 0 <= tick < len(self):
            raise IndexError(f"{self.scenario.name} has {len(self)} ticks, not {tick + 1}")
        chosen = self.scenario.weight_at(tick) if weight is None else weight
        if self._fixed is not None:
            pair = self._fixed[tick]
        else:
            realised = _realised(self.scenario, tick, chosen, self._cold_start(chosen))
            self._realised.append(realised)
            base, cand = (_observation(a, self.scenario) for a in realised)
            if self.scenario.p99_window is not None:
                base = replace(base, p99_ms=self._summary_p99(tick, 0))
                cand = replace(cand, p99_ms=self._summary_p99(tick, 1))
            pair = (base, cand)
        self.weights.append(chosen)
        self.deltas.append(pair)
        fixed = self._fixed is not None
        baseline, candidate = (
            replace(
                delta,
                # A recorded per-tick P99 without requests is noise; a summary still holds
                # the requests of its window.
                p99_ms=delta.p99_ms if delta.requests > 0 or not fixed else None,
                windows={w: self._window(tick, w, arm) for w in windows},
            )
            for arm, delta in enumerate(pair)
        )
        return baseline, candidate
