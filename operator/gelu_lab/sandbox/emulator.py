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
- server-side apply (``PATCH`` with ``application/apply-patch+yaml``, a YAML or JSON body, for
  built-in and custom resources and the status subresource): an apply creates an absent object
  (201) or applies the intent to it (200); it is refused without a ``fieldManager`` (422, as
  the real server answers), with a body whose apiVersion and kind are not the resource's or
  whose name or namespace are not the URL's (400), and with 409 when it would change fields
  that other managers own, unless ``force`` is set;
- managed fields: every write keeps ``metadata.managedFields`` (``Apply`` and ``Update``
  entries, ``FieldsV1`` tries). A write without ``fieldManager`` is its User-Agent's (up to the
  first ``/``), ``create_object`` is ``sandbox``'s. Clients do not write ``managedFields``:
  what a create or update body holds there is ignored, an apply body holding it is refused
  (400). The field-set algebra and its simplifications (atomic lists, among others) are those
  of ``api_semantics``;
- lists with ``kind: <Kind>List``, ``apiVersion`` and ``resourceVersion``; label and field
  selectors on lists and watches; watches that resume from a ``resourceVersion``;
- admission of custom resources by their CRD's ``openAPIV3Schema`` (``admission``): unknown
  fields refused (400) under ``fieldValidation=Strict`` and dropped otherwise, nulls dropped,
  defaults applied, the schema and its CEL rules checked, a 422 naming each field otherwise;
- deletion: finalizers hold an object with a ``deletionTimestamp``; owner references are
  garbage-collected (background propagation) when every owner is gone; a deleted namespace
  takes its objects along; a CustomResourceDefinition serves (and un-serves) its resource.

