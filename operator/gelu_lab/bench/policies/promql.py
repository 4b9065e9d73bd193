"""What the reference policies' Prometheus queries compute, over one tick's increments."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gelu_rollout.analysis.observations import ArmObservation


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus' ``histogram_quantile`` over per-bucket counts.

    ``bounds`` are the finite upper bounds, ``counts`` has one more entry for the +Inf
    bucket. As in Prometheus: NaN without observations; a quantile in the +Inf bucket
    returns the highest finite bound; in the lowest bucket the lower edge is 0 when its
    upper bound is positive, and its upper bound is returned when that is <= 0; otherwise
    linear interpolation inside the bucket.
    """
    total = float(sum(counts))
    if not total > 0:
        return math.nan
    rank = q * total
    finite = len(bounds)
    cumulative = 0.0
    below = 0.0
    bucket = finite
    for i in range(finite):
        below = cumulative
        cumulative += counts[i]
        if cumulative >= rank:
            bucket = i
            break
    if bucket == finite:
        return float(bounds[-1])
    if bucket == 0 and bounds[0] <= 0:
        return float(bounds[0])
    start = 0.0 if bucket == 0 else float(bounds[bucket - 1])
    end = float(bounds[bucket])
    in_bucket = cumulative - below
    return start + (end - start) * (rank - below) / in_bucket


def request_duration_p99(arm: ArmObservation) -> float | None:
    """The arm's P99 latency in the tick, in ms, the way a tool with a mesh queries it.

    Where a request-duration histogram exists: ``histogram_quantile(0.99,
    sum(rate(<mesh>_request_duration_bucket[interval])) by (le))`` over the tick's buckets
    (Flagger's builtin ``request-duration``), None ("no values") when the tick has no
    requests in it. Otherwise the P99 the scenario reports (``p99_ms``).
    """
    histogram = arm.latency_histogram
    if histogram is None:
        return arm.p99_ms
    value = histogram_quantile(0.99, histogram.edges, histogram.counts)
    return None if math.isnan(value) else value
