"""The chart's values: each one commented in values.yaml and in docs/install.md's table, bad
ones refused by values.schema.json (or by the templates, for combinations) with a message that
names the field."""

from __future__ import annotations

import json
import re
from typing import Any, Final

import helm_python as helm
import pytest
import yaml

from tests.chart.rendering import CHART, ROOT, Values, render

BAD_VALUES: Final[list[tuple[Values, str]]] = [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"imageTag": "1.0"}, "imageTag"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"image": {"tag": "a tag"}}, "/image/tag"),
    ({"image": {"repository": ""}}, "/image/repository"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": ["team-a", "team-a"]}, "/watchNamespaces"),
    ({"operator": {"prometheusUrl": "prometheus:9090"}}, "/operator/prometheusUrl"),
    ({"operator": {"tickSeconds": 0.1}}, "/operator/tickSeconds"),
    ({"operator": {"metricsPort": 70000}}, "/operator/metricsPort"),
    ({"operator": {"extraArgs": "--verbose"}}, "/operator/extraArgs"),
    ({"operator": {"namespace": "team-a"}}, "namespace"),
    ({"peering": {"enabled": "yes"}}, "/peering/enabled"),
    ({"peering": {"name": "Gelu Rollout"}}, "/peering/name"),
    ({"crds": {"templated": "true"}}, "/crds/templated"),
    ({"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    ({"securityContext": {"runAsUser": "gelu"}}, "/securityContext/runAsUser"),
    ({"securityContext": {"privileged": True}}, "privileged"),
    ({"strategy": {"type": "BlueGreen"}}, "/strategy/type"),
    ({"probes": {"liveness": {"periodSeconds": 0}}}, "/probes/liveness/periodSeconds"),
    ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "/podDisruptionBudget/maxUnavailable"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "/serviceMonitor/interval"),
    ({"serviceMonitor": {"labels": {"release": 1}}}, "/serviceMonitor/labels/release"),
    ({"podMonitor": {"enabled": 1}}, "/podMonitor/enabled"),
    ({"prometheusRule": {"runbookBaseUrl": "https://wiki/runbooks"}}, "/prometheusRule/runbook"),
    ({"prometheusRule": {"operatorDownFor": "5m"}}, "operatorDownFor"),
    ({"dashboards": {"labels": ["grafana_dashboard"]}}, "/dashboards/labels"),
    ({"networkPolicy": {"egress": {"apiServerCIDRs": ["10.0.0.1"]}}}, "/apiServerCIDRs/0"),
    ({"resources": {"request": {"cpu": "1"}}}, "request"),
]

REFUSED_COMBINATIONS: Final[list[tuple[Values, tuple[str, ...]]]] = [
    ({"replicaCount": 2}, ("replicaCount is 2", "peering.enabled=true")),
    ({"strategy": {"type": "RollingUpdate"}}, ("strategy.type RollingUpdate", "peering.enabled")),
    (
        {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        ("serviceMonitor.enabled", "podMonitor.enabled"),
    ),
    (
        {"networkPolicy": {"enabled": True, "egress": {"enabled": True}}},
        ("networkPolicy.egress.apiServerCIDRs",),
    ),
    ({"serviceAccount": {"create": False}}, ("serviceAccount.name",)),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_the_schema_refuses_a_bad_value_naming_it(values: Values, field: str) -> None:
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    message = str(refused.value)
    assert field in message, message


@pytest.mark.parametrize(
    ("values", "words"), REFUSED_COMBINATIONS, ids=[w[0] for _, w in REFUSED_COMBINATIONS]
)
def test_a_refused_combination_says_what_to_change(values: Values, words: tuple[str, ...]) -> None:
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    for word in words:
        assert word in str(refused.value)


def test_ha_with_peering_renders() -> None:
    objects = render({"replicaCount": 2, "peering": {"enabled": True}})
    assert any(o["kind"] == "Deployment" for o in objects)


def schema_leaves(schema: dict[str, Any], values: Any, path: str = "") -> list[str]:
    """The dotted paths of every value the schema describes field by field."""
    properties = schema.get("properties")
    if not isinstance(values, dict) or not properties:
        return [path]
    leaves: list[str] = []
    for key, value in values.items():
        leaves += schema_leaves(properties[key], value, f"{path}.{key}" if path else key)
    return leaves


def test_every_value_has_a_schema_and_a_row_in_the_install_docs() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = (ROOT / "docs" / "install.md").read_text()
    documented = set(re.findall(r"^\| `([\w.*]+)`", docs, flags=re.MULTILINE))
    missing = [
        leaf
        for leaf in schema_leaves(schema, defaults)
        if leaf not in documented
        and not any(leaf.startswith(d[:-1]) for d in documented if d.endswith("*"))
    ]
    assert not missing, f"docs/install.md has no row for {missing}"
    assert set(schema["properties"]) - {"global"} == set(defaults), "schema and values differ"


def test_every_value_is_commented() -> None:
    # A value is commented when a comment stands above it, or above the run of keys (with no
    # blank line) it belongs to: its group or the sibling before it.
    lines = (CHART / "values.yaml").read_text().splitlines()
    literal_indent: int | None = None  # inside a list literal, whose keys are its items'
    previous: str | None = None  # "comment", "documented" or None (blank or undocumented)
    undocumented: list[str] = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            previous = None
            continue
        if stripped.startswith("#"):
            previous = "comment"
            continue
        if literal_indent is not None and indent > literal_indent:
            continue
        literal_indent = None
        if stripped.startswith("- "):
            literal_indent = indent
            continue
        key = re.match(r"[A-Za-z][\w]*:(.*)", stripped)
        if key:
            documented = previous in ("comment", "documented")
            # A group (a key without a value of its own) may leave the saying to its keys.
            if not documented and key.group(1).strip():
                undocumented.append(f"values.yaml:{number}: {stripped}")
            previous = "documented" if documented else None
    assert not undocumented, undocumented
