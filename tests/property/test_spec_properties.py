"""Property tests of the spec and status layer."""

from __future__ import annotations

import ast
import copy
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gelu_rollout.spec import (
    GATE_KEYS,
    VARIANTS,
    Condition,
    LedgerEntry,
    RolloutSpec,
    RolloutStatus,
    SpecError,
    Stage,
    parse_spec,
    parse_status,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Json = dict[str, Any]
Path = tuple[str | int, ...]

# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

model_names = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}", fullmatch=True)
dns_names = st.from_regex(
    r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,2}",
    fullmatch=True,
)


def floats(low: float, high: float, *, exclude_low: bool = False) -> st.SearchStrategy[float]:
    return st.floats(low, high, exclude_min=exclude_low, allow_nan=False, allow_infinity=False)


def numbers(low: float, high: float, *, exclude_low: bool = False) -> st.SearchStrategy[Any]:
    """Floats, or whole numbers written as YAML integers."""
    whole = st.integers(int(low) + 1, int(high)) if int(high) > int(low) else st.nothing()
    return floats(low, high, exclude_low=exclude_low) | whole


@st.composite
def optional_fields(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> Json:
    """A mapping with a random subset of ``fields``."""
    return {key: draw(value) for key, value in fields.items() if draw(st.booleans())}


@st.composite
def arm_sources(draw: st.DrawFn) -> tuple[Json, Json]:
    """Two different sources (variant or repository), for baseline and candidate."""

    def source(kind: str, value: str) -> Json:
        return {"variant": value} if kind == "variant" else {"repository": {"configMapName": value}}

    kinds = [draw(st.sampled_from(["variant", "repository"])) for _ in range(2)]
    values: list[str] = []
    for kind in kinds:
        pool = st.sampled_from(VARIANTS) if kind == "variant" else dns_names
        values.append(draw(pool.filter(lambda v: v not in values)))
    return source(kinds[0], values[0]), source(kinds[1], values[1])


@st.composite
def valid_specs(draw: st.DrawFn) -> Json:
    """Random valid specs, in manifest (camelCase) form, with optional fields left out at random."""
    baseline, candidate = draw(arm_sources())
    for arm in (baseline, candidate):
        if draw(st.booleans()):
            arm["replicas"] = draw(st.integers(1, 100))
    spec: Json = {
        "model": {"name": draw(model_names), **draw(optional_fields({"image": st.just("img")}))},
        "baseline": baseline,
        "candidate": candidate,
    }

    interval = draw(st.integers(10, 3600))
    analysis: Json = draw(
        optional_fields(
            {
                "warmupSeconds": st.integers(0, 10**6),
                "falseRollbackBudget": floats(0, 0.2, exclude_low=True),
                "ledgerLimit": st.integers(10, 500),
                "insufficientData": optional_fields(
                    {
                        "maxExtensionSeconds": st.integers(0, 10**5),
                        "action": st.sampled_from(["Pause", "Rollback"]),
                    }
                ),
                "slo": optional_fields(
                    {
                        "availability": floats(0.5, 0.9999999, exclude_low=True),
                        "latencyP99Ms": numbers(0, 10**5, exclude_low=True),
                    }
                ),
            }
        )
    )
    if interval > 300 or draw(st.booleans()):
        analysis["intervalSeconds"] = interval
    else:
        interval = 60

    weights = sorted(draw(st.sets(st.integers(1, 99), min_size=1, max_size=20)))
    steps = []
    for weight in weights:
        step: Json = {"weight": weight}
        if interval > 300 or draw(st.booleans()):
            step["analysisSeconds"] = draw(st.integers(interval, interval * 10))
        steps.append(step)
    traffic: Json = {}
    if interval > 300 or draw(st.booleans()):
        traffic["steps"] = steps
    mode = draw(st.sampled_from([None, "ReplicaRatio", "HTTPRoute"]))
    if mode is not None:
        traffic["mode"] = mode
    if mode == "HTTPRoute":
        traffic["httpRouteName"] = draw(dns_names)
    if traffic:
        spec["traffic"] = traffic

    window = st.fixed_dictionaries(
        {
            "burnRate": numbers(1, 100, exclude_low=True),
            "longWindowFactor": numbers(0, 20, exclude_low=True),
        }
    )
    gates: Json = draw(
        optional_fields(
            {
                "burnRate": optional_fields(
                    {"enabled": st.booleans(), "windows": st.lists(window, min_size=1, max_size=4)}
                ),
                "errorRate": optional_fields(
                    {
                        "enabled": st.booleans(),
                        "maxBurnRate": numbers(0, 100, exclude_low=True),
                        "maxRatioToBaseline": numbers(1, 100),
                        "minRequests": st.integers(1, 10**6),
                    }
                ),
                "latency": optional_fields(
                    {
                        "enabled": st.booleans(),
                        "maxRegression": numbers(0, 10, exclude_low=True),
                        "minTicks": st.integers(1, 100),
                    }
                ),
                "divergence": optional_fields(
                    {
                        "enabled": st.booleans(),
                        "maxKL": numbers(0, 10, exclude_low=True),
                        "minOutputs": st.integers(1, 10**6),
                        "smoothing": numbers(0, 10, exclude_low=True),
                    }
                ),
                "nonFinite": optional_fields(
                    {"enabled": st.booleans(), "maxPerMillion": numbers(0, 10**6)}
                ),
            }
        )
    )
    if all(gates.get(key, {}).get("enabled", True) is False for key in GATE_KEYS):
        gates[draw(st.sampled_from(GATE_KEYS))]["enabled"] = True
    if gates:
        analysis["gates"] = gates
    if analysis:
        spec["analysis"] = analysis
    return spec


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["Pause", "HTTPRoute", "exact", "tanh", "a", "-", "A"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def all_paths(node: object, prefix: Path = ()) -> list[Path]:
    """Every location in ``node``, containers included, the root first."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += all_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += all_paths(value, (*prefix, index))
    return found


def resolve(node: object, path: Path) -> tuple[bool, object]:
    for token in path:
        in_list = isinstance(token, int) and isinstance(node, list) and 0 <= token < len(node)
        in_dict = isinstance(token, str) and isinstance(node, dict) and token in node
        if not (in_list or in_dict):
            return False, None
        node = node[token]  # type: ignore[index]
    return True, node


PATH_TOKEN = re.compile(r"\[(\d+)\]|\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]|\.([^.\[]+)")


def tokens(path: str) -> Path:
    """``spec.traffic.steps[1].weight`` -> ("traffic", "steps", 1, "weight");
    ``spec.model['a.b']`` -> ("model", "a.b")."""
    assert path == "spec" or path.startswith(("spec.", "spec[")), path
    rest = path.removeprefix("spec")
    parts: list[str | int] = []
    position = 0
    for match in PATH_TOKEN.finditer(rest):
        assert match.start() == position, path  # the whole path is made of tokens
        position = match.end()
        index, quoted, name = match.groups()
        if index is not None:
            parts.append(int(index))
        else:
            parts.append(ast.literal_eval(quoted) if quoted is not None else name)
    assert position == len(rest), path
    return tuple(parts)


def path_is_grounded(data: object, path: str) -> bool:
    """The problem's location exists in the input, or its parent does (a missing key)."""
    parts = tokens(path)
    found, _ = resolve(data, parts)
    if found:
        return True
    parent_found, parent = resolve(data, parts[:-1])
    return parent_found and isinstance(parent, dict) and isinstance(parts[-1], str)


def outcome(data: object) -> RolloutSpec | list[tuple[str, str]]:
    try:
        return parse_spec(data)
    except SpecError as error:
        return [(p.path, p.message) for p in error.problems]


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    data: Any = draw(valid_specs())
    for _ in range(draw(st.integers(1, 3))):
        locations = all_paths(data)
        path = draw(st.sampled_from(locations))
        action = draw(st.sampled_from(["delete", "replace", "replace", "add"]))
        if not path:
            data = draw(junk) if action == "replace" else data
            continue
        _, parent = resolve(data, path[:-1])
        assert isinstance(parent, dict | list)
        if action == "delete":
            del parent[path[-1]]  # type: ignore[arg-type]
        elif action == "replace":
            parent[path[-1]] = draw(junk)  # type: ignore[index]
        else:
            _, target = resolve(data, path)
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=6))] = draw(junk)
            elif isinstance(target, list):
                target.append(draw(junk))
    return data


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(valid_specs())
def test_valid_specs_parse_and_round_trip(data: Json) -> None:
    spec = parse_spec(data)
    out = spec.to_dict()
    assert parse_spec(out) == spec
    assert parse_spec(out).to_dict() == out
    # every value given in the input survives into to_dict
    for path in all_paths(data):
        found, value = resolve(data, path)
        if found and not isinstance(value, dict | list):
            assert resolve(out, path) == (True, value), path


