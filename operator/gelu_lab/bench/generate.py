"""A seeded generator of rollout scenarios: healthy ones with realistic noise, and faults.

Every generated scenario is an *adaptive* stream (docs/scenario-format.md): per tick, the
service's requests and what the baseline and the candidate arm do with a request. The
replay draws the requests at the weight a policy is at, so a policy that waits keeps its
weight. Two families:

* ``classic``: one-minute ticks, steps of 10/25/50% for five ticks each, 20 to 400
  requests/s (and a low-traffic group of healthy rollouts at 1 to 8), a per-tick P99 of
  the tick's own requests, no latency histogram, 8 outputs per request;
* ``short``: ten-second ticks, steps of 5/25/50% for twelve ticks each, 20, 50, 100 or
  150 requests/s, 16 outputs per request, a latency histogram with a Gateway's fine
  buckets or Istio's coarse default ones (or none), and Triton's summary P99 over a 60 s
  sliding window (or the tick's own P99).

The noise a healthy rollout meets in production is simulated on purpose, because it is
what makes naive policies roll back good candidates:

* load shared by both arms (a common load factor per tick; bursty for some), moving the
  request counts, the latency and the share of it spent queueing;
* per-request log-normal latencies (log-sd 0.3 to 0.6), GC-like pauses slowing a few
  percent of an arm's requests, a cold start of the candidate's pods on its first tick
  and a smaller one at each step, a pod restart in 30% (slow and failed in-flight
  requests);
* failures drawn with over-dispersion, and incidents shared by both arms;
* output histograms drawn per tick from an input mix that drifts over time, the same for
  both arms;
* healthy candidates that differ from the baseline by less than the tolerances (a few
  percent latency, KL up to 0.004, error ratio within 1.5x).

Streams end where the plan ends plus the extensions a policy may take: every step may run
``maxExtensionSeconds`` (the gelu-rollout spec's default) past its analysis time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from gelu_lab.bench.scenario import (
    ArmModel,
    ModelTick,
    P99Window,
    Scenario,
    Severity,
    Slowdown,
    StepPlan,
    StreamModel,
)
from gelu_rollout.spec.model import InsufficientDataSpec

FloatArray = npt.NDArray[np.float64]

AVAILABILITY = 0.999
BUDGET = 1.0 - AVAILABILITY
LATENCY_CEILING_MS = 250.0
HISTOGRAM_BOUNDS = tuple(float(x) for x in np.round(np.linspace(-2.0, 4.0, 19), 3))
MAX_EXTENSION_SECONDS = InsufficientDataSpec().max_extension_seconds
Z99 = float(special.ndtri(0.99))

# Latency bucket layouts (ms). Fine: exponential buckets 2^(1/4) apart (about 19%) from
# 1 ms to 16 s, as a Gateway or mesh can be configured to export (Prometheus' native
# histograms at schema 2 use the same boundaries). Coarse: Istio's default buckets.
FINE_LATENCY_BOUNDS = tuple(round(2.0 ** (k / 4.0), 4) for k in range(57))
ISTIO_LATENCY_BOUNDS = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                        5000.0, 10000.0)  # fmt: skip
SUMMARY = P99Window(seconds=60.0, age_buckets=5)  # Triton 2.51 / prometheus-cpp defaults


@dataclass(frozen=True)
class Fault:
    kind: str
    severity: Severity
    description: str


@dataclass(frozen=True)
class Family:
    """A kind of rollout: its tick, its plan, its traffic and its faults."""

    name: str
    tick_seconds: float
    steps: tuple[StepPlan, ...]
    faults: tuple[Fault, ...]
    outputs_per_request: int
    onset_ticks: int  # a fault starts at a tick drawn from [0, onset_ticks)
    description: str

    @property
    def planned_ticks(self) -> int:
        return sum(s.ticks for s in self.steps)

    @property
    def stream_ticks(self) -> int:
        """The plan, plus every step's ``maxExtensionSeconds``."""
        extension = math.ceil(MAX_EXTENSION_SECONDS / self.tick_seconds - 1e-9)
        return self.planned_ticks + len(self.steps) * extension


