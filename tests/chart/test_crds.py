"""The chart's CRDs: its copy of the GeluModelRollout CRD is the top-level one, the templated
copy (crds.templated) is the same object kept on uninstall, and the Kopf peering CRD is the one
Kopf and the operator look for."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kopf._cogs.structs import references

from gelu_rollout.adapters.kube.kinds import Kind
from gelu_rollout.run import CLUSTER_PEERING, NAMESPACED_PEERING
from tests.chart.rendering import CHART, ROOT, of_kind, one, render

TOP_LEVEL = ROOT / "crds" / "gelumodelrollouts.gelu.dev.yaml"
CHART_COPY = CHART / "crds" / "gelumodelrollouts.gelu.dev.yaml"
KEEP = {"helm.sh/resource-policy": "keep"}


def test_the_chart_crd_is_the_top_level_crd() -> None:
    assert CHART_COPY.read_text() == TOP_LEVEL.read_text(), (
        "the chart's CRD differs from crds/; copy it: "
        "cp crds/gelumodelrollouts.gelu.dev.yaml charts/gelu-rollout/crds/"
    )


def test_the_crd_is_not_templated_by_default() -> None:
    assert not of_kind(render(), "CustomResourceDefinition")


def without_release_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in crd["metadata"].items() if k not in ("labels", "annotations")}
    return {**crd, "metadata": metadata}


def test_the_templated_crd_is_the_same_crd_and_is_kept_on_uninstall() -> None:
    crd = one(render({"crds": {"templated": True}}), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == KEEP
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "gr"
    assert without_release_metadata(crd) == yaml.safe_load(CHART_COPY.read_text())


def peering_crds(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for c in of_kind(render(values), "CustomResourceDefinition")
        if c["spec"]["group"] == "kopf.dev"
    ]


@pytest.mark.parametrize(
    ("namespaces", "kind", "selector"),
    [
        ([], CLUSTER_PEERING, references.CLUSTER_PEERINGS_K),
        (["team-a"], NAMESPACED_PEERING, references.NAMESPACED_PEERINGS_K),
    ],
)
def test_peering_brings_the_peering_crd_kopf_looks_for(
    namespaces: list[str], kind: Kind, selector: references.Selector
) -> None:
    (crd,) = peering_crds({"peering": {"enabled": True}, "watchNamespaces": namespaces})
    spec = crd["spec"]
    # What the operator creates (run.py) and Kopf watches (its selector) is what is served.
    assert f"{spec['group']}/{spec['versions'][0]['name']}" == kind.api_version
    assert selector.group == spec["group"]
    assert selector.version == spec["versions"][0]["name"]
    assert spec["names"]["plural"] == kind.plural == selector.any_name
    assert spec["names"]["kind"] == kind.kind
    assert spec["scope"] == ("Namespaced" if kind.namespaced else "Cluster")
    assert crd["metadata"]["name"] == f"{kind.plural}.{spec['group']}"
    assert crd["metadata"]["annotations"] == KEEP  # other Kopf operators may peer through it
    # Kopf keeps its peers in the status, unchecked.
    status = spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_no_peering_crd_without_peering_or_where_it_is_installed_already() -> None:
    assert not peering_crds({})
    assert not peering_crds({"peering": {"enabled": True, "installCRDs": False}})
