"""Scenario files: what Prometheus would have shown, tick by tick, for one rollout.

The format is documented in docs/scenario-format.md. A scenario holds its stream in one
of two forms:

* **fixed** (``ticks``): the counters each arm showed at the end of every tick, as
  Prometheus stores them. Counters are cumulative; a counter that goes down is a reset
  (a restarted pod), and the increase is then read the way Prometheus' ``increase()``
  reads it. The stream is replayed as recorded, whatever weight the policy is at: this
  is the form for telemetry recorded elsewhere, and every v1 file is one.
* **adaptive** (``model``): per tick, the service's traffic and what each arm would do
  with a request (failure ratio, latency distribution, output distribution, non-finite
  rate). ``gelu_lab.bench.replay`` draws the requests each arm receives at the weight the
  policy is at, with an RNG seeded by the scenario's seed, the tick and that weight, so a
  policy that extends a step keeps seeing the step's weight.
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
from gelu_rollout.analysis.tail_latency import LatencyHistogram

FORMAT = "gelu-rollout/scenario/v2"
FORMAT_V1 = "gelu-rollout/scenario/v1"
FORMATS = (FORMAT_V1, FORMAT)

Expected = Literal["promote", "rollback"]
Severity = Literal["none", "minor", "moderate", "severe"]


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with the file and field named."""


# --- Fixed streams -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmTick:
    """Cumulative counters of one arm at the end of a tick, and its P99 over the tick.

    ``duration_ms``, ``queue_ms`` and ``compute_ms`` are cumulative sums over the arm's
    successful requests (Triton's ``nv_inference_request_duration_us`` and its parts, in
    ms); ``latency_histogram`` is the cumulative count of requests per latency bucket (a
    Gateway's ``_bucket`` series, per bucket, not le-cumulative). Each is optional.
    """

    requests: float
    failures: float
    nonfinite: float
    histogram: tuple[float, ...]  # cumulative count per bucket (not le-cumulative)
    p99_ms: float | None  # None: no latency sample in this tick
    duration_ms: float | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    latency_histogram: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Tick:
    baseline: ArmTick
    candidate: ArmTick


@dataclass(frozen=True)
class StepPlan:
    weight: int
    ticks: int


# --- Adaptive streams --------------------------------------------------------------------------


@dataclass(frozen=True)
class Slowdown:
    """A share of an arm's requests taking ``factor`` times as long (a cold start)."""

    share: float = 0.0
    factor: float = 1.0


@dataclass(frozen=True)
class ArmModel:
    """What one arm does with a request during one tick.

    Latency is a two-piece log-normal: median ``median_ms``, log-sd ``log_sd`` below the
    median and ``tail_log_sd`` above it (equal for a plain log-normal; larger for a
    regression of the tail only), then a share ``slow_share`` of the requests is slowed by
    ``slow_factor`` (a GC pause, a restart). ``queue_share`` of the mean is queueing, the
    rest compute. Outputs are drawn from the mixture ``output_mix`` of the stream's output
    components; each output is non-finite with probability ``nonfinite_rate``.
    """

    failure_ratio: float
    median_ms: float
    log_sd: float
    tail_log_sd: float
    output_mix: tuple[float, ...]
    slow_share: float = 0.0
    slow_factor: float = 1.0
    queue_share: float = 0.1
    nonfinite_rate: float = 0.0


@dataclass(frozen=True)
class ModelTick:
    """One tick of an adaptive stream: the service's requests and each arm's behaviour."""

    requests: float  # all of the service's requests in the tick, whoever serves them
    baseline: ArmModel
    candidate: ArmModel


@dataclass(frozen=True)
class StreamModel:
    """An adaptive stream: realised by the replay at the weight a policy is at."""

    seed: int
    outputs_per_request: int
    output_components: tuple[tuple[float, ...], ...]  # bucket probabilities, one per component
    ticks: tuple[ModelTick, ...]
    cold_start: Slowdown = Slowdown()  # the candidate's first tick with traffic
    step_start: Slowdown = Slowdown()  # the candidate's first tick at each later weight