FAULTS: tuple[Fault, ...] = (
    Fault("errors-3x", "moderate", "candidate failure ratio at 3x the error budget"),
    Fault("errors-10x", "severe", "candidate failure ratio at 10x the error budget"),
    Fault("errors-30x", "severe", "candidate failure ratio at 30x the error budget"),
    Fault("slow-burn", "moderate", "failure ratio climbing from 1x to 4x the budget over 10 ticks"),
    Fault("latency-p99-10", "minor", "candidate latency +10% (at the default tolerance)"),
    Fault("latency-p99-25", "moderate", "candidate latency +25%, the whole distribution"),
    Fault("latency-p99-50", "moderate", "candidate latency +50%, the whole distribution"),
    Fault("drift-kl-0.02", "moderate", "output distribution drift, KL 0.02"),
    Fault("drift-kl-0.05", "severe", "output distribution drift, KL 0.05"),
    Fault("drift-kl-0.1", "severe", "output distribution drift, KL 0.1"),
    Fault("nan-burst", "severe", "bursts of NaN outputs (1% of outputs in a burst tick)"),
)
"""The classic family's faults (the ``replay`` demo's choices)."""

SHORT_FAULTS: tuple[Fault, ...] = (
    Fault("errors-3x", "moderate", "candidate failure ratio at 3x the error budget"),
    Fault("errors-10x", "severe", "candidate failure ratio at 10x the error budget"),
    Fault("errors-bursty", "moderate", "a fifth of the ticks at 25x the budget, the others clean"),
    Fault(
        "slow-burn-3x", "moderate", "failure ratio climbing from 1x to 3x the budget in 12 ticks"
    ),
    Fault("latency-p99-25", "moderate", "candidate latency +25%, the whole distribution"),
    Fault("tail-p99-35", "moderate", "candidate P99 +35% with the median unchanged"),
    Fault("latency-5x", "severe", "candidate latency 5x"),
    Fault("nan-1e-5", "severe", "NaN in 1 of 100,000 outputs"),
    Fault("nan-burst", "severe", "bursts of NaN outputs (1% of outputs in a burst tick)"),
    Fault("drift-kl-0.02", "moderate", "output distribution drift, KL 0.02"),
    Fault("drift-kl-0.1", "severe", "output distribution drift, KL 0.1"),
)

CLASSIC = Family(
    name="classic",
    tick_seconds=60.0,
    steps=(StepPlan(10, 5), StepPlan(25, 5), StepPlan(50, 5)),
    faults=FAULTS,
    outputs_per_request=8,
    onset_ticks=10,
    description="1 min ticks, 10/25/50% x 5 ticks, 20-400 req/s (healthy also 1-8), "
    "per-tick P99, no latency histogram",
)
SHORT = Family(
    name="short",
    tick_seconds=10.0,
    steps=(StepPlan(5, 12), StepPlan(25, 12), StepPlan(50, 12)),
    faults=SHORT_FAULTS,
    outputs_per_request=16,
    onset_ticks=24,
    description="10 s ticks, 5/25/50% x 12 ticks, 20/50/100/150 req/s, latency histogram "
    "(fine, Istio coarse or none), 60 s summary P99 or per-tick P99",
)
FAMILIES: dict[str, Family] = {f.name: f for f in (CLASSIC, SHORT)}
SHORT_TRAFFIC_LEVELS = (20.0, 50.0, 100.0, 150.0)
FAULT_KINDS = tuple(dict.fromkeys(f.kind for family in FAMILIES.values() for f in family.faults))


def _r(x: float) -> float:
    """Six significant digits: what the generator writes into a scenario."""
    return float(f"{x:.6g}")


def _bucket_probabilities(mean: float, sd: float, skew_mass: float) -> FloatArray:
    """Bucket probabilities of a skewed output distribution (a GELU block's outputs)."""
    edges = np.concatenate(([-np.inf], np.asarray(HISTOGRAM_BOUNDS), [np.inf]))
    core = np.diff(special.ndtr((edges - mean) / sd))
    tail = np.diff(special.ndtr((edges - (mean + 2.0 * sd)) / (1.5 * sd)))
    p = (1.0 - skew_mass) * core + skew_mass * tail
    p = np.maximum(p, 1e-7)
    return np.asarray(p / p.sum())


def _kl(p: FloatArray, q: FloatArray) -> float:
    return float(special.rel_entr(p, q).sum())


def _tilt(p: FloatArray, direction: FloatArray, beta: float) -> FloatArray:
    q = p * np.exp(beta * direction)
    return np.asarray(q / q.sum())


