"""The GeluModelRollout CRD: committed as rendered, structural, and in agreement with the model.

The API server is stood in for by what it does to a custom resource, in its order: it drops the
``null`` values the schema does not allow (unless a default replaces them), applies the schema's
defaults, validates the result against the schema (strict field validation, kubectl's default,
rejects unknown fields), and evaluates the CEL rules with ``self`` bound to the value at each
rule's level. The schema checks run with ``jsonschema`` (Draft 4 has the OpenAPI v3.0 boolean
``exclusiveMinimum``) and the rules with ``cel-python``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_args

import annotated_types
import celpy
import jsonschema
import pydantic_core
import pytest
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from gelu_rollout.cli.main import app
from gelu_rollout.resources.crd import CRD_FILE, HEADER, render_crd, render_crd_yaml
from gelu_rollout.spec import SpecError, parse_spec
from gelu_rollout.spec.model import (
    GATE_KEYS,
    INSUFFICIENT_DATA_ACTIONS,
    MAX_STEPS,
    TRAFFIC_MODES,
    VARIANTS,
    ModelSpec,
    RepositorySpec,
    RolloutSpec,
)
from gelu_rollout.spec.resource import API_VERSION, GROUP, KIND, PLURAL, SHORT_NAME, VERSION
from gelu_rollout.spec.status import RolloutStatus
from tests.property.test_spec_properties import valid_specs

ROOT = Path(__file__).resolve().parents[2]
CRD = render_crd()
(CRD_VERSION,) = CRD["spec"]["versions"]
ROOT_SCHEMA: dict[str, Any] = CRD_VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA: dict[str, Any] = ROOT_SCHEMA["properties"]["spec"]
VALIDATOR = jsonschema.Draft4Validator(ROOT_SCHEMA)

Json = dict[str, Any]
SchemaPath = tuple[str, ...]
"""Property names from ``spec``; ``"[]"`` stands for the items of a list."""

# ---------------------------------------------------------------------------------------------
# Walking the schema
# ---------------------------------------------------------------------------------------------


def schema_nodes(
    schema: Mapping[str, Any], path: SchemaPath = ()
) -> Iterator[tuple[SchemaPath, Any]]:
    """Every schema node under ``schema`` (itself included), with its path."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from schema_nodes(prop, (*path, name))
    if "items" in schema:
        yield from schema_nodes(schema["items"], (*path, "[]"))


def schema_at(path: SchemaPath) -> Mapping[str, Any]:
    node: Mapping[str, Any] = SPEC_SCHEMA
    for name in path:
        node = node["items"] if name == "[]" else node["properties"][name]
    return node


RULES: list[tuple[SchemaPath, dict[str, str]]] = [
    (path, rule)
    for path, node in schema_nodes(SPEC_SCHEMA)
    for rule in node.get("x-kubernetes-validations", ())
]

# ---------------------------------------------------------------------------------------------
# What the API server does to a custom resource
# ---------------------------------------------------------------------------------------------


def prune_nulls(value: object, schema: Mapping[str, Any]) -> None:
    """Drop nulls the schema does not allow and no default replaces (in place)."""
    if isinstance(value, dict) and "properties" in schema:
        for key in list(value):
            prop = schema["properties"].get(key)
            if prop is None:
                continue
            if value[key] is None and not prop.get("nullable") and "default" not in prop:
                del value[key]
            else:
                prune_nulls(value[key], prop)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            prune_nulls(item, schema["items"])


def apply_defaults(value: object, schema: Mapping[str, Any]) -> None:
    """Fill in defaults, then recurse into every field, defaulted ones included (in place)."""
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        for key, prop in properties.items():
            missing = key not in value or (value[key] is None and not prop.get("nullable"))
            if "default" in prop and missing:
                value[key] = copy.deepcopy(prop["default"])
        for key, item in value.items():
            if key in properties:
                apply_defaults(item, properties[key])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(item, schema["items"])


def unknown_fields(value: object, schema: Mapping[str, Any], path: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict) and "properties" in schema:
        problems = []
        for key, item in value.items():
            if key in schema["properties"]:
                problems += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
            else:
                problems.append(f"{path}.{key}: unknown field")
        return problems
    if isinstance(value, list) and "items" in schema:
        return [
            problem
            for i, item in enumerate(value)
            for problem in unknown_fields(item, schema["items"], f"{path}[{i}]")
        ]
    return []


_CEL = celpy.Environment()


@cache
def cel_program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule))