@dataclass(frozen=True)
class P99Window:
    """Where a tick's P99 comes from: a summary over a sliding window of ``seconds``.

    As in prometheus-cpp (Triton's summaries): ``age_buckets`` buckets rotated every
    ``seconds / age_buckets``, the first rotation ``phase_seconds`` after the stream starts;
    a quantile read at time T covers the requests since the start of the oldest bucket,
    between ``seconds - seconds / age_buckets`` and ``seconds`` before T. Absent from a
    scenario: the P99 of the tick's own requests.
    """

    seconds: float = 60.0
    age_buckets: int = 5
    phase_seconds: float = 0.0


# --- The scenario ------------------------------------------------------------------------------


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
    ticks: tuple[Tick, ...]  # a fixed stream; empty when ``model`` is set
    notes: tuple[str, ...] = field(default=())
    labels: Mapping[str, str] = field(default_factory=dict)
    latency_bounds: tuple[float, ...] | None = None  # latency histogram edges (ms)
    p99_window: P99Window | None = None  # None: a tick's P99 covers that tick only
    model: StreamModel | None = None  # an adaptive stream

    @property
    def adaptive(self) -> bool:
        return self.model is not None

    @property
    def length(self) -> int:
        """Ticks in the stream (planned ticks plus whatever follows)."""
        return len(self.model.ticks) if self.model is not None else len(self.ticks)

    @property
    def planned_ticks(self) -> int:
        return sum(step.ticks for step in self.steps)

    @property
    def p99_window_seconds(self) -> float:
        return self.p99_window.seconds if self.p99_window is not None else self.tick_seconds

    def weight_at(self, tick: int) -> int:
        """The plan's traffic weight at a tick; ticks past the plan keep the last weight."""
        end = 0
        for step in self.steps:
            end += step.ticks
            if tick < end:
                return step.weight
        return self.steps[-1].weight


def counter_increase(previous: float, current: float) -> float:
    """Increase of a counter between two samples; a drop means it was reset to zero."""
    return current - previous if current >= previous else current


def _optional_increase(previous: float | None, current: float | None) -> float | None:
    if current is None:
        return None
    return counter_increase(previous or 0.0, current)


def _arm_delta(previous: ArmTick | None, current: ArmTick, scenario: Scenario) -> ArmObservation:
    """The tick's increments; before the first tick every counter stood at zero."""
    before = previous or ArmTick(0.0, 0.0, 0.0, (0.0,) * len(current.histogram), None)
    requests = counter_increase(before.requests, current.requests)
    failures = counter_increase(before.failures, current.failures)
    successes = requests - failures

    def mean(previous_sum: float | None, current_sum: float | None) -> float | None:
        increase = _optional_increase(previous_sum, current_sum)
        return increase / successes if increase is not None and successes > 0 else None

    latency: LatencyHistogram | None = None
    if scenario.latency_bounds is not None and current.latency_histogram is not None:
        earlier = before.latency_histogram or (0.0,) * len(current.latency_histogram)
        latency = LatencyHistogram(
            scenario.latency_bounds,
            tuple(
                counter_increase(a, b)
                for a, b in zip(earlier, current.latency_histogram, strict=True)
            ),
        )
    return ArmObservation(
        requests,
        failures,
        counter_increase(before.nonfinite, current.nonfinite),
        tuple(
            counter_increase(a, b) for a, b in zip(before.histogram, current.histogram, strict=True)
        ),
        current.p99_ms,
        latency_mean_ms=mean(before.duration_ms, current.duration_ms),
        queue_ms=mean(before.queue_ms, current.queue_ms),
        compute_ms=mean(before.compute_ms, current.compute_ms),
        latency_histogram=latency,
        p99_window_seconds=scenario.p99_window_seconds,
    )


