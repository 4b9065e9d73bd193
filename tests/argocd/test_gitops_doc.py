"""docs/gitops.md says what the code does: its argocd-cm holds the scripts in argocd/, its
manifests parse, and the HTTPRoute it tells you to keep in Git differs from the operator's
patch in the weights alone, at the paths its ignore rules name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gelu_rollout.resources.traffic import route_backends_patch

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "gitops.md"
HERE = ROOT / "argocd" / "resource_customizations" / "gelu.dev" / "GeluModelRollout"


def yaml_blocks() -> list[Any]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.S | re.M)
    return [document for block in blocks for document in yaml.safe_load_all(block)]


def kind(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml_blocks() if isinstance(d, dict) and d.get("kind") == name]


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every scalar of ``value`` by its JSON pointer."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in leaves(item, f"{path}/{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in leaves(item, f"{path}/{i}").items()
        }
    return {path: value}


def test_every_yaml_block_parses() -> None:
    assert len(yaml_blocks()) >= 8


def test_the_argocd_cm_holds_the_tested_scripts() -> None:
    [config] = [d for d in kind("ConfigMap") if d["metadata"]["name"] == "argocd-cm"]
    data = config["data"]
    health = data["resource.customizations.health.gelu.dev_GeluModelRollout"]
    assert health == (HERE / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.gelu.dev_GeluModelRollout"])
    assert actions["discovery.lua"] == (HERE / "actions" / "discovery.lua").read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        p.parent.name: p.read_text() for p in (HERE / "actions").glob("*/action.lua")
    }


def test_the_route_in_git_is_the_operators_at_rest() -> None:
    [route] = kind("HTTPRoute")
    assert route_backends_patch(route, "gelu-mlp", 0)["spec"]["rules"] == route["spec"]["rules"]


@pytest.mark.parametrize("weight", [10, 50, 100])
def test_during_a_rollout_only_the_ignored_weights_differ(weight: int) -> None:
    [route] = kind("HTTPRoute")
    patched = route_backends_patch(route, "gelu-mlp", weight)["spec"]["rules"]
    before, after = leaves(route["spec"]["rules"], "/spec/rules"), leaves(patched, "/spec/rules")
    assert before.keys() == after.keys()
    changed = {path for path in before if before[path] != after[path]}
    assert changed == {"/spec/rules/0/backendRefs/0/weight", "/spec/rules/0/backendRefs/1/weight"}
    # Flux: the Kustomization's ignore rules name exactly those paths.
    for kustomization in kind("Kustomization"):
        [rule] = kustomization["spec"]["ignore"]
        assert rule["target"]["kind"] == "HTTPRoute"
        assert rule["target"]["name"] == route["metadata"]["name"]
        assert set(rule["paths"]) == changed
    # Argo CD: the jq path selects every weight of every rule.
    jq = {
        path
        for d in yaml_blocks()
        if isinstance(d, dict)
        for entry in d.get("ignoreDifferences", [])
        + (d.get("spec") or {}).get("ignoreDifferences", [])
        for path in entry.get("jqPathExpressions", [])
    }
    assert jq == {".spec.rules[].backendRefs[].weight"}


def test_the_applications_point_at_the_chart_and_respect_ignored_weights() -> None:
    apps = {d["metadata"]["name"]: d["spec"] for d in kind("Application")}
    assert apps["gelu-rollout"]["source"]["path"] == "charts/gelu-rollout"
    assert (ROOT / "charts" / "gelu-rollout").is_dir()
    models = apps["gelu-models"]
    assert "RespectIgnoreDifferences=true" in models["syncPolicy"]["syncOptions"]
    [release] = kind("HelmRelease")
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/gelu-rollout"
    [check] = kind("Kustomization")[0]["spec"]["healthChecks"]
    assert (check["apiVersion"], check["kind"]) == ("gelu.dev/v1alpha1", "GeluModelRollout")
