"""A light in-memory Kubernetes API over HTTP, for the scale benchmark.

The sandbox's emulator (:mod:`gelu_lab.sandbox.emulator`) is faithful (managed fields,
strategic merge patches, garbage collection) and costs for it: at 1000 rollouts at a 30 s
interval it needed more than the one core a Python process has, and the operator's reconciles
waited on it (docs/reliability.md, "Scale"). This one serves only what the operator and Kopf
send, at the price of a dict look-up and a JSON encoding per request:

- discovery (``/api``, ``/apis``, each group version) for the kinds the operator uses;
- get, list (equality label selectors), watch (resuming from a ``resourceVersion``), create,
  JSON merge patch, JSON patch (Kopf adds its finalizer with one), server-side apply (the
  intent's top-level fields, labels, annotations and owner references replace the live
  ones; no managed fields, no conflicts) and delete;
- ``resourceVersion`` bumped only by a write that changes the object, ``generation`` by a
  change outside metadata and status, the status subresource kept apart from the object;
- a kubelet in one line: every Deployment written reports all its replicas ready.

Every request is counted by kind (``verb resource``) in :attr:`LightAPI.served`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp.web
import jsonpatch
import jsonpointer

from gelu_rollout.spec.resource import GROUP, KIND, PLURAL, VERSION

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES: Final = (
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, status=True),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "services", "Service", status=True),
    Resource("", "v1", "pods", "Pod", status=True),
    Resource("", "v1", "events", "Event"),
    Resource("", "v1", "secrets", "Secret"),
    Resource("apps", "v1", "deployments", "Deployment", status=True),
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status=True,
    ),
    Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", status=True),
    Resource(GROUP, VERSION, PLURAL, KIND, status=True),
)
VERBS: Final = ["create", "delete", "get", "list", "patch", "update", "watch"]
EVENT_LOG_LIMIT: Final = 200_000
VERSION_INFO: Final = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-gelu-bench"}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def response(self) -> aiohttp.web.Response:
        return aiohttp.web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": self.reason,
                "message": self.message,
                "code": self.status,
            },
            status=self.status,
        )


@dataclass(frozen=True)
class Target:
    """What a request's path names."""

    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matches(obj: Mapping[str, Any], selector: str) -> bool:
    """Equality label selectors (``a=b,c==d``), which are all the operator sends."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.replace("==", "=").partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@dataclass
class _Watch:
    resource: Resource
    namespace: str | None
    queue: asyncio.Queue[JsonObject] = field(default_factory=asyncio.Queue)


class LightAPI:
    """The objects, and the aiohttp handler that serves them."""

    def __init__(self) -> None:
        self.by_path: dict[tuple[str, str], Resource] = {
            (r.group_version, r.plural): r for r in RESOURCES
        }
        self.objects: dict[Resource, dict[tuple[str | None, str], JsonObject]] = {
            r: {} for r in RESOURCES
        }
        self.served: collections.Counter[str] = collections.Counter()
        self._revision = itertools.count(1)
        self._last_revision = 0
        self._log: collections.deque[tuple[int, Resource, JsonObject]] = collections.deque(
            maxlen=EVENT_LOG_LIMIT
        )
        self._watches: list[_Watch] = []

    # -- in-process helpers ----------------------------------------------------------------

    def resource(self, group_version: str, plural: str) -> Resource:
        return self.by_path[(group_version, plural)]

    def create(self, resource: Resource, obj: Mapping[str, Any]) -> JsonObject:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") if resource.namespaced else None
        return self._create(resource, namespace, dict(obj))

    # -- the store ---------------------------------------------------------------------------

    def _next_revision(self) -> str:
        self._last_revision = next(self._revision)
        return str(self._last_revision)

    def _emit(self, resource: Resource, kind: str, obj: JsonObject) -> None:
        event = {"type": kind, "object": obj}
        self._log.append((self._last_revision, resource, event))
        namespace = (obj.get("metadata") or {}).get("namespace")
        for watch in self._watches:
            if watch.resource == resource and watch.namespace in (None, namespace):
                watch.queue.put_nowait(event)

    def _kubelet(self, resource: Resource, obj: JsonObject) -> None:
        """Every Deployment's replicas are ready as soon as it is written."""
        if resource.plural != "deployments":
            return
        replicas = int((obj.get("spec") or {}).get("replicas", 1))
        obj["status"] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }

    def _create(self, resource: Resource, namespace: str | None, obj: JsonObject) -> JsonObject:
        meta = dict(obj.get("metadata") or {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name is required")
        key = (namespace, str(name))
        if key in self.objects[resource]:
            raise ApiError(409, "AlreadyExists", f"{resource.plural} {name} already exists")
        meta.update(
            uid=str(uuid.uuid4()),
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            generation=1,
            resourceVersion=self._next_revision(),
        )
        if namespace is not None:
            meta["namespace"] = namespace
        stored = {
            "apiVersion": resource.group_version,
            "kind": resource.kind,
            **copy.deepcopy(obj),
            "metadata": meta,
        }
        self._kubelet(resource, stored)
        if resource.plural != "events":  # posted, counted, not kept: nobody reads them here
            self.objects[resource][key] = stored
            self._emit(resource, "ADDED", stored)
        return stored

    def _replace(
        self, resource: Resource, key: tuple[str | None, str], old: JsonObject, new: JsonObject
    ) -> JsonObject:
        """Store ``new`` if it differs from ``old``: a new resourceVersion, and a new
        generation where more than metadata and status changed."""
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["metadata"]["generation"] = old["metadata"].get("generation", 1)
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] += 1
        self._kubelet(resource, new)
        if new == old:
            return old
        new["metadata"]["resourceVersion"] = self._next_revision()
        self.objects[resource][key] = new
        self._emit(resource, "MODIFIED", new)
        return new

    def _live(self, target: Target) -> tuple[tuple[str | None, str], JsonObject]:
        key = (target.namespace, str(target.name))
        found = self.objects[target.resource].get(key)
        if found is None:
            raise ApiError(404, "NotFound", f"{target.resource.plural} {target.name} not found")
        return key, found

    # -- requests ----------------------------------------------------------------------------

    def _target(self, path: str) -> Target | None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group_version, rest = "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        namespace = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None
        resource = self.by_path.get((group_version, rest[0]))
        if resource is None:
            raise ApiError(404, "NotFound", f"the server could not find {path}")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        return Target(resource, namespace if resource.namespaced else None, name, subresource)

    async def __call__(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            return await self._serve(request)
        except ApiError as error:
            return error.response()

    async def _serve(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = request.path
        target = self._target(path)
        content_type = request.headers.get("Content-Type", "")
        if target is None:
            self.served[f"{request.method.lower()} (discovery)"] += 1
            return aiohttp.web.json_response(self._discovery(path))
        resource = target.resource.plural + (f"/{target.subresource}" if target.subresource else "")
        method = request.method
        if method == "GET" and target.name is None:
            watching = request.query.get("watch") in ("true", "1")
            self.served[f"{'watch' if watching else 'list'} {resource}"] += 1
            if watching:
                return await self._watch(request, target)
            return aiohttp.web.json_response(self._list(target, request.query))
        if method == "GET":
            self.served[f"get {resource}"] += 1
            return aiohttp.web.json_response(self._live(target)[1])
        body = json.loads(await request.read() or b"null")
        if method == "POST":
            self.served[f"create {resource}"] += 1
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be an object")
            created = self._create(target.resource, target.namespace, body)
            return aiohttp.web.json_response(created, status=201)
        if method == "PATCH":
            applying = "apply-patch" in content_type
            self.served[f"{'apply' if applying else 'patch'} {resource}"] += 1
            if applying:
                return self._apply(target, body)
            if "json-patch" in content_type:  # Kopf's finalizer, with a resourceVersion test
                return aiohttp.web.json_response(self._json_patch(target, body))
            if "merge-patch" not in content_type:
                raise ApiError(415, "UnsupportedMediaType", f"{content_type} is not served")
            return aiohttp.web.json_response(self._patch(target, body))
        if method == "DELETE":
            self.served[f"delete {resource}"] += 1
            return aiohttp.web.json_response(self._delete(target))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not served")

    def _discovery(self, path: str) -> JsonObject:
        if path.rstrip("/") == "/version":
            return dict(VERSION_INFO)
        if path.rstrip("/") == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        if path.rstrip("/") == "/apis":
            groups = sorted({(r.group, r.version) for r in RESOURCES if r.group})
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                        "preferredVersion": {
                            "groupVersion": f"{group}/{version}",
                            "version": version,
                        },
                    }
                    for group, version in groups
                ],
            }
        parts = [p for p in path.split("/") if p]
        group_version = "v1" if parts[:1] == ["api"] else "/".join(parts[1:3])
        served = [r for r in RESOURCES if r.group_version == group_version]
        if not served:
            raise ApiError(404, "NotFound", f"the server could not find {path}")
        resources: list[JsonObject] = []
        for r in served:
            entry = {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
            }
            resources.append(entry)
            if r.status:
                resources.append({**entry, "name": f"{r.plural}/status", "verbs": ["get", "patch"]})
        return {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}

    def _list(self, target: Target, query: Mapping[str, str]) -> JsonObject:
        selector = query.get("labelSelector", "")
        items = [
            obj
            for (namespace, _), obj in self.objects[target.resource].items()
            if (target.namespace is None or namespace == target.namespace)
            and (not selector or matches(obj, selector))
        ]
        return {
            "apiVersion": target.resource.group_version,
            "kind": f"{target.resource.kind}List",
            "metadata": {"resourceVersion": str(self._last_revision)},
            "items": items,
        }

    async def _watch(
        self, request: aiohttp.web.BaseRequest, target: Target
    ) -> aiohttp.web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 3600)
        watch = _Watch(target.resource, target.namespace)
        # The events since ``since`` first: nothing written between a list and its watch is lost.
        for revision, resource, event in self._log:
            namespace = (event["object"].get("metadata") or {}).get("namespace")
            wanted = resource == target.resource and target.namespace in (None, namespace)
            if revision > since and wanted:
                watch.queue.put_nowait(event)
        self._watches.append(watch)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(watch.queue.get(), left)
                except TimeoutError:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self._watches.remove(watch)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    def _patch(self, target: Target, patch: Any) -> JsonObject:
        if not isinstance(patch, Mapping):
            raise ApiError(400, "BadRequest", "a merge patch must be an object")
        key, old = self._live(target)
        if target.subresource == "status":
            new = copy.deepcopy(old)
            if "status" in patch:
                new["status"] = merge_patch(old.get("status"), patch["status"])
        else:
            patched = merge_patch(old, {k: v for k, v in patch.items() if k != "status"})
            new = copy.deepcopy(patched)
            if target.resource.status:
                new["status"] = copy.deepcopy(old.get("status"))
                if new["status"] is None:
                    del new["status"]
        return self._replace(target.resource, key, old, new)

    def _json_patch(self, target: Target, operations: Any) -> JsonObject:
        key, old = self._live(target)
        try:
            new = jsonpatch.apply_patch(old, operations)
        except jsonpatch.JsonPatchTestFailed as error:
            raise ApiError(422, "Invalid", f"the patch's test failed: {error}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
            raise ApiError(422, "Invalid", f"the patch cannot be applied: {error}") from None
        if target.subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
        elif target.resource.status and "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        return self._replace(target.resource, key, old, new)

    def _apply(self, target: Target, intent: Any) -> aiohttp.web.Response:
        if not isinstance(intent, Mapping):
            raise ApiError(400, "BadRequest", "an apply body must be an object")
        key = (target.namespace, str(target.name))
        old = self.objects[target.resource].get(key)
        if old is None:
            created = self._create(target.resource, target.namespace, dict(intent))
            return aiohttp.web.json_response(created, status=201)
        new = copy.deepcopy(old)
        for name, value in intent.items():
            if name not in ("metadata", "status", "apiVersion", "kind"):
                new[name] = copy.deepcopy(value)
        meta = intent.get("metadata") or {}
        for name in ("labels", "annotations", "ownerReferences"):
            if name in meta:
                new["metadata"][name] = copy.deepcopy(meta[name])
        return aiohttp.web.json_response(self._replace(target.resource, key, old, new))

    def _delete(self, target: Target) -> JsonObject:
        key, old = self._live(target)
        if (old.get("metadata") or {}).get("finalizers"):
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = stamp
            return self._replace(target.resource, key, old, new)
        del self.objects[target.resource][key]
        self._next_revision()
        self._emit(target.resource, "DELETED", old)
        return old


@contextlib.asynccontextmanager
async def serve_light_api(api: LightAPI, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``api`` on a free port of ``host``; its URL."""
    server = aiohttp.web.Server(api, handler_cancellation=True)
    runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, host, 0)
        await site.start()
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
