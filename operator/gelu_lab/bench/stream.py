"""Realising an adaptive stream: one tick's requests at the weight a policy is at.

A tick of an adaptive scenario (``scenario.ModelTick``) says how many requests the
service received and what each arm does with a request. Given the candidate's weight
``w`` (percent), the replay draws, with an RNG seeded by ``(seed, tick, w)``:

* the requests of each arm: the candidate gets each request with probability ``w / 100``
  and the baseline (a same-size arm beside it) with probability ``min(w, 100 - w) / 100``,
  the rest go to the production fleet, which is not observed (a multinomial split of the
  tick's requests, so load is shared by both arms);
* per request: whether it failed, its latency (two-piece log-normal, then the slowed
  share) and its arrival time within the tick; per successful request
  ``outputs_per_request`` outputs, each non-finite with the arm's rate, the finite ones
  falling into the output histogram's buckets by the arm's mixture of output components.

From those come the observations of the tick: the counts, the exact mean latency and its
queue / compute split (over successful requests, as Triton's duration counters count),
the latency histogram (every request, as a Gateway counts them), and the P99 of the tick's
successful requests; ``replay.Replay`` adds the P99 over a sliding summary window.

Two policies at the same weight in the same tick see the same requests (common random
numbers); at different weights they see independent draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gelu_lab.bench.scenario import ArmModel, Scenario, Slowdown, StreamModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RealisedArm:
    """What one arm did during one tick at one weight."""

    requests: int
    failures: int
    nonfinite: int
    histogram: tuple[float, ...]  # finite outputs per output bucket
    latency_mean_ms: float | None  # over successful requests
    queue_ms: float | None
    compute_ms: float | None
    latency_counts: tuple[float, ...] | None  # requests per latency bucket (None: no layout)
    tick_p99_ms: float | None  # the sample P99 of the tick's successful requests
    # Latencies (ms) of the successful requests and their arrival times (seconds since the
    # tick began); kept only where a summary window needs them, empty otherwise.
    success_latencies: FloatArray
    success_times: FloatArray


def arm_shares(weight: int) -> tuple[float, float]:
    """(candidate, baseline) shares of the service's requests at a candidate weight."""
    share = min(max(weight, 0), 100) / 100.0
    return share, min(share, 1.0 - share)


def sample_quantile(values: FloatArray, q: float) -> float | None:
    """``numpy.quantile(values, q)`` (linear interpolation), by partial sorting; None when
    there are no values."""
    n = values.size
    if n == 0:
        return None
    position = (n - 1) * q
    low = math.floor(position)
    high = min(low + 1, n - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (position - low) * (part[high] - part[low]))


def _latencies(
    rng: np.random.Generator, arm: ArmModel, n: int, extra: Slowdown | None
) -> FloatArray:
    z = rng.standard_normal(n)
    spread = np.where(z < 0.0, arm.log_sd, arm.tail_log_sd)
    latency = arm.median_ms * np.exp(spread * z)
    slowed = rng.random(n) < arm.slow_share
    latency = np.where(slowed, latency * arm.slow_factor, latency)
    if extra is not None and extra.share > 0:
        cold = rng.random(n) < extra.share
        latency = np.where(cold, latency * extra.factor, latency)
    return np.asarray(latency, dtype=np.float64)


def _mixture(model: StreamModel, mix: tuple[float, ...]) -> FloatArray:
    components = np.asarray(model.output_components, dtype=np.float64)
    components = components / components.sum(axis=1, keepdims=True)
    weights = np.asarray(mix, dtype=np.float64)
    p = weights @ components / weights.sum()
    return np.asarray(p / p.sum(), dtype=np.float64)


def _realise_arm(
    rng: np.random.Generator,
    scenario: Scenario,
    model: StreamModel,
    arm: ArmModel,
    n: int,
    extra: Slowdown | None,
) -> RealisedArm:
    keep = scenario.p99_window is not None  # a summary window needs the requests later
    failures = int(rng.binomial(n, min(arm.failure_ratio, 1.0))) if n else 0
    latency = _latencies(rng, arm, n, extra)
    times = rng.random(n) * scenario.tick_seconds
    # Requests are exchangeable: the first ``failures`` of them are the failed ones.
    success_latency = latency[failures:]
    success_times = times[failures:]
    successes = n - failures
    outputs = successes * model.outputs_per_request
    nonfinite = int(rng.binomial(outputs, arm.nonfinite_rate)) if outputs else 0
    finite = outputs - nonfinite
    buckets = len(scenario.histogram_bounds) + 1
    histogram = (
        rng.multinomial(finite, _mixture(model, arm.output_mix))
        if finite
        else np.zeros(buckets, dtype=np.int64)
    )
    mean = float(success_latency.mean()) if successes else None
    latency_counts: tuple[float, ...] | None = None
    if scenario.latency_bounds is not None:
        # Prometheus' le buckets: a request of exactly an edge is counted at that edge.
        index = np.searchsorted(np.asarray(scenario.latency_bounds), latency, side="left")
        counts = np.bincount(index, minlength=len(scenario.latency_bounds) + 1)
        latency_counts = tuple(float(c) for c in counts)
    return RealisedArm(
        requests=n,
        failures=failures,
        nonfinite=nonfinite,
        histogram=tuple(float(c) for c in histogram),
        latency_mean_ms=mean,
        queue_ms=None if mean is None else mean * arm.queue_share,
        compute_ms=None if mean is None else mean * (1.0 - arm.queue_share),
        latency_counts=latency_counts,
        tick_p99_ms=sample_quantile(success_latency, 0.99),
        success_latencies=success_latency if keep else np.zeros(0),
        success_times=success_times if keep else np.zeros(0),
    )


def realise_tick(
    scenario: Scenario, tick: int, weight: int, candidate_slowdown: Slowdown | None = None
) -> tuple[RealisedArm, RealisedArm]:
    """(baseline, candidate) of an adaptive scenario's tick at the candidate's ``weight``.

    ``candidate_slowdown`` is a cold start of the candidate's pods in this tick (the replay
    passes the stream's ``cold_start`` or ``step_start`` when the weight has just changed).
    """
    model = scenario.model
    if model is None:
        raise ValueError(f"{scenario.name}: a fixed stream has nothing to realise")
    entry = model.ticks[tick]
    rng = np.random.default_rng([model.seed, tick, max(weight, 0)])
    candidate_share, baseline_share = arm_shares(weight)
    rest = max(0.0, 1.0 - candidate_share - baseline_share)
    total = round(entry.requests)
    n_c, n_b, _ = (int(x) for x in rng.multinomial(total, [candidate_share, baseline_share, rest]))
    baseline = _realise_arm(rng, scenario, model, entry.baseline, n_b, None)
    candidate = _realise_arm(rng, scenario, model, entry.candidate, n_c, candidate_slowdown)
    return baseline, candidate


def summary_window_start(end: float, seconds: float, age_buckets: int, phase: float) -> float:
    """Start of the requests a prometheus-cpp summary read at ``end`` covers.

    Buckets rotate every ``seconds / age_buckets`` from ``phase`` on; the bucket read is the
    oldest, reset ``age_buckets - 1`` rotations before the last rotation. Before the first
    rotations it has seen everything since 0.
    """
    interval = seconds / age_buckets
    last_rotation = phase + math.floor((end - phase) / interval + 1e-9) * interval
    return max(0.0, last_rotation - (age_buckets - 1) * interval)
