"""A seeded generator of rollout scenarios: healthy ones with realistic noise, and faults.

Every scenario is a baseline arm and a candidate arm receiving the same share
of traffic (the candidate's step weight), observed once per tick. The noise a
healthy rollout meets in production is simulated on purpose, because it is
what makes naive policies roll back good candidates:

* traffic from 20 to 400 requests per second, bursty for some, and a low-traffic
  group at 1 to 8 requests per second;
* failures drawn with over-dispersion, and incidents shared by both arms (a
  dependency failing) that are not the candidate's fault;
* P99 latency with heavy-tailed per-tick estimation noise that grows as traffic
  shrinks, load-dependent drift, GC-like spikes, a cold start of the candidate
  on its first tick and a smaller one at each step, and a pod restart;
* output histograms drawn per tick from an input mix that changes over time,
  the same for both arms;
* healthy candidates that differ from the baseline by less than the tolerances
  (a few percent latency, KL up to 0.004, error ratio within 1.5x).

Faults start at ``fault_onset_tick`` and are listed in ``FAULTS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from gelu_lab.bench.scenario import ArmTick, Scenario, Severity, StepPlan, Tick

FloatArray = npt.NDArray[np.float64]

TICK_SECONDS = 60.0
STEPS = (StepPlan(10, 5), StepPlan(25, 5), StepPlan(50, 5))
EXTRA_TICKS = 10  # ticks past the plan, at the last weight: room to wait for data
AVAILABILITY = 0.999
BUDGET = 1.0 - AVAILABILITY
LATENCY_CEILING_MS = 250.0
OUTPUTS_PER_REQUEST = 8
HISTOGRAM_BOUNDS = tuple(float(x) for x in np.round(np.linspace(-2.0, 4.0, 19), 3))


@dataclass(frozen=True)
class Fault:
    kind: str
    severity: Severity
    description: str


FAULTS: tuple[Fault, ...] = (
    Fault("errors-3x", "moderate", "candidate failure ratio at 3x the error budget"),
    Fault("errors-10x", "severe", "candidate failure ratio at 10x the error budget"),
    Fault("errors-30x", "severe", "candidate failure ratio at 30x the error budget"),
    Fault("slow-burn", "moderate", "failure ratio climbing from 1x to 4x the budget over 10 ticks"),
    Fault("latency-p99-10", "minor", "candidate P99 +10% (at the default tolerance)"),
    Fault("latency-p99-25", "moderate", "candidate P99 +25%"),
    Fault("latency-p99-50", "moderate", "candidate P99 +50%"),
    Fault("drift-kl-0.02", "moderate", "output distribution drift, KL 0.02"),
    Fault("drift-kl-0.05", "severe", "output distribution drift, KL 0.05"),
    Fault("drift-kl-0.1", "severe", "output distribution drift, KL 0.1"),
    Fault("nan-burst", "severe", "bursts of NaN outputs"),
)
FAULT_KINDS = tuple(f.kind for f in FAULTS)


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


@dataclass
class _Arm:
    requests: float = 0.0
    failures: float = 0.0
    nonfinite: float = 0.0
    histogram: npt.NDArray[Any] | None = None

    def snapshot(self, p99: float | None) -> ArmTick:
        assert self.histogram is not None
        return ArmTick(
            requests=self.requests,
            failures=self.failures,
            nonfinite=self.nonfinite,
            histogram=tuple(float(x) for x in self.histogram),
            p99_ms=None if p99 is None else round(p99, 3),
        )


def _scenario(rng: np.random.Generator, name: str, fault: Fault | None) -> Scenario:
    planned = sum(s.ticks for s in STEPS)
    total_ticks = planned + EXTRA_TICKS
    notes: list[str] = []

    # Traffic: requests per second across the service.
    low_traffic = fault is None and rng.random() < 0.15
    bursty = rng.random() < 0.25
    rps = (
        math.exp(rng.uniform(math.log(1.0), math.log(8.0)))
        if low_traffic
        else math.exp(rng.uniform(math.log(20.0), math.log(400.0)))
    )
    notes.append(f"{rps:.1f} requests/s{' (low traffic)' if low_traffic else ''}")
    if bursty:
        notes.append("bursty traffic")

    # Errors.
    base_ratio = math.exp(rng.uniform(math.log(0.1 * BUDGET), math.log(0.6 * BUDGET)))
    cand_ratio = base_ratio * rng.uniform(0.7, 1.5)
    shared_incident_tick = int(rng.integers(0, total_ticks)) if rng.random() < 0.15 else None
    if shared_incident_tick is not None:
        notes.append(f"incident shared by both arms at tick {shared_incident_tick}")

    # Latency.
    base_p99 = rng.uniform(40.0, 150.0)
    sigma_log = rng.uniform(0.3, 0.6)
    cand_p99 = base_p99 * rng.uniform(0.96, 1.04)
    restart = (int(rng.integers(1, total_ticks)), "candidate" if rng.random() < 0.5 else "baseline")
    has_restart = rng.random() < 0.3
    if has_restart:
        notes.append(f"{restart[1]} pod restart at tick {restart[0]}")

    # Outputs: two input regimes whose mix drifts; the candidate tilts both alike.
    regime_a = _bucket_probabilities(rng.uniform(0.2, 0.6), rng.uniform(0.6, 0.9), 0.1)
    regime_b = _bucket_probabilities(rng.uniform(0.8, 1.4), rng.uniform(0.7, 1.1), 0.2)
    centres = np.concatenate(([HISTOGRAM_BOUNDS[0] - 0.25], np.asarray(HISTOGRAM_BOUNDS) - 0.15))
    direction = (centres - centres.mean()) / centres.std()
    direction = direction + rng.normal(0.0, 0.5, size=direction.size)
    pooled = 0.5 * (regime_a + regime_b)
    healthy_kl = rng.uniform(0.0, 0.004)
    healthy_beta = tilt_to_kl(pooled, direction, healthy_kl)

    onset = None if fault is None else int(rng.integers(0, 10))
    fault_kl = float(fault.kind.split("-")[-1]) if fault and fault.kind.startswith("drift") else 0.0
    fault_beta = tilt_to_kl(pooled, direction, fault_kl) if fault_kl else 0.0

    baseline, candidate = (
        _Arm(histogram=np.zeros(len(pooled))),
        _Arm(histogram=np.zeros(len(pooled))),
    )
    ticks: list[Tick] = []
    weight_of = Scenario(
        name,
        "",
        "none",
        "promote",
        TICK_SECONDS,
        None,
        AVAILABILITY,
        LATENCY_CEILING_MS,
        HISTOGRAM_BOUNDS,
        STEPS,
        (),
    ).weight_at
    mix = rng.uniform(0.3, 0.7)
    previous_weight = None
    for t in range(total_ticks):
        weight = weight_of(t)
        faulty = fault is not None and onset is not None and t >= onset
        load = math.exp(rng.normal(0.0, 0.3)) if bursty else math.exp(rng.normal(0.0, 0.08))
        if bursty and rng.random() < 0.1:
            load *= rng.uniform(2.0, 4.0)
        expected = rps * TICK_SECONDS * weight / 100.0 * load
        n_b, n_c = float(rng.poisson(expected)), float(rng.poisson(expected))

        # Failures, over-dispersed per tick.
        ratio_b, ratio_c = base_ratio, cand_ratio
        if faulty and fault is not None:
            if fault.kind.startswith("errors-"):
                ratio_c = float(fault.kind.split("-")[1].rstrip("x")) * BUDGET
            elif fault.kind == "slow-burn":
                ratio_c = BUDGET * (1.0 + 3.0 * min((t - (onset or 0)) / 10.0, 1.0))
        if shared_incident_tick == t:
            surge = rng.uniform(5.0, 30.0) * BUDGET
            ratio_b, ratio_c = ratio_b + surge, ratio_c + surge
        f_b = float(rng.binomial(int(n_b), min(ratio_b * rng.gamma(4.0, 0.25), 1.0)))
        f_c = float(rng.binomial(int(n_c), min(ratio_c * rng.gamma(4.0, 0.25), 1.0)))

        # Latency: per-tick P99 estimate with noise growing as traffic shrinks.
        shared = load**0.15 * math.exp(rng.normal(0.0, 0.03))
        p99: dict[str, float | None] = {}
        for arm, true_p99, n in (("baseline", base_p99, n_b), ("candidate", cand_p99, n_c)):
            if n <= 0:
                p99[arm] = None
                continue
            se = sigma_log * 3.73 / math.sqrt(n)
            value = true_p99 * shared * math.exp(min(se * rng.standard_t(3), 1.5))
            if rng.random() < 0.05:
                value *= rng.uniform(1.3, 2.0)  # a GC pause or a noisy neighbour
            p99[arm] = value
        latency = p99["candidate"]
        if latency is not None:
            if faulty and fault is not None and fault.kind.startswith("latency-p99-"):
                latency *= 1.0 + int(fault.kind.rsplit("-", 1)[1]) / 100.0
            if t == 0:
                latency *= rng.uniform(2.0, 5.0)  # the candidate's cold start
            elif weight != previous_weight:
                latency *= rng.uniform(1.2, 2.0)  # new candidate pods at a step
            p99["candidate"] = latency
        if has_restart and t == restart[0]:
            arm_name = restart[1]
            restarted = p99[arm_name]
            if restarted is not None:
                p99[arm_name] = restarted * rng.uniform(1.5, 3.0)
            # In-flight requests die with the pod: about 100 ms of its arm's traffic.
            lost = float(rng.poisson(1.0 + expected / TICK_SECONDS * 0.1))
            if arm_name == "candidate":
                f_c = min(f_c + lost, n_c)
            else:
                f_b = min(f_b + lost, n_b)
        previous_weight = weight

        # Outputs.
        mix = float(np.clip(mix + rng.normal(0.0, 0.05), 0.1, 0.9))
        p_tick = mix * regime_a + (1.0 - mix) * regime_b
        beta = fault_beta if faulty and fault_kl else healthy_beta
        q_tick = _tilt(p_tick, direction, beta)
        h_b = rng.multinomial(int(n_b) * OUTPUTS_PER_REQUEST, p_tick)
        h_c = rng.multinomial(int(n_c) * OUTPUTS_PER_REQUEST, q_tick)
        nan_c = 0.0
        nan_burst = faulty and fault is not None and fault.kind == "nan-burst"
        if nan_burst and (t == onset or rng.random() < 0.4):
            nan_c = float(1 + rng.poisson(4.0))

        baseline.requests += n_b
        baseline.failures += f_b
        baseline.histogram = baseline.histogram + h_b if baseline.histogram is not None else h_b
        candidate.requests += n_c
        candidate.failures += f_c
        candidate.nonfinite += nan_c
        candidate.histogram = candidate.histogram + h_c if candidate.histogram is not None else h_c
        ticks.append(Tick(baseline.snapshot(p99["baseline"]), candidate.snapshot(p99["candidate"])))

    return Scenario(
        name=name,
        kind="healthy" if fault is None else fault.kind,
        severity="none" if fault is None else fault.severity,
        expected="promote" if fault is None else "rollback",
        tick_seconds=TICK_SECONDS,
        fault_onset_tick=onset,
        availability_slo=AVAILABILITY,
        latency_p99_ceiling_ms=LATENCY_CEILING_MS,
        histogram_bounds=HISTOGRAM_BOUNDS,
        steps=STEPS,
        ticks=tuple(ticks),
        notes=tuple(notes),
    )


def generate_suite(seed: int = 20261125, healthy: int = 320, per_fault: int = 30) -> list[Scenario]:
    """The benchmark's scenario suite: ``healthy`` good rollouts and ``per_fault`` of each fault."""
    scenarios: list[Scenario] = []
    make: list[tuple[str, Fault | None]] = [(f"healthy-{i:04d}", None) for i in range(healthy)]
    for fault in FAULTS:
        make += [(f"{fault.kind}-{i:03d}", fault) for i in range(per_fault)]
    for index, (name, chosen) in enumerate(make):
        rng = np.random.default_rng([seed, index])
        scenarios.append(_scenario(rng, name, chosen))
    return scenarios
