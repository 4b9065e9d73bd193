"""No spec value can change what a Prometheus query means.

Every spec value that reaches PromQL is either refused when the spec is parsed (the metric
name, the label names: their patterns leave no room for a quote, a brace or an operator) or a
label matcher's value, escaped. The escaping is proven against real parsers: ``promql-parser``
(a Rust port of Prometheus's parser) reads each built query to the tree of the same query built
from harmless placeholders (``tests/property/query_checks.py``), for hand-picked hostile values
and for any text hypothesis draws; and a real Prometheus parses each one and prints it back
(``/api/v1/format_query``) to that same tree, and selects exactly the series whose labels hold
the hostile values, not a decoy that an injection would reach.
"""

from __future__ import annotations

import copy
import json
import time
import urllib.parse
import urllib.request
from typing import Any

import promql_parser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_rollout.adapters.prometheus.queries import (
    LATENCY_SUMMARY,
    build_plan,
    escape_label_value,
)
from gelu_rollout.spec import SpecError, parse_spec
from tests.metrics_targets import MetricsTarget
from tests.property.bad_rollouts import HOSTILE, NAMED, VARIANT_BASE, field_path
from tests.property.query_checks import (
    BURN_WINDOWS,
    assert_plan_selects,
    expressions_mean_what_they_say,
    substituted,
    tree,
)

Json = dict[str, Any]
HISTOGRAM: tuple[str, ...] = ("analysis", "latencyHistogram")


def spec_with(path: tuple[str | int, ...], value: Any) -> Json:
    spec = copy.deepcopy(VARIANT_BASE)
    node: Any = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return spec


def hostile_plan(namespace: str, rollout: str, model: str, values: tuple[str, str, str]) -> None:
    """``build_plan`` with hostile values where the spec would not have let them in (namespace,
    rollout and model come from the API and the spec; the plan must not trust them either)."""
    spec = parse_spec(
        spec_with(
            HISTOGRAM,
            {
                "metric": "gelu_gateway_request_duration_seconds_bucket",
                "armLabel": "service",
                "baselineValue": values[0],
                "candidateValue": values[1],
                "matchers": [{"label": "route", "value": values[2]}],
            },
        )
    )
    forced = spec.model_copy(update={"model": spec.model.model_copy(update={"name": model})})
    assert_plan_selects(forced, namespace=namespace, rollout=rollout)


# -- refused at parse time -----------------------------------------------------------------


_NAMES = {
    "metric": (*HISTOGRAM, "metric"),
    "armLabel": (*HISTOGRAM, "armLabel"),
    "matcher-label": (*HISTOGRAM, "matchers", 0, "label"),
    "model-name": ("model", "name"),
}
_VALID = {path: valid for _, path, valid in NAMED if valid is not None}


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("path", list(_NAMES.values()), ids=list(_NAMES))
def test_a_hostile_name_is_refused_where_it_would_be_syntax(
    path: tuple[str | int, ...], value: str
) -> None:
    # Names are PromQL syntax, not strings: only their own alphabet gets in.
    for written in (value, f"gelu{value}", f"{value}_bucket", f"a{value}b_bucket"):
        if _VALID[path].match(written):
            continue  # "gelu" + "" is a fine name
        with pytest.raises(SpecError) as error:
            parse_spec(spec_with(path, written))
        assert field_path(path) in [p.path for p in error.value.problems], error.value


# -- escaped where it is a value -----------------------------------------------------------


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_a_hostile_label_value_is_escaped_and_only_that(value: str) -> None:
    for field in ("baselineValue", "candidateValue"):
        spec = parse_spec(spec_with((*HISTOGRAM, field), value))
        assert_plan_selects(spec, namespace="default", rollout="r")
    spec = parse_spec(spec_with((*HISTOGRAM, "matchers", 0, "value"), value))
    assert_plan_selects(spec, namespace="default", rollout="r")


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_namespace_rollout_and_model_are_escaped(value: str) -> None:
    hostile_plan(value, value, value, (value or "x", value or "y", value or "z"))
    hostile_plan("default", f"r{value}", f"m{value}", ("a", "b", "c"))


_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(namespace=_TEXT, rollout=_TEXT, model=_TEXT, values=st.tuples(_TEXT, _TEXT, _TEXT))
def test_any_text_is_escaped(
    namespace: str, rollout: str, model: str, values: tuple[str, str, str]
) -> None:
    hostile_plan(namespace, rollout, model, values)


