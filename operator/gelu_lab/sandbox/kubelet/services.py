"""Services resolved to the ready pods their selectors match, as cluster DNS and kube-proxy
would: the stand-in the operator's probe and the traffic generator go through."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gelu_lab.sandbox.kubelet.fields import ObjectKey, key_of, mapping
from gelu_lab.sandbox.kubelet.lifecycle import PodInfo

ServiceSpecs = Mapping[ObjectKey, Mapping[str, Any]]
"""The ``spec`` of each Service, by ``(namespace, name)``."""


def service_specs(services: Iterable[Mapping[str, Any]]) -> dict[ObjectKey, Mapping[str, Any]]:
    """:data:`ServiceSpecs` of listed Service objects."""
    return {key_of(service): mapping(service.get("spec")) for service in services}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a Service's ``spec.selector`` (equality on every key) selects ``labels``.

    A Service without a selector selects no pods (its endpoints are managed by hand).
    """
    if not selector:
        return False
    return all(labels.get(key) == value for key, value in selector.items())


def service_pods(
    pods: Iterable[PodInfo], specs: ServiceSpecs, namespace: str, service: str
) -> list[PodInfo]:
    """The ready ones of ``pods`` that the Service selects, in their order (none for a Service
    that ``specs`` does not hold)."""
    spec = specs.get((namespace, service))
    if spec is None:
        return []
    selector = mapping(spec.get("selector"))
    return [
        pod
        for pod in pods
        if pod.namespace == namespace and pod.ready and selector_matches(selector, pod.labels)
    ]