def tilt_to_kl(p: FloatArray, direction: FloatArray, target: float) -> float:
    """The tilt strength beta at which KL(p || tilt(p, beta)) equals ``target``."""
    if target <= 0:
        return 0.0
    low, high = 0.0, 1.0
    while _kl(p, _tilt(p, direction, high)) < target:
        high *= 2.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if _kl(p, _tilt(p, direction, mid)) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _tilted_mix(
    mix: float, a: FloatArray, b: FloatArray, direction: FloatArray, beta: float
) -> tuple[float, float]:
    """Weights on (tilt(a), tilt(b)) whose mixture is tilt(mix a + (1 - mix) b)."""
    za = float((a * np.exp(beta * direction)).sum())
    zb = float((b * np.exp(beta * direction)).sum())
    wa, wb = mix * za, (1.0 - mix) * zb
    return wa / (wa + wb), wb / (wa + wb)


def _traffic_label(family: Family, rps: float) -> str:
    if family is SHORT:
        return f"{rps:g} req/s"
    if rps < 10:
        return "1-8 req/s"
    if rps < 50:
        return "20-50 req/s"
    return "50-150 req/s" if rps < 150 else "150-400 req/s"


def _failure_ratio(fault: Fault | None, t: int, onset: int | None, base: float) -> float:
    """The candidate's failure ratio before over-dispersion."""
    if fault is None or onset is None or t < onset:
        return base
    since = t - onset
    kind = fault.kind
    if kind in ("errors-3x", "errors-10x", "errors-30x"):
        return float(kind.split("-")[1].rstrip("x")) * BUDGET
    if kind == "slow-burn":
        return BUDGET * (1.0 + 3.0 * min(since / 10.0, 1.0))
    if kind == "slow-burn-3x":
        return BUDGET * (1.0 + 2.0 * min(since / 12.0, 1.0))
    return base


def _arm_model(
    ratio: float,
    median: float,
    log_sd: float,
    tail: float,
    outputs: tuple[float, ...],
    slowed: tuple[float, float] | None,
    nan_rate: float,
    queue_share: float,
) -> ArmModel:
    return ArmModel(
        failure_ratio=_r(min(ratio, 1.0)),
        median_ms=_r(median),
        log_sd=_r(log_sd),
        tail_log_sd=_r(tail),
        output_mix=tuple(_r(x) for x in outputs),
        slow_share=_r(slowed[0]) if slowed else 0.0,
        slow_factor=_r(slowed[1]) if slowed else 1.0,
        queue_share=_r(queue_share),
        nonfinite_rate=nan_rate,
    )


