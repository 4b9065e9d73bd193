"""The Kubernetes API as plain JSON objects: get, list, create, merge-patch, delete, apply.

One generic path for every kind the operator touches, built on the official client's
``ApiClient`` (configuration, authentication, TLS) so that objects stay the dicts the pure
renderers produce. Blocking; the handlers call it from a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from kubernetes import client as k8s

from gelu_rollout.resources.desired import needs_apply

Object = dict[str, Any]

PLURALS: Final[Mapping[tuple[str, str], str]] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("gelu.dev/v1alpha1", "GeluModelRollout"): "gelumodelrollouts",
}
MERGE_PATCH: Final = "application/merge-patch+json"
ATOMIC_MAPS: Final[Mapping[str, tuple[str, ...]]] = {"Service": ("spec", "selector")}
"""Maps the operator owns whole: a key it no longer wants must go, not linger under a merge."""


class KubeError(RuntimeError):
    """The API server refused a request; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resource_path(
    api_version: str, kind: str, namespace: str | None, name: str | None = None
) -> str:
    """The REST path of a namespaced object (or of its collection when ``name`` is None; of
    the collection across all namespaces when ``namespace`` is None too)."""
    try:
        plural = PLURALS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {kind} ({api_version})") from None
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is None:
        if name is not None:
            raise ValueError(f"a {kind} is named within a namespace")
        return f"{prefix}/{plural}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name is not None else path


class KubeClient:
    """JSON objects in and out; 404 on read is None, other refusals raise :class:`KubeError`."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout_seconds: float = 10.0) -> None:
        self.api = api_client
        self.timeout_seconds = timeout_seconds

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*serialized, _request_timeout=self.timeout_seconds)
        response.read()  # type: ignore[no-untyped-call]
        raw = response.data or b""
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, data

    def _check(self, status: int, data: Any, what: str) -> Any:
        if 200 <= status < 300:
            return data
        message = data.get("message") if isinstance(data, Mapping) else data
        raise KubeError(status, f"{what}: HTTP {status}: {message}")

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Object | None:
        status, data = self._call("GET", resource_path(api_version, kind, namespace, name))
        if status == 404:
            return None
        result: Object = self._check(status, data, f"get {kind} {namespace}/{name}")
        return result

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[Object]:
        """The objects in ``namespace``, or in every namespace when it is None."""
        query = {"labelSelector": label_selector} if label_selector else None
        status, data = self._call("GET", resource_path(api_version, kind, namespace), query=query)
        where = f"in {namespace}" if namespace is not None else "in all namespaces"
        items = self._check(status, data, f"list {kind} {where}").get("items") or []
        # List items may omit apiVersion and kind; callers compare objects by them.
        return [{"apiVersion": api_version, "kind": kind, **item} for item in items]

    def create(self, obj: Mapping[str, Any]) -> Object:
        api_version, kind, namespace, name = _identity(obj)
        status, data = self._call(
            "POST", resource_path(api_version, kind, namespace), body=dict(obj)
        )
        result: Object = self._check(status, data, f"create {kind} {namespace}/{name}")
        return result

    def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Object:
        status, data = self._call(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            body=dict(patch),
            content_type=MERGE_PATCH,
        )
        result: Object = self._check(status, data, f"patch {kind} {namespace}/{name}")
        return result

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete an object; False if it was already gone."""
        status, data = self._call("DELETE", resource_path(api_version, kind, namespace, name))
        if status == 404:
            return False
        self._check(status, data, f"delete {kind} {namespace}/{name}")
        return True

    def apply(self, obj: Mapping[str, Any]) -> Literal["created", "patched", "unchanged"]:
        """Make the live object cover ``obj``: create it, patch it, or leave it alone."""
        api_version, kind, namespace, name = _identity(obj)
        return self.reconcile(obj, self.get(api_version, kind, namespace, name))

    def reconcile(
        self, obj: Mapping[str, Any], live: Mapping[str, Any] | None
    ) -> Literal["created", "patched", "unchanged"]:
        """:meth:`apply` against a live object the caller has already read (None: absent)."""
        api_version, kind, namespace, name = _identity(obj)
        if live is None:
            try:
                self.create(obj)
                return "created"
            except KubeError as error:
                if error.status != 409:  # created since it was read: compare with it
                    raise
            live = self.get(api_version, kind, namespace, name)
            if live is None:
                raise KubeError(409, f"{kind} {namespace}/{name} exists and is gone again")
        patch = _with_removals(obj, live)
        if not needs_apply(patch, live) and patch == obj:
            return "unchanged"
        self.merge_patch(api_version, kind, namespace, name, patch)
        return "patched"


def _dig(obj: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    for key in path:
        value = obj.get(key)
        if not isinstance(value, Mapping):
            return None
        obj = value
    return obj


def _with_removals(desired: Mapping[str, Any], live: Mapping[str, Any]) -> Mapping[str, Any]:
    """``desired`` as a merge patch that also deletes the keys of its atomic maps that ``live``
    has and ``desired`` does not (a merge patch deletes only keys set to null)."""
    path = ATOMIC_MAPS.get(str(desired.get("kind")))
    wanted, current = (_dig(desired, path), _dig(live, path)) if path else (None, None)
    if path is None or wanted is None or current is None:
        return desired
    extra = {key: None for key in current if key not in wanted}
    if not extra:
        return desired
    patch = json.loads(json.dumps(desired))
    target = patch
    for key in path:
        target = target[key]
    target.update(extra)
    result: Mapping[str, Any] = patch
    return result


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj.get("metadata") or {}
    return (
        str(obj["apiVersion"]),
        str(obj["kind"]),
        str(metadata["namespace"]),
        str(metadata["name"]),
    )


def api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client from a kubeconfig file, or the in-cluster service account when none is given
    and the operator runs in a pod."""
    from kubernetes import config

    configuration = k8s.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return k8s.ApiClient(configuration)
        except config.ConfigException:
            pass
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, client_configuration=configuration
    )
    return k8s.ApiClient(configuration)