def cel_holds(rule: str, value: object) -> bool:
    """Whether a rule holds with ``self`` bound to ``value``; an evaluation error fails it."""
    try:
        bound = json_to_cel(value)  # type: ignore[arg-type]  # a JSON value, as decoded
        result = cel_program(rule).evaluate({"self": bound})
    except CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def values_at(value: object, path: SchemaPath) -> Iterator[object]:
    """The values a schema path reaches in ``value`` (one per list item for ``[]``)."""
    if not path:
        yield value
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        if isinstance(value, list):
            for item in value:
                yield from values_at(item, rest)
    elif isinstance(value, dict) and head in value:
        yield from values_at(value[head], rest)


@dataclass
class Admission:
    """What the API server would make of a manifest."""

    spec: Json
    schema_errors: list[str] = field(default_factory=list)
    broken_rules: list[tuple[SchemaPath, str]] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.schema_errors and not self.broken_rules


def admit(manifest: Mapping[str, Any]) -> Admission:
    obj = copy.deepcopy(dict(manifest))
    prune_nulls(obj, ROOT_SCHEMA)
    apply_defaults(obj, ROOT_SCHEMA)
    spec = obj.get("spec")
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in VALIDATOR.iter_errors(obj)
    ]
    errors += unknown_fields(spec, SPEC_SCHEMA, "spec")
    broken = [
        (path, rule["message"])
        for path, rule in RULES
        for value in values_at(spec, path)
        if not cel_holds(rule["rule"], value)
    ]
    return Admission(spec if isinstance(spec, dict) else {}, errors, broken)


def manifest(spec: Mapping[str, Any]) -> Json:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "r"}, "spec": spec}


MINIMAL: Json = {
    "model": {"name": "gelu_mlp"},
    "baseline": {"variant": "exact"},
    "candidate": {"variant": "tanh"},
}


def spec_with(**sections: Any) -> Json:
    return {**copy.deepcopy(MINIMAL), **sections}


# ---------------------------------------------------------------------------------------------
# The committed file and the CLI
# ---------------------------------------------------------------------------------------------


def test_the_committed_crd_is_the_rendered_one() -> None:
    committed = (ROOT / CRD_FILE).read_text()
    assert committed == render_crd_yaml(), f"regenerate it: gelu-rollout crd --output {CRD_FILE}"
    assert committed.startswith(HEADER)
    assert yaml.safe_load(committed) == CRD


