"""Unit tests of the GeluModelRollout spec and status layer."""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gelu_rollout.spec import (
    API_VERSION,
    DEFAULT_IMAGE,
    GATE_KEYS,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    VARIANTS,
    VERSION,
    AnalysisSpec,
    ArmSpec,
    Condition,
    GatesSpec,
    LedgerEntry,
    ModelSpec,
    NonFiniteGate,
    RepositorySpec,
    RolloutSpec,
    RolloutStatus,
    SpecError,
    SpecProblem,
    Stage,
    TrafficSpec,
    TrafficStep,
    parse_spec,
    parse_status,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def minimal() -> dict[str, Any]:
    """The smallest valid spec."""
    return {
        "model": {"name": "gelu_mlp"},
        "baseline": {"variant": "exact"},
        "candidate": {"variant": "tanh"},
    }


def roomy() -> dict[str, Any]:
    """A valid spec whose single step is long enough for any interval."""
    spec = minimal()
    spec["traffic"] = {"steps": [{"weight": 50, "analysisSeconds": 3600}]}
    return spec


def _tokens(path: str) -> list[str | int]:
    tokens: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            tokens.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            tokens.append(int(index))
            rest = rest.removeprefix("[")
    return tokens


def put(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set ``path`` (e.g. ``traffic.steps[0].weight``) in a copy of ``data``."""
    data = copy.deepcopy(data)
    node: Any = data
    tokens = _tokens(path)
    for token, following in itertools.pairwise(tokens):
        if isinstance(token, str) and token not in node:
            node[token] = [] if isinstance(following, int) else {}
        node = node[token]
    node[tokens[-1]] = value
    return data


def drop(data: dict[str, Any], path: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    node: Any = data
    tokens = _tokens(path)
    for token in tokens[:-1]:
        node = node[token]
    del node[tokens[-1]]
    return data


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return [(p.path, p.message) for p in info.value.problems]


def paths(data: object) -> list[str]:
    return [path for path, _ in problems(data)]


# ---------------------------------------------------------------------------------------------
# Resource names
# ---------------------------------------------------------------------------------------------


def test_resource_names() -> None:
    assert (GROUP, VERSION, KIND, PLURAL, SHORT_NAME) == (
        "gelu.dev",
        "v1alpha1",
        "GeluModelRollout",
        "gelumodelrollouts",
        "gmr",
    )
    assert API_VERSION == "gelu.dev/v1alpha1"


# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------

DEFAULTS: list[tuple[str, Callable[[RolloutSpec], object], object]] = [
    ("model.image", lambda s: s.model.image, "nvcr.io/nvidia/tritonserver:24.09-py3"),
    ("baseline.replicas", lambda s: s.baseline.replicas, 1),
    ("baseline.repository", lambda s: s.baseline.repository, None),
    ("candidate.replicas", lambda s: s.candidate.replicas, 1),
    ("traffic.mode", lambda s: s.traffic.mode, "ReplicaRatio"),
    ("traffic.httpRouteName", lambda s: s.traffic.http_route_name, None),
    (
        "traffic.steps",
        lambda s: [(x.weight, x.analysis_seconds) for x in s.traffic.steps],
        [(10, 300), (25, 300), (50, 300)],
    ),
    ("analysis.intervalSeconds", lambda s: s.analysis.interval_seconds, 60),
    ("analysis.warmupSeconds", lambda s: s.analysis.warmup_seconds, 60),
    ("analysis.falseRollbackBudget", lambda s: s.analysis.false_rollback_budget, 0.01),
    ("analysis.ledgerLimit", lambda s: s.analysis.ledger_limit, 50),
    (
        "analysis.insufficientData.maxExtensionSeconds",
        lambda s: s.analysis.insufficient_data.max_extension_seconds,
        600,
    ),
    ("analysis.insufficientData.action", lambda s: s.analysis.insufficient_data.action, "Pause"),
    ("analysis.slo.availability", lambda s: s.analysis.slo.availability, 0.999),
    ("analysis.slo.latencyP99Ms", lambda s: s.analysis.slo.latency_p99_ms, 250.0),
    ("gates.burnRate.enabled", lambda s: s.analysis.gates.burn_rate.enabled, True),
    (
        "gates.burnRate.windows",
        lambda s: [(w.burn_rate, w.long_window_factor) for w in s.analysis.gates.burn_rate.windows],
        [(14.4, 1.0), (6.0, 3.0)],
    ),
    ("gates.errorRate.enabled", lambda s: s.analysis.gates.error_rate.enabled, True),
    ("gates.errorRate.maxBurnRate", lambda s: s.analysis.gates.error_rate.max_burn_rate, 1.0),
    (
        "gates.errorRate.maxRatioToBaseline",
        lambda s: s.analysis.gates.error_rate.max_ratio_to_baseline,
        2.0,
    ),
    ("gates.errorRate.minRequests", lambda s: s.analysis.gates.error_rate.min_requests, 500),
    ("gates.latency.enabled", lambda s: s.analysis.gates.latency.enabled, True),
    ("gates.latency.maxRegression", lambda s: s.analysis.gates.latency.max_regression, 0.10),
    ("gates.latency.minTicks", lambda s: s.analysis.gates.latency.min_ticks, 3),
    ("gates.divergence.enabled", lambda s: s.analysis.gates.divergence.enabled, True),
    ("gates.divergence.maxKL", lambda s: s.analysis.gates.divergence.max_kl, 0.01),
    ("gates.divergence.minOutputs", lambda s: s.analysis.gates.divergence.min_outputs, 2000),
    ("gates.divergence.smoothing", lambda s: s.analysis.gates.divergence.smoothing, 0.5),
    ("gates.nonFinite.enabled", lambda s: s.analysis.gates.non_finite.enabled, True),
    ("gates.nonFinite.maxPerMillion", lambda s: s.analysis.gates.non_finite.max_per_million, 0.0),
]


@pytest.mark.parametrize(("name", "get", "expected"), DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_default(name: str, get: Callable[[RolloutSpec], object], expected: object) -> None:
    assert get(parse_spec(minimal())) == expected


def test_default_image_constant() -> None:
    assert DEFAULT_IMAGE == "nvcr.io/nvidia/tritonserver:24.09-py3"


def test_defaults_fill_partial_sections() -> None:
    spec = parse_spec(put(minimal(), "analysis.gates.latency.minTicks", 5))
    assert spec.analysis.gates.latency.min_ticks == 5
    assert spec.analysis.gates.latency.max_regression == 0.10
    assert spec.analysis.gates.divergence.max_kl == 0.01
    assert spec.analysis.interval_seconds == 60


def test_step_analysis_seconds_defaults_to_300() -> None:
    spec = parse_spec(put(minimal(), "traffic.steps", [{"weight": 5}, {"weight": 95}]))
    assert [s.analysis_seconds for s in spec.traffic.steps] == [300, 300]


# ---------------------------------------------------------------------------------------------
# Field constraints at their boundaries: (path, just inside, just outside, message)
# ---------------------------------------------------------------------------------------------

BOUNDARIES: list[tuple[str, object, object, str]] = [
    ("model.name", "a" * 128, "a" * 129, "must be 1 to 128 characters"),
    ("model.name", "a", "", "must be 1 to 128 characters"),
    ("model.name", "Gelu-1_v.2", "gelu mlp", "got 'gelu mlp'"),
    ("model.name", "..a", "..", "and not '.' or '..'"),
    ("model.image", "x", "", "must not be empty"),
    ("baseline.replicas", 1, 0, "must be at least 1, got 0"),
    ("baseline.replicas", 100, 101, "must be at most 100, got 101"),
    ("candidate.replicas", 1, 0, "must be at least 1, got 0"),
    ("candidate.replicas", 100, 101, "must be at most 100, got 101"),
    ("traffic.steps[0].weight", 1, 0, "must be at least 1, got 0"),
    ("traffic.steps[0].weight", 99, 100, "must be at most 99, got 100"),
    ("traffic.steps[0].analysisSeconds", 3600, 0, "must be at least 1, got 0"),
    ("analysis.intervalSeconds", 10, 9, "must be at least 10, got 9"),
    ("analysis.intervalSeconds", 3600, 3601, "must be at most 3600, got 3601"),
    ("analysis.warmupSeconds", 0, -1, "must be at least 0, got -1"),
    ("analysis.falseRollbackBudget", 1e-9, 0, "must be greater than 0, got 0"),
    ("analysis.falseRollbackBudget", 0.2, 0.2000001, "must be at most 0.2, got 0.2000001"),
    ("analysis.ledgerLimit", 10, 9, "must be at least 10, got 9"),
    ("analysis.ledgerLimit", 500, 501, "must be at most 500, got 501"),
    ("analysis.insufficientData.maxExtensionSeconds", 0, -1, "must be at least 0, got -1"),
    (
        "analysis.insufficientData.action",
        "Rollback",
        "rollback",
        "must be one of: Pause, Rollback, got 'rollback'",
    ),
    ("analysis.slo.availability", 0.5000001, 0.5, "must be greater than 0.5, got 0.5"),
    ("analysis.slo.availability", 0.9999999, 1, "must be less than 1, got 1"),
    ("analysis.slo.latencyP99Ms", 0.001, 0, "must be greater than 0, got 0"),
    ("analysis.gates.burnRate.windows[0].burnRate", 1.0001, 1, "must be greater than 1, got 1"),
    (
        "analysis.gates.burnRate.windows[0].longWindowFactor",
        0.01,
        0,
        "must be greater than 0, got 0",
    ),
    ("analysis.gates.errorRate.maxBurnRate", 0.01, 0, "must be greater than 0, got 0"),
    ("analysis.gates.errorRate.maxRatioToBaseline", 1, 0.999, "must be at least 1, got 0.999"),
    ("analysis.gates.errorRate.minRequests", 1, 0, "must be at least 1, got 0"),
    ("analysis.gates.latency.maxRegression", 1e-6, 0, "must be greater than 0, got 0"),
    ("analysis.gates.latency.maxRegression", 10, 10.001, "must be at most 10, got 10.001"),
    ("analysis.gates.latency.minTicks", 1, 0, "must be at least 1, got 0"),
    ("analysis.gates.divergence.maxKL", 1e-9, 0, "must be greater than 0, got 0"),
    ("analysis.gates.divergence.minOutputs", 1, 0, "must be at least 1, got 0"),
    ("analysis.gates.divergence.smoothing", 0.01, 0, "must be greater than 0, got 0"),
    ("analysis.gates.nonFinite.maxPerMillion", 0, -0.1, "must be at least 0, got -0.1"),
    ("baseline.variant", "sigmoid", "gelu", "must be one of: exact, tanh, sigmoid, fp16, int8-lut"),
    ("traffic.mode", "ReplicaRatio", "replicaRatio", "must be one of: ReplicaRatio, HTTPRoute"),
]


def _boundary_base(path: str) -> dict[str, Any]:
    spec = roomy()
    if path.startswith("analysis.gates.burnRate.windows"):
        spec = put(
            spec, "analysis.gates.burnRate.windows", [{"burnRate": 2, "longWindowFactor": 1}]
        )
    return spec


@pytest.mark.parametrize(
    ("path", "inside", "outside", "message"),
    BOUNDARIES,
    ids=[f"{b[0]}={b[2]!r}" for b in BOUNDARIES],
)
def test_boundary(path: str, inside: object, outside: object, message: str) -> None:
    base = _boundary_base(path)
    parse_spec(put(base, path, inside))
    found = problems(put(base, path, outside))
    assert len(found) == 1, found
    assert found[0][0] == f"spec.{path}"
    assert message in found[0][1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_accepted(variant: str) -> None:
    other = "exact" if variant != "exact" else "tanh"
    spec = parse_spec(put(put(minimal(), "candidate.variant", variant), "baseline.variant", other))
    assert spec.candidate.variant == variant


def test_variants_are_the_documented_six() -> None:
    assert VARIANTS == ("exact", "tanh", "sigmoid", "fp16", "int8-lut", "tanh-fp16-naive")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("gelu-repo.v1", True),
        ("a" * 253, True),
        ("a" * 254, False),
        ("Gelu", False),
        ("-gelu", False),
        ("gelu-", False),
        ("gelu_repo", False),
        ("a..b", False),
        ("", False),
    ],
)
def test_config_map_name_is_a_dns_subdomain(name: str, ok: bool) -> None:
    spec = put(minimal(), "candidate", {"repository": {"configMapName": name}})
    if ok:
        repository = parse_spec(spec).candidate.repository
        assert repository is not None
        assert repository.config_map_name == name
    else:
        ((path, message),) = problems(spec)
        assert path == "spec.candidate.repository.configMapName"
        assert message.startswith("must be a DNS-1123 subdomain (at most 253 characters")


def test_http_route_name_is_a_dns_subdomain() -> None:
    spec = put(put(minimal(), "traffic.mode", "HTTPRoute"), "traffic.httpRouteName", "My_Route")
    assert paths(spec) == ["spec.traffic.httpRouteName"]


def test_step_count_boundaries() -> None:
    twenty = [{"weight": w} for w in range(1, 21)]
    assert len(parse_spec(put(minimal(), "traffic.steps", twenty)).traffic.steps) == 20
    twenty_one = [{"weight": w} for w in range(1, 22)]
    assert problems(put(minimal(), "traffic.steps", twenty_one)) == [
        ("spec.traffic.steps", "must have at most 20 steps, got 21")
    ]
    assert len(parse_spec(put(minimal(), "traffic.steps", [{"weight": 1}])).traffic.steps) == 1
    assert problems(put(minimal(), "traffic.steps", [])) == [
        ("spec.traffic.steps", "must have at least 1 step, got 0")
    ]


def test_window_count_boundaries() -> None:
    window = {"burnRate": 2.0, "longWindowFactor": 1.0}
    path = "analysis.gates.burnRate.windows"
    assert len(parse_spec(put(minimal(), path, [window] * 4)).analysis.gates.burn_rate.windows) == 4
    assert problems(put(minimal(), path, [window] * 5)) == [
        (f"spec.{path}", "must have at most 4 windows, got 5")
    ]
    assert len(parse_spec(put(minimal(), path, [window])).analysis.gates.burn_rate.windows) == 1
    assert problems(put(minimal(), path, [])) == [
        (f"spec.{path}", "must have at least 1 window, got 0")
    ]


def test_list_length_counted_even_when_items_are_invalid() -> None:
    steps: list[dict[str, object]] = [{"weight": w} for w in range(1, 22)]
    steps[3] = {"weight": "x"}
    assert problems(put(minimal(), "traffic.steps", steps)) == [
        ("spec.traffic.steps", "must have at most 20 steps, got 21"),
        ("spec.traffic.steps[3].weight", "must be an integer, got 'x'"),
    ]
    assert problems(put(minimal(), "traffic.steps", [{"weight": "x"}])) == [
        ("spec.traffic.steps[0].weight", "must be an integer, got 'x'")
    ]


# ---------------------------------------------------------------------------------------------
# Types: no coercion
# ---------------------------------------------------------------------------------------------

TYPE_ERRORS: list[tuple[str, object, str]] = [
    ("analysis.intervalSeconds", "ten", "must be an integer, got 'ten'"),
    ("analysis.intervalSeconds", 60.0, "must be an integer, got 60.0"),
    ("analysis.intervalSeconds", 60.5, "must be an integer, got 60.5"),
    ("analysis.intervalSeconds", True, "must be an integer, got true"),
    ("analysis.intervalSeconds", "60", "must be an integer, got '60'"),
    ("traffic.steps[0].analysisSeconds", 300.0, "must be an integer, got 300.0"),
    ("traffic.steps[0].weight", None, "must be an integer, got null"),
    ("baseline.replicas", 1.0, "must be an integer, got 1.0"),
    ("analysis.slo.availability", "0.99", "must be a number, got '0.99'"),
    ("analysis.slo.availability", True, "must be a number, got true"),
    ("analysis.slo.latencyP99Ms", math.inf, "must be a finite number, got inf"),
    ("analysis.slo.latencyP99Ms", math.nan, "must be a finite number, got nan"),
    ("analysis.gates.latency.enabled", "true", "must be true or false, got 'true'"),
    ("analysis.gates.latency.enabled", 1, "must be true or false, got 1"),
    ("model.name", 42, "must be a string, got 42"),
    ("model.image", None, "must be a string, got null"),
    ("model", "gelu", "must be a mapping, got 'gelu'"),
    ("analysis.gates", [], "must be a mapping, got a list"),
    ("baseline.repository", "cm", "must be a mapping, got 'cm'"),
    ("traffic.steps", {"weight": 10}, "must be a list, got a mapping"),
    ("traffic.steps", "10,25", "must be a list, got '10,25'"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), TYPE_ERRORS, ids=[f"{t[0]}={t[1]!r}" for t in TYPE_ERRORS]
)
def test_type_error(path: str, value: object, message: str) -> None:
    assert (f"spec.{path}", message) in problems(put(roomy(), path, value))


def test_float_fields_accept_yaml_integers() -> None:
    spec = parse_spec(put(minimal(), "analysis.slo.latencyP99Ms", 300))
    assert spec.analysis.slo.latency_p99_ms == 300.0
    assert isinstance(spec.analysis.slo.latency_p99_ms, float)


# ---------------------------------------------------------------------------------------------
# Required and unknown fields
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["model", "model.name", "baseline", "candidate"])
def test_required(path: str) -> None:
    assert problems(drop(minimal(), path)) == [(f"spec.{path}", "is required")]


def test_step_weight_is_required() -> None:
    spec = put(minimal(), "traffic.steps", [{"analysisSeconds": 300}])
    assert problems(spec) == [("spec.traffic.steps[0].weight", "is required")]


def test_burn_rate_window_fields_are_required() -> None:
    spec = put(minimal(), "analysis.gates.burnRate.windows", [{}])
    assert problems(spec) == [
        ("spec.analysis.gates.burnRate.windows[0].burnRate", "is required"),
        ("spec.analysis.gates.burnRate.windows[0].longWindowFactor", "is required"),
    ]


@pytest.mark.parametrize(
    "path",
    ["colour", "model.tag", "traffic.steps[0].pause", "analysis.gates.latency.maxP99", "status"],
)
def test_unknown_field(path: str) -> None:
    assert problems(put(roomy(), path, 1)) == [(f"spec.{path}", "unknown field")]


def test_snake_case_keys_are_unknown_in_manifests() -> None:
    assert problems(put(minimal(), "analysis.interval_seconds", 60)) == [
        ("spec.analysis.interval_seconds", "unknown field")
    ]


def test_divergence_threshold_is_spelled_max_kl_in_capitals() -> None:
    assert parse_spec(put(minimal(), "analysis.gates.divergence.maxKL", 0.5)).analysis.gates
    assert problems(put(minimal(), "analysis.gates.divergence.maxKl", 0.5)) == [
        ("spec.analysis.gates.divergence.maxKl", "unknown field")
    ]


def test_unusual_unknown_keys_are_quoted_in_paths() -> None:
    assert problems(put(minimal(), "model", {"name": "m", "a.b": 1, "": 2, "0": 3})) == [
        ("spec.model['a.b']", "unknown field"),
        ("spec.model['']", "unknown field"),
        ("spec.model['0']", "unknown field"),
    ]


def test_non_string_key() -> None:
    assert problems(put(minimal(), "model", {"name": "m", 7: "x"})) == [
        ("spec.model", "keys must be strings, got 7")
    ]


# ---------------------------------------------------------------------------------------------
# Cross-field rules
# ---------------------------------------------------------------------------------------------


def test_arm_needs_a_source() -> None:
    assert problems(put(minimal(), "baseline", {"replicas": 2})) == [
        ("spec.baseline", "must set exactly one of variant, repository, storageUri")
    ]
    assert problems(put(minimal(), "baseline", {"variant": None, "repository": None})) == [
        ("spec.baseline", "must set exactly one of variant, repository, storageUri")
    ]


def test_arm_cannot_have_two_sources() -> None:
    arm = {"variant": "fp16", "repository": {"configMapName": "gelu-repo"}}
    assert problems(put(minimal(), "candidate", arm)) == [
        ("spec.candidate.repository", "must not be set together with variant (set exactly one)")
    ]


def test_repository_arm() -> None:
    spec = parse_spec(put(minimal(), "candidate", {"repository": {"configMapName": "my-gelu"}}))
    assert spec.candidate.variant is None
    assert spec.candidate.repository == RepositorySpec(config_map_name="my-gelu")


def test_candidate_must_differ_by_variant() -> None:
    spec = put(minimal(), "candidate.variant", "exact")
    assert problems(spec) == [
        ("spec.candidate.variant", "must differ from baseline.variant, both are 'exact'")
    ]


def test_candidate_must_differ_by_config_map() -> None:
    spec = put(minimal(), "baseline", {"repository": {"configMapName": "repo"}})
    spec = put(spec, "candidate", {"repository": {"configMapName": "repo"}, "replicas": 3})
    assert problems(spec) == [
        (
            "spec.candidate.repository.configMapName",
            "must differ from baseline.repository.configMapName, both are 'repo'",
        )
    ]


def test_same_variant_different_replicas_is_still_the_same_candidate() -> None:
    spec = put(put(minimal(), "candidate.variant", "exact"), "candidate.replicas", 3)
    assert paths(spec) == ["spec.candidate.variant"]


def test_weights_must_strictly_increase() -> None:
    steps = [{"weight": 10}, {"weight": 30}, {"weight": 30}, {"weight": 20}, {"weight": 40}]
    assert problems(put(minimal(), "traffic.steps", steps)) == [
        (
            "spec.traffic.steps[2].weight",
            "must be greater than 30 (the weight of steps[1]), got 30",
        ),
        (
            "spec.traffic.steps[3].weight",
            "must be greater than 30 (the weight of steps[2]), got 20",
        ),
    ]


def test_out_of_range_weight_is_not_compared() -> None:
    steps = [{"weight": 10}, {"weight": 120}, {"weight": 50}]
    assert problems(put(minimal(), "traffic.steps", steps)) == [
        ("spec.traffic.steps[1].weight", "must be at most 99, got 120")
    ]


def test_step_must_last_an_interval() -> None:
    spec = put(minimal(), "analysis.intervalSeconds", 120)
    spec = put(spec, "traffic.steps", [{"weight": 10, "analysisSeconds": 120}, {"weight": 20}])
    parse_spec(spec)
    short = put(spec, "traffic.steps[0].analysisSeconds", 119)
    assert problems(short) == [
        (
            "spec.traffic.steps[0].analysisSeconds",
            "must be at least analysis.intervalSeconds (120), got 119",
        )
    ]


def test_defaulted_step_duration_is_checked_against_interval() -> None:
    spec = put(minimal(), "analysis.intervalSeconds", 301)
    spec = put(spec, "traffic.steps", [{"weight": 10, "analysisSeconds": 400}, {"weight": 20}])
    assert problems(spec) == [
        (
            "spec.traffic.steps[1].analysisSeconds",
            "must be at least analysis.intervalSeconds (301), got 300 (the default)",
        )
    ]


def test_interval_longer_than_default_steps_names_the_interval() -> None:
    assert problems(put(minimal(), "analysis.intervalSeconds", 301)) == [
        (
            "spec.analysis.intervalSeconds",
            "must be at most 300 (the analysisSeconds of the default traffic steps), got 301",
        )
    ]
    parse_spec(put(minimal(), "analysis.intervalSeconds", 300))


def test_invalid_interval_is_not_compared_with_steps() -> None:
    spec = put(minimal(), "analysis.intervalSeconds", 5000)
    assert paths(spec) == ["spec.analysis.intervalSeconds"]


def test_http_route_mode_needs_a_route() -> None:
    spec = put(minimal(), "traffic.mode", "HTTPRoute")
    assert problems(spec) == [("spec.traffic.httpRouteName", "is required when mode is HTTPRoute")]
    ok = parse_spec(put(spec, "traffic.httpRouteName", "gelu-route"))
    assert ok.traffic.http_route_name == "gelu-route"


def test_replica_ratio_mode_forbids_a_route() -> None:
    spec = put(minimal(), "traffic.httpRouteName", "gelu-route")
    assert problems(spec) == [
        ("spec.traffic.httpRouteName", "must not be set when mode is ReplicaRatio")
    ]
    explicit = put(spec, "traffic.mode", "ReplicaRatio")
    assert paths(explicit) == ["spec.traffic.httpRouteName"]
    assert parse_spec(put(explicit, "traffic.httpRouteName", None)).traffic.http_route_name is None


def test_at_least_one_gate_enabled() -> None:
    spec = minimal()
    for gate in GATE_KEYS:
        spec = put(spec, f"analysis.gates.{gate}.enabled", False)
    assert problems(spec) == [("spec.analysis.gates", "must enable at least one gate")]
    for gate in GATE_KEYS:
        one = put(spec, f"analysis.gates.{gate}.enabled", True)
        parse_spec(one)
        parse_spec(drop(one, f"analysis.gates.{gate}.enabled"))
        parse_spec(drop(spec, f"analysis.gates.{gate}"))


def test_cross_field_rules_are_reported_alongside_field_errors() -> None:
    spec = put(minimal(), "candidate.variant", "exact")
    spec = put(spec, "baseline.replicas", 0)
    assert problems(spec) == [
        ("spec.baseline.replicas", "must be at least 1, got 0"),
        ("spec.candidate.variant", "must differ from baseline.variant, both are 'exact'"),
    ]


def test_direct_construction_enforces_cross_field_rules() -> None:
    model = ModelSpec(name="m")
    with pytest.raises(ValidationError, match=r"must differ from baseline\.variant"):
        RolloutSpec(
            model=model, baseline=ArmSpec(variant="exact"), candidate=ArmSpec(variant="exact")
        )
    with pytest.raises(
        ValidationError, match="must set exactly one of variant, repository, storageUri"
    ):
        ArmSpec()
    with pytest.raises(ValidationError, match="must be greater than 50"):
        TrafficSpec(steps=(TrafficStep(weight=50), TrafficStep(weight=50)))
    with pytest.raises(ValidationError, match="must enable at least one gate"):
        GatesSpec.model_validate({g: {"enabled": False} for g in GATE_KEYS})
    with pytest.raises(ValidationError, match=r"must be at least analysis\.intervalSeconds"):
        RolloutSpec(
            model=model,
            baseline=ArmSpec(variant="exact"),
            candidate=ArmSpec(variant="tanh"),
            analysis=AnalysisSpec(interval_seconds=600),
        )


def test_construction_by_python_names() -> None:
    spec = RolloutSpec(
        model=ModelSpec(name="m"),
        baseline=ArmSpec(variant="exact", replicas=2),
        candidate=ArmSpec(repository=RepositorySpec(config_map_name="mine")),
        traffic=TrafficSpec(mode="HTTPRoute", http_route_name="route"),
    )
    assert parse_spec(spec.to_dict()) == spec


# ---------------------------------------------------------------------------------------------
# The error listing
# ---------------------------------------------------------------------------------------------


def test_every_problem_is_listed_one_per_line() -> None:
    spec = {
        "model": {"name": "gelu mlp"},
        "baseline": {"variant": "exact"},
        "candidate": {"variant": "exact", "replicas": 0},
        "traffic": {"steps": [{"weight": 50}, {"weight": 120}, {"weight": 25}]},
        "analysis": {
            "intervalSeconds": "ten",
            "insufficientData": {"action": "Stop"},
            "gates": {"latency": {"maxRegression": 0}, "colour": "blue"},
        },
    }
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert str(info.value).splitlines() == [
        "spec.model.name: must be 1 to 128 characters of letters, digits, '_', '.' and '-' "
        "(and not '.' or '..'), got 'gelu mlp'",
        "spec.candidate.variant: must differ from baseline.variant, both are 'exact'",
        "spec.candidate.replicas: must be at least 1, got 0",
        "spec.traffic.steps[1].weight: must be at most 99, got 120",
        "spec.traffic.steps[2].weight: must be greater than 50 (the weight of steps[0]), got 25",
        "spec.analysis.intervalSeconds: must be an integer, got 'ten'",
        "spec.analysis.insufficientData.action: must be one of: Pause, Rollback, got 'Stop'",
        "spec.analysis.gates.latency.maxRegression: must be greater than 0, got 0",
        "spec.analysis.gates.colour: unknown field",
    ]
    assert all(isinstance(p, SpecProblem) for p in info.value.problems)
    assert isinstance(info.value, ValueError)


def test_spec_problem_str() -> None:
    assert str(SpecProblem("spec.a", "is required")) == "spec.a: is required"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "must be a mapping, got null"),
        ([1, 2], "must be a mapping, got a list"),
        ("spec", "must be a mapping, got 'spec'"),
        (5, "must be a mapping, got 5"),
    ],
)
def test_non_mapping_input(data: object, message: str) -> None:
    assert problems(data) == [("spec", message)]


def test_long_strings_are_shortened_in_messages() -> None:
    ((_, message),) = problems(put(minimal(), "analysis.insufficientData.action", "x" * 100))
    assert message == f"must be one of: Pause, Rollback, got '{'x' * 37}...'"


# ---------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------


def manifest(spec: object) -> dict[str, Any]:
    return {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": spec,
    }


def test_manifest_form() -> None:
    assert parse_spec(manifest(minimal())) == parse_spec(minimal())


def test_manifest_status_is_ignored() -> None:
    data = manifest(minimal())
    data["status"] = {"stage": "Progressing"}
    assert parse_spec(data) == parse_spec(minimal())


def test_manifest_wrong_api_version_and_kind() -> None:
    data = manifest(minimal())
    data["apiVersion"] = "gelu.dev/v1"
    data["kind"] = "Rollout"
    assert problems(data) == [
        ("apiVersion", "must be gelu.dev/v1alpha1, got 'gelu.dev/v1'"),
        ("kind", "must be GeluModelRollout, got 'Rollout'"),
    ]


def test_manifest_problems_and_spec_problems_together() -> None:
    data = manifest(put(minimal(), "baseline.replicas", 0))
    del data["kind"]
    assert problems(data) == [
        ("kind", "is required"),
        ("spec.baseline.replicas", "must be at least 1, got 0"),
    ]


def test_manifest_without_spec() -> None:
    data = manifest(minimal())
    del data["spec"]
    assert problems(data) == [("spec", "is required")]


def test_manifest_with_non_mapping_spec() -> None:
    assert problems(manifest([])) == [("spec", "must be a mapping, got a list")]


def test_example_manifest_parses() -> None:
    data = yaml.safe_load((ROOT / "examples" / "rollout.yaml").read_text())
    spec = parse_spec(data)
    assert spec.baseline.variant == "exact"
    assert spec.candidate.variant == "tanh"
    assert parse_spec(spec.to_dict()) == spec


def test_example_manifest_spells_out_the_defaults() -> None:
    data = yaml.safe_load((ROOT / "examples" / "rollout.yaml").read_text())
    spec = parse_spec(data)
    defaults = parse_spec(put(minimal(), "baseline.replicas", 2)).to_dict()
    analysis = spec.to_dict()["analysis"]
    # The one setting without a default: where the sandbox's Gateway histogram is.
    assert analysis.pop("latencyHistogram")["metric"].endswith("_bucket")
    assert analysis == defaults["analysis"]
    assert spec.to_dict()["traffic"] == defaults["traffic"]


def test_parse_spec_passes_a_spec_through() -> None:
    spec = parse_spec(minimal())
    assert parse_spec(spec) is spec


# ---------------------------------------------------------------------------------------------
# Round trip and helpers
# ---------------------------------------------------------------------------------------------


def test_round_trip_minimal() -> None:
    spec = parse_spec(minimal())
    assert parse_spec(spec.to_dict()) == spec


def test_round_trip_full() -> None:
    data = put(minimal(), "candidate", {"repository": {"configMapName": "mine"}, "replicas": 4})
    data = put(data, "traffic", {"mode": "HTTPRoute", "httpRouteName": "route", "steps": []})
    data["traffic"]["steps"] = [{"weight": 5, "analysisSeconds": 120}, {"weight": 95}]
    data = put(data, "analysis.intervalSeconds", 30)
    data = put(data, "analysis.gates.nonFinite.maxPerMillion", 2.5)
    data = put(data, "analysis.gates.burnRate.enabled", False)
    spec = parse_spec(data)
    out = spec.to_dict()
    assert parse_spec(out) == spec
    assert out["traffic"] == {
        "mode": "HTTPRoute",
        "httpRouteName": "route",
        "steps": [{"weight": 5, "analysisSeconds": 120}, {"weight": 95, "analysisSeconds": 300}],
    }
    assert out["candidate"] == {"repository": {"configMapName": "mine"}, "replicas": 4}


def test_to_dict_is_camel_case_and_leaves_out_nulls() -> None:
    out = parse_spec(minimal()).to_dict()
    assert out["candidate"] == {"variant": "tanh", "replicas": 1}
    assert "httpRouteName" not in out["traffic"]
    assert out["analysis"]["gates"]["divergence"]["maxKL"] == 0.01
    assert out["analysis"]["slo"]["latencyP99Ms"] == 250.0
    assert set(out) == {
        "model",
        "pod",
        "baseline",
        "candidate",
        "traffic",
        "analysis",
        "progressDeadlineSeconds",
    }


def test_spec_is_frozen_and_hashable() -> None:
    spec = parse_spec(minimal())
    with pytest.raises(ValidationError):
        spec.model = ModelSpec(name="other")  # type: ignore[misc]
    assert hash(spec) == hash(parse_spec(minimal()))


def test_error_budget() -> None:
    assert parse_spec(minimal()).error_budget == pytest.approx(0.001)
    spec = parse_spec(put(minimal(), "analysis.slo.availability", 0.99))
    assert spec.error_budget == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, 5),
        ({"burnRate.enabled": False}, 4),
        ({"errorRate.enabled": False}, 4),
        ({"latency.enabled": False}, 3),
        ({"divergence.enabled": False}, 4),
        ({"nonFinite.enabled": False}, 5),
        ({"nonFinite.maxPerMillion": 1.0}, 6),
        ({"nonFinite.maxPerMillion": 1.0, "nonFinite.enabled": False}, 5),
        (
            {
                "burnRate.enabled": False,
                "errorRate.enabled": False,
                "latency.enabled": False,
                "divergence.enabled": False,
            },
            0,
        ),
    ],
)
def test_statistical_gate_count(changes: dict[str, object], expected: int) -> None:
    data = minimal()
    for path, value in changes.items():
        data = put(data, f"analysis.gates.{path}", value)
    assert parse_spec(data).statistical_gate_count == expected


def test_non_finite_gate_model_default() -> None:
    assert NonFiniteGate().max_per_million == 0.0


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------


def full_status() -> RolloutStatus:
    return RolloutStatus(
        observed_generation=3,
        stage=Stage.PROGRESSING,
        step_index=1,
        candidate_weight=25,
        started_at=T0,
        step_started_at=T0 + timedelta(minutes=5),
        conditions=[
            Condition(
                type="Progressing",
                status="True",
                reason="StepStarted",
                message="step 1 at 25%",
                last_transition_time=T0,
                observed_generation=3,
            )
        ],
        ledger=[
            LedgerEntry(
                time=T0 + timedelta(minutes=6),
                step=1,
                weight=25,
                gate="latency",
                verdict="Pass",
                value=0.04,
                threshold=0.1,
                samples=1200,
                window_seconds=60,
                message="p99 +4%",
            ),
            LedgerEntry(
                time=T0 + timedelta(minutes=7),
                step=1,
                weight=25,
                gate="divergence",
                verdict="Inconclusive",
                samples=300,
                window_seconds=120,
            ),
        ],
        last_verdict="Pass",
        message="analysing step 1",
        handled_request="req-7",
        analysis={"latency": {"ticks": 3, "state": [1.5, None]}, "note": None},
    )


def test_status_defaults() -> None:
    status = RolloutStatus()
    assert status.observed_generation is None
    assert status.stage is Stage.PENDING
    assert status.step_index == 0
    assert status.candidate_weight == 0
    assert status.started_at is None
    assert status.step_started_at is None
    assert status.finished_at is None
    assert status.conditions == []
    assert status.ledger == []
    assert status.last_verdict is None
    assert status.message == ""
    assert status.handled_request is None
    assert status.analysis == {}


@pytest.mark.parametrize("data", [None, {}])
def test_parse_status_of_nothing_gives_defaults(data: object) -> None:
    assert parse_status(data) == RolloutStatus()


def test_status_round_trip() -> None:
    status = full_status()
    assert parse_status(status.to_dict()) == status


def test_status_to_dict() -> None:
    out = full_status().to_dict()
    assert out["stage"] == "Progressing"
    assert out["startedAt"] == "2026-11-25T20:00:00Z"
    assert out["stepStartedAt"] == "2026-11-25T20:05:00Z"
    assert "finishedAt" not in out
    assert out["conditions"][0]["lastTransitionTime"] == "2026-11-25T20:00:00Z"
    assert out["conditions"][0]["observedGeneration"] == 3
    assert out["ledger"][0]["windowSeconds"] == 60.0
    assert "value" not in out["ledger"][1]
    assert "threshold" not in out["ledger"][1]
    assert out["handledRequest"] == "req-7"
    assert out["analysis"] == {"latency": {"ticks": 3, "state": [1.5, None]}, "note": None}
    assert yaml.safe_load(yaml.safe_dump(out)) == out


def test_default_status_to_dict_leaves_out_nulls() -> None:
    assert RolloutStatus().to_dict() == {
        "stage": "Pending",
        "stepIndex": 0,
        "candidateWeight": 0,
        "conditions": [],
        "ledger": [],
        "message": "",
        "powerPlan": [],
        "analysis": {},
    }


def test_status_times_are_held_in_utc_and_written_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    status = RolloutStatus(started_at=datetime(2026, 11, 25, 22, 0, 0, 250000, tzinfo=plus_two))
    assert status.started_at == T0 + timedelta(microseconds=250000)
    assert status.started_at is not None
    assert status.started_at.utcoffset() == timedelta(0)
    assert status.to_dict()["startedAt"] == "2026-11-25T20:00:00.250000Z"
    parsed = parse_status({"startedAt": "2026-11-25T21:00:00+01:00"})
    assert parsed.started_at == T0


def test_status_rejects_naive_times() -> None:
    with pytest.raises(SpecError) as info:
        parse_status({"startedAt": "2026-11-25T20:00:00"})
    assert [p.path for p in info.value.problems] == ["status.startedAt"]
    with pytest.raises(ValidationError):
        RolloutStatus(started_at=datetime(2026, 11, 25, 20, 0))


def test_status_ignores_unknown_fields() -> None:
    status = parse_status({"stage": "Paused", "somethingNew": {"a": 1}, "ledger": []})
    assert status.stage is Stage.PAUSED


def test_status_errors() -> None:
    data = {"stage": "Done", "candidateWeight": 101, "ledger": [{"time": "yesterday"}]}
    with pytest.raises(SpecError) as info:
        parse_status(data)
    assert [str(p) for p in info.value.problems] == [
        "status.stage: must be one of: Pending, Progressing, Paused, Promoted, RolledBack, "
        "got 'Done'",
        "status.candidateWeight: must be at most 100, got 101",
        "status.ledger[0].time: must be an RFC 3339 timestamp, got 'yesterday'",
        "status.ledger[0].step: is required",
        "status.ledger[0].weight: is required",
        "status.ledger[0].gate: is required",
        "status.ledger[0].verdict: is required",
    ]


def test_status_must_be_a_mapping() -> None:
    with pytest.raises(SpecError) as info:
        parse_status([])
    assert str(info.value) == "status: must be a mapping, got a list"


def test_condition_reason_is_camel_case() -> None:
    base = {"type": "Ready", "status": "True", "message": "", "lastTransitionTime": T0}
    Condition.model_validate({**base, "reason": "AllGatesPassed"})
    with pytest.raises(ValidationError):
        Condition.model_validate({**base, "reason": "all gates passed"})
    with pytest.raises(ValidationError):
        Condition.model_validate({**base, "reason": "Ok", "status": "Yes"})


def test_non_finite_ledger_values_are_written_as_absent() -> None:
    entry = LedgerEntry(
        time=T0, step=0, weight=10, gate="divergence", verdict="Fail", value=math.inf, samples=1
    )
    out = RolloutStatus(ledger=[entry]).to_dict()
    assert "value" not in out["ledger"][0]
    assert parse_status(out).ledger[0].value is None


def test_stage() -> None:
    assert [s.value for s in Stage] == [
        "Pending",
        "Progressing",
        "Paused",
        "Promoted",
        "RolledBack",
    ]
    assert Stage("RolledBack") is Stage.ROLLED_BACK
    assert Stage.PROMOTED.terminal
    assert Stage.ROLLED_BACK.terminal
    assert not Stage.PAUSED.terminal
    assert str(Stage.PAUSED) == "Paused"


def test_status_condition_lookup() -> None:
    status = full_status()
    condition = status.condition("Progressing")
    assert condition is not None
    assert condition.reason == "StepStarted"
    assert status.condition("Ready") is None


def test_status_is_frozen() -> None:
    status = RolloutStatus()
    with pytest.raises(ValidationError):
        status.stage = Stage.PAUSED  # type: ignore[misc]
    updated = status.model_copy(update={"stage": Stage.PAUSED})
    assert updated.stage is Stage.PAUSED


def _leaf_names(node: object) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            names.add(key)
            names |= _leaf_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _leaf_names(value)
    return names


def test_reference_documents_every_field() -> None:
    text = (ROOT / "docs" / "spec.md").read_text()
    fields = _leaf_names(parse_spec(minimal()).to_dict())
    fields |= {"httpRouteName", "repository", "configMapName"}
    status = full_status().to_dict()
    del status["analysis"]
    fields |= _leaf_names(status)
    missing = sorted(f for f in fields if not re.search(rf"`([\w\[\].]*\.)?{f}`", text))
    assert not missing


def test_huge_integers_are_described_not_printed() -> None:
    assert problems(put(minimal(), "analysis.ledgerLimit", 10**5000)) == [
        ("spec.analysis.ledgerLimit", "must be at most 500, got a very large integer")
    ]