The pure parts (patches, apply's field sets, selectors) are in ``api_semantics``, admission in
``admission``; this module holds the state. ``emulator_server`` serves it over HTTP on loopback
and writes the kubeconfig that points kubectl, the operator's client and Kopf at it.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
import copy
import datetime
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml

# kmock does not export its Response: a payload with a status or headers of its own.
from kmock._internal.rendering import Response

from gelu_lab.sandbox.admission import (
    CustomResourceSchema,
    invalid_message,
    unknown_fields_message,
)
from gelu_lab.sandbox.api_semantics import (
    APPLY,
    UPDATE,
    ApplyConflict,
    ManagedFieldsEntry,
    Operation,
    Predicate,
    SelectorError,
    apply_intent,
    decode_managed_fields,
    default_field_manager,
    encode_managed_fields,
    field_set,
    managed_part,
    merge_patch,
    query_flag,
    record_update,
    selector,
    strategic_merge_patch,
    strip_nulls,
)
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

APPLY_PATCH: Final = "application/apply-patch+yaml"
SANDBOX_MANAGER: Final = "sandbox"  # the field manager of in-process writes


# YAML as the API server reads an apply body into JSON: a date stays a string.
class _JsonYamlLoader(yaml.SafeLoader):
    pass


_JsonYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


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
        # Read by the sandbox's kubelet for containers' env (storage credentials).
        "v1/secrets": _info("Secret"),
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


def _header(request: kmock.Request, name: str) -> str:
    # kmock keeps the headers as the client spelt them; HTTP names are case-insensitive.
    wanted = name.lower()
    return next((value for key, value in request.headers.items() if key.lower() == wanted), "")


def _content_type(request: kmock.Request) -> str:
    return _header(request, "Content-Type").split(";")[0].strip().lower()


def _selector(params: Mapping[str, str]) -> Predicate:
    """The predicate of a request's ``labelSelector`` and ``fieldSelector``, or a 400."""
    try:
        return selector(params.get("labelSelector", ""), params.get("fieldSelector", ""))
    except SelectorError as exc:
        raise _error(400, "BadRequest", str(exc)) from exc


def _load_apply_body(text: str) -> JsonObject:
    """An apply body: YAML (JSON is YAML) holding one object, with string keys as in JSON."""
    try:
        data = json.loads(text)  # what clients mostly send, and faster than any YAML parser
    except ValueError:
        try:
            data = yaml.load(text, Loader=_JsonYamlLoader)  # a SafeLoader, less timestamps
        except yaml.YAMLError as exc:
            raise _error(400, "BadRequest", f"error decoding YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise _error(
            400,
            "BadRequest",
            f"error decoding YAML: the body must be an object, not {type(data).__name__}",
        )
    converted: JsonObject = _string_keys(data)
    return converted


def _string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _string_keys(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_string_keys(child) for child in value]
    return value


def _gvk(obj: Mapping[str, Any]) -> str:
    """An object's type as the server prints it: ``apps/v1, Kind=Deployment``, ``/v1, Kind=...``."""
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    return f"{group}/{version}, Kind={obj.get('kind') or ''}"


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
    # kmock matches every request against its whole history of requests: a long run (hundreds
    # of objects, thousands of requests) slows down quadratically. With a limit, only the
    # newest requests are kept (and seen by kmock's DSL); None keeps them all.
    request_history_limit: int | None = None

    _revision: int = attrs.field(default=0, init=False)
    _event_log: collections.deque[_LoggedEvent] = attrs.field(
        default=attrs.Factory(
            lambda self: collections.deque(maxlen=self.event_log_limit), takes_self=True
        ),
        init=False,
    )
    _log_floor: int = attrs.field(default=0, init=False)  # watches may resume from here on
    _outcomes: dict[kmock.Request, tuple[int, JsonObject]] = attrs.field(factory=dict, init=False)
    # The openAPIV3Schema of each resource a CRD serves: its writes are admitted by it.
    _schemas: dict[kmock.resource, CustomResourceSchema] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock guesses no action for PUT; its answer is the outcome computed in _handle().
        self.fallback[kmock.method.PUT] << self._serve_outcome
        # Ahead of kmock's own watch reaction, which streams as application/octet-stream:
        # kubectl decodes no such stream.
        (self.fallback**1)[kmock.action.WATCH] << self._serve_json_watch

    # -- public helpers for sandbox code that runs in the same process ---------------------

    async def create_object(
        self,
        resource: str | kmock.resource,
        body: Mapping[str, Any],
        *,
        field_manager: str = SANDBOX_MANAGER,
    ) -> JsonObject:
        """Create an object as a POST would (the namespace comes from its metadata)."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        info = self._declared(res)
        namespace = _metadata(body).get("namespace") if info.namespaced else None
        async with self._lock:
            created = await self._create(res, info, namespace, dict(body), manager=field_manager)
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
        limit = self.request_history_limit
        if limit is not None and len(self._requests) > limit:
            del self._requests[: len(self._requests) - limit]  # this request is the newest
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
        content_type = _content_type(request)
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
        applying = method == kmock.method.PATCH and content_type == APPLY_PATCH
        if method == kmock.method.PATCH:
            self._validate_patch_options(request.params, applying=applying)
        manager = request.params.get("fieldManager") or default_field_manager(
            _header(request, "User-Agent")
        )
        validation = request.params.get("fieldValidation") or "Warn"  # the server's default
        async with self._lock:
            if method == kmock.method.POST and name is None:
                created = await self._create(
                    resource,
                    info,
                    namespace,
                    request.data,
                    manager=manager,
                    field_validation=validation,
                )
                outcome = 201, created
            elif applying and name is not None:
                outcome = await self._apply(resource, info, namespace, name, request)
            elif method in (kmock.method.PATCH, kmock.method.PUT) and name is not None:
                current = self._require_live(resource, namespace, name)
                if method == kmock.method.PATCH:
                    candidate = self._apply_patch(resource, current, request)
                else:
                    candidate = _require_object(request.data)
                status_only = subresource == "status"
                updated = await self._commit(
                    resource,
                    info,
                    current,
                    candidate,
                    status_only=status_only,
                    manager=manager,
                    field_validation=validation,
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

    @staticmethod
    def _validate_patch_options(params: Mapping[str, str], *, applying: bool) -> None:
        """PatchOptions as the server checks them, before it looks for the object: a 422."""
        if applying and not params.get("fieldManager"):
            field, reason = "fieldManager", "FieldValueRequired"
            text = "Required value: is required for apply patch"
        elif not applying and "force" in params:
            field, reason = "force", "FieldValueForbidden"
            text = "Forbidden: may not be specified for non-apply patch"
        else:
            return
        raise _error(
            422,
            "Invalid",
            f'PatchOptions.meta.k8s.io "" is invalid: {field}: {text}',
            group="meta.k8s.io",
            kind="PatchOptions",
            causes=[{"reason": reason, "message": text, "field": field}],
        )

    async def _apply(
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
        name: str,
        request: kmock.Request,
    ) -> tuple[int, JsonObject]:
        """Server-side apply: create the object from the intent, or apply the intent to it."""
        manager = request.params["fieldManager"]  # required: checked by the caller
        intent = _load_apply_body(request.text)
        # The server checks the type first (apiVersion and kind together), then the rest.
        if intent.get("apiVersion") != _api_version(resource) or (
            info.kind and intent.get("kind") != info.kind
        ):
            raise _error(400, "BadRequest", f"invalid object type: {_gvk(intent)}")
        meta = intent.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise _error(400, "BadRequest", "metadata must be an object")
        meta = intent["metadata"] = strip_nulls(meta or {})
        if meta.get("managedFields") is not None:
            raise _error(400, "BadRequest", "metadata.managedFields must be nil")
        current = self._live(resource, namespace, name)
        object_name = meta.get("name") or (_metadata(current).get("name") if current else "")
        if object_name != name:
            raise _error(
                400,
                "BadRequest",
                f"the name of the object ({object_name}) does not match the name on the URL "
                f"({name})",
            )
        if info.namespaced and meta.get("namespace") not in (None, namespace):
            raise _error(
                400,
                "BadRequest",
                f"the namespace of the object ({meta['namespace']}) does not match the "
                f"namespace on the URL ({namespace})",
            )
        subresource = request.subresource or ""
        if current is None:
            if subresource:
                raise _not_found(resource, name)
            meta["name"] = name
            created = await self._create(
                resource,
                info,
                namespace,
                strip_nulls(intent),
                manager=manager,
                operation=APPLY,
                field_validation=request.params.get("fieldValidation") or "Warn",
            )
            return 201, created

        scope = self._scope(info, subresource)
        try:
            merged, managed = apply_intent(
                managed_part(current, **scope),
                managed_part(intent, **scope),
                manager,
                decode_managed_fields(_metadata(current).get("managedFields")),
                api_version=_api_version(resource),
                force=query_flag(request.params.get("force")),
                now=_now(),
                subresource=subresource,
            )
        except ApplyConflict as exc:
            raise _error(409, "Conflict", exc.message, causes=exc.causes) from exc
        if subresource:
            candidate = copy.deepcopy(current)
            if "status" in merged:
                candidate["status"] = merged["status"]
            else:
                candidate.pop("status", None)
        else:
            candidate = merged
            # A resourceVersion in the intent is a precondition, as in any other write.
            candidate["metadata"] = {
                **_metadata(merged),
                "resourceVersion": meta.get("resourceVersion"),
            }
        updated = await self._commit(
            resource,
            info,
            current,
            candidate,
            status_only=bool(subresource),
            manager=manager,
            managed=managed,
            field_validation=request.params.get("fieldValidation") or "Warn",
        )
        return 200, updated

    @staticmethod
    def _scope(info: kmock.ResourceInfo, subresource: str | None) -> dict[str, Any]:
        """Which part of an object a write to it (or to its subresource) owns."""
        if subresource:
            return {"only": subresource}
        return {"exclude": ("status",)} if "status" in info.subresources else {}

    def _apply_patch(
        self, resource: kmock.resource, current: JsonObject, request: kmock.Request
    ) -> JsonObject:
        content_type = _content_type(request)
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
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
        data: Any,
        *,
        manager: str,
        operation: Operation = UPDATE,
        field_validation: str = "Warn",
    ) -> JsonObject:
        if info.namespaced and namespace is None:
            raise _error(405, "MethodNotAllowed", "a namespaced object is created in a namespace")
        obj = copy.deepcopy(_require_object(data))
        meta = obj["metadata"] = _metadata(obj)
        meta.pop("managedFields", None)  # the server's to keep, whatever a client sends
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
        obj = self._admit(resource, obj, field_validation)
        meta = obj["metadata"]
        # The creator owns every field it wrote (an applier exactly its intent, the same here).
        owned = field_set(managed_part(obj, **self._scope(info, None)))
        if owned:
            entry = ManagedFieldsEntry(manager, operation, _api_version(resource), owned, _now())
            meta["managedFields"] = encode_managed_fields([entry])
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
        manager: str,
        managed: Sequence[ManagedFieldsEntry] | None = None,
        field_validation: str = "Warn",
    ) -> JsonObject:
        """Store the result of a PATCH or PUT as the real API server would, or refuse it.

        ``managed`` are the managed fields after an apply; any other write is recorded here as
        ``manager``'s update (the ``managedFields`` that a client sent are ignored).
        """
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
            updated = self._admit(resource, updated, field_validation)

        meta = updated["metadata"]
        if managed is None:
            scope = self._scope(info, "status" if status_only else None)
            managed = record_update(
                managed_part(current, **scope),
                managed_part(updated, **scope),
                manager,
                decode_managed_fields(current_meta.get("managedFields")),
                api_version=_api_version(resource),
                now=_now(),
                subresource="status" if status_only else "",
            )
        encoded = encode_managed_fields(managed)
        if encoded:
            meta["managedFields"] = encoded
        else:
            meta.pop("managedFields", None)

        # A write that changes nothing is no write: the same resourceVersion, and no event.
        if updated == current:
            return current
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
                self._schemas.pop(served, None)
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

    def _admit(
        self, resource: kmock.resource, obj: JsonObject, field_validation: str
    ) -> JsonObject:
        """A custom resource pruned, defaulted and validated by its CRD's schema, or a 400
        (unknown fields under Strict field validation) or 422 (``admission``)."""
        schema = self._schemas.get(resource)
        if schema is None:
            return obj
        verdict = schema.admit(obj)
        meta = _metadata(obj)
        kind = str(obj.get("kind") or self.resources[resource].kind or resource.plural)
        if verdict.unknown and field_validation == "Strict":
            raise _error(
                400,
                "BadRequest",
                unknown_fields_message(kind, _api_version(resource), verdict.unknown),
            )
        if verdict.refused:
            name = str(meta.get("name") or "")
            raise _error(
                422,
                "Invalid",
                invalid_message(kind, resource.group or "", name, verdict.causes),
                name=name,
                group=resource.group,
                kind=kind,
                causes=[cause.to_json() for cause in verdict.causes],
            )
        return verdict.obj

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
                self._schemas.pop(served, None)
                for version in (obj.get("spec") or {}).get("versions") or []:
                    schema = (version.get("schema") or {}).get("openAPIV3Schema")
                    if version.get("name") == served.version and isinstance(schema, dict):
                        self._schemas[served] = CustomResourceSchema(schema)

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
