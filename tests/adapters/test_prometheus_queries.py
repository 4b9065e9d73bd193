"""The PromQL of a tick: selectors, escaping, ranges."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gelu_rollout.adapters.prometheus.queries import (
    LatencySource,
    arm_queries,
    build_plan,
    escape_label_value,
    range_seconds,
    selector,
)
from gelu_rollout.spec.model import LatencyHistogramSource

SEL = '{namespace="prod",rollout="gelu-canary",arm="candidate",model="gelu_mlp"}'


def test_one_arm_queries_in_full() -> None:
    q = arm_queries(
        "prod", "gelu-canary", "gelu_mlp", "candidate", 60, [25, 300], scrape_interval_seconds=15
    )
    served = SEL[:-1] + ',__name__=~"nv_inference_request_success|nv_inference_request_failure"}'
    assert q.requests.expr == f"sum(increase({served}[60s]))"
    assert q.failures.expr == (
        f"sum(increase(nv_inference_request_failure{SEL}[60s])"
        f" or 0 * increase(nv_inference_request_success{SEL}[60s]))"
    )
    assert q.nonfinite.expr == f"sum(increase(gelu_nonfinite_outputs_total{SEL}[60s]))"
    assert q.histogram.expr == f"sum by (le) (increase(gelu_output_value_bucket{SEL}[60s]))"
    quantile = SEL[:-1] + ',quantile=~"0\\\\.990*"}'
    assert q.p99_ms == f"max(nv_inference_request_summary_us{quantile}) / 1000"
    # Means per successful request, in ms: summed microseconds over summed successes.
    successes = f"sum(increase(nv_inference_request_success{SEL}[60s]))"
    assert q.latency_mean_ms == (
        f"sum(increase(nv_inference_request_duration_us{SEL}[60s])) / {successes} / 1000"
    )
    assert q.queue_ms == (
        f"sum(increase(nv_inference_queue_duration_us{SEL}[60s])) / {successes} / 1000"
    )
    # Compute is infer, plus input and output where a pod exports them, each summed alone
    # (increase drops the name: summed together, one pod's parts would clash).
    compute = (
        f"(sum(increase(nv_inference_compute_infer_duration_us{SEL}[60s]))"
        f" + (sum(increase(nv_inference_compute_input_duration_us{SEL}[60s])) or vector(0))"
        f" + (sum(increase(nv_inference_compute_output_duration_us{SEL}[60s])) or vector(0)))"
    )
    assert q.compute_ms == f"{compute} / {successes} / 1000"
    # No histogram source, no histogram query; the output metrics and the means are the
    # optional ones.
    assert q.latency_histogram is None
    assert q.optional() == (
        q.nonfinite.expr,
        q.histogram.expr,
        q.latency_mean_ms,
        q.queue_ms,
        q.compute_ms,
    )
    # A 25 s window is shorter than two 15 s scrapes: queried over 30 s, scaled back.
    short, long = q.windows
    assert (short.seconds, short.requests.range_s, short.requests.scale) == (25, 30, 25 / 30)
    assert short.requests.expr == f"sum(increase({served}[30s]))"
    assert (long.seconds, long.failures.range_s, long.failures.scale) == (300, 300, 1.0)


def test_arms_differ_only_in_the_arm_label() -> None:
    plan = build_plan("ns", "r", "m", 60, [60, 720], scrape_interval_seconds=15)
    for b, c in zip(plan.baseline.expressions(), plan.candidate.expressions(), strict=True):
        assert b.replace('arm="baseline"', 'arm="candidate"') == c
        assert 'arm="baseline"' in b


def test_a_batch_sends_each_expression_once() -> None:
    # The short window equals the interval: its queries are the interval's.
    plan = build_plan("ns", "r", "m", 60, [60, 720, 720.0], scrape_interval_seconds=15)
    expressions = plan.expressions()
    assert len(expressions) == len(set(expressions))
    # requests, failures, nonfinite, histogram, p99, mean, queue, compute, and the 720 s
    # window's two, per arm.
    assert len(expressions) == 2 * 10
    assert [w.seconds for w in plan.candidate.windows] == [60, 720]


@pytest.mark.parametrize(
    ("seconds", "scrape", "expected"),
    [
        (60, 15, 60),
        (60.0000001, 15, 60),  # float noise does not add a second
        (12.5, 1, 13),  # rounded up to whole seconds
        (10, 15, 30),  # at least two scrapes
        (1, 1, 2),
        (5, 2.5, 5),
    ],
)
def test_ranges_are_whole_seconds_and_at_least_two_scrapes(
    seconds: float, scrape: float, expected: int
) -> None:
    assert range_seconds(seconds, scrape) == expected


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_ranges_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        range_seconds(bad, 15)
    with pytest.raises(ValueError, match="positive"):
        range_seconds(60, bad)


def test_unknown_arm_is_refused() -> None:
    with pytest.raises(ValueError, match="arm"):
        arm_queries("ns", "r", "m", "canary", 60)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain-name.1", "plain-name.1"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ("tab\tcr\r", "tab\\tcr\\r"),
        ("bell\x07del\x7f", "bell\\x07del\\x7f"),
        ("ünïcode ✓", "ünïcode ✓"),
        ('\\"', '\\\\\\"'),
    ],
)
def test_label_values_are_escaped(value: str, escaped: str) -> None:
    assert escape_label_value(value) == escaped


def test_hostile_names_cannot_change_the_query() -> None:
    hostile = 'x"} or vector(1) or up{a="\\'
    source = LatencyHistogramSource.model_validate(
        {
            "metric": "x_bucket",
            "armLabel": "arm",
            "baselineValue": hostile,
            "matchers": [{"label": "team", "value": hostile}],
        }
    )
    plan = build_plan(
        hostile,
        hostile,
        hostile + "\n",
        60,
        [],
        scrape_interval_seconds=15,
        latency_histogram=source,
        rollout_name=hostile,
    )
    assert plan.baseline.latency_histogram is not None
    for expr in plan.expressions():
        # Outside string literals only the query's own text is left.
        code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        assert "vector(1)" not in code  # the query's own "or vector(0)" is no injection
        assert "up{" not in code
        assert "\n" not in expr


def _unquote(body: str) -> str:
    """Decode the inside of a PromQL double-quoted literal (the escapes we emit)."""
    simple = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char == '"':
            raise AssertionError(f"unescaped quote in {body!r}")
        if char != "\\":
            out.append(char)
            i += 1
        elif body[i + 1] == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(simple[body[i + 1]])
            i += 2
    return "".join(out)


@given(st.text())
def test_escaping_round_trips(value: str) -> None:
    escaped = escape_label_value(value)
    assert "\n" not in escaped
    assert _unquote(escaped) == value


SOURCE = LatencyHistogramSource.model_validate(
    {
        "metric": "gateway_request_duration_seconds_bucket",
        "armLabel": "service",
        "matchers": [{"label": "namespace", "value": "prod"}, {"label": "code", "value": "200"}],
    }
)


def test_the_latency_histogram_selects_each_arm_by_its_service_by_default() -> None:
    plan = build_plan(
        "prod",
        "gelu-canary",
        "gelu_mlp",
        60,
        [],
        scrape_interval_seconds=15,
        latency_histogram=SOURCE,
        rollout_name="gelu-canary",
    )
    for arm in plan.arms:
        query = arm.latency_histogram
        assert query is not None
        assert query.expr == (
            "sum by (le) (increase(gateway_request_duration_seconds_bucket"
            f'{{service="gelu-canary-{arm.arm}",namespace="prod",code="200"}}[60s]))'
        )
        assert (query.seconds, query.range_s, query.ms_per_unit) == (60, 60, 1000.0)
        assert query.expr in plan.optional_expressions()
    # The histogram is not selected by the pods' labels: it is the Gateway's.
    assert "rollout=" not in plan.candidate.latency_histogram.expr  # type: ignore[union-attr]
    # Optional: the output metrics, the means and the histogram; the traffic's counts and
    # the P99 are not.
    assert plan.optional_expressions() == {e for arm in plan.arms for e in arm.optional()}
    assert len(plan.optional_expressions()) == 2 * 6
    assert plan.candidate.requests.expr not in plan.optional_expressions()
    assert plan.candidate.p99_ms not in plan.optional_expressions()
    assert set(plan.optional_expressions()) < set(plan.expressions())


def test_the_latency_histogram_takes_given_values_units_and_short_ranges() -> None:
    source = SOURCE.model_copy(
        update={
            "baseline_value": "old",
            "candidate_value": 'new"} or vector(1)',
            "unit": "milliseconds",
            "matchers": (),
        }
    )
    # A 10 s interval with 15 s scrapes: queried over 30 s and scaled back, like the counts.
    plan = build_plan("ns", "r", "m", 10, [], scrape_interval_seconds=15, latency_histogram=source)
    b, c = plan.baseline.latency_histogram, plan.candidate.latency_histogram
    assert b is not None
    assert c is not None
    assert b.expr == (
        'sum by (le) (increase(gateway_request_duration_seconds_bucket{service="old"}[30s]))'
    )
    assert c.expr == (
        "sum by (le) (increase(gateway_request_duration_seconds_bucket"
        '{service="new\\"} or vector(1)"}[30s]))'
    )
    assert (c.range_s, c.scale, c.ms_per_unit) == (30, 10 / 30, 1.0)


def test_a_long_rollout_name_gives_its_services_names() -> None:
    # The rollout label value and the Service names are shortened differently.
    name = "a" * 70
    plan = build_plan("ns", "short-label", "m", 60, [], latency_histogram=SOURCE, rollout_name=name)
    expr = plan.baseline.latency_histogram.expr  # type: ignore[union-attr]
    value = re.search(r'service="([^"]+)"', expr)
    assert value is not None
    assert value.group(1).endswith("-baseline")
    assert len(value.group(1)) <= 63
    assert value.group(1).startswith("aaaa")
    assert 'rollout="short-label"' in plan.baseline.requests.expr


def test_a_latency_source_is_plain_data() -> None:
    source = LatencySource("x_bucket", "arm", "v", 1.0, (("a", "b"),))
    q = arm_queries("ns", "r", "m", "baseline", 60, latency=source)
    assert q.latency_histogram is not None
    assert q.latency_histogram.expr == 'sum by (le) (increase(x_bucket{arm="v",a="b"}[60s]))'


def test_selector_mixes_equality_and_regex_matchers() -> None:
    assert selector([("a", "x")], regex=[("b", "y|z")]) == '{a="x",b=~"y|z"}'
