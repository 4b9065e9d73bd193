"""From query results to observations: per-bucket histograms, missing data, bad answers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from gelu_rollout.adapters.prometheus.parse import latency_histogram, per_bucket, to_observations
from gelu_rollout.adapters.prometheus.queries import ArmQueries, QueryPlan, build_plan
from gelu_rollout.analysis.observations import (
    NONFINITE_SIGNAL,
    OUTPUTS_SIGNAL,
    ArmTotals,
    WindowCounts,
    observation_problem,
)
from gelu_rollout.analysis.tail_latency import LatencyHistogram
from gelu_rollout.spec.model import LatencyHistogramSource

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Vector = list[dict[str, Any]]


def scalar(value: float | str) -> Vector:
    return [{"metric": {}, "value": [1772366400.0, str(value)]}]


def buckets(pairs: Sequence[tuple[str, float | str]]) -> Vector:
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


@pytest.mark.parametrize("which", ["requests", "failures"])
def test_an_empty_result_is_missing_data_not_zero(which: str) -> None:
    p = plan()
    results = all_results(p)
    results[getattr(p.candidate, which).expr] = []
    obs = to_observations(p, results, at=AT)
    assert obs.baseline is None
    assert obs.candidate is None
    assert obs.missing_reason == f"no data for the candidate: {which} over 60s is empty"


@pytest.mark.parametrize(
    ("which", "signal", "metric"),
    [
        ("nonfinite", NONFINITE_SIGNAL, "gelu_nonfinite_outputs_total"),
        ("histogram", OUTPUTS_SIGNAL, "gelu_output_value_bucket"),
    ],
)
def test_a_missing_output_metric_leaves_the_rest_of_the_arm(
    which: str, signal: str, metric: str
) -> None:
    # A model nobody instrumented exports no output metrics: only that signal goes, and the
    # gap names the series and the query.
    p = plan()
    results = all_results(p)
    expr = getattr(p.candidate, which).expr
    results[expr] = []
    obs = to_observations(p, results, at=AT)
    assert obs.missing_reason is None
    assert obs.baseline is not None
    assert obs.candidate is not None
    assert obs.baseline.gaps == {}
    assert obs.candidate.requests == obs.baseline.requests > 0
    assert set(obs.candidate.gaps) == {signal}
    assert metric in obs.candidate.gaps[signal]
    assert expr in obs.candidate.gaps[signal]
    if which == "nonfinite":
        assert obs.candidate.nonfinite is None
        assert obs.candidate.histogram
    else:
        assert obs.candidate.histogram == ()
        assert obs.candidate.nonfinite is not None


def test_an_unanswered_output_query_is_a_gap_too() -> None:
    p = plan()
    results = all_results(p)
    del results[p.candidate.nonfinite.expr]
    obs = to_observations(p, results, at=AT)
    assert obs.candidate is not None
    assert obs.candidate.nonfinite is None
    assert NONFINITE_SIGNAL in obs.candidate.gaps


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
    del results[p.candidate.failures.expr]
    obs = to_observations(p, results, at=AT)
    assert obs.candidate is None
    assert obs.missing_reason == "failures over 60s of the candidate was not queried"


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


# -- the optional latency signals ---------------------------------------------------------------

SOURCE = LatencyHistogramSource.model_validate(
    {"metric": "gateway_request_duration_seconds_bucket", "armLabel": "service"}
)
# Cumulative, in seconds, shuffled: 100 requests up to 1 ms, 50 more up to 2.5 ms, ...
SECONDS = (("0.0025", 150), ("+Inf", 200), ("0.001", 100), ("0.01", 190))


def latency_plan(
    source: LatencyHistogramSource = SOURCE, interval: float = 60, scrape: float = 15
) -> QueryPlan:
    return build_plan(
        "ns", "r", "m", interval, [60], scrape_interval_seconds=scrape, latency_histogram=source
    )


def latency_results(
    p: QueryPlan,
    *,
    mean: Vector | None = None,
    queue: Vector | None = None,
    compute: Vector | None = None,
    histogram: Vector | None = None,
) -> dict[str, Vector]:
    results = all_results(p)
    for arm in p.arms:
        assert arm.latency_histogram is not None
        results[arm.latency_mean_ms] = scalar(4.5) if mean is None else mean
        results[arm.queue_ms] = scalar(0.5) if queue is None else queue
        results[arm.compute_ms] = scalar(3.25) if compute is None else compute
        results[arm.latency_histogram.expr] = buckets(SECONDS) if histogram is None else histogram
    return results


def test_means_and_the_latency_histogram_are_read_in_milliseconds() -> None:
    p = latency_plan()
    obs = to_observations(p, latency_results(p), at=AT)
    assert obs.missing_reason is None
    for arm in (obs.baseline, obs.candidate):
        assert arm is not None
        assert (arm.latency_mean_ms, arm.queue_ms, arm.compute_ms) == (4.5, 0.5, 3.25)
        assert arm.latency_histogram == LatencyHistogram((1.0, 2.5, 10.0), (100, 50, 40, 10))
        assert arm.p99_window_seconds == 60
        # What the core checks before it adds a tick: nothing wrong.
        assert observation_problem(arm, ArmTotals()) is None


def test_without_a_histogram_source_there_is_no_latency_histogram() -> None:
    p = plan()
    results = all_results(p)
    for arm in p.arms:
        results[arm.latency_mean_ms] = scalar(2)
    obs = to_observations(p, results, at=AT)
    assert obs.candidate is not None
    assert obs.candidate.latency_histogram is None
    assert obs.candidate.latency_mean_ms == 2
    # Means that were not answered at all are None, not missing data.
    assert obs.candidate.queue_ms is None


def test_milliseconds_edges_are_taken_as_they_are() -> None:
    p = latency_plan(SOURCE.model_copy(update={"unit": "milliseconds"}))
    hist = buckets((("0.5", 1), ("1", 3), ("+Inf", 4)))
    obs = to_observations(p, latency_results(p, histogram=hist), at=AT)
    assert obs.candidate is not None
    assert obs.candidate.latency_histogram == LatencyHistogram((0.5, 1.0), (1, 2, 1))


def test_seconds_edges_become_round_milliseconds() -> None:
    # 0.005 * 1000 is 5.000000000000001 in floating point; the edge is 5 ms.
    edges = [0.0005 * 2 ** (k / 5) for k in range(73)]
    cumulative = [(repr(e), 10.0 * i) for i, e in enumerate(edges)] + [("+Inf", 730.0)]
    p = latency_plan()
    obs = to_observations(p, latency_results(p, histogram=buckets(cumulative)), at=AT)
    assert obs.candidate is not None
    hist = obs.candidate.latency_histogram
    assert hist is not None
    assert hist.edges[0] == 0.5
    assert len(hist.edges) == 73
    assert hist.edges == pytest.approx([e * 1000 for e in edges], rel=1e-11)
    assert hist.counts == (0,) + (10,) * 72 + (10,)
    five = parse_latency(buckets((("0.005", 1), ("+Inf", 1))), p)
    assert five is not None
    assert five.edges == (5.0,)


def parse_latency(vector: Vector, p: QueryPlan) -> LatencyHistogram | None:
    query = p.candidate.latency_histogram
    assert query is not None
    return latency_histogram(vector, query)


def test_latency_counts_are_scaled_like_every_count() -> None:
    # A 10 s tick with 15 s scrapes is queried over 30 s: the counts are scaled by 10/30.
    p = latency_plan(interval=10)
    hist = parse_latency(buckets((("0.001", 30), ("+Inf", 60))), p)
    assert hist == LatencyHistogram((1.0,), (10, 10))


def test_non_positive_bounds_are_folded_into_the_next_bucket() -> None:
    p = latency_plan()
    hist = parse_latency(buckets((("-1", 0), ("0", 2), ("0.001", 5), ("+Inf", 9))), p)
    assert hist == LatencyHistogram((1.0,), (5, 4))


def test_a_dip_in_cumulative_latency_counts_counts_zero() -> None:
    p = latency_plan()
    hist = parse_latency(buckets((("0.001", 5), ("0.002", 4.5), ("+Inf", 6))), p)
    assert hist == LatencyHistogram((1.0, 2.0), (5, 0, 1))


@pytest.mark.parametrize(
    "histogram",
    [
        pytest.param([], id="empty"),
        pytest.param(buckets((("0.001", 5), ("0.01", 7))), id="no +Inf bucket"),
        pytest.param(buckets((("+Inf", 7),)), id="no finite bucket"),
        pytest.param(buckets((("0", 1), ("+Inf", 7))), id="no positive bucket"),
        pytest.param(buckets((("0.001", "NaN"), ("+Inf", 7))), id="NaN count"),
        pytest.param(buckets((("0.001", 2), ("+Inf", "+Inf"))), id="infinite count"),
        pytest.param(buckets((("0.001", -1), ("+Inf", 7))), id="negative count"),
        pytest.param(buckets((("NaN", 1), ("+Inf", 7))), id="NaN bound"),
        pytest.param(buckets((("fast", 1), ("+Inf", 7))), id="unreadable bound"),
        pytest.param(buckets((("0.001", 1), ("1e-3", 2), ("+Inf", 7))), id="repeated bound"),
        pytest.param(buckets((("0.001", 1), ("+Inf", 7))) + scalar(3), id="a sample without le"),
        pytest.param([*buckets((("0.001", 1),)), {"metric": {"le": "+Inf"}}], id="no value"),
        pytest.param(scalar(3), id="not a histogram"),
        pytest.param("3", id="not a vector"),
    ],
)
def test_a_garbled_latency_histogram_is_none_and_the_arm_stays(histogram: Vector) -> None:
    p = latency_plan()
    good = latency_results(p)
    results = latency_results(p, histogram=histogram)
    query = p.baseline.latency_histogram
    assert query is not None
    results[query.expr] = good[query.expr]  # the baseline's is fine
    obs = to_observations(p, results, at=AT)
    assert obs.missing_reason is None
    assert obs.baseline is not None
    assert obs.candidate is not None
    assert obs.baseline.latency_histogram is not None
    assert obs.candidate.latency_histogram is None
    assert obs.candidate.requests == 1000
    assert obs.candidate.latency_mean_ms == 4.5


@pytest.mark.parametrize(
    "mean",
    [
        pytest.param([], id="empty"),
        pytest.param(scalar("NaN"), id="no successful request (0/0)"),
        pytest.param(scalar("+Inf"), id="time without requests"),
        pytest.param(scalar(-1), id="negative"),
        pytest.param(scalar(1) + scalar(2), id="two samples"),
        pytest.param([{"metric": {}}], id="no value"),
        pytest.param("4.5", id="not a vector"),
    ],
)
def test_an_unusable_mean_is_none_and_the_counts_stay(mean: Vector) -> None:
    p = latency_plan()
    results = latency_results(p)
    results[p.candidate.latency_mean_ms] = mean
    obs = to_observations(p, results, at=AT)
    assert obs.missing_reason is None
    c = obs.candidate
    assert c is not None
    assert c.latency_mean_ms is None
    # Everything else of the arm is as it was: counts, parts, histogram, P99.
    assert (c.requests, c.failures, c.histogram, c.p99_ms) == (1000, 3, (5, 20, 10, 5), 12.5)
    assert (c.queue_ms, c.compute_ms) == (0.5, 3.25)
    assert c.latency_histogram is not None
    assert obs.baseline is not None
    assert obs.baseline.latency_mean_ms == 4.5


def test_unanswered_optional_queries_leave_only_their_fields_none() -> None:
    # What the observer hands over when the optional queries failed: they are left out.
    p = latency_plan()
    results = {e: v for e, v in latency_results(p).items() if e not in p.optional_expressions()}
    obs = to_observations(p, results, at=AT)
    assert obs.missing_reason is None
    for arm in (obs.baseline, obs.candidate):
        assert arm is not None
        assert (arm.latency_mean_ms, arm.queue_ms, arm.compute_ms) == (None, None, None)
        assert arm.latency_histogram is None
        assert arm.requests == 1000


def test_a_missing_count_still_blinds_the_tick_with_the_latency_signals_present() -> None:
    p = latency_plan()
    results = latency_results(p)
    results[p.candidate.requests.expr] = []
    obs = to_observations(p, results, at=AT)
    assert (obs.baseline, obs.candidate) == (None, None)
    assert obs.missing_reason == "no data for the candidate: requests over 60s is empty"
