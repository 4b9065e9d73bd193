"""The PromQL of a tick: selectors, escaping, ranges."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gelu_rollout.adapters.prometheus.queries import (
    arm_queries,
    build_plan,
    escape_label_value,
    range_seconds,
    selector,
)

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
    # requests, failures, nonfinite, histogram, p99, and the 720 s window's two, per arm.
    assert len(expressions) == 2 * 7
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
    plan = build_plan(hostile, hostile, hostile + "\n", 60, [], scrape_interval_seconds=15)
    for expr in plan.expressions():
        # Outside string literals only the query's own text is left.
        code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        assert "vector" not in code
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


def test_selector_mixes_equality_and_regex_matchers() -> None:
    assert selector([("a", "x")], regex=[("b", "y|z")]) == '{a="x",b=~"y|z"}'
