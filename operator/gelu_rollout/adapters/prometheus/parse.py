"""From Prometheus query results to a tick's observations (pure).

Results are the ``data.result`` vectors of ``/api/v1/query``, keyed by expression. An
empty vector is missing data, never zero. The traffic's counts are Triton's own series:
without one of them the arms are reported as None with the reason (which query, which
arm), and every traffic gate says Inconclusive. A zero that Prometheus computed from
series that exist is a real zero. The output metrics may be missing on their own (a model
nobody instrumented for this tool exports none): ``nonfinite`` is then None, ``histogram``
empty, and the arm's ``gaps`` say which series and which query, so that only the gates
that need them go without. So may the latency signals, each one leaving its field None
and the rest of the arm as it is: the P99 (Triton reports no quantile without traffic),
the mean, queue and compute times (an empty answer, or no successful request to divide
by), and the request-duration histogram (empty, or not a usable histogram: see
:func:`latency_histogram`); the latency gates then use what is left or skip the tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from gelu_rollout.adapters.prometheus.queries import (
    NONFINITE,
    OUTPUT_BUCKETS,
    ArmQueries,
    CountQuery,
    LatencyHistogramQuery,
    QueryPlan,
)
from gelu_rollout.analysis.observations import (
    NONFINITE_SIGNAL,
    OUTPUTS_SIGNAL,
    ArmObservation,
    WindowCounts,
)
from gelu_rollout.analysis.tail_latency import LatencyHistogram, histogram_problem
from gelu_rollout.rollout.observations import Observations

_T = TypeVar("_T")
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


def _milliseconds(results: Results, expr: str) -> float | None:
    """An optional mean time in ms: None when not queried, empty, malformed, more than one
    sample, or not a finite non-negative number (0 / 0 when no request succeeded)."""
    if not expr or expr not in results:
        return None
    vector = results[expr]
    if not isinstance(vector, Sequence) or isinstance(vector, str | bytes) or len(vector) != 1:
        return None
    try:
        value = _value(vector[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _edge_ms(le: float, ms_per_unit: float) -> float:
    # Twelve significant digits: 0.005 s is 5 ms, not 5.000000000000001.
    return float(f"{le * ms_per_unit:.12g}")


def latency_histogram(vector: object, query: LatencyHistogramQuery) -> LatencyHistogram | None:
    """A request-duration histogram in milliseconds from the ``sum by (le)`` answer, or None.

    Bucket bounds are converted to milliseconds, the le-cumulative counts become per-bucket
    counts (a dip counts 0, as for the output histogram) scaled like every count, and the
    ``+Inf`` bucket is the last count. Bounds at or below zero are dropped: no request
    takes no time, and their requests stay counted in the next bucket up (a cumulative
    bucket may be left out without losing a request). Anything else that is not a
    histogram gives None, not a guess: an empty answer, an unreadable or NaN bound, a bound
    twice, no ``+Inf`` bucket, no positive finite bound, a count that is negative or not
    finite.
    """
    if not isinstance(vector, Sequence) or isinstance(vector, str | bytes) or not vector:
        return None
    try:
        pairs = [(float(s["metric"]["le"]), _value(s)) for s in vector]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    bounds = [le for le, _ in pairs]
    if any(math.isnan(le) for le in bounds) or len(set(bounds)) != len(bounds):
        return None
    if math.inf not in bounds or any(not math.isfinite(v) or v < 0 for _, v in pairs):
        return None
    kept = [(le, v) for le, v in pairs if le > 0]
    edges = tuple(_edge_ms(le, query.ms_per_unit) for le, _ in sorted(kept) if le != math.inf)
    if not edges:
        return None
    histogram = LatencyHistogram(edges, tuple(c * query.scale for c in per_bucket(kept)))
    return None if histogram_problem(histogram) is not None else histogram


def _gap(query: CountQuery, metric: str, arm: str) -> str:
    return f"the {arm} exports no {metric} ({query.name} is empty: {query.expr})"


def _optional_output(
    results: Results, query: CountQuery, metric: str, arm: str, read: Callable[[], _T]
) -> tuple[_T | None, str | None]:
    """An output metric's value, or None and the gap's description when the model exports
    no such series (an empty or unanswered query). A malformed answer still raises."""
    vector = results.get(query.expr)
    if not vector:
        return None, _gap(query, metric, arm)
    return read(), None


def arm_observation(queries: ArmQueries, results: Results) -> ArmObservation:
    """One arm's observation; raises MissingDataError when a traffic count is missing (the
    output metrics and the optional latency signals are empty instead)."""
    arm = queries.arm
    windows = {
        w.seconds: WindowCounts(_count(results, w.requests, arm), _count(results, w.failures, arm))
        for w in queries.windows
    }
    nonfinite, nonfinite_gap = _optional_output(
        results, queries.nonfinite, NONFINITE, arm, lambda: _count(results, queries.nonfinite, arm)
    )
    histogram, histogram_gap = _optional_output(
        results,
        queries.histogram,
        OUTPUT_BUCKETS,
        arm,
        lambda: _histogram(results, queries.histogram, arm),
    )
    gaps = {
        signal: gap
        for signal, gap in ((NONFINITE_SIGNAL, nonfinite_gap), (OUTPUTS_SIGNAL, histogram_gap))
        if gap is not None
    }
    return ArmObservation(
        requests=_count(results, queries.requests, arm),
        failures=_count(results, queries.failures, arm),
        nonfinite=nonfinite,
        histogram=histogram or (),
        p99_ms=_p99(results, queries.p99_ms, arm),
        windows=windows,
        latency_mean_ms=_milliseconds(results, queries.latency_mean_ms),
        queue_ms=_milliseconds(results, queries.queue_ms),
        compute_ms=_milliseconds(results, queries.compute_ms),
        latency_histogram=(
            None
            if queries.latency_histogram is None
            else latency_histogram(
                results.get(queries.latency_histogram.expr), queries.latency_histogram
            )
        ),
        gaps=gaps,
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
        if (
            baseline.histogram
            and candidate.histogram
            and _bounds(results, plan.baseline.histogram)
            != _bounds(results, plan.candidate.histogram)
        ):
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
