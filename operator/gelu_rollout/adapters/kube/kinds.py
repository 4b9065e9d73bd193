"""The one table of the kinds that the operator and its tools read and write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gelu_rollout.spec.resource import API_VERSION, KIND, PLURAL


@dataclass(frozen=True)
class Kind:
    """A resource type as the API serves it: what objects carry, and where it lives."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path of an object, or of its collection when ``name`` is None (across all
        namespaces when ``namespace`` is None too)."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace is not None:
            prefix += f"/namespaces/{namespace}"
        elif self.namespaced and name is not None:
            raise ValueError(f"a {self.kind} is named within a namespace")
        path = f"{prefix}/{self.plural}"
        if name is None:
            return path
        path += f"/{name}"
        return f"{path}/{subresource}" if subresource else path


CONFIG_MAP: Final = Kind("v1", "ConfigMap", "configmaps")
SERVICE: Final = Kind("v1", "Service", "services")
POD: Final = Kind("v1", "Pod", "pods")
NAMESPACE: Final = Kind("v1", "Namespace", "namespaces", namespaced=False)
DEPLOYMENT: Final = Kind("apps/v1", "Deployment", "deployments")
HTTP_ROUTE: Final = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
ROLLOUT: Final = Kind(API_VERSION, KIND, PLURAL)
CUSTOM_RESOURCE_DEFINITION: Final = Kind(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
)

KINDS: Final[Mapping[tuple[str, str], Kind]] = {
    (k.api_version, k.kind): k
    for k in (
        CONFIG_MAP,
        SERVICE,
        POD,
        NAMESPACE,
        DEPLOYMENT,
        HTTP_ROUTE,
        ROLLOUT,
        CUSTOM_RESOURCE_DEFINITION,
    )
}

OWNED_KINDS: Final = (CONFIG_MAP, DEPLOYMENT, SERVICE)
"""What the operator creates for a rollout (and prunes by label when no longer wanted)."""


def kind_of(obj: Mapping[str, Any]) -> Kind:
    """The kind an object says it is; ValueError for one the table does not hold."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return KINDS[key]
    except KeyError:
        raise ValueError(f"the operator does not manage {key[1]} ({key[0]})") from None