def test_the_escaping_closes_no_literal() -> None:
    # The escaped text never holds an unescaped quote: the literal cannot end early.
    for value in HOSTILE:
        escaped = escape_label_value(value)
        selector: Any = promql_parser.parse(f'm{{a="{escaped}"}}')
        assert selector.matchers.matchers[0].value == value


def test_the_check_would_catch_an_injection() -> None:
    # The tree comparison is not vacuous: an unescaped quote does change the tree.
    intended = 'm{a="zzplaceholder0zz"}'
    injected = 'm{a="x"} or vector(1) or m{a=""}'
    with pytest.raises(AssertionError):
        expressions_mean_what_they_say([injected], [intended], {"zzplaceholder0zz": "x"})


# -- a real Prometheus ---------------------------------------------------------------------


def _get(url: str, path: str, **params: str) -> Any:
    with urllib.request.urlopen(
        f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=10
    ) as response:
        return json.loads(response.read())


def _exposition(value: str) -> str:
    """``value`` as a label value in Prometheus' text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _plans(value: str) -> tuple[list[str], list[str], dict[str, str]]:
    """The hostile plan's expressions, arm by arm, its placeholders' and the placeholder."""
    source = {**VARIANT_BASE["analysis"]["latencyHistogram"], "matchers": [{"label": "route"}]}
    source |= {"baselineValue": value, "candidateValue": value}
    source["matchers"][0]["value"] = value
    histogram = parse_spec(spec_with(HISTOGRAM, source)).analysis.latency_histogram
    assert histogram is not None
    hostile = build_plan(value, value, value, 30, BURN_WINDOWS, latency_histogram=histogram)
    held = histogram.model_copy(
        update={
            "baseline_value": _HELD,
            "candidate_value": _HELD,
            "matchers": tuple(m.model_copy(update={"value": _HELD}) for m in histogram.matchers),
        }
    )
    intended = build_plan(_HELD, _HELD, _HELD, 30, BURN_WINDOWS, latency_histogram=held)
    arms = zip(hostile.arms, intended.arms, strict=True)
    pairs = [
        pair
        for real, want in arms
        for pair in zip(real.expressions(), want.expressions(), strict=True)
    ]
    return [real for real, _ in pairs], [want for _, want in pairs], {_HELD: value}


_HELD = "zzplaceholder0zz"


@pytest.mark.prometheus
def test_prometheus_reads_each_query_as_intended_and_selects_no_decoy() -> None:
    values = [v for v in HOSTILE if v and "\x00" not in v]  # a scrape label cannot hold NUL
    with PrometheusServer(scrape_interval_seconds=0.5) as server:
        # What Prometheus itself parses each query to, printed back, read by the Rust parser.
        for value in [*values, "x\x00y"]:
            hostile, intended, held = _plans(value)
            for built, wanted in zip(hostile, intended, strict=True):
                answer = _get(server.url, "/api/v1/format_query", query=built)
                assert answer["status"] == "success", (value, built, answer)
                assert tree(promql_parser.parse(answer["data"])) == substituted(
                    tree(promql_parser.parse(wanted)), held
                ), (value, built, answer["data"])

        # Each target's series carry the hostile values; one decoy per target carries what
        # an injection would select instead. The p99 query must find the hostile one alone.
        targets: list[MetricsTarget] = []
        try:
            for i, value in enumerate(values):
                target = MetricsTarget(
                    f'{LATENCY_SUMMARY}{{model="{_exposition(value)}",quantile="0.99"}} '
                    f"{1000 * (i + 1)}\n"
                    f'{LATENCY_SUMMARY}{{model="gelu",quantile="0.99"}} 999999000\n'
                )
                targets.append(target)
            server.set_targets(
                [
                    ScrapeTarget(t.address, {"namespace": v, "rollout": v, "arm": "baseline"})
                    for t, v in zip(targets, values, strict=True)
                ]
            )
            server.wait_for_targets(len(values))
            for i, value in enumerate(values):
                p99 = build_plan(value, value, value, 30).baseline.p99_ms
                deadline = time.monotonic() + 20
                while not (
                    result := _get(server.url, "/api/v1/query", query=p99)["data"]["result"]
                ):
                    assert time.monotonic() < deadline, (value, p99)
                    time.sleep(0.2)
                (sample,) = result
                assert float(sample["value"][1]) == float(i + 1), (value, p99, sample)
        finally:
            for target in targets:
                target.close()
