"""Bad input, fast: thousands of generated invalid rollouts against the CRD and the operator.

Each object (``bad_rollouts``) goes through what the sandbox's API server does with it
(``gelu_lab.sandbox.admission``: the CRD's schema and CEL rules, unknown fields refused as
kubectl's default ``fieldValidation=Strict`` asks), and, if admitted, what the operator does
with the object as stored (``parse_spec``, then one reconcile tick over a fake API). Every one
must be refused by one of them, by a message that names the broken field; one that the CRD
admits and the model refuses must end as ``InvalidSpec`` (Ready False, Stalled True) and a
Warning Event, with nothing else done. The only objects both may accept are those with a
hostile string in a free-form label value, which the queries then carry escaped
(``test_query_safety`` proves the escaping against a real PromQL parser).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gelu_lab.sandbox.admission import CustomResourceSchema, Verdict
from gelu_rollout.resources.crd import render_crd
from gelu_rollout.spec import SpecError, parse_spec
from tests.fakes.world import RolloutWorld
from tests.property.bad_rollouts import (
    BASES,
    DROPPED_NULL,
    FREE_FORM,
    BadRollout,
    bad_rollouts,
)
from tests.property.query_checks import assert_plan_selects
from tests.unit import test_crd as crd_tests

(_VERSION,) = render_crd()["spec"]["versions"]
SCHEMA = CustomResourceSchema(_VERSION["schema"]["openAPIV3Schema"])


def without_rules(schema: Any) -> Any:
    """A schema less its CEL rules: what an API server without CEL validation (before
    Kubernetes 1.25) or a CRD older than the operator (Helm never upgrades CRDs) admits."""
    if isinstance(schema, dict):
        return {k: without_rules(v) for k, v in schema.items() if k != "x-kubernetes-validations"}
    if isinstance(schema, list):
        return [without_rules(v) for v in schema]
    return schema


NO_RULES = CustomResourceSchema(without_rules(_VERSION["schema"]["openAPIV3Schema"]))
EXAMPLES = int(os.environ.get("GELU_BAD_INPUT_EXAMPLES", "2000"))

# outcome -> category -> count, reported by the last test (and written for docs/reliability.md
# when GELU_BAD_INPUT_REPORT names a file).
OUTCOMES: collections.defaultdict[str, collections.Counter[str]] = collections.defaultdict(
    collections.Counter
)

_QUOTED_KEY = re.compile(r"\[(['\"])(.*?)\1\]")


def normalized(path: str) -> str:
    """``spec.model['x-y']`` and ``spec.model.x-y`` read the same."""
    return _QUOTED_KEY.sub(lambda m: f".{m[2]}", path)


def related(named: str, broken: str) -> bool:
    """Whether a problem at ``named`` is about the field at ``broken``: the same field, one
    inside it, or the object that holds it (a rule on a list or a mapping), never ``spec``
    itself for a deeper field."""
    named, broken = normalized(named), normalized(broken)
    if named == broken:
        return True
    if named in ("", "spec", "<nil>"):
        return False
    inside = (named + ".", named + "[")
    outside = (broken + ".", broken + "[")
    return broken.startswith(inside) or named.startswith(outside)


def admission(bad: BadRollout) -> Verdict:
    return SCHEMA.admit(bad.manifest("bad"))


def _without(spec: Any, field: str) -> Any:
    """``spec`` less the field at a ``spec.a.b`` path (of mappings only)."""
    spec = copy.deepcopy(spec)
    *parents, last = field.removeprefix("spec.").split(".")
    node = spec
    for key in parents:
        node = node[key]
    del node[last]
    return spec


def model_refusal(spec: Any) -> SpecError | None:
    try:
        parse_spec(spec)
    except SpecError as error:
        return error
    return None


def operator_reports(spec: Any) -> tuple[str, str]:
    """One tick of the controller over the admitted object: its conditions and Event."""
    world = RolloutWorld(spec)
    result = world.tick()
    assert world.condition("Ready") == ("False", "InvalidSpec")
    assert world.condition("Stalled") == ("True", "InvalidSpec")
    (event,) = result.events
    assert (event.type, event.reason) == ("Warning", "InvalidSpec")
    # A bad spec touches nothing: no request to the API, no query to Prometheus.
    assert world.api.requests == []
    assert world.observer.calls == []  # type: ignore[attr-defined]
    return world.condition_message("Ready"), event.message


def test_the_bases_are_valid() -> None:
    for base in BASES:
        verdict = SCHEMA.admit(BadRollout("none", "spec", base).manifest("ok"))
        assert not verdict.refused, verdict.causes
        assert not verdict.unknown
        parse_spec(verdict.obj["spec"])


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(bad_rollouts)
def test_every_bad_rollout_is_refused_naming_its_field(bad: BadRollout) -> None:
    verdict = admission(bad)
    if verdict.unknown:  # fieldValidation=Strict: a 400 that lists them
        assert any(related(path, bad.field) for path in verdict.unknown), (bad, verdict.unknown)
        OUTCOMES["refused by the schema (unknown field)"][bad.category] += 1
        return
    if verdict.refused:
        causes = [c for c in verdict.causes if c.field != "<nil>"]
        assert any(related(c.field, bad.field) for c in causes), (bad, verdict.causes)
        by_rule = all(c.rule for c in causes)
        OUTCOMES["refused by a CEL rule" if by_rule else "refused by the schema"][bad.category] += 1
        if by_rule:
            # Without the rules the schema admits it, and the operator must say why not.
            unchecked = NO_RULES.admit(bad.manifest("bad"))
            assert not unchecked.refused, unchecked.causes
            problem = model_refusal(unchecked.obj["spec"])
            assert problem is not None, bad
            assert any(related(p.path, bad.field) for p in problem.problems), (bad, problem)
            ready, event = operator_reports(unchecked.obj["spec"])
            assert str(problem) in ready
            assert str(problem) in event
            OUTCOMES["without CEL rules: admitted, InvalidSpec from the operator"][
                bad.category
            ] += 1
        return
    stored = verdict.obj["spec"]
    problem = model_refusal(stored)
    if problem is not None:
        assert any(related(p.path, bad.field) for p in problem.problems), (bad, problem)
        ready, event = operator_reports(stored)
        assert str(problem) in ready
        assert str(problem) in event
        OUTCOMES["admitted, InvalidSpec from the operator"][bad.category] += 1
        return
    spec = parse_spec(stored)
    if bad.category == DROPPED_NULL:
        # The API server dropped the null and the default applies, as docs/spec.md says.
        assert spec == parse_spec(_without(bad.spec, bad.field)), bad
        OUTCOMES["null dropped by the API server, default stored"][bad.category] += 1
        return
    # Both accept it: only a hostile value in a free-form label value may get this far.
    assert normalized(bad.field) in FREE_FORM, (bad, stored)
    assert_plan_selects(spec, namespace="default", rollout="bad")
    OUTCOMES["valid, escaped in the queries"][bad.category] += 1


@settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(crd_tests._specs)
def test_the_emulators_admission_is_the_crd_tests_admission(spec: dict[str, Any]) -> None:
    # tests/unit/test_crd.py proves its stand-in for the API server agrees with the model; the
    # sandbox's emulator admits by its own code, which must agree with that stand-in.
    reference = crd_tests.admit(crd_tests.manifest(spec))
    verdict = SCHEMA.admit(crd_tests.manifest(spec))
    assert reference.accepted == (not verdict.refused and not verdict.unknown), (
        reference,
        verdict,
    )
    if reference.accepted:
        assert verdict.obj["spec"] == reference.spec


def test_report_the_outcomes() -> None:
    if not OUTCOMES:
        pytest.skip("the property test did not run in this session")
    report = {outcome: dict(sorted(counts.items())) for outcome, counts in OUTCOMES.items()}
    # Each object has one outcome; the rule-less CRD's outcomes are a second look at some.
    total = sum(
        sum(counts.values())
        for outcome, counts in OUTCOMES.items()
        if not outcome.startswith("without CEL rules")
    )
    print(f"\n{total} generated objects:\n{json.dumps(report, indent=2)}")
    if target := os.environ.get("GELU_BAD_INPUT_REPORT"):
        Path(target).write_text(json.dumps({"total": total, "outcomes": report}, indent=2))
    assert total >= min(500, EXAMPLES)