@SETTINGS
@given(valid_specs())
def test_valid_specs_parse_in_manifest_form(data: Json) -> None:
    manifest = {"apiVersion": "gelu.dev/v1alpha1", "kind": "GeluModelRollout", "spec": data}
    assert parse_spec(manifest) == parse_spec(data)


@SETTINGS
@given(valid_specs())
def test_helpers_are_consistent(data: Json) -> None:
    spec = parse_spec(data)
    assert 0 < spec.error_budget < 0.5
    assert 0 <= spec.statistical_gate_count <= 6


@SETTINGS
@given(mutated_specs())
def test_mutated_specs_parse_or_report_grounded_problems(data: Any) -> None:
    original = repr(data)
    result = outcome(data)
    assert repr(data) == original  # parsing never changes its input
    if isinstance(result, RolloutSpec):
        assert parse_spec(result.to_dict()) == result
        return
    assert result, "a SpecError must list at least one problem"
    for path, message in result:
        assert message
        assert path_is_grounded(data, path), (path, message)
    assert len(set(result)) == len(result)


@SETTINGS
@given(mutated_specs())
def test_parse_is_deterministic(data: Any) -> None:
    first = outcome(data)
    second = outcome(copy.deepcopy(data))
    if isinstance(first, list):
        assert first == second
    else:
        assert isinstance(second, RolloutSpec)
        assert first == second


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------

