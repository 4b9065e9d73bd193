"""An in-memory Kubernetes API for the sandbox: kmock's emulator, made faithful where it matters.

``kmock.KubernetesEmulator`` stores objects as plain JSON merged by dict keys. The operator
relies on more of the real API server than that, so ``SandboxEmulator`` adds it:

- identity and versions: ``uid``, ``creationTimestamp``, ``generation`` (1 on create, bumped
  only when something other than metadata and status changes) and a cluster-wide
  ``resourceVersion`` bumped on every write that changes the object (a no-op write is no write);
- optimistic concurrency: a write whose result carries a stale ``resourceVersion`` gets 409;
- the status subresource: writes to ``.../status`` change only ``.status``, and writes to the
  object itself leave ``.status`` alone, for every resource that declares the subresource;
- patches as clients send them: JSON patch, JSON merge patch, and strategic merge patch for
  built-in resources (merging lists of objects by their key; custom resources refuse it, 415);
- lists with ``kind: <Kind>List``, ``apiVersion`` and ``resourceVersion``; label and field
  selectors on lists and watches; watches that resume from a ``resourceVersion``;
- deletion: finalizers hold an object with a ``deletionTimestamp``; owner references are
  garbage-collected (background propagation) when every owner is gone; a deleted namespace
  takes its objects along; a CustomResourceDefinition serves (and un-serves) its resource.

``serve_emulator`` serves it over HTTP on loopback; ``write_kubeconfig`` points kubectl, the
``kubernetes`` client and Kopf at it.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
import copy
import dataclasses
import datetime
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml

# kmock does not export its Response: a payload with a status or headers of its own.
from kmock._internal.rendering import Response

from gelu_rollout.spec import GROUP, KIND, PLURAL, SHORT_NAME, VERSION

JsonObject = dict[str, Any]

ALL_VERBS: Final = frozenset(
    {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
)
SUBRESOURCE_VERBS: Final = ("get", "patch", "update")

# API groups served by the API server itself; any other group comes from a CRD, and a real
# server refuses strategic merge patches on custom resources.
BUILTIN_GROUPS: Final = frozenset(
    {
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "apiextensions.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
    }
)

NAMESPACES: Final = kmock.resource("v1/namespaces")
CRDS: Final = kmock.resource("apiextensions.k8s.io/v1/customresourcedefinitions")

KUBECONFIG_CONTEXT: Final = "gelu-sandbox"

_SYSTEM_METADATA: Final = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName suffixes

# kmock's path parser reads /api/v1/namespaces/{name} as a namespace prefix with no resource
# (and fails on /api/v1/namespaces itself), so such paths are served under an alias.
_NAMESPACE_PATH: Final = re.compile(r"/api/v1/namespaces(?:/([^/]+)(?:/(status|finalize))?)?/?")
_NAMESPACES_ALIAS: Final = "namespaces~"

_LABEL_REQUIREMENT: Final = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*"
)
_FIELD_REQUIREMENT: Final = re.compile(
    r"\s*(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*"
)


def _info(
    kind: str,
    *,
    namespaced: bool = True,
    shortnames: Iterable[str] = (),
    subresources: Iterable[str] = (),
) -> kmock.ResourceInfo:
    return kmock.ResourceInfo(
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=set(ALL_VERBS),
        shortnames=set(shortnames),
        subresources=set(subresources),
    )


def sandbox_resources() -> dict[str, kmock.ResourceInfo]:
    """The resources the operator and the sandbox use, keyed ``group/version/plural``."""
    return {
        "v1/namespaces": _info(
            "Namespace", namespaced=False, shortnames=["ns"], subresources=["status"]
        ),
        "v1/configmaps": _info("ConfigMap", shortnames=["cm"]),
        "v1/services": _info("Service", shortnames=["svc"], subresources=["status"]),
        "v1/events": _info("Event", shortnames=["ev"]),
        "v1/pods": _info("Pod", shortnames=["po"], subresources=["status"]),
        "apps/v1/deployments": _info("Deployment", shortnames=["deploy"], subresources=["status"]),
        "gateway.networking.k8s.io/v1/httproutes": _info("HTTPRoute", subresources=["status"]),
        "apiextensions.k8s.io/v1/customresourcedefinitions": _info(
            "CustomResourceDefinition",
            namespaced=False,
            shortnames=["crd", "crds"],
            subresources=["status"],
        ),
        "coordination.k8s.io/v1/leases": _info("Lease"),
        f"{GROUP}/{VERSION}/{PLURAL}": _info(
            KIND, shortnames=[SHORT_NAME], subresources=["status"]
        ),
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch without the OpenAPI schema: lists of objects merge by their key.

    The merge key is guessed (``name``, then ``containerPort``, ``port``, ``mountPath``,
    ``type``, ``uid``); lists without one are replaced, as merge patch does. The directives
    kubectl sends (``$patch``, ``$setElementOrder/...``, ``$deleteFromPrimitiveList/...``,
    ``$retainKeys``) are honoured or dropped, never stored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {
            key: copy.deepcopy(value) for key, value in patch.items() if not key.startswith("$")
        }
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith("$"):
            continue
        elif value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_lists(result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_lists(old: list[Any], new: list[Any]) -> list[Any]:
    merge_key = _merge_key(old, new)
    if merge_key is None:
        return [strategic_merge_patch(None, item) for item in new if not _is_directive(item)]
    merged = [copy.deepcopy(item) for item in old]
    for item in new:
        position = next(
            (i for i, have in enumerate(merged) if have[merge_key] == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del merged[position]
        elif position is not None:
            merged[position] = strategic_merge_patch(merged[position], item)
        else:
            merged.append(strategic_merge_patch({}, item))
    return merged


def _merge_key(old: list[Any], new: list[Any]) -> str | None:
    items = old + new
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in ("name", "containerPort", "port", "mountPath", "type", "uid"):
        if all(key in item for item in items):
            return key
    return None


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and "$patch" in item


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.version}" if not resource.group else f"{resource.group}/{resource.version}"


def _qualified(resource: kmock.resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else f"{resource.plural}"


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    # Details are never empty: kmock puts a server-side traceback in their place otherwise.
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def _not_found(resource: kmock.resource, name: str | None) -> kmock.KubernetesError:
    return _error(
        404,
        "NotFound",
        f'{_qualified(resource)} "{name}" not found',
        name=name,
        group=resource.group,
        kind=resource.plural,
    )


def _metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _require_object(data: Any) -> JsonObject:
    if not isinstance(data, dict):
        raise _error(400, "BadRequest", "the request body must be a JSON object")
    return data


def _split_requirements(text: str) -> list[str]:
    """Split a selector on the commas that are not inside a set's parentheses."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def _label_requirement(text: str) -> Callable[[Mapping[str, Any]], bool]:
    match = _LABEL_REQUIREMENT.fullmatch(text)
    if match is None or (match["neg"] and (match["op"] or match["setop"])):
        raise _error(400, "BadRequest", f"unable to parse requirement: {text!r}")
    key, op, setop = match["key"], match["op"], match["setop"]
    value = match["value"] or ""
    values = {item.strip() for item in (match["values"] or "").split(",") if item.strip()}
    if match["neg"]:
        return lambda labels: key not in labels
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if setop == "in":
        return lambda labels: labels.get(key) in values
    if setop == "notin":
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels


def _field_requirement(text: str) -> Callable[[Mapping[str, Any]], bool]:
    match = _FIELD_REQUIREMENT.fullmatch(text)
    if match is None:
        raise _error(400, "BadRequest", f"invalid field selector: {text!r}")
    path, negated, value = match["path"].split("."), match["op"] == "!=", match["value"]

    def check(obj: Mapping[str, Any]) -> bool:
        found: Any = obj
        for step in path:
            found = found.get(step) if isinstance(found, Mapping) else None
        text = (
            "" if found is None else str(found).lower() if isinstance(found, bool) else str(found)
        )
        return (text == value) != negated

    return check


def _selector(params: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    """The predicate of a request's ``labelSelector`` and ``fieldSelector`` (all must hold)."""
    labels = [
        _label_requirement(part) for part in _split_requirements(params.get("labelSelector", ""))
    ]
    fields = [
        _field_requirement(part) for part in _split_requirements(params.get("fieldSelector", ""))
    ]

    def select(obj: Mapping[str, Any]) -> bool:
        obj_labels = _metadata(obj).get("labels") or {}
        return all(check(obj_labels) for check in labels) and all(check(obj) for check in fields)

    return select


def _crd_resources(crd: Mapping[str, Any]) -> dict[kmock.resource, kmock.ResourceInfo]:
    """The resources a CustomResourceDefinition serves, one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    if not spec.get("group") or not names.get("plural") or not names.get("kind"):
        return {}
    served: dict[kmock.resource, kmock.ResourceInfo] = {}
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        key = kmock.resource(spec["group"], version["name"], names["plural"])
        served[key] = kmock.ResourceInfo(
            kind=names["kind"],
            singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            verbs=set(ALL_VERBS),
            shortnames=set(names.get("shortNames") or []),
            categories=set(names.get("categories") or []),
            subresources={"status"} if "status" in (version.get("subresources") or {}) else set(),
        )
    return served


class _LoggedEvent(NamedTuple):
    revision: int
    resource: kmock.resource
    event: JsonObject


@attrs.define(kw_only=True)
class SandboxEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the API-server semantics the operator relies on.

    All writes go through this class (under kmock's lock); kmock's DSL reactions still see
    every request, so a test can intercept one (the state changes regardless, as in kmock).
    """

    history_limit: int = 32  # versions kept per object in ``objects[...].history``
    event_log_limit: int = 10_000  # watch events kept for resuming from a resourceVersion

    _revision: int = attrs.field(default=0, init=False)
    _event_log: collections.deque[_LoggedEvent] = attrs.field(
        default=attrs.Factory(
            lambda self: collections.deque(maxlen=self.event_log_limit), takes_self=True
        ),
        init=False,
    )
    _log_floor: int = attrs.field(default=0, init=False)  # watches may resume from here on
    _outcomes: dict[kmock.Request, tuple[int, JsonObject]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock guesses no action for PUT; its answer is the outcome computed in _handle().
        self.fallback[kmock.method.PUT] << self._serve_outcome
        # Ahead of kmock's own watch reaction, which streams as application/octet-stream:
        # kubectl decodes no such stream.
        (self.fallback**1)[kmock.action.WATCH] << self._serve_json_watch

    # -- public helpers for sandbox code that runs in the same process ---------------------

    async def create_object(
        self, resource: str | kmock.resource, body: Mapping[str, Any]
    ) -> JsonObject:
        """Create an object as a POST would (the namespace comes from its metadata)."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        info = self._declared(res)
        namespace = _metadata(body).get("namespace") if info.namespaced else None
        async with self._lock:
            created = await self._create(res, info, namespace, dict(body))
            await self._collect_garbage()
        return copy.deepcopy(created)

    def get_object(
        self, resource: str | kmock.resource, namespace: str | None, name: str
    ) -> JsonObject | None:
        """The object as stored now (a copy), or None."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        found = self._live(res, namespace, name)
        return copy.deepcopy(found) if found is not None else None

    def list_objects(
        self, resource: str | kmock.resource, namespace: str | None = None
    ) -> list[JsonObject]:
        """The live objects of a resource (copies), in one namespace or in all of them."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        return [copy.deepcopy(raw) for raw in self._live_objects(res, namespace)]

    # -- request routing --------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        match = _NAMESPACE_PATH.fullmatch(raw_request.path)
        if match is not None:
            path = "/".join(
                part for part in ("/api/v1", _NAMESPACES_ALIAS, match[1], match[2]) if part
            )
            rel_url = raw_request.rel_url.with_path(path).with_query(raw_request.rel_url.query)
            raw_request = raw_request.clone(rel_url=rel_url)
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural == _NAMESPACES_ALIAS:
            path = request.url.path.replace(_NAMESPACES_ALIAS, "namespaces", 1)
            url = request.url.with_path(path).with_query(request.url.query)
            original, request = request, attrs.evolve(request, resource=NAMESPACES, url=url)
            # kmock's reactions match the recorded requests by identity: record the fixed one.
            self._requests[:] = [request if seen is original else seen for seen in self._requests]
        # The parent's _handle() would apply its own plain-merge writes: skip it, go to the DSL.
        if request.resource is None or request.method == kmock.method.GET:
            return await kmock.RawHandler._handle(self, request)
        self._outcomes[request] = await self._write(request)
        try:
            return await kmock.RawHandler._handle(self, request)
        finally:
            self._outcomes.pop(request, None)

    def _serve_outcome(self, request: kmock.Request) -> kmock.Payload:
        status, body = self._outcomes[request]
        return Response(status=status, payload=body)

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        return self._serve_outcome(request)

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        return self._serve_outcome(request)

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        return self._serve_outcome(request)

    # -- reads --------------------------------------------------------------------------------

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        info = self._declared(request.resource)
        assert request.resource is not None  # checked by _declared()
        if request.subresource is not None and request.subresource not in info.subresources:
            raise _not_found(request.resource, request.name)
        namespace = request.namespace if info.namespaced else None
        found = self._live(request.resource, namespace, request.name or "")
        if found is None:
            raise _not_found(request.resource, request.name)
        return found

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        info = self._declared(request.resource)
        assert request.resource is not None  # checked by _declared()
        select = _selector(request.params)
        async with self._lock:
            items = [
                raw
                for raw in self._live_objects(request.resource, request.namespace)
                if select(raw)
            ]
            revision = str(self._revision)
        items.sort(
            key=lambda raw: (_metadata(raw).get("namespace") or "", _metadata(raw).get("name"))
        )
        return {
            "apiVersion": _api_version(request.resource),
            "kind": f"{info.kind or request.resource.plural}List",
            "metadata": {"resourceVersion": revision},
            "items": items,
        }

    def _serve_json_watch(self, request: kmock.Request) -> kmock.Payload:
        return Response(
            headers={"Content-Type": "application/json"}, payload=self._serve_watch(request)
        )

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        self._declared(request.resource)  # a 404 now, before the stream starts
        resource = request.resource
        assert resource is not None  # checked by _declared()
        select = _selector(request.params)
        since = request.params.get("resourceVersion", "") or "0"
        timeout = request.params.get("timeoutSeconds", "")
        if not since.isdigit() or not (timeout == "" or timeout.isdigit()):
            raise _error(400, "BadRequest", "resourceVersion and timeoutSeconds must be integers")
        deadline = asyncio.get_running_loop().time() + int(timeout) if timeout else None

        def wanted(event: Mapping[str, Any]) -> bool:
            meta = _metadata(event.get("object") or {})
            return (
                (request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and select(event.get("object") or {})
            )

        yield b""  # send the headers now, even if no event comes for a while
        bus = self._buses[resource]
        async with self._lock:
            mark = await bus.mark()  # nothing written after the backlog is missed
            expired = since != "0" and int(since) < self._log_floor
            if since == "0":  # "from now": every object as ADDED, as the real server does
                backlog = [
                    {"type": "ADDED", "object": raw} for raw in self._live_objects(resource, None)
                ]
            else:
                backlog = [
                    logged.event
                    for logged in self._event_log
                    if logged.revision > int(since) and logged.resource == resource
                ]
        events = bus.stream(since=mark)
        try:
            if expired:
                yield {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "Expired",
                        "code": 410,
                        "message": f"too old resource version: {since} ({self._log_floor})",
                    },
                }
                return
            for event in backlog:
                if wanted(event):
                    yield event
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
                except TimeoutError:
                    return
                if wanted(event):
                    yield event
        finally:
            if isinstance(events, collections.abc.AsyncGenerator):
                await events.aclose()
            await bus.unmark(mark)

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        # kmock answers "/v1" as the core group's groupVersion, which kubectl cannot map.
        assert request.resource is not None  # the route only matches /api/{v} and /apis/{g}/{v}
        group, version = request.resource.group, request.resource.version
        declared = [
            (res, self.resources[res])
            for res in self.resources
            if res.group == group and res.version == version
        ]
        if not declared and group:
            raise _error(
                404, "NotFound", f"the server could not find {group}/{version}", group=group
            )
        resources: list[JsonObject] = []
        for res, info in declared:
            entry: JsonObject = {
                "name": res.plural,
                "singularName": info.singular or "",
                "namespaced": bool(info.namespaced),
                "kind": info.kind or res.plural,
                "verbs": sorted(info.verbs or ALL_VERBS),
            }
            if info.shortnames:
                entry["shortNames"] = sorted(info.shortnames)
            if info.categories:
                entry["categories"] = sorted(info.categories)
            resources.append(entry)
            resources.extend(
                {
                    "name": f"{res.plural}/{sub}",
                    "namespaced": entry["namespaced"],
                    "kind": entry["kind"],
                    "singularName": "",
                    "verbs": list(SUBRESOURCE_VERBS),
                }
                for sub in sorted(info.subresources)
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": _api_version(request.resource),
            "resources": resources,
        }

    def _get_resources(self) -> list[kmock.resource]:
        # Discovery shows what is declared (or served by a CRD), not what tests happened to touch.
        return [kmock.resource(key) for key in self.resources]

    # -- writes -----------------------------------------------------------------------------

    async def _write(self, request: kmock.Request) -> tuple[int, JsonObject]:
        info = self._declared(request.resource)
        resource = request.resource
        assert resource is not None  # checked by _declared()
        namespace = request.namespace if info.namespaced else None
        name, subresource, method = request.name, request.subresource, request.method
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        # No Content-Type means JSON, the first media type the API server supports.
        if (
            request.body
            and method != kmock.method.PATCH
            and content_type not in ("", "application/json")
        ):
            raise _error(415, "UnsupportedMediaType", f"only JSON is served, not {content_type!r}")
        # Of the subresources, only status is served (a declared scale or finalize is not).
        if subresource is not None and (
            subresource != "status" or subresource not in info.subresources
        ):
            raise _not_found(resource, name)
        async with self._lock:
            if method == kmock.method.POST and name is None:
                outcome = 201, await self._create(resource, info, namespace, request.data)
            elif method in (kmock.method.PATCH, kmock.method.PUT) and name is not None:
                current = self._require_live(resource, namespace, name)
                if method == kmock.method.PATCH:
                    candidate = self._apply_patch(resource, current, request)
                else:
                    candidate = _require_object(request.data)
                status_only = subresource == "status"
                updated = await self._commit(
                    resource, info, current, candidate, status_only=status_only
                )
                outcome = 200, updated
            elif method == kmock.method.DELETE and name is not None and subresource is None:
                current = self._require_live(resource, namespace, name)
                options = request.data if isinstance(request.data, dict) else {}
                outcome = 200, await self._delete((resource, namespace, name), current, options)
            else:
                raise _error(405, "MethodNotAllowed", f"{method} is not supported here")
            await self._collect_garbage()
        return outcome

    def _apply_patch(
        self, resource: kmock.resource, current: JsonObject, request: kmock.Request
    ) -> JsonObject:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        data = request.data
        if content_type == "application/json-patch+json":
            if not isinstance(data, list):
                raise _error(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                patched = jsonpatch.apply_patch(current, data)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise _error(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
        elif content_type == "application/merge-patch+json":
            patched = merge_patch(current, _require_object(data))
        elif content_type == "application/strategic-merge-patch+json":
            if resource.group not in BUILTIN_GROUPS:
                raise _error(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json",
                )
            patched = strategic_merge_patch(current, _require_object(data))
        else:
            raise _error(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
        if not isinstance(patched, dict):
            raise _error(422, "Invalid", "the patched object is not an object")
        return patched

    async def _create(
        self, resource: kmock.resource, info: kmock.ResourceInfo, namespace: str | None, data: Any
    ) -> JsonObject:
        if info.namespaced and namespace is None:
            raise _error(405, "MethodNotAllowed", "a namespaced object is created in a namespace")
        obj = copy.deepcopy(_require_object(data))
        meta = obj["metadata"] = _metadata(obj)
        if meta.get("resourceVersion"):
            raise _error(
                422,
                "Invalid",
                "resourceVersion should not be set on objects to be created",
            )
        if info.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise _error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or self._generate_name(
            resource, namespace, meta.get("generateName")
        )
        if self._live(resource, namespace, name) is not None:
            raise _error(
                409,
                "AlreadyExists",
                f'{_qualified(resource)} "{name}" already exists',
                name=name,
                kind=resource.plural,
            )
        obj["apiVersion"] = _api_version(resource)
        obj["kind"] = info.kind or obj.get("kind")
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(
            name=name,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            generation=1,
            resourceVersion=self._next_revision(),
        )
        if "status" in info.subresources:
            obj.pop("status", None)  # the status subresource is the only way to write it
        self._default(resource, obj)
        await self._store(resource, namespace, name, obj, "ADDED")
        return obj

    async def _commit(
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        current: JsonObject,
        candidate: JsonObject,
        *,
        status_only: bool,
    ) -> JsonObject:
        """Store the result of a PATCH or PUT as the real API server would, or refuse it."""
        current_meta, candidate_meta = _metadata(current), _metadata(candidate)
        expected = candidate_meta.get("resourceVersion")
        if expected not in (None, "") and str(expected) != current_meta["resourceVersion"]:
            raise _error(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {_qualified(resource)} "
                f'"{current_meta["name"]}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                name=current_meta["name"],
                kind=resource.plural,
            )
        if candidate_meta.get("name") not in (None, current_meta["name"]):
            raise _error(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            )

        if status_only:
            updated = copy.deepcopy(current)
            if "status" in candidate:
                updated["status"] = copy.deepcopy(candidate["status"])
            else:
                updated.pop("status", None)
        else:
            updated = copy.deepcopy(candidate)
            meta = updated["metadata"] = copy.deepcopy(candidate_meta)
            for field in _SYSTEM_METADATA:
                if field in current_meta:
                    meta[field] = current_meta[field]
                else:
                    meta.pop(field, None)
            updated["apiVersion"], updated["kind"] = current["apiVersion"], current["kind"]
            if "status" in info.subresources:
                if "status" in current:
                    updated["status"] = copy.deepcopy(current["status"])
                else:
                    updated.pop("status", None)
            added = set(meta.get("finalizers") or []) - set(current_meta.get("finalizers") or [])
            if current_meta.get("deletionTimestamp") and added:
                raise _error(
                    422,
                    "Forbidden",
                    "no new finalizers can be added if the object is being deleted",
                )

        # A write that changes nothing is no write: the same resourceVersion, and no event.
        if updated == current:
            return current
        meta = updated["metadata"]
        if self._generation_part(updated, info) != self._generation_part(current, info):
            meta["generation"] = int(current_meta.get("generation", 0)) + 1
        meta["resourceVersion"] = self._next_revision()
        namespace = meta.get("namespace") if info.namespaced else None
        self._default(resource, updated)
        await self._store(resource, namespace, meta["name"], updated, "MODIFIED")
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return await self._remove((resource, namespace, meta["name"]), updated)
        return updated

    async def _delete(
        self,
        key: tuple[kmock.resource, str | None, str],
        current: JsonObject,
        options: Mapping[str, Any],
    ) -> JsonObject:
        meta = _metadata(current)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if preconditions.get(field) not in (None, meta.get(field)):
                raise _error(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: {preconditions[field]}, "
                    f"{field} in object meta: {meta.get(field)}",
                    name=meta.get("name"),
                    kind=key[0].plural,
                )
        if not meta.get("finalizers"):
            return await self._remove(key, current)
        if meta.get("deletionTimestamp"):
            return current
        marked = copy.deepcopy(current)
        marked["metadata"].update(
            deletionTimestamp=_now(),
            deletionGracePeriodSeconds=0,
            generation=int(meta.get("generation", 0)) + 1,
            resourceVersion=self._next_revision(),
        )
        await self._store(*key, marked, "MODIFIED")
        return marked

    async def _remove(
        self, key: tuple[kmock.resource, str | None, str], current: JsonObject
    ) -> JsonObject:
        """Remove an object for good, and what goes with it (a namespace's objects, a CRD's)."""
        resource, namespace, name = key
        final = copy.deepcopy(current)
        final["metadata"]["resourceVersion"] = self._next_revision()
        await self._store(resource, namespace, name, final, "DELETED")
        self._objects[key].delete()
        if resource == NAMESPACES:
            for other_key, other in list(self._objects.items()):
                if other_key[1] == name and not other.deleted:
                    await self._delete(other_key, other.raw, {})
        if resource == CRDS:
            for served in _crd_resources(final):
                with contextlib.suppress(KeyError):
                    del self.resources[served]
                for other_key, other in list(self._objects.items()):
                    if other_key[0] == served and not other.deleted:
                        await self._remove(other_key, other.raw)
        return final

    async def _collect_garbage(self) -> None:
        """Delete every object whose owners are all gone (background propagation)."""
        while True:
            live = [(key, obj.raw) for key, obj in self._objects.items() if not obj.deleted]
            uids = {_metadata(raw).get("uid") for _, raw in live}
            orphans = [
                (key, raw)
                for key, raw in live
                if _metadata(raw).get("ownerReferences")
                and not _metadata(raw).get("deletionTimestamp")
                and not any(ref.get("uid") in uids for ref in _metadata(raw)["ownerReferences"])
            ]
            if not orphans:
                return
            for key, raw in orphans:
                await self._delete(key, raw, {})

    # -- storage ----------------------------------------------------------------------------

    def _declared(self, resource: kmock.resource | None) -> kmock.ResourceInfo:
        if resource is None or resource not in self.resources:
            plural = resource.plural if resource is not None else None
            raise _error(
                404,
                "NotFound",
                f"the server could not find the requested resource ({plural})",
            )
        return self.resources[resource]

    def _live(
        self, resource: kmock.resource, namespace: str | None, name: str
    ) -> JsonObject | None:
        key = (resource, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _require_live(
        self, resource: kmock.resource, namespace: str | None, name: str
    ) -> JsonObject:
        found = self._live(resource, namespace, name)
        if found is None:
            raise _not_found(resource, name)
        return found

    def _live_objects(self, resource: kmock.resource, namespace: str | None) -> list[JsonObject]:
        return [
            obj.raw
            for (res, ns, _), obj in self._objects.items()
            if res == resource and (namespace is None or ns == namespace) and not obj.deleted
        ]

    def _generate_name(self, resource: kmock.resource, namespace: str | None, prefix: Any) -> str:
        if not prefix:
            raise _error(422, "Invalid", "name or generateName is required")
        while True:
            name = f"{prefix}{''.join(random.choices(_NAME_ALPHABET, k=5))}"
            if self._live(resource, namespace, name) is None:
                return name

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    @staticmethod
    def _generation_part(obj: Mapping[str, Any], info: kmock.ResourceInfo) -> dict[str, Any]:
        ignored = {"apiVersion", "kind", "metadata"} | (
            {"status"} if "status" in info.subresources else set()
        )
        return {key: value for key, value in obj.items() if key not in ignored}

    def _default(self, resource: kmock.resource, obj: JsonObject) -> None:
        """What the server fills in itself: a namespace's phase, a CRD's status and resources."""
        if resource == NAMESPACES and not _metadata(obj).get("deletionTimestamp"):
            obj["status"] = {"phase": "Active"}
        if resource == CRDS:
            names = (obj.get("spec") or {}).get("names") or {}
            obj["status"] = {
                "acceptedNames": copy.deepcopy(names),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ],
                "storedVersions": [
                    version["name"]
                    for version in (obj.get("spec") or {}).get("versions") or []
                    if version.get("storage")
                ],
            }
            for served, served_info in _crd_resources(obj).items():
                self.resources[served] = served_info

    async def _store(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        obj: JsonObject,
        event_type: str,
    ) -> None:
        key = (resource, namespace, name)
        if key in self._objects:
            self._objects[key].create(obj)  # a new version in the object's history
            history = self._objects[key].history
            del history[: max(0, len(history) - self.history_limit)]
        else:
            self._objects[key] = obj
        event: JsonObject = {"type": event_type, "object": obj}
        if len(self._event_log) == self._event_log.maxlen:
            self._log_floor = self._event_log[0].revision
        self._event_log.append(
            _LoggedEvent(int(obj["metadata"]["resourceVersion"]), resource, event)
        )
        await self._buses[resource].put(event)


@dataclasses.dataclass(frozen=True)
class EmulatorServer:
    """A running emulator: its state, and where it listens."""

    emulator: SandboxEmulator
    url: str
    host: str
    port: int

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server; see ``write_kubeconfig``."""
        return write_kubeconfig(path, self.url, namespace)


@contextlib.asynccontextmanager
async def serve_emulator(
    resources: Mapping[str, kmock.ResourceInfo] | None = None,
    *,
    emulator: SandboxEmulator | None = None,
    namespaces: Iterable[str] = ("default",),
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[EmulatorServer]:
    """Serve a ``SandboxEmulator`` over HTTP on ``host`` (a free port unless ``port`` is given).

    ``resources`` (default: ``sandbox_resources()``) are declared in ``emulator`` (default: a
    new one). The ``namespaces`` exist from the start, as ``default`` does on a real cluster
    (Kopf serves only the namespaces that it can list).
    """
    emulator = SandboxEmulator() if emulator is None else emulator
    for key, info in (sandbox_resources() if resources is None else resources).items():
        emulator.resources[key] = info
    async with emulator:
        for namespace in namespaces:
            if emulator.get_object(NAMESPACES, None, namespace) is None:
                await emulator.create_object(NAMESPACES, {"metadata": {"name": namespace}})
        # handler_cancellation: a watch ends when its client goes away, not at its next event.
        server = aiohttp.web.Server(emulator, handler_cancellation=True)
        # A short shutdown: open watches would otherwise hold the exit for a minute.
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, host, port)
            await site.start()
            bound_port = int(runner.addresses[0][1])
            yield EmulatorServer(
                emulator=emulator, url=f"http://{host}:{bound_port}", host=host, port=bound_port
            )
        finally:
            await runner.cleanup()


def write_kubeconfig(path: str | Path, url: str, namespace: str = "default") -> Path:
    """Write a kubeconfig whose current context is the API at ``url`` (no credentials needed)."""
    name = KUBECONFIG_CONTEXT
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "sandbox"}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
        "preferences": {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target
