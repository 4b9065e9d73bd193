"""Rendering the operator's chart with real Helm (the helm-python-sdk's Go SDK), and the value
sets the chart's tests run over."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import helm_python as helm
import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
CHART: Final = ROOT / "charts" / "gelu-rollout"
RELEASE: Final = "gr"
NAMESPACE: Final = "ops"
FULLNAME: Final = "gr-gelu-rollout"

Object = dict[str, Any]
Values = dict[str, Any]

DIGEST: Final = "sha256:" + "0123456789abcdef" * 4

# The value sets every rendering test runs over: the defaults, each mode, and every toggle on.
MATRIX: Final[Mapping[str, Values]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "toggles": {
        "image": {"digest": DIGEST},
        "crds": {"templated": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboards": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
            "egress": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"]},
        },
        "operator": {"verbose": True, "extraArgs": ["--tick-seconds=2"]},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
        "imagePullSecrets": [{"name": "registry"}],
    },
    "toggles-podmonitor": {
        "watchNamespaces": ["team-a"],
        "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "egress": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32", "fd00::1/128"]},
        },
    },
    "ha": {
        "replicaCount": 3,
        "peering": {"enabled": True},
        "strategy": {"type": "RollingUpdate"},
    },
    "ha-namespaced": {
        "replicaCount": 2,
        "peering": {"enabled": True},
        "watchNamespaces": ["team-a", "team-b"],
    },
}


def render_manifests(values: Values | None = None, chart: Path = CHART) -> dict[str, str]:
    """Each template's rendered text, by path, as `helm template` renders it."""
    with helm.Chart.load(chart) as loaded:
        return loaded.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: Values | None = None, chart: Path = CHART) -> list[Object]:
    """The Kubernetes objects a release of the chart holds (templates only, not crds/)."""
    objects: list[Object] = []
    for path, text in sorted(render_manifests(values, chart).items()):
        if path.endswith(".txt"):
            continue
        objects.extend(d for d in yaml.safe_load_all(text) if d is not None)
    return objects


def notes(values: Values | None = None) -> str:
    manifests = render_manifests(values)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Object], kind: str) -> Object:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def chart_copy(tmp: Path, files: Mapping[str, str]) -> Path:
    """A copy of the chart with ``files`` (path inside the chart: text) added."""
    target = tmp / "gelu-rollout"
    shutil.copytree(CHART, target)
    for name, text in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target