def _scenario(
    rng: np.random.Generator,
    name: str,
    fault: Fault | None,
    family: Family = CLASSIC,
    index: int = 0,
) -> Scenario:
    """One scenario of ``family`` (``fault`` None: healthy); ``index`` picks a traffic level."""
    tick_seconds = family.tick_seconds
    total_ticks = family.stream_ticks
    notes: list[str] = []
    labels: dict[str, str] = {"family": family.name}

    # Traffic: requests per second across the service.
    bursty = rng.random() < 0.25
    if family is SHORT:
        rps = SHORT_TRAFFIC_LEVELS[index % len(SHORT_TRAFFIC_LEVELS)]
        low_traffic = False
    else:
        low_traffic = fault is None and rng.random() < 0.15
        rps = (
            math.exp(rng.uniform(math.log(1.0), math.log(8.0)))
            if low_traffic
            else math.exp(rng.uniform(math.log(20.0), math.log(400.0)))
        )
    labels["traffic"] = _traffic_label(family, rps)
    labels["bursty"] = "yes" if bursty else "no"
    notes.append(f"{rps:.1f} requests/s{' (low traffic)' if low_traffic else ''}")
    if bursty:
        notes.append("bursty traffic")

    # Latency signals.
    latency_bounds: tuple[float, ...] | None = None
    window: P99Window | None = None
    if family is SHORT:
        layout = rng.random()
        if layout < 0.5:
            latency_bounds, labels["latencyBuckets"] = FINE_LATENCY_BOUNDS, "fine"
        elif layout < 0.75:
            latency_bounds, labels["latencyBuckets"] = ISTIO_LATENCY_BOUNDS, "istio-coarse"
        else:
            labels["latencyBuckets"] = "none"
        if rng.random() < 0.75:
            interval = SUMMARY.seconds / SUMMARY.age_buckets
            window = P99Window(SUMMARY.seconds, SUMMARY.age_buckets, _r(rng.uniform(0.0, interval)))
            labels["p99"] = "summary-60s"
        else:
            labels["p99"] = "tick"
    else:
        labels["latencyBuckets"] = "none"
        labels["p99"] = "tick"

    # Errors.
    base_ratio = math.exp(rng.uniform(math.log(0.1 * BUDGET), math.log(0.6 * BUDGET)))
    cand_ratio = base_ratio * rng.uniform(0.7, 1.5)
    shared_incident_tick = int(rng.integers(0, total_ticks)) if rng.random() < 0.15 else None
    if shared_incident_tick is not None:
        notes.append(f"incident shared by both arms at tick {shared_incident_tick}")

    # Latency: a P99 of 40 to 150 ms, log-sd 0.3 to 0.6.
    sigma = rng.uniform(0.3, 0.6)
    base_median = rng.uniform(40.0, 150.0) * math.exp(-Z99 * sigma)
    cand_median = base_median * rng.uniform(0.97, 1.03)
    cand_sigma = sigma * rng.uniform(0.98, 1.02)
    restart = (int(rng.integers(1, total_ticks)), "candidate" if rng.random() < 0.5 else "baseline")
    has_restart = rng.random() < 0.3
    if has_restart:
        notes.append(f"{restart[1]} pod restart at tick {restart[0]}")
    cold_start = Slowdown(_r(rng.uniform(0.1, 0.3)), _r(rng.uniform(2.0, 5.0)))
    step_start = Slowdown(_r(rng.uniform(0.02, 0.1)), _r(rng.uniform(1.2, 2.0)))

    # Outputs: two input regimes whose mix drifts; the candidate tilts both alike.
    regime_a = _bucket_probabilities(rng.uniform(0.2, 0.6), rng.uniform(0.6, 0.9), 0.1)
    regime_b = _bucket_probabilities(rng.uniform(0.8, 1.4), rng.uniform(0.7, 1.1), 0.2)
    centres = np.concatenate(([HISTOGRAM_BOUNDS[0] - 0.25], np.asarray(HISTOGRAM_BOUNDS) - 0.15))
    direction = (centres - centres.mean()) / centres.std()
    direction = direction + rng.normal(0.0, 0.5, size=direction.size)
    pooled = 0.5 * (regime_a + regime_b)
    healthy_beta = tilt_to_kl(pooled, direction, rng.uniform(0.0, 0.004))

    onset = None if fault is None else int(rng.integers(0, family.onset_ticks))
    fault_kl = float(fault.kind.split("-")[-1]) if fault and fault.kind.startswith("drift") else 0.0
    fault_beta = tilt_to_kl(pooled, direction, fault_kl) if fault_kl else 0.0
    components = (
        regime_a,
        regime_b,
        _tilt(regime_a, direction, healthy_beta),
        _tilt(regime_b, direction, healthy_beta),
        _tilt(regime_a, direction, fault_beta),
        _tilt(regime_b, direction, fault_beta),
    )

    mix = rng.uniform(0.3, 0.7)
    ticks: list[ModelTick] = []
    for t in range(total_ticks):
        faulty = fault is not None and onset is not None and t >= onset
        kind = fault.kind if faulty and fault is not None else ""
        load = math.exp(rng.normal(0.0, 0.3)) if bursty else math.exp(rng.normal(0.0, 0.08))
        if bursty and rng.random() < 0.1:
            load *= rng.uniform(2.0, 4.0)
        requests = float(rng.poisson(rps * tick_seconds * load))
        shared = load**0.15 * math.exp(rng.normal(0.0, 0.03))
        queue_share = min(max(0.08 + 0.25 * max(load - 1.0, 0.0), 0.05), 0.6)

        # Failures, over-dispersed per tick.
        ratio_b = base_ratio
        ratio_c = _failure_ratio(fault if faulty else None, t, onset, cand_ratio)
        if kind == "errors-bursty" and rng.random() < 0.2:
            ratio_c = 25.0 * BUDGET
        if shared_incident_tick == t:
            surge = rng.uniform(5.0, 30.0) * BUDGET
            ratio_b, ratio_c = ratio_b + surge, ratio_c + surge
        ratio_b *= rng.gamma(4.0, 0.25)
        ratio_c *= rng.gamma(4.0, 0.25)

        # Latency.
        median_b = base_median * shared
        median_c = cand_median * shared
        tail_c = cand_sigma
        if kind.startswith("latency-p99-"):
            median_c *= 1.0 + int(kind.rsplit("-", 1)[1]) / 100.0
        elif kind == "latency-5x":
            median_c *= 5.0
        elif kind == "tail-p99-35":
            tail_c = cand_sigma + math.log(1.35) / Z99
        slow: dict[str, tuple[float, float]] = {}
        for arm in ("baseline", "candidate"):
            if rng.random() < 0.05:  # a GC pause or a noisy neighbour
                slow[arm] = (rng.uniform(0.01, 0.03), rng.uniform(1.5, 3.0))
        if has_restart and t == restart[0]:
            # The restarted pod's in-flight requests fail (Little's law: rate x latency)
            # and the new one starts cold.
            slow[restart[1]] = (rng.uniform(0.1, 0.3), rng.uniform(1.5, 3.0))
            lost = base_median * math.exp(sigma**2 / 2.0) / 1000.0 / tick_seconds
            if restart[1] == "candidate":
                ratio_c += lost
            else:
                ratio_b += lost

        # Outputs.
        mix = float(np.clip(mix + rng.normal(0.0, 0.05), 0.1, 0.9))
        base_mix = (mix, 1.0 - mix, 0.0, 0.0, 0.0, 0.0)
        if faulty and fault_kl:
            wa, wb = _tilted_mix(mix, regime_a, regime_b, direction, fault_beta)
            cand_mix = (0.0, 0.0, 0.0, 0.0, wa, wb)
        else:
            wa, wb = _tilted_mix(mix, regime_a, regime_b, direction, healthy_beta)
            cand_mix = (0.0, 0.0, wa, wb, 0.0, 0.0)
        nonfinite = 0.0
        if kind == "nan-1e-5":
            nonfinite = 1e-5
        elif kind == "nan-burst" and (t == onset or rng.random() < 0.4):
            nonfinite = 0.01

        baseline = _arm_model(
            ratio_b, median_b, sigma, sigma, base_mix, slow.get("baseline"), 0.0, queue_share
        )
        candidate = _arm_model(
            ratio_c,
            median_c,
            cand_sigma,
            tail_c,
            cand_mix,
            slow.get("candidate"),
            nonfinite,
            queue_share,
        )
        ticks.append(ModelTick(requests, baseline, candidate))

    model = StreamModel(
        seed=int(rng.integers(0, 2**31)),
        outputs_per_request=family.outputs_per_request,
        output_components=tuple(tuple(_r(p) for p in c) for c in components),
        ticks=tuple(ticks),
        cold_start=cold_start,
        step_start=step_start,
    )
    return Scenario(
        name=name,
        kind="healthy" if fault is None else fault.kind,
        severity="none" if fault is None else fault.severity,
        expected="promote" if fault is None else "rollback",
        tick_seconds=tick_seconds,
        fault_onset_tick=onset,
        availability_slo=AVAILABILITY,
        latency_p99_ceiling_ms=LATENCY_CEILING_MS,
        histogram_bounds=HISTOGRAM_BOUNDS,
        steps=family.steps,
        ticks=(),
        notes=tuple(notes),
        labels=labels,
        latency_bounds=latency_bounds,
        p99_window=window,
        model=model,
    )


def generate_suite(
    seed: int = 20261125,
    healthy: int = 320,
    per_fault: int = 30,
    families: Sequence[str] = ("classic", "short"),
) -> list[Scenario]:
    """The benchmark's suite: per family, ``healthy`` good rollouts and ``per_fault`` of each
    of its faults."""
    scenarios: list[Scenario] = []
    for family_name in families:
        if family_name not in FAMILIES:
            raise ValueError(f"unknown family {family_name!r}: choose from {', '.join(FAMILIES)}")
        family = FAMILIES[family_name]
        family_index = list(FAMILIES).index(family_name)
        make: list[tuple[str, Fault | None, int]] = [
            (f"{family.name}-healthy-{i:04d}", None, i) for i in range(healthy)
        ]
        for fault in family.faults:
            make += [(f"{family.name}-{fault.kind}-{i:03d}", fault, i) for i in range(per_fault)]
        for index, (name, chosen, level) in enumerate(make):
            # The classic family keeps the seeding the suite had before families existed.
            key = [seed, index] if family_index == 0 else [seed, family_index, index]
            rng = np.random.default_rng(key)
            scenarios.append(_scenario(rng, name, chosen, family, level))
    return scenarios