def test_the_cli_prints_the_crd_or_writes_it(tmp_path: Path) -> None:
    printed = CliRunner().invoke(app, ["crd"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == render_crd_yaml()
    target = tmp_path / "crd.yaml"
    written = CliRunner().invoke(app, ["crd", "--output", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_text() == render_crd_yaml()


def test_rendering_is_pure() -> None:
    first = render_crd()
    first["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"].clear()
    assert render_crd() == CRD


# ---------------------------------------------------------------------------------------------
# Names, subresources, printer columns
# ---------------------------------------------------------------------------------------------


def test_names_version_and_subresources() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["kind"] == "CustomResourceDefinition"
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}" == "gelumodelrollouts.gelu.dev"
    spec = CRD["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": KIND,
        "listKind": f"{KIND}List",
        "plural": PLURAL,
        "singular": "gelumodelrollout",
        "shortNames": [SHORT_NAME],
    }
    assert CRD_VERSION["name"] == VERSION == "v1alpha1"
    assert CRD_VERSION["served"] is True
    assert CRD_VERSION["storage"] is True
    assert CRD_VERSION["subresources"] == {"status": {}}
    assert ROOT_SCHEMA["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True


def test_printer_columns_read_status_fields_the_operator_writes() -> None:
    columns = {
        c["name"]: (c["type"], c["jsonPath"]) for c in CRD_VERSION["additionalPrinterColumns"]
    }
    assert columns == {
        "Stage": ("string", ".status.stage"),
        "Weight": ("integer", ".status.candidateWeight"),
        "Verdict": ("string", ".status.lastVerdict"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }
    written = RolloutStatus(candidate_weight=25, last_verdict="Pass").to_dict()
    assert written["stage"] == "Pending"
    assert written["candidateWeight"] == 25
    assert written["lastVerdict"] == "Pass"


# ---------------------------------------------------------------------------------------------
# The schema is structural
# ---------------------------------------------------------------------------------------------

_STRUCTURAL_KEYS = {
    "description",
    "type",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "required",
    "properties",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "additionalProperties",
}


def test_the_schema_is_structural() -> None:
    jsonschema.Draft4Validator.check_schema(ROOT_SCHEMA)
    for path, node in schema_nodes(ROOT_SCHEMA):
        where = ".".join(path) or "root"
        assert node.keys() <= _STRUCTURAL_KEYS, where  # no $ref, anyOf, nullable, ...
        assert node["type"] in {"object", "array", "string", "integer", "number", "boolean"}, where
        if node["type"] == "object":
            assert (
                "properties" in node
                or "additionalProperties" in node  # a map of one type
                or node.get("x-kubernetes-preserve-unknown-fields")
                or path == ("metadata",)
            ), where
            assert set(node.get("required", ())) <= set(node.get("properties", {})), where
        if node["type"] == "array":
            assert "items" in node, where
        if "enum" in node:
            for value in node["enum"]:
                jsonschema.Draft4Validator({"type": node["type"]}).validate(value)


def test_every_spec_property_has_a_description() -> None:
    for path, node in schema_nodes(SPEC_SCHEMA):
        assert node.get("description"), ".".join(path)


def test_defaults_are_valid_under_their_own_schema() -> None:
    defaults = [(path, node) for path, node in schema_nodes(SPEC_SCHEMA) if "default" in node]
    assert len(defaults) > 30
    for path, node in defaults:
        value = copy.deepcopy(node["default"])
        apply_defaults(value, node)
        jsonschema.Draft4Validator(node).validate(value)
        assert unknown_fields(value, node, ".".join(path)) == []  # pruning leaves it as it is
        for rule_path, rule in RULES:
            if rule_path[: len(path)] == path:
                for at in values_at(value, rule_path[len(path) :]):
                    assert cel_holds(rule["rule"], at), (path, rule)


def test_cel_rules_compile_and_their_field_paths_exist() -> None:
    assert len(RULES) >= 9
    for path, rule in RULES:
        assert rule.keys() <= {"rule", "message", "fieldPath"}
        cel_program(rule["rule"])
        assert rule["message"]
        if "fieldPath" in rule:
            target = tuple(rule["fieldPath"].removeprefix(".").split("."))
            assert schema_at((*path, *target)), rule


# ---------------------------------------------------------------------------------------------
# The schema and the model have the same fields, defaults, enums and bounds
# ---------------------------------------------------------------------------------------------


def _nested_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):  # X | None, tuple[X, ...], tuple[X, ...] | None
        if (found := _nested_model(argument)) is not None:
            return found
    return None


def model_fields(
    model: type[BaseModel], schema: Mapping[str, Any], path: SchemaPath = ()
) -> Iterator[tuple[SchemaPath, FieldInfo, Mapping[str, Any], Mapping[str, Any]]]:
    """(path, field, its schema, its parent's schema) for every field, nested ones included."""
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    assert set(schema["properties"]) == set(fields), path  # both ways: no field left out or added
    for alias, info in fields.items():
        node = schema["properties"][alias]
        yield (*path, alias), info, node, schema
        nested = _nested_model(info.annotation)
        if nested is not None:
            if node["type"] == "array":
                yield from model_fields(nested, node["items"], (*path, alias, "[]"))
            else:
                yield from model_fields(nested, node, (*path, alias))


MODEL_FIELDS = list(model_fields(RolloutSpec, SPEC_SCHEMA))


def test_every_model_field_is_in_the_schema_and_back() -> None:
    paths = {path for path, *_ in MODEL_FIELDS}
    schema_paths = {
        path
        for path, _ in schema_nodes(SPEC_SCHEMA)
        if path and path[-1] != "[]"  # list items are the list's own model, not a field
    }
    assert paths == schema_paths
    assert len(paths) > 50


def test_every_field_has_the_models_default_and_description() -> None:
    for path, info, node, parent in MODEL_FIELDS:
        where = ".".join(path)
        assert node["description"] == info.description, where
        if info.is_required():
            assert path[-1] in parent.get("required", ()), where
            assert "default" not in node, where
            continue
        assert path[-1] not in parent.get("required", ()), where
        default = info.get_default(call_default_factory=True)
        if default is None:
            assert "default" not in node, where  # null: left out, as the model has it
        elif isinstance(default, BaseModel):
            # A mapping of defaults: `{}`, which the API server fills from the nested defaults.
            assert node["default"] == {}, where
            filled: Json = {}
            apply_defaults(filled, node)
            assert filled == default.model_dump(mode="json", by_alias=True, exclude_none=True)
        else:
            expected = pydantic_core.to_jsonable_python(default, by_alias=True)
            assert node["default"] == expected, where
            assert type(node["default"]) is type(expected), where


def _expected_bounds(info: FieldInfo, node: Mapping[str, Any]) -> Json:
    length = ("minItems", "maxItems") if node["type"] == "array" else ("minLength", "maxLength")
    bounds: Json = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Gt):
            bounds |= {"minimum": item.gt, "exclusiveMinimum": True}
        elif isinstance(item, annotated_types.Ge):
            bounds |= {"minimum": item.ge}
        elif isinstance(item, annotated_types.Lt):
            bounds |= {"maximum": item.lt, "exclusiveMaximum": True}
        elif isinstance(item, annotated_types.Le):
            bounds |= {"maximum": item.le}
        elif isinstance(item, annotated_types.MinLen):
            bounds |= {length[0]: item.min_length}
        elif isinstance(item, annotated_types.MaxLen):
            bounds |= {length[1]: item.max_length}
    return bounds


def test_every_bound_of_the_model_is_in_the_schema_and_no_other() -> None:
    keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems", "maxItems")
    for path, info, node, _ in MODEL_FIELDS:
        if path[-1] in {
            "name",
            "configMapName",
            "httpRouteName",
            "serviceAccountName",
            "credentialsSecretName",
        }:
            continue  # string formats: their own test below
        actual = {k: node[k] for k in (*keys, "minLength", "maxLength") if k in node}
        assert actual == _expected_bounds(info, node), ".".join(path)


def test_enums_are_the_models() -> None:
    for arm in ("baseline", "candidate"):
        assert schema_at((arm, "variant"))["enum"] == list(VARIANTS)
    assert schema_at(("traffic", "mode"))["enum"] == list(TRAFFIC_MODES)
    assert schema_at(("analysis", "insufficientData", "action"))["enum"] == list(
        INSUFFICIENT_DATA_ACTIONS
    )
    assert set(schema_at(("analysis", "gates"))["properties"]) == set(GATE_KEYS)


def _string_ok(path: SchemaPath, value: str) -> bool:
    node = schema_at(path)
    if not jsonschema.Draft4Validator(node).is_valid(value):
        return False
    return all(cel_holds(r["rule"], value) for r in node.get("x-kubernetes-validations", ()))


def _model_ok(model: type[BaseModel], key: str, value: str) -> bool:
    try:
        model.model_validate({key: value})
    except ValueError:
        return False
    return True


# Newlines are left out: Python's `$` matches before a final newline, Go's (the API server's)
# does not, so this stand-in cannot judge them.
_NAME_TEXT = st.text(alphabet="aZ09_.-/ é", max_size=130) | st.from_regex(
    r"\.{0,3}[a-zA-Z0-9_.-]{0,130}", fullmatch=True
)
_DNS_TEXT = st.text(alphabet="az09-.A_", max_size=20) | st.from_regex(
    r"[a-z0-9.-]{240,260}", fullmatch=True
)


@settings(max_examples=300, deadline=None)
@given(_NAME_TEXT)
def test_model_name_format_agrees(name: str) -> None:
    # ModelSpec.image has a default, so only the name decides.
    assert _string_ok(("model", "name"), name) == _model_ok(ModelSpec, "name", name)


@settings(max_examples=300, deadline=None)
@given(_DNS_TEXT)
def test_dns_name_format_agrees(name: str) -> None:
    expected = _model_ok(RepositorySpec, "configMapName", name)
    assert _string_ok(("baseline", "repository", "configMapName"), name) == expected
    assert _string_ok(("traffic", "httpRouteName"), name) == expected


# ---------------------------------------------------------------------------------------------
# Examples, defaults, rules
# ---------------------------------------------------------------------------------------------


def _example_rollouts() -> list[Json]:
    return [
        document
        for path in sorted((ROOT / "examples").rglob("*.y*ml"))
        for document in yaml.safe_load_all(path.read_text())
        if isinstance(document, dict) and document.get("kind") == KIND
    ]


def test_every_example_is_accepted_by_the_crd_and_the_model() -> None:
    examples = _example_rollouts()
    assert examples
    for example in examples:
        admission = admit(example)
        assert admission.schema_errors == []
        assert admission.broken_rules == []
        assert admission.spec == parse_spec(example).to_dict()


def test_the_api_server_defaults_are_the_models() -> None:
    admission = admit(manifest(MINIMAL))
    assert admission.accepted
    assert admission.spec == parse_spec(MINIMAL).to_dict()


_ALL_GATES_OFF = {key: {"enabled": False} for key in GATE_KEYS}
_DOT_NAME = "must not be '.' or '..'"
_ONE_SOURCE = "must set exactly one of variant, repository, storageUri"
_REVISION_NEEDED = "revision is required with storageUri"
_SAME_STORAGE = "candidate storageUri, revision and version must differ from the baseline's"
_STORAGE_ONLY = "revision, storage and version are for storageUri only"
_SAME_VARIANT = "candidate.variant must differ from baseline.variant"
_SAME_MAP = "candidate.repository.configMapName must differ from baseline.repository.configMapName"
_SHORT_STEP = (
    "every traffic.steps[].analysisSeconds (300 when left out) must be at least "
    "analysis.intervalSeconds"
)
_ROUTE_NEEDED = "httpRouteName is required when mode is HTTPRoute"
_ROUTE_UNWANTED = "httpRouteName must not be set when mode is ReplicaRatio"
_INCREASING = "step weights must be strictly increasing"
_ONE_GATE = "must enable at least one gate"
_PVC_STORAGE = "storage must not be set for pvc:// (the volume needs no access)"
_GS_ENDPOINT = "storage.endpoint is for s3:// only"
_GS_REGION = "storage.region is for s3:// only"
_DETECTABLE = "detectRegression must be above maxRegression"

# (spec, the rule it breaks: (path, message), where parse_spec reports it)
BREAKING = [
    pytest.param(
        spec_with(model={"name": ".."}),
        (("model", "name"), _DOT_NAME),
        "spec.model.name",
        id="dotdot",
    ),
    pytest.param(
        spec_with(model={"name": "."}), (("model", "name"), _DOT_NAME), "spec.model.name", id="dot"
    ),
    pytest.param(
        spec_with(baseline={"replicas": 2}),
        (("baseline",), _ONE_SOURCE),
        "spec.baseline",
        id="arm-without-source",
    ),
    pytest.param(
        spec_with(candidate={"variant": "tanh", "repository": {"configMapName": "mine"}}),
        (("candidate",), _ONE_SOURCE),
        "spec.candidate.repository",
        id="arm-with-two-sources",
    ),
    pytest.param(
        spec_with(candidate={"storageUri": "s3://models/gelu"}),
        (("candidate",), _REVISION_NEEDED),
        "spec.candidate.revision",
        id="storage-without-revision",
    ),
    pytest.param(
        spec_with(candidate={"variant": "tanh", "revision": "7"}),
        (("candidate",), _STORAGE_ONLY),
        "spec.candidate.revision",
        id="revision-without-storage",
    ),
    pytest.param(
        spec_with(baseline={"storageUri": "pvc://models/gelu"}),
        (("baseline",), _REVISION_NEEDED),
        "spec.baseline.revision",
        id="baseline-storage-without-revision",
    ),
    pytest.param(
        spec_with(baseline={"variant": "exact", "storage": {"region": "eu-west-1"}}),
        (("baseline",), _STORAGE_ONLY),
        "spec.baseline.storage",
        id="storage-settings-without-storage",
    ),
    pytest.param(
        spec_with(
            baseline={"storageUri": "s3://models/gelu", "revision": "7"},
            candidate={"storageUri": "s3://models/gelu", "revision": "7", "replicas": 2},
        ),
        ((), _SAME_STORAGE),
        "spec.candidate.revision",
        id="same-storage-revision",
    ),
    pytest.param(
        spec_with(
            baseline={"storageUri": "s3://models/gelu", "revision": "7", "version": 2},
            candidate={"storageUri": "s3://models/gelu", "revision": "7", "version": 2},
        ),
        ((), _SAME_STORAGE),
        "spec.candidate.revision",
        id="same-storage-revision-version",
    ),
    pytest.param(
        spec_with(candidate={"variant": "tanh", "version": 2}),
        (("candidate",), _STORAGE_ONLY),
        "spec.candidate.version",
        id="version-without-storage",
    ),
    pytest.param(
        spec_with(
            candidate={
                "storageUri": "pvc://models/gelu",
                "revision": "7",
                "storage": {"credentialsSecretName": "creds"},
            }
        ),
        (("candidate",), _PVC_STORAGE),
        "spec.candidate.storage",
        id="storage-settings-for-a-volume",
    ),
    pytest.param(
        spec_with(
            candidate={
                "storageUri": "gs://models/gelu",
                "revision": "7",
                "storage": {"endpoint": "https://minio:9000"},
            }
        ),
        (("candidate",), _GS_ENDPOINT),
        "spec.candidate.storage.endpoint",
        id="endpoint-for-gcs",
    ),
    pytest.param(
        spec_with(
            baseline={
                "storageUri": "gs://models/gelu",
                "revision": "7",
                "storage": {"region": "eu"},
            }
        ),
        (("baseline",), _GS_REGION),
        "spec.baseline.storage.region",
        id="region-for-gcs",
    ),
    pytest.param(
        spec_with(
            baseline={
                "storageUri": "pvc://models/gelu",
                "revision": "7",
                "storage": {"region": "eu"},
            }
        ),
        (("baseline",), _PVC_STORAGE),
        "spec.baseline.storage",
        id="baseline-storage-settings-for-a-volume",
    ),
    pytest.param(
        spec_with(
            baseline={
                "storageUri": "gs://models/gelu",
                "revision": "7",
                "storage": {"endpoint": "https://minio:9000"},
            }
        ),
        (("baseline",), _GS_ENDPOINT),
        "spec.baseline.storage.endpoint",
        id="baseline-endpoint-for-gcs",
    ),
    pytest.param(
        spec_with(
            candidate={
                "storageUri": "gs://models/gelu",
                "revision": "7",
                "storage": {"region": "eu"},
            }
        ),
        (("candidate",), _GS_REGION),
        "spec.candidate.storage.region",
        id="candidate-region-for-gcs",
    ),
    pytest.param(
        spec_with(analysis={"gates": {"latency": {"maxRegression": 0.5, "detectRegression": 0.5}}}),
        (("analysis", "gates", "latency"), _DETECTABLE),
        "spec.analysis.gates.latency.detectRegression",
        id="undetectable-regression",
    ),
    pytest.param(
        spec_with(candidate={"variant": "exact", "replicas": 3}),
        ((), _SAME_VARIANT),
        "spec.candidate.variant",
        id="same-variant",
    ),
    pytest.param(
        spec_with(
            baseline={"repository": {"configMapName": "mine"}},
            candidate={"repository": {"configMapName": "mine"}},
        ),
        ((), _SAME_MAP),
        "spec.candidate.repository.configMapName",
        id="same-config-map",
    ),
    pytest.param(
        spec_with(traffic={"steps": [{"weight": 10, "analysisSeconds": 59}]}),
        ((), _SHORT_STEP),
        "spec.traffic.steps[0].analysisSeconds",
        id="step-shorter-than-interval",
    ),
    pytest.param(
        spec_with(traffic={"steps": [{"weight": 10}]}, analysis={"intervalSeconds": 301}),
        ((), _SHORT_STEP),
        "spec.traffic.steps[0].analysisSeconds",
        id="defaulted-step-shorter-than-interval",
    ),
    pytest.param(
        spec_with(analysis={"intervalSeconds": 600}),
        ((), _SHORT_STEP),
        "spec.analysis.intervalSeconds",
        id="interval-longer-than-default-steps",
    ),
    pytest.param(
        spec_with(traffic={"mode": "HTTPRoute"}),
        (("traffic",), _ROUTE_NEEDED),
        "spec.traffic.httpRouteName",
        id="route-missing",
    ),
    pytest.param(
        spec_with(traffic={"mode": "ReplicaRatio", "httpRouteName": "route"}),
        (("traffic",), _ROUTE_UNWANTED),
        "spec.traffic.httpRouteName",
        id="route-unwanted",
    ),
    pytest.param(
        spec_with(traffic={"httpRouteName": "route"}),
        (("traffic",), _ROUTE_UNWANTED),
        "spec.traffic.httpRouteName",
        id="route-with-default-mode",
    ),
    pytest.param(
        spec_with(traffic={"steps": [{"weight": 10}, {"weight": 10}]}),
        (("traffic", "steps"), _INCREASING),
        "spec.traffic.steps[1].weight",
        id="equal-weights",
    ),
    pytest.param(
        spec_with(traffic={"steps": [{"weight": w} for w in (5, 50, 60, 25)]}),
        (("traffic", "steps"), _INCREASING),
        "spec.traffic.steps[3].weight",
        id="decreasing-weight",
    ),
    pytest.param(
        spec_with(
            traffic={"steps": [{"weight": w + 1} for w in range(MAX_STEPS - 1)] + [{"weight": 1}]}
        ),
        (("traffic", "steps"), _INCREASING),
        f"spec.traffic.steps[{MAX_STEPS - 1}].weight",
        id="last-of-max-steps",
    ),
    pytest.param(
        spec_with(analysis={"gates": _ALL_GATES_OFF}),
        (("analysis", "gates"), _ONE_GATE),
        "spec.analysis.gates",
        id="no-gate",
    ),
]


@pytest.mark.parametrize(("spec", "rule", "reported_at"), BREAKING)
def test_a_spec_that_breaks_a_rule_is_rejected_by_that_rule_and_by_the_model(
    spec: Json, rule: tuple[SchemaPath, str], reported_at: str
) -> None:
    admission = admit(manifest(spec))
    assert admission.schema_errors == []  # the rule alone rejects it
    assert admission.broken_rules == [rule]
    with pytest.raises(SpecError) as error:
        parse_spec(spec)
    assert reported_at in [problem.path for problem in error.value.problems]


def test_every_rule_has_a_spec_that_breaks_it() -> None:
    covered = {param.values[1] for param in BREAKING}
    assert covered == {(path, rule["message"]) for path, rule in RULES}


ACCEPTED = [
    pytest.param(
        spec_with(
            baseline={"repository": {"configMapName": "weights-a"}},
            candidate={"repository": {"configMapName": "weights-b"}},
        ),
        id="two-repositories",
    ),
    pytest.param(
        spec_with(candidate={"repository": {"configMapName": "exact"}, "variant": None}),
        id="variant-and-repository-share-a-name-null-variant",
    ),
    pytest.param(
        spec_with(traffic={"mode": "HTTPRoute", "httpRouteName": "gelu.route"}), id="http-route"
    ),
    pytest.param(spec_with(traffic={"httpRouteName": None}), id="null-route"),
    pytest.param(
        spec_with(
            traffic={"steps": [{"weight": w + 1, "analysisSeconds": 10} for w in range(MAX_STEPS)]},
            analysis={"intervalSeconds": 10},
        ),
        id="max-steps-at-the-interval",
    ),
    pytest.param(spec_with(analysis={"intervalSeconds": 300}), id="interval-equals-default-steps"),
    pytest.param(
        spec_with(analysis={"gates": {**_ALL_GATES_OFF, "nonFinite": {}}}), id="one-gate-by-default"
    ),
    pytest.param(
        spec_with(analysis={"gates": {**_ALL_GATES_OFF, "latency": {"enabled": True}}}),
        id="one-gate-enabled",
    ),
    pytest.param(spec_with(model={"name": "..."}), id="three-dots"),
    pytest.param(
        spec_with(candidate={"storageUri": "pvc://models/gelu", "revision": "7", "storage": {}}),
        id="empty-storage-for-a-volume",
    ),
    pytest.param(
        spec_with(analysis={"gates": {"latency": {"maxRegression": 1, "detectRegression": 2}}}),
        id="detectable-regression",
    ),
    pytest.param(
        spec_with(
            baseline={"storageUri": "s3://models/gelu", "revision": "7", "version": 1},
            candidate={"storageUri": "s3://models/gelu", "revision": "7", "version": 2},
        ),
        id="two-versions-of-one-store",
    ),
    pytest.param(
        spec_with(
            baseline={"storageUri": "s3://models/gelu", "revision": "7"},
            candidate={"storageUri": "s3://models/gelu", "revision": "7", "version": 2},
        ),
        id="a-version-beside-the-default",
    ),
]


@pytest.mark.parametrize("spec", ACCEPTED)
def test_valid_variations_pass_the_crd_and_the_model(spec: Json) -> None:
    admission = admit(manifest(spec))
    assert admission.schema_errors == []
    assert admission.broken_rules == []
    assert admission.spec == parse_spec(spec).to_dict()


# ---------------------------------------------------------------------------------------------
# Random specs: the CRD accepts exactly what the model accepts, with the same defaults
# ---------------------------------------------------------------------------------------------


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries({}, optional=fields)


def _mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values two times in three, so that a fair share of whole specs is valid."""
    return st.one_of(valid, valid, other)


_config_maps = _mostly(
    st.sampled_from(["weights-a", "weights-b", "w.b"]), st.sampled_from(["Bad_Name", "", "-a"])
)
_variant_arms = st.fixed_dictionaries(
    {"variant": st.sampled_from(VARIANTS)}, optional={"replicas": st.integers(0, 101)}
)
_repository_arms = st.fixed_dictionaries(
    {"repository": st.fixed_dictionaries({"configMapName": _config_maps})},
    optional={"replicas": st.integers(1, 3)},
)
_arms = _mostly(
    _variant_arms | _repository_arms,
    _optional(
        variant=st.sampled_from(VARIANTS),
        repository=st.fixed_dictionaries({"configMapName": _config_maps}),
    ),
)
_step = st.fixed_dictionaries(
    {"weight": st.integers(0, 100)}, optional={"analysisSeconds": st.integers(0, 400)}
)
_increasing_steps = st.lists(st.integers(1, 99), min_size=1, max_size=MAX_STEPS, unique=True).map(
    lambda weights: [{"weight": w} for w in sorted(weights)]
)
_traffic = _optional(
    mode=st.sampled_from(TRAFFIC_MODES),
    httpRouteName=_mostly(st.just("route"), st.just("Route")),
    steps=_mostly(_increasing_steps, st.lists(_step, max_size=MAX_STEPS + 1)),
)
_gate = _optional(enabled=st.booleans())
_some_gates = _optional(
    burnRate=_optional(
        enabled=st.booleans(),
        windows=st.lists(
            st.fixed_dictionaries(
                {
                    "burnRate": _mostly(st.sampled_from([1.5, 14.4]), st.just(1)),
                    "longWindowFactor": _mostly(st.sampled_from([0.5, 3]), st.just(0)),
                }
            ),
            max_size=5,
        ),
    ),
    errorRate=_optional(
        enabled=st.booleans(), maxRatioToBaseline=_mostly(st.sampled_from([1, 2]), st.just(0.5))
    ),
    latency=_optional(
        enabled=st.booleans(), maxRegression=_mostly(st.sampled_from([0.1, 10]), st.just(10.5))
    ),
    divergence=_gate,
    nonFinite=_optional(
        enabled=st.booleans(), maxPerMillion=_mostly(st.sampled_from([0, 5.5]), st.just(-1))
    ),
)
_gates = st.one_of(
    _some_gates,
    st.just(_ALL_GATES_OFF),
    st.sampled_from(GATE_KEYS).map(lambda on: {**_ALL_GATES_OFF, on: {"enabled": True}}),
)
_analysis = _optional(
    intervalSeconds=st.sampled_from([5, 10, 60, 299, 300, 301, 3600, 3601]),
    warmupSeconds=_mostly(st.integers(0, 100), st.just(-1)),
    falseRollbackBudget=_mostly(st.sampled_from([0.01, 0.2]), st.sampled_from([0, 0.3])),
    ledgerLimit=_mostly(st.integers(10, 500), st.sampled_from([9, 501])),
    insufficientData=_optional(
        maxExtensionSeconds=_mostly(st.integers(0, 700), st.just(-1)),
        action=st.sampled_from(INSUFFICIENT_DATA_ACTIONS),
    ),
    slo=_optional(
        availability=_mostly(st.sampled_from([0.9, 0.999]), st.sampled_from([0.5, 1])),
        latencyP99Ms=_mostly(st.sampled_from([1, 250.5]), st.just(0)),
    ),
    gates=_gates,
    probe=_optional(
        rows=_mostly(st.integers(16, 4096), st.sampled_from([15, 4097])),
        maxAbsError=_mostly(st.just(0.05), st.just(0)),
    ),
)
_specs = st.fixed_dictionaries(
    {
        "model": st.fixed_dictionaries(
            {
                "name": _mostly(
                    st.sampled_from(["gelu_mlp", "m.1", "..."]),
                    st.sampled_from([".", "..", "", "a b"]),
                )
            },
            optional={"image": _mostly(st.just("img:1"), st.just(""))},
        ),
        "baseline": _arms,
        "candidate": _arms,
    },
    optional={"traffic": _traffic, "analysis": _analysis},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs)
def test_the_crd_accepts_exactly_what_the_model_accepts(spec: Json) -> None:
    admission = admit(manifest(spec))
    try:
        parsed: RolloutSpec | None = parse_spec(spec)
        problems = ""
    except SpecError as error:
        parsed, problems = None, str(error)
    assert admission.accepted == (parsed is not None), (admission, problems)
    if parsed is not None:
        assert admission.spec == parsed.to_dict()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_the_crd_accepts_the_specs_the_model_accepts(spec: Json) -> None:
    admission = admit(manifest(spec))
    assert admission.schema_errors == []
    assert admission.broken_rules == []
    assert admission.spec == parse_spec(spec).to_dict()


def test_the_reference_lists_every_rule() -> None:
    reference = (ROOT / "docs" / "spec.md").read_text()
    for _, rule in RULES:
        assert f"| {rule['message']} |" in reference, rule["message"]


def test_null_is_dropped_by_the_api_server_where_the_model_refuses_it() -> None:
    # The one known difference in what is accepted (docs/spec.md, "Installing the CRD").
    spec = spec_with(baseline={"variant": "exact", "replicas": None})
    admission = admit(manifest(spec))
    assert admission.accepted
    assert admission.spec["baseline"] == {"variant": "exact", "replicas": 1}
    with pytest.raises(SpecError, match=r"spec\.baseline\.replicas: must be an integer"):
        parse_spec(spec)
