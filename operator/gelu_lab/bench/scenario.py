"""Scenario files: what Prometheus would have shown, tick by tick, for one rollout.

The format is documented in docs/scenario-format.md. Counters are cumulative, as
Prometheus stores them; a counter that goes down is a reset (a restarted pod),
and the increase is then read the way Prometheus' ``increase()`` reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from gelu_rollout.analysis.observations import ArmObservation

FORMAT = "gelu-rollout/scenario/v1"

Expected = Literal["promote", "rollback"]
Severity = Literal["none", "minor", "moderate", "severe"]


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with the file and field named."""


@dataclass(frozen=True)
class ArmTick:
    """Cumulative counters of one arm at the end of a tick, and its P99 over the tick."""

    requests: float
    failures: float
    nonfinite: float
    histogram: tuple[float, ...]  # cumulative count per bucket (not le-cumulative)
    p99_ms: float | None  # None: no latency sample in this tick


@dataclass(frozen=True)
class Tick:
    baseline: ArmTick
    candidate: ArmTick


@dataclass(frozen=True)
class StepPlan:
    weight: int
    ticks: int


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "healthy" or a fault kind such as "errors-10x"
    severity: Severity
    expected: Expected
    tick_seconds: float
    fault_onset_tick: int | None
    availability_slo: float
    latency_p99_ceiling_ms: float
    histogram_bounds: tuple[float, ...]  # upper bounds; the last bucket is +Inf
    steps: tuple[StepPlan, ...]
    ticks: tuple[Tick, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def planned_ticks(self) -> int:
        return sum(step.ticks for step in self.steps)

    def weight_at(self, tick: int) -> int:
        """The candidate's traffic weight at a tick; ticks past the plan keep the last weight."""
        end = 0
        for step in self.steps:
            end += step.ticks
            if tick < end:
                return step.weight
        return self.steps[-1].weight


def counter_increase(previous: float, current: float) -> float:
    """Increase of a counter between two samples; a drop means it was reset to zero."""
    return current - previous if current >= previous else current


def _arm_delta(previous: ArmTick | None, current: ArmTick) -> ArmObservation:
    """The tick's increments; before the first tick every counter stood at zero."""
    before = previous or ArmTick(0.0, 0.0, 0.0, (0.0,) * len(current.histogram), None)
    return ArmObservation(
        counter_increase(before.requests, current.requests),
        counter_increase(before.failures, current.failures),
        counter_increase(before.nonfinite, current.nonfinite),
        tuple(
            counter_increase(a, b) for a, b in zip(before.histogram, current.histogram, strict=True)
        ),
        current.p99_ms,
    )


def deltas(scenario: Scenario) -> Iterator[tuple[ArmObservation, ArmObservation]]:
    """Per-tick increments of (baseline, candidate)."""
    previous: Tick | None = None
    for tick in scenario.ticks:
        yield (
            _arm_delta(previous.baseline if previous else None, tick.baseline),
            _arm_delta(previous.candidate if previous else None, tick.candidate),
        )
        previous = tick


# --- JSON ------------------------------------------------------------------------------------


def _arm_to_json(arm: ArmTick) -> dict[str, Any]:
    return {
        "requests": arm.requests,
        "failures": arm.failures,
        "nonfinite": arm.nonfinite,
        "histogram": list(arm.histogram),
        "p99Ms": arm.p99_ms,
    }


def scenario_to_json(scenario: Scenario) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": scenario.name,
        "kind": scenario.kind,
        "severity": scenario.severity,
        "expected": scenario.expected,
        "tickSeconds": scenario.tick_seconds,
        "faultOnsetTick": scenario.fault_onset_tick,
        "slo": {
            "availability": scenario.availability_slo,
            "latencyP99Ms": scenario.latency_p99_ceiling_ms,
        },
        "histogramBounds": list(scenario.histogram_bounds),
        "steps": [{"weight": s.weight, "ticks": s.ticks} for s in scenario.steps],
        "notes": list(scenario.notes),
        "ticks": [
            {"baseline": _arm_to_json(t.baseline), "candidate": _arm_to_json(t.candidate)}
            for t in scenario.ticks
        ],
    }


