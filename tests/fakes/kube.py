"""An in-memory Kubernetes API with the verbs of :class:`gelu_rollout.adapters.kube.KubeClient`.

Objects are plain dicts keyed by kind, namespace and name. It keeps what the API server keeps
that a tick relies on: server-side apply creates or replaces an object but leaves its status
and identity (uid, resourceVersion) alone; a merge patch follows RFC 7386 (a resourceVersion
in it is a precondition: a stale one is a 409); a read of what is not there is None, a write
to it a 404. Every request is recorded (``requests``), and faults
can be injected per verb, kind and name: an HTTP status (raised as the client raises it, a
:class:`KubeError`) or any exception (a timeout, a dropped connection).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gelu_rollout.adapters.kube import KubeError
from gelu_rollout.adapters.kube.kinds import Kind, kind_of

Object = dict[str, Any]
ObjectKey = tuple[str, str, str]
"""(kind, namespace, name); the namespace is "" for cluster-scoped kinds."""

API_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@dataclass(frozen=True)
class Request:
    """One request as the API server saw it."""

    verb: str
    kind: str
    namespace: str
    name: str


@dataclass
class Fault:
    """Requests matching ``verb``, ``kind`` and ``name`` ("*": any) fail: with ``status`` (a
    :class:`KubeError` as the client raises it) or ``error``; ``times`` of them (None: all)."""

    verb: str = "*"
    kind: str = "*"
    name: str = "*"
    status: int | None = None
    error: BaseException | None = None
    times: int | None = None
    message: str = ""

    def matches(self, request: Request) -> bool:
        return (
            (self.times is None or self.times > 0)
            and self.verb in ("*", request.verb)
            and self.kind in ("*", request.kind)
            and self.name in ("*", request.name)
        )

    def raise_for(self, request: Request) -> None:
        if self.times is not None:
            self.times -= 1
        if self.error is not None:
            raise self.error
        status = self.status if self.status is not None else 500
        where = f"{request.namespace}/{request.name}" if request.name else request.namespace
        what = f"{request.verb} {request.kind} {where}"
        detail = self.message or f"{API_REASONS.get(status, 'Error')} (injected)"
        raise KubeError(
            status, f"{what}: HTTP {status}: {detail}", API_REASONS.get(status, ""), request.verb
        )


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeKubeAPI:
    """The API server a controller talks to in the fast tests; ``ready_on_apply`` plays the
    kubelet and the Deployment controller: every applied Deployment's pods are ready at once,
    but those of the Deployments named in ``never_ready`` (a crash-looping arm), which have
    none ready."""

    def __init__(self, *, ready_on_apply: bool = True) -> None:
        self.objects: dict[ObjectKey, Object] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.ready_on_apply = ready_on_apply
        self.never_ready: set[str] = set()
        self._kubelet_runs: set[ObjectKey] = set()  # the Deployments whose readiness it plays
        self._versions = itertools.count(1)

    # -- the test's side -----------------------------------------------------------------

    def put(self, obj: Mapping[str, Any]) -> Object:
        """Create or replace an object as a person would (no request is recorded)."""
        kind = kind_of(obj)
        metadata = obj.get("metadata") or {}
        key = (
            kind.kind,
            str(metadata.get("namespace") or "") if kind.namespaced else "",
            str(metadata["name"]),
        )
        stored = self._stamp(copy.deepcopy(dict(obj)), self.objects.get(key))
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        self.objects.pop((kind, namespace, name), None)

    def find(self, kind: str, namespace: str, name: str) -> Object | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def of_kind(self, kind: str) -> list[Object]:
        return [copy.deepcopy(o) for (k, _, _), o in self.objects.items() if k == kind]

    def fail(
        self,
        verb: str = "*",
        kind: str = "*",
        name: str = "*",
        *,
        status: int | None = None,
        error: BaseException | None = None,
        times: int | None = None,
        message: str = "",
    ) -> Fault:
        fault = Fault(verb, kind, name, status, error, times, message)
        self.faults.append(fault)
        return fault

    def heal(self) -> None:
        self.faults.clear()

    def pods_ready(self, ready: bool = True) -> None:
        """Every Deployment's pods ready (or none of them), from now on as the test says."""
        self._kubelet_runs.clear()
        for (kind, _, _), obj in self.objects.items():
            if kind == "Deployment":
                replicas = int((obj.get("spec") or {}).get("replicas", 1))
                obj["status"] = {"readyReplicas": replicas if ready else 0}

    def count(self, verb: str | None = None) -> int:
        return sum(1 for r in self.requests if verb is None or r.verb == verb)

    def reset_counts(self) -> None:
        self.requests.clear()

    # -- the client's interface ----------------------------------------------------------

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> Object | None:
        self._request("get", kind, namespace, name)
        self._play_kubelet()
        found = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[Object]:
        self._request("list", kind, namespace, "")
        self._play_kubelet()
        wanted = dict(pair.split("=", 1) for pair in (label_selector or "").split(",") if pair)
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in self.objects.items()
            if k == kind.kind
            and (namespace is None or ns == namespace)
            and wanted.items() <= ((obj.get("metadata") or {}).get("labels") or {}).items()
        ]

    async def create(self, obj: Mapping[str, Any]) -> Object:
        kind, namespace, name = self._identity(obj)
        request = self._request("create", kind, namespace, name)
        key = self._key(kind, namespace, name)
        if key in self.objects:
            Fault(status=409, message=f"{kind.kind} {name!r} already exists").raise_for(request)
        self.objects[key] = self._stamp(copy.deepcopy(dict(obj)), None)
        return copy.deepcopy(self.objects[key])

    async def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> Object:
        request = self._request("patch", kind, namespace, name)
        key = self._key(kind, namespace, name)
        if key not in self.objects:
            Fault(status=404, message=f"{kind.kind} {name!r} not found").raise_for(request)
        # A resourceVersion in the patch is a precondition, as the API server has it.
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        current = self.objects[key]["metadata"]["resourceVersion"]
        if expected is not None and str(expected) != current:
            message = f"the object has been modified (resourceVersion {current}, not {expected})"
            Fault(status=409, message=message).raise_for(request)
        self.objects[key] = self._stamp(merge(self.objects[key], patch), self.objects[key])
        return copy.deepcopy(self.objects[key])

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> Object:
        kind, namespace, name = self._identity(obj)
        self._request("apply", kind, namespace, name)
        key = self._key(kind, namespace, name)
        before = self.objects.get(key)
        new = copy.deepcopy(dict(obj))
        if before is not None and "status" in before:
            new["status"] = copy.deepcopy(before["status"])
        self.objects[key] = self._stamp(new, before)
        if kind.kind == "Deployment" and (self.ready_on_apply or name in self.never_ready):
            self._kubelet_runs.add(key)
            self._play_kubelet()
        return copy.deepcopy(self.objects[key])

    def _play_kubelet(self) -> None:
        """The applied Deployments' ready replicas follow their spec (none for those in
        ``never_ready``), as the kubelet and the Deployment controller keep them, whether or
        not the operator applies them again; not those the test set by hand (pods_ready)."""
        for key in self._kubelet_runs:
            obj = self.objects.get(key)
            if obj is not None:
                replicas = int((obj.get("spec") or {}).get("replicas", 1))
                ready = 0 if key[2] in self.never_ready else replicas
                obj["status"] = {"readyReplicas": ready}

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        self._request("delete", kind, namespace, name)
        return self.objects.pop(self._key(kind, namespace, name), None) is not None

    # -- inside ----------------------------------------------------------------------------

    def _request(self, verb: str, kind: Kind, namespace: str | None, name: str) -> Request:
        request = Request(verb, kind.kind, namespace or "", name)
        self.requests.append(request)
        for fault in self.faults:
            if fault.matches(request):
                fault.raise_for(request)
        return request

    @staticmethod
    def _key(kind: Kind, namespace: str | None, name: str) -> ObjectKey:
        return (kind.kind, (namespace or "") if kind.namespaced else "", name)

    @staticmethod
    def _identity(obj: Mapping[str, Any]) -> tuple[Kind, str | None, str]:
        kind = kind_of(obj)
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") if kind.namespaced else None
        return kind, (str(namespace) if namespace is not None else None), str(metadata["name"])

    def _stamp(self, obj: Object, before: Object | None) -> Object:
        """The server's part of metadata: uid kept, resourceVersion moved on."""
        metadata = obj.setdefault("metadata", {})
        old = (before or {}).get("metadata") or {}
        metadata["uid"] = old.get("uid") or metadata.get("uid") or f"uid-{next(self._versions)}"
        metadata["resourceVersion"] = str(next(self._versions))
        return obj