def deltas(scenario: Scenario) -> Iterator[tuple[ArmObservation, ArmObservation]]:
    """Per-tick increments of (baseline, candidate) of a fixed stream.

    An adaptive stream has no increments of its own: they depend on the weight a policy
    is at, so it is realised by ``gelu_lab.bench.replay.Replay``.
    """
    if scenario.model is not None:
        raise ValueError(f"{scenario.name}: an adaptive stream is realised by Replay")
    previous: Tick | None = None
    for tick in scenario.ticks:
        yield (
            _arm_delta(previous.baseline if previous else None, tick.baseline, scenario),
            _arm_delta(previous.candidate if previous else None, tick.candidate, scenario),
        )
        previous = tick


# --- JSON ------------------------------------------------------------------------------------


def _arm_to_json(arm: ArmTick) -> dict[str, Any]:
    data: dict[str, Any] = {
        "requests": arm.requests,
        "failures": arm.failures,
        "nonfinite": arm.nonfinite,
        "histogram": list(arm.histogram),
        "p99Ms": arm.p99_ms,
    }
    for key, value in (
        ("durationMs", arm.duration_ms),
        ("queueMs", arm.queue_ms),
        ("computeMs", arm.compute_ms),
    ):
        if value is not None:
            data[key] = value
    if arm.latency_histogram is not None:
        data["latencyHistogram"] = list(arm.latency_histogram)
    return data


# JSON key and attribute of every ArmModel field, in the order they are written.
_ARM_MODEL_KEYS: tuple[tuple[str, str], ...] = (
    ("failureRatio", "failure_ratio"),
    ("medianMs", "median_ms"),
    ("logSd", "log_sd"),
    ("tailLogSd", "tail_log_sd"),
    ("outputMix", "output_mix"),
    ("slowShare", "slow_share"),
    ("slowFactor", "slow_factor"),
    ("queueShare", "queue_share"),
    ("nonfiniteRate", "nonfinite_rate"),
)
_ARM_MODEL_REQUIRED = ("failureRatio", "medianMs", "logSd", "outputMix")


def _arm_model_to_json(arm: ArmModel, previous: ArmModel | None) -> dict[str, Any]:
    """The fields that differ from the previous tick's (all of them on the first tick)."""
    data: dict[str, Any] = {}
    for key, attribute in _ARM_MODEL_KEYS:
        value = getattr(arm, attribute)
        if previous is not None and getattr(previous, attribute) == value:
            continue
        data[key] = list(value) if isinstance(value, tuple) else value
    return data


def _model_to_json(model: StreamModel) -> dict[str, Any]:
    ticks: list[dict[str, Any]] = []
    previous: ModelTick | None = None
    for tick in model.ticks:
        ticks.append(
            {
                "requests": tick.requests,
                "baseline": _arm_model_to_json(
                    tick.baseline, previous.baseline if previous else None
                ),
                "candidate": _arm_model_to_json(
                    tick.candidate, previous.candidate if previous else None
                ),
            }
        )
        previous = tick
    return {
        "seed": model.seed,
        "outputsPerRequest": model.outputs_per_request,
        "outputComponents": [list(c) for c in model.output_components],
        "coldStart": {"share": model.cold_start.share, "factor": model.cold_start.factor},
        "stepStart": {"share": model.step_start.share, "factor": model.step_start.factor},
        "ticks": ticks,
    }


