"""Whether a rollout's queries mean what they say, read back by a real PromQL parser.

``promql-parser`` (a Rust port of Prometheus's own parser) reads each built expression into
its syntax tree. A query *means what it says* when its tree is the tree of the same query
built from harmless placeholder values, with each placeholder then replaced by the real value
inside the label matchers' values: no value, however hostile, adds a matcher, a selector, an
operator or a function, or changes a matcher's label or operator, and each matcher's value is
the value exactly (escaping undone by the parser).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import promql_parser

from gelu_rollout.adapters.prometheus.queries import QueryPlan, build_plan
from gelu_rollout.resources.names import label_value, service_name
from gelu_rollout.spec.model import LabelMatcher, LatencyHistogramSource, RolloutSpec

Tree = tuple[Any, ...]
BURN_WINDOWS: tuple[float, ...] = (300.0, 3600.0)


def tree(node: Any) -> Tree:
    """A PromQL syntax tree as nested tuples: types, operators, names and matchers."""
    kind = type(node).__name__
    if kind == "BinaryExpr":
        return (kind, str(node.op), str(node.modifier), tree(node.lhs), tree(node.rhs))
    if kind == "AggregateExpr":
        param = None if node.param is None else tree(node.param)
        return (kind, str(node.op), str(node.modifier), tree(node.expr), param)
    if kind == "Call":
        return (kind, node.func.name, tuple(tree(arg) for arg in node.args))
    if kind == "MatrixSelector":
        return (kind, str(node.range), tree(node.vector_selector))
    if kind == "VectorSelector":
        matchers = tuple(sorted((m.name, str(m.op), m.value) for m in node.matchers.matchers))
        assert not node.matchers.or_matchers, "an `or` inside a selector"
        return (kind, node.name, matchers, str(node.offset), str(node.at))
    if kind in {"ParenExpr", "UnaryExpr"}:
        return (kind, tree(node.expr))
    if kind in {"NumberLiteral", "StringLiteral"}:
        return (kind, node.val)
    raise AssertionError(f"an unexpected PromQL node: {kind}")


def substituted(node: Tree, values: Mapping[str, str]) -> Tree:
    """``node`` with every placeholder in a matcher's value replaced by its real value."""
    if node and node[0] == "VectorSelector":
        kind, name, matchers, offset, at = node
        replaced = []
        for label, op, held in matchers:
            value = held
            for placeholder, real in values.items():
                value = value.replace(placeholder, real)
            replaced.append((label, op, value))
        return (kind, name, tuple(sorted(replaced)), offset, at)
    return tuple(substituted(x, values) if isinstance(x, tuple) else x for x in node)


def plan_for(spec: RolloutSpec, namespace: str, rollout: str) -> QueryPlan:
    """The plan the controller builds for a rollout's tick (``Controller._observe``)."""
    return build_plan(
        namespace,
        label_value(rollout),
        spec.model.name,
        spec.analysis.interval_seconds,
        BURN_WINDOWS,
        latency_histogram=spec.analysis.latency_histogram,
        rollout_name=rollout,
    )


def _placeholder_histogram(
    source: LatencyHistogramSource | None, rollout: str, values: dict[str, str]
) -> LatencyHistogramSource | None:
    """``source`` with a placeholder for every label value (the arms' default ones, their
    Services' names, written out)."""
    if source is None:
        return None

    def hold(real: str) -> str:
        placeholder = f"zzplaceholder{len(values)}zz"
        values[placeholder] = real
        return placeholder

    matchers = tuple(LabelMatcher(label=m.label, value=hold(m.value)) for m in source.matchers)
    baseline = source.baseline_value or service_name(rollout, "baseline")
    candidate = source.candidate_value or service_name(rollout, "candidate")
    return source.model_copy(
        update={
            "baseline_value": hold(baseline),
            "candidate_value": hold(candidate),
            "matchers": matchers,
        }
    )


def expressions_mean_what_they_say(
    real: Sequence[str], placeholders: Sequence[str], values: Mapping[str, str]
) -> None:
    assert len(real) == len(placeholders)
    for built, intended in zip(real, placeholders, strict=True):
        parsed = tree(promql_parser.parse(built))
        expected = substituted(tree(promql_parser.parse(intended)), values)
        assert parsed == expected, (built, intended)


def assert_plan_selects(spec: RolloutSpec, *, namespace: str, rollout: str) -> None:
    """Every query of the rollout's plan parses, to the tree its placeholders' plan has."""
    values: dict[str, str] = {}

    def hold(real: str) -> str:
        placeholder = f"zzplaceholder{len(values)}zz"
        values[placeholder] = real
        return placeholder

    real = plan_for(spec, namespace, rollout)
    held_namespace, held_rollout = hold(namespace), hold(label_value(rollout))
    held_name = hold(rollout)
    held_model = hold(spec.model.name)
    histogram = _placeholder_histogram(spec.analysis.latency_histogram, rollout, values)
    intended = build_plan(
        held_namespace,
        held_rollout,
        held_model,
        spec.analysis.interval_seconds,
        BURN_WINDOWS,
        latency_histogram=histogram,
        rollout_name=held_name,
    )
    # Arm by arm: the plan's own list holds each distinct expression once, and two hostile
    # values that happen to be equal would merge two of them.
    for real_arm, intended_arm in zip(real.arms, intended.arms, strict=True):
        expressions_mean_what_they_say(real_arm.expressions(), intended_arm.expressions(), values)