times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
reasons = st.from_regex(r"[A-Za-z]([A-Za-z0-9_,:]{0,10}[A-Za-z0-9_])?", fullmatch=True)


def model_of(
    model: type[Condition] | type[LedgerEntry] | type[RolloutStatus],
    fields: dict[str, st.SearchStrategy[Any]],
) -> st.SearchStrategy[Any]:
    """Instances of ``model`` from camelCase fields (``builds`` would see the alias names)."""
    return st.fixed_dictionaries(fields).map(model.model_validate)


conditions = model_of(
    Condition,
    {
        "type": st.text(min_size=1, max_size=20),
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": reasons,
        "message": st.text(max_size=20),
        "lastTransitionTime": times,
        "observedGeneration": st.none() | st.integers(0, 10**9),
    },
)
ledger_entries = model_of(
    LedgerEntry,
    {
        "time": times,
        "step": st.integers(0, 19),
        "weight": st.integers(0, 100),
        "gate": st.sampled_from(GATE_KEYS),
        "verdict": st.sampled_from(["Pass", "Fail", "Inconclusive"]),
        "value": st.none() | finite,
        "threshold": st.none() | finite,
        "samples": st.floats(0, 1e12),
        "windowSeconds": st.floats(0, 1e6),
        "message": st.text(max_size=20),
    },
)
statuses = model_of(
    RolloutStatus,
    {
        "observedGeneration": st.none() | st.integers(0, 10**9),
        "stage": st.sampled_from(Stage),
        "stepIndex": st.integers(0, 19),
        "candidateWeight": st.integers(0, 100),
        "startedAt": st.none() | times,
        "stepStartedAt": st.none() | times,
        "finishedAt": st.none() | times,
        "conditions": st.lists(conditions, max_size=3),
        "ledger": st.lists(ledger_entries, max_size=5),
        "lastVerdict": st.none() | st.sampled_from(["Pass", "Fail", "Inconclusive"]),
        "message": st.text(max_size=20),
        "handledRequest": st.none() | st.text(max_size=10),
        "analysis": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    },
)


@SETTINGS
@given(statuses)
def test_status_round_trips(status: RolloutStatus) -> None:
    out = status.to_dict()
    assert parse_status(out) == status
    assert parse_status(out).to_dict() == out
    for key in ("startedAt", "stepStartedAt", "finishedAt"):
        if key in out:
            assert out[key].endswith("Z")
            assert parse_status({key: out[key]}).to_dict()[key] == out[key]