class _Reader:
    """Collects every problem in a scenario document before failing."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def get(self, data: Mapping[str, Any], key: str, path: str) -> Any:
        if key not in data:
            self.fail(f"{path}.{key}" if path else key, "is required")
            return None
        return data[key]

    def number(self, value: Any, path: str, *, minimum: float | None = None) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.fail(path, f"must be a finite number, got {value!r}")
            return 0.0
        if minimum is not None and value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return float(value)

    def optional_number(self, value: Any, path: str) -> float | None:
        return None if value is None else self.number(value, path, minimum=0.0)

    def integer(self, value: Any, path: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {value!r}")
            return minimum
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return value

    def arm(self, data: Any, path: str, buckets: int) -> ArmTick:
        if not isinstance(data, Mapping):
            self.fail(path, "must be an object")
            return ArmTick(0, 0, 0, (0.0,) * buckets, None)
        histogram = self.get(data, "histogram", path)
        counts: tuple[float, ...] = ()
        if not isinstance(histogram, list) or len(histogram) != buckets:
            self.fail(f"{path}.histogram", f"must be a list of {buckets} counts (one per bucket)")
            counts = (0.0,) * buckets
        else:
            counts = tuple(
                self.number(c, f"{path}.histogram[{i}]", minimum=0) for i, c in enumerate(histogram)
            )
        requests = self.number(self.get(data, "requests", path), f"{path}.requests", minimum=0)
        failures = self.number(self.get(data, "failures", path), f"{path}.failures", minimum=0)
        if failures > requests:
            self.fail(f"{path}.failures", f"{failures} failures exceed {requests} requests")
        return ArmTick(
            requests=requests,
            failures=failures,
            nonfinite=self.number(data.get("nonfinite", 0), f"{path}.nonfinite", minimum=0),
            histogram=counts,
            p99_ms=self.optional_number(data.get("p99Ms"), f"{path}.p99Ms"),
        )


def scenario_from_json(data: Any, source: str = "<scenario>") -> Scenario:
    """Parse a scenario document; raises ScenarioError listing every problem."""
    r = _Reader(source)
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: a scenario must be a JSON object")
    if data.get("format") != FORMAT:
        r.fail("format", f"must be {FORMAT!r}, got {data.get('format')!r}")
    expected = data.get("expected")
    if expected not in ("promote", "rollback"):
        r.fail("expected", f"must be 'promote' or 'rollback', got {expected!r}")
    severity = data.get("severity", "none" if expected == "promote" else "moderate")
    if severity not in ("none", "minor", "moderate", "severe"):
        r.fail("severity", f"must be none, minor, moderate or severe, got {severity!r}")
    slo = data.get("slo") or {}
    availability = r.number(slo.get("availability", 0.999), "slo.availability")
    if not 0.5 < availability < 1:
        r.fail("slo.availability", f"must be between 0.5 and 1 (exclusive), got {availability}")
    bounds_raw = r.get(data, "histogramBounds", "")
    bounds: tuple[float, ...] = ()
    if not isinstance(bounds_raw, list) or not bounds_raw:
        r.fail("histogramBounds", "must be a non-empty list of bucket upper bounds")
    else:
        bounds = tuple(r.number(b, f"histogramBounds[{i}]") for i, b in enumerate(bounds_raw))
        if any(b2 <= b1 for b1, b2 in pairwise(bounds)):
            r.fail("histogramBounds", "must increase strictly")
    buckets = len(bounds) + 1  # the last bucket is (last bound, +Inf)
    steps: list[StepPlan] = []
    steps_raw = r.get(data, "steps", "")
    if not isinstance(steps_raw, list) or not steps_raw:
        r.fail("steps", "must be a non-empty list of {weight, ticks}")
    else:
        for i, step in enumerate(steps_raw):
            if not isinstance(step, Mapping):
                r.fail(f"steps[{i}]", "must be an object with weight and ticks")
                continue
            steps.append(
                StepPlan(
                    weight=r.integer(step.get("weight"), f"steps[{i}].weight", minimum=1),
                    ticks=r.integer(step.get("ticks"), f"steps[{i}].ticks", minimum=1),
                )
            )
    ticks: list[Tick] = []
    ticks_raw = r.get(data, "ticks", "")
    if not isinstance(ticks_raw, list) or not ticks_raw:
        r.fail("ticks", "must be a non-empty list")
    else:
        for i, tick in enumerate(ticks_raw):
            if not isinstance(tick, Mapping):
                r.fail(f"ticks[{i}]", "must be an object with baseline and candidate")
                continue
            ticks.append(
                Tick(
                    baseline=r.arm(tick.get("baseline"), f"ticks[{i}].baseline", buckets),
                    candidate=r.arm(tick.get("candidate"), f"ticks[{i}].candidate", buckets),
                )
            )
    tick_seconds = r.number(data.get("tickSeconds", 60), "tickSeconds", minimum=1)
    ceiling_ms = r.number(slo.get("latencyP99Ms", 250), "slo.latencyP99Ms")
    if ceiling_ms <= 0:
        r.fail("slo.latencyP99Ms", f"must be above 0, got {ceiling_ms}")
    onset_raw = data.get("faultOnsetTick")
    onset = None if onset_raw is None else r.integer(onset_raw, "faultOnsetTick", minimum=0)
    if expected == "rollback" and onset is None:
        r.fail("faultOnsetTick", "is required when expected is 'rollback'")
    if r.problems:
        listing = "\n  ".join(r.problems)
        raise ScenarioError(f"{source}: invalid scenario:\n  {listing}")
    return Scenario(
        name=str(data.get("name", Path(source).stem)),
        kind=str(data.get("kind", "healthy" if expected == "promote" else "unknown")),
        severity=severity,
        expected="promote" if expected == "promote" else "rollback",
        tick_seconds=tick_seconds,
        fault_onset_tick=onset,
        availability_slo=availability,
        latency_p99_ceiling_ms=ceiling_ms,
        histogram_bounds=bounds,
        steps=tuple(steps),
        ticks=tuple(ticks),
        notes=tuple(str(n) for n in data.get("notes", [])),
    )


def load_scenario(path: Path) -> Scenario:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ScenarioError(f"{path}: cannot read scenario: {error}") from error
    return scenario_from_json(data, str(path))


def load_scenarios(directory: Path) -> list[Scenario]:
    """Every ``*.json`` scenario under a directory, in name order."""
    if not directory.is_dir():
        raise ScenarioError(f"{directory}: not a directory of scenario files")
    paths = sorted(directory.rglob("*.json"))
    if not paths:
        raise ScenarioError(f"{directory}: holds no *.json scenario files")
    return [load_scenario(p) for p in paths]


def save_scenarios(scenarios: Sequence[Scenario], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        path = directory / f"{scenario.name}.json"
        path.write_text(json.dumps(scenario_to_json(scenario), separators=(",", ":")))