def scenario_to_json(scenario: Scenario) -> dict[str, Any]:
    data: dict[str, Any] = {
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
    }
    if scenario.labels:
        data["labels"] = dict(scenario.labels)
    if scenario.latency_bounds is not None:
        data["latencyBounds"] = list(scenario.latency_bounds)
    if scenario.p99_window is not None:
        window = scenario.p99_window
        data["p99Window"] = {
            "seconds": window.seconds,
            "ageBuckets": window.age_buckets,
            "phaseSeconds": window.phase_seconds,
        }
    if scenario.model is not None:
        data["model"] = _model_to_json(scenario.model)
    else:
        data["ticks"] = [
            {"baseline": _arm_to_json(t.baseline), "candidate": _arm_to_json(t.candidate)}
            for t in scenario.ticks
        ]
    return data


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

    def number(
        self,
        value: Any,
        path: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.fail(path, f"must be a finite number, got {value!r}")
            return 0.0 if minimum is None else minimum
        if minimum is not None and value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(path, f"must be at most {maximum}, got {value}")
        return float(value)

    def positive(self, value: Any, path: str) -> float:
        number = self.number(value, path)
        if number <= 0:
            self.fail(path, f"must be above 0, got {value}")
            return 1.0
        return number

    def optional_number(self, value: Any, path: str) -> float | None:
        return None if value is None else self.number(value, path, minimum=0.0)

    def integer(self, value: Any, path: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {value!r}")
            return minimum
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return value

    def counts(self, value: Any, path: str, length: int, what: str) -> tuple[float, ...]:
        if not isinstance(value, list) or len(value) != length:
            self.fail(path, f"must be a list of {length} {what}")
            return (0.0,) * length
        return tuple(self.number(c, f"{path}[{i}]", minimum=0) for i, c in enumerate(value))

    def bounds(self, value: Any, path: str, *, positive: bool = False) -> tuple[float, ...]:
        if not isinstance(value, list) or not value:
            self.fail(path, "must be a non-empty list of bucket upper bounds")
            return ()
        bounds = tuple(self.number(b, f"{path}[{i}]") for i, b in enumerate(value))
        if any(b2 <= b1 for b1, b2 in pairwise(bounds)):
            self.fail(path, "must increase strictly")
        if positive and any(b <= 0 for b in bounds):
            self.fail(path, "must be above 0 (milliseconds)")
        return bounds

    def arm(self, data: Any, path: str, buckets: int, latency_buckets: int | None) -> ArmTick:
        if not isinstance(data, Mapping):
            self.fail(path, "must be an object")
            return ArmTick(0, 0, 0, (0.0,) * buckets, None)
        counts = self.counts(
            self.get(data, "histogram", path),
            f"{path}.histogram",
            buckets,
            "counts (one per bucket)",
        )
        requests = self.number(self.get(data, "requests", path), f"{path}.requests", minimum=0)
        failures = self.number(self.get(data, "failures", path), f"{path}.failures", minimum=0)
        if failures > requests:
            self.fail(f"{path}.failures", f"{failures} failures exceed {requests} requests")
        latency: tuple[float, ...] | None = None
        if "latencyHistogram" in data:
            if latency_buckets is None:
                self.fail(f"{path}.latencyHistogram", "needs latencyBounds at the top level")
            else:
                latency = self.counts(
                    data["latencyHistogram"],
                    f"{path}.latencyHistogram",
                    latency_buckets,
                    "counts (one per latency bucket)",
                )
        return ArmTick(
            requests=requests,
            failures=failures,
            nonfinite=self.number(data.get("nonfinite", 0), f"{path}.nonfinite", minimum=0),
            histogram=counts,
            p99_ms=self.optional_number(data.get("p99Ms"), f"{path}.p99Ms"),
            duration_ms=self.optional_number(data.get("durationMs"), f"{path}.durationMs"),
            queue_ms=self.optional_number(data.get("queueMs"), f"{path}.queueMs"),
            compute_ms=self.optional_number(data.get("computeMs"), f"{path}.computeMs"),
            latency_histogram=latency,
        )

    def arm_model(
        self, data: Any, path: str, previous: ArmModel | None, components: int
    ) -> ArmModel | None:
        """One arm's model; absent fields carry over from ``previous`` (the earlier tick)."""
        if not isinstance(data, Mapping):
            self.fail(path, "must be an object")
            return previous
        known = {key for key, _ in _ARM_MODEL_KEYS}
        for key in data:
            if key not in known:
                self.fail(f"{path}.{key}", "is not a field of an arm's model")
        if previous is None:
            for key in _ARM_MODEL_REQUIRED:
                if key not in data:
                    self.fail(f"{path}.{key}", "is required on the first tick")
            if any(key not in data for key in _ARM_MODEL_REQUIRED):
                return None

        def value(key: str, attribute: str, default: Any) -> Any:
            if key in data:
                return data[key]
            return getattr(previous, attribute) if previous is not None else default

        mix_raw = value("outputMix", "output_mix", None)
        if isinstance(mix_raw, tuple):
            mix = mix_raw
        else:
            mix = self.counts(mix_raw, f"{path}.outputMix", components, "mixture weights")
            if sum(mix) <= 0:
                self.fail(f"{path}.outputMix", "must have a positive weight")
        log_sd = self.number(value("logSd", "log_sd", 0.0), f"{path}.logSd", minimum=0)
        tail_default = log_sd if previous is None else previous.tail_log_sd
        return ArmModel(
            failure_ratio=self.number(
                value("failureRatio", "failure_ratio", 0.0),
                f"{path}.failureRatio",
                minimum=0,
                maximum=1,
            ),
            median_ms=self.positive(value("medianMs", "median_ms", 1.0), f"{path}.medianMs"),
            log_sd=log_sd,
            tail_log_sd=self.number(
                data.get("tailLogSd", tail_default), f"{path}.tailLogSd", minimum=0
            ),
            output_mix=mix,
            slow_share=self.number(
                value("slowShare", "slow_share", 0.0), f"{path}.slowShare", minimum=0, maximum=1
            ),
            slow_factor=self.positive(
                value("slowFactor", "slow_factor", 1.0), f"{path}.slowFactor"
            ),
            queue_share=self.number(
                value("queueShare", "queue_share", 0.1), f"{path}.queueShare", minimum=0, maximum=1
            ),
            nonfinite_rate=self.number(
                value("nonfiniteRate", "nonfinite_rate", 0.0),
                f"{path}.nonfiniteRate",
                minimum=0,
                maximum=1,
            ),
        )

    def slowdown(self, data: Any, path: str) -> Slowdown:
        if data is None:
            return Slowdown()
        if not isinstance(data, Mapping):
            self.fail(path, "must be an object with share and factor")
            return Slowdown()
        return Slowdown(
            share=self.number(data.get("share", 0.0), f"{path}.share", minimum=0, maximum=1),
            factor=self.positive(data.get("factor", 1.0), f"{path}.factor"),
        )

    def model(self, data: Any, buckets: int) -> StreamModel | None:
        if not isinstance(data, Mapping):
            self.fail("model", "must be an object")
            return None
        seed = self.integer(self.get(data, "seed", "model"), "model.seed", minimum=0)
        per_request = self.integer(
            data.get("outputsPerRequest", 1), "model.outputsPerRequest", minimum=1
        )
        components_raw = self.get(data, "outputComponents", "model")
        components: list[tuple[float, ...]] = []
        if not isinstance(components_raw, list) or not components_raw:
            self.fail("model.outputComponents", "must be a non-empty list of bucket probabilities")
        else:
            for i, component in enumerate(components_raw):
                probabilities = self.counts(
                    component,
                    f"model.outputComponents[{i}]",
                    buckets,
                    "probabilities (one per bucket)",
                )
                if sum(probabilities) <= 0:
                    self.fail(f"model.outputComponents[{i}]", "must have a positive entry")
                components.append(probabilities)
        ticks: list[ModelTick] = []
        ticks_raw = self.get(data, "ticks", "model")
        if not isinstance(ticks_raw, list) or not ticks_raw:
            self.fail("model.ticks", "must be a non-empty list")
        else:
            base: ArmModel | None = None
            cand: ArmModel | None = None
            for i, tick in enumerate(ticks_raw):
                path = f"model.ticks[{i}]"
                if not isinstance(tick, Mapping):
                    self.fail(path, "must be an object with requests, baseline and candidate")
                    continue
                requests = self.number(
                    self.get(tick, "requests", path), f"{path}.requests", minimum=0
                )
                base = self.arm_model(
                    tick.get("baseline"), f"{path}.baseline", base, len(components)
                )
                cand = self.arm_model(
                    tick.get("candidate"), f"{path}.candidate", cand, len(components)
                )
                if base is not None and cand is not None:
                    ticks.append(ModelTick(requests, base, cand))
        return StreamModel(
            seed=seed,
            outputs_per_request=per_request,
            output_components=tuple(components),
            ticks=tuple(ticks),
            cold_start=self.slowdown(data.get("coldStart"), "model.coldStart"),
            step_start=self.slowdown(data.get("stepStart"), "model.stepStart"),
        )

    def p99_window(self, data: Any, tick_seconds: float) -> P99Window | None:
        if data is None:
            return None
        if not isinstance(data, Mapping):
            self.fail("p99Window", "must be an object with seconds, ageBuckets, phaseSeconds")
            return None
        seconds = self.number(data.get("seconds", 60.0), "p99Window.seconds")
        if seconds < tick_seconds:
            self.fail("p99Window.seconds", f"must be at least tickSeconds ({tick_seconds:g})")
        buckets = self.integer(data.get("ageBuckets", 5), "p99Window.ageBuckets", minimum=1)
        phase = self.number(data.get("phaseSeconds", 0.0), "p99Window.phaseSeconds", minimum=0)
        return P99Window(seconds, buckets, phase)


def scenario_from_json(data: Any, source: str = "<scenario>") -> Scenario:
    """Parse a scenario document (v1 or v2); raises ScenarioError listing every problem."""
    r = _Reader(source)
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: a scenario must be a JSON object")
    version = data.get("format")
    if version not in FORMATS:
        r.fail("format", f"must be {FORMAT!r} (or {FORMAT_V1!r}), got {version!r}")
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
    bounds = r.bounds(r.get(data, "histogramBounds", ""), "histogramBounds")
    buckets = len(bounds) + 1  # the last bucket is (last bound, +Inf)
    v2 = version == FORMAT
    for key in ("labels", "latencyBounds", "p99Window", "model"):
        if key in data and not v2:
            r.fail(key, f"is a {FORMAT} field: set format to {FORMAT!r}")
    latency_bounds: tuple[float, ...] | None = None
    if data.get("latencyBounds") is not None:
        latency_bounds = r.bounds(data["latencyBounds"], "latencyBounds", positive=True)
    latency_buckets = None if latency_bounds is None else len(latency_bounds) + 1
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
            if steps[-1].weight > 100:
                r.fail(f"steps[{i}].weight", f"must be at most 100, got {steps[-1].weight}")
    ticks: list[Tick] = []
    model: StreamModel | None = None
    if "model" in data and "ticks" in data:
        r.fail("model", "a scenario holds either ticks (fixed) or model (adaptive), not both")
    elif "model" in data:
        model = r.model(data["model"], buckets)
    else:
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
                        baseline=r.arm(
                            tick.get("baseline"), f"ticks[{i}].baseline", buckets, latency_buckets
                        ),
                        candidate=r.arm(
                            tick.get("candidate"),
                            f"ticks[{i}].candidate",
                            buckets,
                            latency_buckets,
                        ),
                    )
                )
    tick_seconds = r.number(data.get("tickSeconds", 60), "tickSeconds", minimum=1)
    window = r.p99_window(data.get("p99Window"), tick_seconds)
    ceiling_ms = r.number(slo.get("latencyP99Ms", 250), "slo.latencyP99Ms")
    if ceiling_ms <= 0:
        r.fail("slo.latencyP99Ms", f"must be above 0, got {ceiling_ms}")
    onset_raw = data.get("faultOnsetTick")
    onset = None if onset_raw is None else r.integer(onset_raw, "faultOnsetTick", minimum=0)
    if expected == "rollback" and onset is None:
        r.fail("faultOnsetTick", "is required when expected is 'rollback'")
    labels_raw = data.get("labels", {})
    if not isinstance(labels_raw, Mapping) or not all(
        isinstance(v, str) for v in labels_raw.values()
    ):
        r.fail("labels", "must be an object of strings")
        labels_raw = {}
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
        labels={str(k): v for k, v in labels_raw.items()},
        latency_bounds=latency_bounds,
        p99_window=window,
        model=model,
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
