"""From Prometheus query results to a tick's observations (pure).

Results are the ``data.result`` vectors of ``/api/v1/query``, keyed by expression. An
empty vector is missing data, never zero: the arms are then reported as None with the
reason (which query, which arm), and every gate says Inconclusive. A zero that
Prometheus computed from series that exist is a real zero. Only the P99 may be missing
on its own (``p99_ms`` None: Triton reports no quantile without traffic); the latency
gates then skip the tick.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gelu_rollout.adapters.prometheus.queries import ArmQueries, CountQuery, QueryPlan
from gelu_rollout.analysis.observations import ArmObservation, WindowCounts
from gelu_rollout.rollout.observations import Observations

Vector = Sequence[Mapping[str, Any]]
Results = Mapping[str, Vector]


class MissingDataError(ValueError):
    """A query's answer cannot be used; the message says which and why."""


def _value(sample: Mapping[str, Any]) -> float:
    """The number of one instant-vector sample (``"value": [time, "string"]``)."""
    return float(sample["value"][1])


def _vector(results: Results, expr: str, name: str, arm: str) -> Vector:
    if expr not in results:
        raise MissingDataError(f"{name} of the {arm} was not queried")
    vector = results[expr]
    if not isinstance(vector, Sequence) or isinstance(vector, str | bytes):
        raise MissingDataError(f"{name} of the {arm}: not an instant vector")
    return vector


def _count(results: Results, query: CountQuery, arm: str) -> float:
    vector = _vector(results, query.expr, query.name, arm)
    if not vector:
        raise MissingDataError(f"no data for the {arm}: {query.name} is empty")
    if len(vector) != 1:
        raise MissingDataError(f"{query.name} of the {arm}: {len(vector)} samples, expected 1")
    value = _value(vector[0])
    if not math.isfinite(value) or value < 0:
        raise MissingDataError(f"{query.name} of the {arm} is {value}")
    return value * query.scale


def _le(sample: Mapping[str, Any]) -> float:
    le = float(sample["metric"]["le"])
    if math.isnan(le):
        raise MissingDataError("a histogram bucket has le=NaN")
    return le


def per_bucket(cumulative: Sequence[tuple[float, float]]) -> tuple[float, ...]:
    """Per-bucket counts from Prometheus' cumulative ``(le, count)`` pairs.

    Buckets are ordered by upper bound, ``+Inf`` last. A bucket whose cumulative count
    is below the previous one (extrapolation, a pod that restarted mid-range) counts 0,
    never a negative number.
    """
    ordered = sorted(cumulative, key=lambda pair: pair[0])
    counts = []
    previous = 0.0
    for _, value in ordered:
        counts.append(max(value - previous, 0.0))
        previous = max(previous, value)
    return tuple(counts)


def _histogram(results: Results, query: CountQuery, arm: str) -> tuple[float, ...]:
    vector = _vector(results, query.expr, query.name, arm)
    if not vector:
        raise MissingDataError(f"no data for the {arm}: {query.name} is empty")
    pairs = [(_le(s), _value(s)) for s in vector]
    bounds = [le for le, _ in pairs]
    if len(set(bounds)) != len(bounds):
        raise MissingDataError(f"{query.name} of the {arm} repeats a bucket bound")
    if max(bounds) != math.inf:
        raise MissingDataError(f"{query.name} of the {arm} has no +Inf bucket")
    if any(not math.isfinite(v) or v < 0 for _, v in pairs):
        raise MissingDataError(f"{query.name} of the {arm} has a negative or non-finite count")
    return tuple(c * query.scale for c in per_bucket(pairs))


def _bounds(results: Results, query: CountQuery) -> tuple[float, ...]:
    return tuple(sorted(_le(s) for s in results.get(query.expr, ())))


def _p99(results: Results, expr: str, arm: str) -> float | None:
    vector = _vector(results, expr, "p99", arm)
    if len(vector) > 1:
        raise MissingDataError(f"p99 of the {arm}: {len(vector)} samples, expected 1")
    if not vector:
        return None
    value = _value(vector[0])
    # NaN: no request within the summary's window; treat as unknown, not as a latency.
    if math.isnan(value):
        return None
    if not math.isfinite(value) or value < 0:
        raise MissingDataError(f"p99 of the {arm} is {value}")
    return value


def arm_observation(queries: ArmQueries, results: Results) -> ArmObservation:
    """One arm's observation; raises MissingDataError when a count is missing."""
    arm = queries.arm
    windows = {
        w.seconds: WindowCounts(_count(results, w.requests, arm), _count(results, w.failures, arm))
        for w in queries.windows
    }
    return ArmObservation(
        requests=_count(results, queries.requests, arm),
        failures=_count(results, queries.failures, arm),
        nonfinite=_count(results, queries.nonfinite, arm),
        histogram=_histogram(results, queries.histogram, arm),
        p99_ms=_p99(results, queries.p99_ms, arm),
        windows=windows,
    )


def missing(at: datetime, interval_seconds: float, reason: str) -> Observations:
    """A tick without usable metrics: both arms None, with the reason."""
    return Observations(at, interval_seconds, baseline=None, candidate=None, missing_reason=reason)


def to_observations(plan: QueryPlan, results: Results, *, at: datetime) -> Observations:
    """The tick's observations from the answers to ``plan.expressions()``. Never raises:
    a missing or malformed answer gives both arms None and the reason."""
    try:
        baseline = arm_observation(plan.baseline, results)
        candidate = arm_observation(plan.candidate, results)
        if _bounds(results, plan.baseline.histogram) != _bounds(results, plan.candidate.histogram):
            raise MissingDataError("the arms' output histograms have different buckets")
    except MissingDataError as error:
        return missing(at, plan.interval_seconds, str(error))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        return missing(
            at, plan.interval_seconds, f"unexpected answer from Prometheus: {error!r}"[:300]
        )
    return Observations(
        at=at, interval_seconds=plan.interval_seconds, baseline=baseline, candidate=candidate
    )
