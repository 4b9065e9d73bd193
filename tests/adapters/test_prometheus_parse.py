"""From query results to observations: per-bucket histograms, missing data, bad answers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from gelu_rollout.adapters.prometheus.parse import per_bucket, to_observations
from gelu_rollout.adapters.prometheus.queries import ArmQueries, QueryPlan, build_plan
from gelu_rollout.analysis.observations import WindowCounts

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Vector = list[dict[str, Any]]


def scalar(value: float | str) -> Vector:
    return [{"metric": {}, "value": [1772366400.0, str(value)]}]


def buckets(pairs: Sequence[tuple[str, float]]) -> Vector:
    return [{"metric": {"le": le}, "value": [1772366400.0, str(v)]} for le, v in pairs]


def plan(windows: Sequence[float] = (60, 720), scrape: float = 15) -> QueryPlan:
    return build_plan("ns", "r", "m", 60, windows, scrape_interval_seconds=scrape)


def arm_results(
    q: ArmQueries,
    *,
    requests: float = 1000,
    failures: float = 3,
    nonfinite: float = 0,
    histogram: Sequence[tuple[str, float]] = (("+Inf", 40), ("-1", 5), ("0", 25), ("1", 35)),
    p99: Vector | None = None,
    windows: Mapping[float, tuple[float, float]] | None = None,
) -> dict[str, Vector]:
    windows = windows or {}
    results: dict[str, Vector] = {}
    for w in q.windows:
        r, f = windows.get(w.seconds, (requests, failures))
        results[w.requests.expr] = scalar(r)
        results[w.failures.expr] = scalar(f)
    results |= {
        q.requests.expr: scalar(requests),
        q.failures.expr: scalar(failures),
        q.nonfinite.expr: scalar(nonfinite),
        q.histogram.expr: buckets(histogram),
        q.p99_ms: scalar(12.5) if p99 is None else p99,
    }
    return results


def all_results(p: QueryPlan, **candidate: Any) -> dict[str, Vector]:
    return arm_results(p.baseline) | arm_results(p.candidate, **candidate)


def test_both_arms_are_read() -> None:
    p = plan()
    results = arm_results(p.baseline, requests=2000, failures=1) | arm_results(
        p.candidate, requests=500, failures=7, nonfinite=2, windows={720: (5000, 70)}
    )
    obs = to_observations(p, results, at=AT)
    assert obs.missing_reason is None
    assert obs.at == AT
    assert obs.interval_seconds == 60
    assert obs.baseline is not None
    assert obs.candidate is not None
    assert (obs.baseline.requests, obs.baseline.failures) == (2000, 1)
    c = obs.candidate
    assert (c.requests, c.failures, c.nonfinite, c.p99_ms) == (500, 7, 2, 12.5)
    assert c.histogram == (5, 20, 10, 5)
    assert dict(c.windows) == {60: WindowCounts(500, 7), 720: WindowCounts(5000, 70)}


def test_cumulative_buckets_become_per_bucket_counts_in_le_order() -> None:
    assert per_bucket([(math.inf, 10), (0.5, 4), (-0.5, 1), (2.0, 9)]) == (1, 3, 5, 1)
    assert per_bucket([(math.inf, 0), (1.0, 0)]) == (0, 0)


def test_a_bucket_below_the_previous_counts_zero() -> None:
    # Extrapolation or a restart can make cumulative counts dip; never a negative count.
    assert per_bucket([(0.0, 5), (1.0, 4.5), (math.inf, 6)]) == (5, 0, 1)


def test_counts_are_scaled_when_the_range_is_longer_than_asked() -> None:
    # A 20 s window with 15 s scrapes is queried over 30 s: the count is scaled by 20/30.
    p = plan(windows=(20,))
    results = all_results(p, windows={20: (300, 30)})
    obs = to_observations(p, results, at=AT)
    assert obs.candidate is not None
    assert obs.candidate.windows[20] == WindowCounts(200, 20)


@pytest.mark.parametrize("which", ["requests", "failures", "nonfinite", "histogram"])
def test_an_empty_result_is_missing_data_not_zero(which: str) -> None:
    p = plan()
    results = all_results(p)
    results[getattr(p.candidate, which).expr] = []
    obs = to_observations(p, results, at=AT)
    assert obs.baseline is None
    assert obs.candidate is None
    assert obs.missing_reason == f"no data for the candidate: {which} over 60s is empty"


def test_an_empty_window_is_missing_data() -> None:
    p = plan()
    results = all_results(p)
    results[p.baseline.windows[1].requests.expr] = []
    obs = to_observations(p, results, at=AT)
    assert (obs.baseline, obs.candidate) == (None, None)
    assert obs.missing_reason == "no data for the baseline: requests over 720s is empty"


def test_an_unanswered_query_is_missing_data() -> None:
    p = plan()
    results = all_results(p)
    del results[p.candidate.nonfinite.expr]
    obs = to_observations(p, results, at=AT)
    assert obs.candidate is None
    assert obs.missing_reason == "nonfinite over 60s of the candidate was not queried"


@pytest.mark.parametrize("p99", [[], scalar("NaN")])
def test_an_unknown_p99_leaves_the_rest_of_the_tick(p99: Vector) -> None:
    p = plan()
    obs = to_observations(p, all_results(p, p99=p99), at=AT)
    assert obs.missing_reason is None
    assert obs.candidate is not None
    assert obs.candidate.p99_ms is None
    assert obs.candidate.requests == 1000


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ({"requests": "NaN"}, "requests over 60s of the candidate is nan"),
        ({"failures": -1}, "failures over 60s of the candidate is -1.0"),
        ({"p99": scalar("+Inf")}, "p99 of the candidate is inf"),
        ({"p99": scalar(1) + scalar(2)}, "p99 of the candidate: 2 samples, expected 1"),
        ({"histogram": (("0", 1), ("1", 2))}, "histogram over 60s of the candidate has no +Inf"),
        (
            {"histogram": (("0", 1), ("0.0", 2), ("+Inf", 3))},
            "histogram over 60s of the candidate repeats a bucket bound",
        ),
        (
            {"histogram": (("0", 1), ("1", 2), ("2", 2), ("+Inf", 3))},
            "the arms' output histograms have different buckets",
        ),
    ],
)
def test_impossible_answers_are_missing_data(candidate: dict[str, Any], reason: str) -> None:
    p = plan()
    obs = to_observations(p, all_results(p, **candidate), at=AT)
    assert (obs.baseline, obs.candidate) == (None, None)
    assert obs.missing_reason is not None
    assert obs.missing_reason.startswith(reason)


@pytest.mark.parametrize(
    "bad",
    [
        [{"metric": {}}],  # no value
        [{"metric": {}, "value": [1.0]}],
        [{"metric": {}, "value": [1.0, "twelve"]}],
        [1.0, "3"],  # a scalar, not a vector
        "3",
    ],
)
def test_malformed_answers_never_raise(bad: Any) -> None:
    p = plan()
    results = all_results(p)
    results[p.candidate.requests.expr] = bad
    obs = to_observations(p, results, at=AT)
    assert (obs.baseline, obs.candidate) == (None, None)
    assert obs.missing_reason is not None


def test_a_histogram_without_le_is_malformed() -> None:
    p = plan()
    results = all_results(p)
    results[p.candidate.histogram.expr] = scalar(3)
    obs = to_observations(p, results, at=AT)
    assert obs.candidate is None
    assert obs.missing_reason is not None
    assert "unexpected answer" in obs.missing_reason
