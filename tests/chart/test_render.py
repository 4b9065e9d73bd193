"""The chart renders with real Helm over a matrix of values, lints strictly, and every object it
renders is valid: Kubernetes kinds against the Kubernetes schemas (kubernetes-validate, strict),
the Prometheus Operator's kinds against the models generated from its Go types (the npm package
``@kubernetes-models/prometheus-operator``, installed by ``make setup`` into
build/monitoring-schemas and run by monitoring-schemas/validate.mjs) and, since those models
accept unknown fields, against a vendored minimal form of their schemas that refuses them."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, Final

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.rendering import (
    CHART,
    MATRIX,
    NAMESPACE,
    Object,
    Values,
    render,
    render_manifests,
)

# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest schemas.
SCHEMA_VERSIONS: Final = ("1.28.0", kubernetes_validate.latest_version())
MONITORING: Final = "monitoring.coreos.com/v1"
PROMETHEUS_OPERATOR_SCHEMA: Final = Path(__file__).with_name("prometheus-operator.schema.json")
MODELS_SCRIPT: Final = Path(__file__).with_name("monitoring-schemas") / "validate.mjs"
MODELS_ROOT: Final = Path(__file__).resolve().parents[2] / "build" / "monitoring-schemas"


class PrometheusOperatorModelError(ValueError):
    """An object the Prometheus Operator's generated models refuse."""


def prometheus_operator_models(objects: list[Object]) -> list[str | None]:
    """Each object's error by the upstream models (None: valid), in one run of node."""
    package = MODELS_ROOT / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    node = shutil.which("node")
    if node is None or not package.is_dir():
        pytest.fail(f"node or {package} is missing: run `make setup`, which installs them")
    answer = subprocess.run(
        [node, str(MODELS_SCRIPT), str(MODELS_ROOT)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [result["error"] for result in json.loads(answer.stdout)]


@cache
def prometheus_operator_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads(PROMETHEUS_OPERATOR_SCHEMA.read_text())
    root = {**schema, "$ref": f"#/$defs/{kind}"}
    validator_class = jsonschema.validators.validator_for(root)
    validator_class.check_schema(root)
    validator: jsonschema.protocols.Validator = validator_class(root)
    return validator


def validate(obj: Object) -> None:
    """Raise on an invalid object: Kubernetes' kinds by their schemas, strictly (unknown fields
    refused), in the oldest and the newest version; the Prometheus Operator's by the upstream
    models and the vendored form of their schemas."""
    if obj["apiVersion"] == MONITORING:
        (error,) = prometheus_operator_models([obj])
        if error is not None:
            raise PrometheusOperatorModelError(error)
        prometheus_operator_validator(obj["kind"]).validate(obj)
        return
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


@cache
def rendered(case: str) -> tuple[Object, ...]:
    return tuple(render(MATRIX[case]))


@pytest.mark.parametrize("case", MATRIX)
def test_the_chart_lints_strictly(case: str) -> None:
    report: dict[str, Any] = helm.lint(CHART, MATRIX[case], strict=True, namespace=NAMESPACE)
    # Severity 1 is information ("icon is recommended"); 2 and above fail a strict lint.
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert report["total_charts_linted"] == 1
    assert not problems, problems


@pytest.mark.parametrize("case", MATRIX)
def test_every_rendered_object_is_valid(case: str) -> None:
    objects = rendered(case)
    assert objects
    monitoring = [o for o in objects if o["apiVersion"] == MONITORING]
    # The upstream models in one batch: one node process per case, not per object.
    for obj, error in zip(monitoring, prometheus_operator_models(monitoring), strict=True):
        assert error is None, f"{case}: {obj['kind']} {obj['metadata']['name']}: {error}"
    for obj in objects:
        try:
            if obj["apiVersion"] == MONITORING:
                prometheus_operator_validator(obj["kind"]).validate(obj)
            else:
                validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            name = f"{obj['kind']} {obj['metadata'].get('name')}"
            pytest.fail(f"{case}: {name}: {error.message} at {list(error.absolute_path)}")


@pytest.mark.parametrize("case", MATRIX)
def test_objects_are_namespaced_in_the_release_or_a_watched_namespace(case: str) -> None:
    values: Values = MATRIX[case]
    allowed = {NAMESPACE, *values.get("watchNamespaces", [])}
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in rendered(case):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, obj["kind"]
        else:
            assert namespace in allowed, f"{obj['kind']} {obj['metadata']['name']}: {namespace}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "gr"


def test_the_chart_crd_is_valid_too() -> None:
    with helm.Chart.load(CHART) as chart:
        crds = chart.crds
    assert [c["name"] for c in crds] == ["crds/gelumodelrollouts.gelu.dev.yaml"]
    for crd in crds:
        validate(yaml.safe_load(crd["data"]))


def test_the_matrix_renders_every_template() -> None:
    # Each template renders an object for some value set, so each is linted and validated.
    templates = {
        path
        for path in render_manifests()
        if path.endswith(".yaml") and not path.endswith("dashboards.yaml")
    }
    covered = {
        path
        for case in MATRIX
        for path, text in render_manifests(MATRIX[case]).items()
        if path.endswith(".yaml") and any(yaml.safe_load_all(text))
    }
    # dashboards.yaml renders only where the chart holds a dashboard (test_monitoring.py).
    assert templates - covered == set()


def test_the_validators_refuse_a_wrong_object() -> None:
    deployment = next(o for o in rendered("defaults") if o["kind"] == "Deployment")
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(misspelt)
    monitor = next(o for o in rendered("toggles") if o["kind"] == "ServiceMonitor")
    wrong = json.loads(json.dumps(monitor))
    wrong["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(wrong)
    wrong = json.loads(json.dumps(monitor))
    wrong["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(PrometheusOperatorModelError, match="interval must match pattern"):
        validate(wrong)
    rule = next(o for o in rendered("toggles") if o["kind"] == "PrometheusRule")
    wrong = json.loads(json.dumps(rule))
    wrong["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(PrometheusOperatorModelError, match="for must match pattern"):
        validate(wrong)


def test_the_oldest_kubernetes_the_chart_names_is_the_one_validated() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={SCHEMA_VERSIONS[0]}-0"
