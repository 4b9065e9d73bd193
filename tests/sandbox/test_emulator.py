"""The sandbox's Kubernetes API emulator, served over real HTTP, against real clients."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import kubernetes
import pytest
import pytest_asyncio
import yaml

from gelu_lab.sandbox import emulator as emulator_module
from gelu_lab.sandbox.emulator import SandboxEmulator
from gelu_lab.sandbox.emulator_server import EmulatorServer, serve_emulator, write_kubeconfig

GMR = "gelu.dev/v1alpha1/gelumodelrollouts"
GMRS = "/apis/gelu.dev/v1alpha1/namespaces/default/gelumodelrollouts"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
SERVICES = "/api/v1/namespaces/default/services"
OPERATOR = "gelu-rollout"

Json = dict[str, Any]


class Api:
    """A thin JSON client: every call returns the status code and the decoded body."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Json]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(method, path, data=data, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def ok(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Json:
        status, answer = await self.call(method, path, body, content_type)
        assert 200 <= status < 300, (status, answer)
        return answer

    async def create(self, path: str, body: Json) -> Json:
        return await self.ok("POST", path, body)

    async def patch(self, path: str, body: Any, content_type: str = MERGE) -> Json:
        return await self.ok("PATCH", path, body, content_type)


def rollout(name: str = "r1", **spec: Any) -> Json:
    return {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": name},
        "spec": {"model": "gelu", **spec},
    }


def deployment(name: str, *containers: Json, owner: Json | None = None) -> Json:
    meta: Json = {"name": name, "labels": {"app": name}}
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": list(containers)},
            },
        },
    }


def configmap(name: str, *owners: Json, **labels: str) -> Json:
    meta: Json = {"name": name, "labels": labels}
    if owners:
        meta["ownerReferences"] = [owner_reference(owner) for owner in owners]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def owner_reference(owner: Json) -> Json:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }


def service(name: str, **selector: str) -> Json:
    spec: Json = {"ports": [{"port": 8000, "targetPort": 8000}]}
    if selector:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def rv(obj: Json) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def apply(
    api: Api,
    path: str,
    body: Json | str,
    *,
    manager: str | None = OPERATOR,
    force: str | None = None,
) -> tuple[int, Json]:
    """A server-side apply as a client sends it on the wire (a str body goes as it is)."""
    params = {} if manager is None else {"fieldManager": manager}
    if force is not None:
        params["force"] = force
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": APPLY_PATCH}
    async with api.session.patch(path, params=params, data=data, headers=headers) as response:
        return response.status, await response.json(content_type=None)


def owners(obj: Json) -> dict[tuple[str, str], Json]:
    """The ``fieldsV1`` of each (manager, operation) in ``metadata.managedFields``."""
    return {
        (entry["manager"], entry["operation"]): entry["fieldsV1"]
        for entry in obj["metadata"].get("managedFields", [])
    }


@pytest_asyncio.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with serve_emulator() as running:
        yield running


@pytest_asyncio.fixture
async def api(server: EmulatorServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield Api(session)


async def kubectl(kubeconfig: Path, *args: str) -> str:
    """Run the real kubectl without blocking the loop that serves the emulator."""
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={kubeconfig.parent / 'kube-cache'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return result


@pytest.mark.asyncio
async def test_create_sets_identity_and_refuses_duplicates(api: Api) -> None:
    created = await api.create(GMRS, {**rollout(), "status": {"stage": "Forged"}})
    meta = created["metadata"]
    assert meta["namespace"] == "default"
    assert meta["generation"] == 1
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert "status" not in created  # only the status subresource writes it
    assert await api.ok("GET", f"{GMRS}/r1") == created

    status, error = await api.call("POST", GMRS, rollout())
    assert (status, error["kind"], error["reason"]) == (409, "Status", "AlreadyExists")

    generated = await api.create(CONFIGMAPS, {"metadata": {"generateName": "cm-"}, "data": {}})
    assert generated["metadata"]["name"].startswith("cm-")
    assert len(generated["metadata"]["name"]) == len("cm-") + 5
    assert generated["kind"] == "ConfigMap"

    status, error = await api.call("GET", f"{GMRS}/absent")
    assert (status, error["reason"]) == (404, "NotFound")
    status, _ = await api.call("GET", "/apis/example.com/v1/namespaces/default/widgets")
    assert status == 404


@pytest.mark.asyncio
async def test_generation_follows_spec_and_resource_version_every_change(api: Api) -> None:
    created = await api.create(GMRS, rollout())

    labelled = await api.patch(f"{GMRS}/r1", {"metadata": {"labels": {"team": "ml"}}})
    assert labelled["metadata"]["generation"] == 1
    assert rv(labelled) > rv(created)

    unchanged = await api.patch(f"{GMRS}/r1", {"metadata": {"labels": {"team": "ml"}}})
    assert rv(unchanged) == rv(labelled)  # a no-op write is no write

    respecced = await api.patch(f"{GMRS}/r1", {"spec": {"model": "other"}})
    assert respecced["metadata"]["generation"] == 2
    assert rv(respecced) > rv(labelled)

    # System fields are the server's: a client cannot rewrite them.
    forged = await api.patch(f"{GMRS}/r1", {"metadata": {"uid": "forged", "generation": 99}})
    assert forged["metadata"]["uid"] == created["metadata"]["uid"]
    assert forged["metadata"]["generation"] == 2


@pytest.mark.asyncio
async def test_status_subresource_writes_only_status(api: Api) -> None:
    created = await api.create(GMRS, rollout())
    change = {
        "metadata": {"labels": {"x": "y"}},
        "spec": {"model": "other"},
        "status": {"stage": "A"},
    }

    patched = await api.patch(f"{GMRS}/r1/status", change)
    assert patched["status"] == {"stage": "A"}
    assert patched["spec"] == created["spec"]
    assert "labels" not in patched["metadata"]
    assert patched["metadata"]["generation"] == 1
    assert rv(patched) > rv(created)

    replaced = await api.ok("PUT", f"{GMRS}/r1/status", {**patched, "status": {"stage": "B"}})
    assert replaced["status"] == {"stage": "B"}
    assert replaced["metadata"]["generation"] == 1

    # The object itself ignores status: a status-only change there is no change at all.
    ignored = await api.patch(f"{GMRS}/r1", {"status": {"stage": "C"}})
    assert ignored["status"] == {"stage": "B"}
    assert rv(ignored) == rv(replaced)
    put = await api.ok("PUT", f"{GMRS}/r1", {**replaced, "spec": {"model": "put"}, "status": {}})
    assert put["status"] == {"stage": "B"}
    assert put["metadata"]["generation"] == 2

    # Deployments declare the subresource too; ConfigMaps do not, so they have no /status.
    await api.create(DEPLOYMENTS, deployment("d1", {"name": "a", "image": "i"}))
    status_patched = await api.patch(f"{DEPLOYMENTS}/d1/status", {"status": {"readyReplicas": 1}})
    assert status_patched["status"] == {"readyReplicas": 1}
    assert status_patched["metadata"]["generation"] == 1
    await api.create(CONFIGMAPS, configmap("c1"))
    status, _ = await api.call("PATCH", f"{CONFIGMAPS}/c1/status", {"status": {}}, MERGE)
    assert status == 404


@pytest.mark.asyncio
async def test_stale_resource_version_is_a_conflict(api: Api) -> None:
    created = await api.create(GMRS, rollout())
    fresh = await api.patch(f"{GMRS}/r1", {"spec": {"model": "newer"}})
    stale = created["metadata"]["resourceVersion"]

    for method, path, body, content_type in [
        (
            "PATCH",
            f"{GMRS}/r1",
            {"metadata": {"resourceVersion": stale}, "spec": {"model": "x"}},
            MERGE,
        ),
        ("PUT", f"{GMRS}/r1", created, "application/json"),
        ("PUT", f"{GMRS}/r1/status", {**created, "status": {"stage": "x"}}, "application/json"),
    ]:
        status, error = await api.call(method, path, body, content_type)
        assert (status, error["reason"]) == (409, "Conflict"), (method, path)
    assert await api.ok("GET", f"{GMRS}/r1") == fresh

    # Kopf's JSON patches carry the version as a test operation: a stale one is a 422.
    test_stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "replace", "path": "/spec/model", "value": "x"},
    ]
    status, error = await api.call("PATCH", f"{GMRS}/r1", test_stale, JSON_PATCH)
    assert status == 422

    current = {**fresh, "spec": {"model": "put"}}
    assert (await api.ok("PUT", f"{GMRS}/r1", current))["spec"] == {"model": "put"}


@pytest.mark.asyncio
async def test_json_patch_on_object_and_status(api: Api) -> None:
    created = await api.create(GMRS, rollout())
    patched = await api.patch(
        f"{GMRS}/r1",
        [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": created["metadata"]["resourceVersion"],
            },
            {"op": "add", "path": "/metadata/annotations", "value": {"gelu.dev/promote": "true"}},
            {"op": "replace", "path": "/spec/model", "value": "m2"},
        ],
        JSON_PATCH,
    )
    assert patched["metadata"]["annotations"] == {"gelu.dev/promote": "true"}
    assert (patched["spec"]["model"], patched["metadata"]["generation"]) == ("m2", 2)

    status_patched = await api.patch(
        f"{GMRS}/r1/status",
        [
            {"op": "add", "path": "/status", "value": {"stage": "S"}},
            {"op": "remove", "path": "/spec"},
        ],
        JSON_PATCH,
    )
    assert status_patched["status"] == {"stage": "S"}
    assert status_patched["spec"] == {"model": "m2"}


@pytest.mark.asyncio
async def test_strategic_merge_patch_for_builtins_only(api: Api) -> None:
    await api.create(
        DEPLOYMENTS, deployment("d1", {"name": "a", "image": "1"}, {"name": "b", "image": "1"})
    )
    patched = await api.patch(
        f"{DEPLOYMENTS}/d1",
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                        "containers": [{"name": "b", "image": "2"}],
                    }
                }
            }
        },
        STRATEGIC,
    )
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert containers == [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]
    assert patched["metadata"]["generation"] == 2

    await api.create(GMRS, rollout())
    status, error = await api.call("PATCH", f"{GMRS}/r1", {"spec": {"model": "x"}}, STRATEGIC)
    assert (status, error["reason"]) == (415, "UnsupportedMediaType")


@pytest.mark.asyncio
async def test_lists_carry_kind_and_honour_selectors(api: Api) -> None:
    await api.create(CONFIGMAPS, configmap("a", app="one"))
    await api.create(CONFIGMAPS, configmap("b", app="two"))
    await api.create("/api/v1/namespaces", {"metadata": {"name": "other"}})
    last = await api.create("/api/v1/namespaces/other/configmaps", configmap("c"))

    listed = await api.ok("GET", CONFIGMAPS)
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "ConfigMapList")
    assert listed["metadata"]["resourceVersion"] == last["metadata"]["resourceVersion"]
    assert [item["metadata"]["name"] for item in listed["items"]] == ["a", "b"]

    everywhere = await api.ok("GET", "/api/v1/configmaps")
    assert [item["metadata"]["name"] for item in everywhere["items"]] == ["a", "b", "c"]

    async def names(query: str) -> list[str]:
        found = await api.ok("GET", f"{CONFIGMAPS}?{query}")
        return [item["metadata"]["name"] for item in found["items"]]

    assert await names("labelSelector=app%3Done") == ["a"]
    assert await names("labelSelector=app+in+(one,two)") == ["a", "b"]
    assert await names("labelSelector=app!%3Done") == ["b"]
    assert await names("labelSelector=!app") == []
    assert await names("fieldSelector=metadata.name%3Db") == ["b"]

    gmrs = await api.ok("GET", GMRS)
    assert (gmrs["apiVersion"], gmrs["kind"]) == ("gelu.dev/v1alpha1", "GeluModelRolloutList")


@pytest.mark.asyncio
async def test_finalizers_hold_deletion_until_released(api: Api) -> None:
    created = await api.create(
        GMRS, {**rollout(), "metadata": {"name": "r1", "finalizers": ["gelu.dev/cleanup"]}}
    )
    deleting = await api.ok("DELETE", f"{GMRS}/r1")
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == created["metadata"]["generation"] + 1
    assert (await api.ok("GET", f"{GMRS}/r1"))["metadata"]["deletionTimestamp"]

    status, _ = await api.call(
        "PATCH", f"{GMRS}/r1", {"metadata": {"finalizers": ["a", "b"]}}, MERGE
    )
    assert status == 422  # no new finalizers on an object being deleted

    await api.patch(f"{GMRS}/r1", {"metadata": {"finalizers": None}})
    status, _ = await api.call("GET", f"{GMRS}/r1")
    assert status == 404


@pytest.mark.asyncio
async def test_owner_references_are_garbage_collected(api: Api) -> None:
    owner = await api.create(
        GMRS, {**rollout(), "metadata": {"name": "r1", "finalizers": ["gelu.dev/x"]}}
    )
    other = await api.create(CONFIGMAPS, configmap("other"))
    await api.create(CONFIGMAPS, configmap("owned", owner))
    shared = await api.create(CONFIGMAPS, configmap("shared", owner, other))
    dep = await api.create(DEPLOYMENTS, deployment("d1", {"name": "a", "image": "i"}, owner=owner))
    await api.create(
        "/api/v1/namespaces/default/pods",
        {"metadata": {"name": "p1", "ownerReferences": [owner_reference(dep)]}},
    )

    async def names(path: str) -> list[str]:
        return [item["metadata"]["name"] for item in (await api.ok("GET", path))["items"]]

    await api.ok("DELETE", f"{GMRS}/r1")  # held by its finalizer: dependents stay
    assert await names(CONFIGMAPS) == ["other", "owned", "shared"]

    await api.patch(f"{GMRS}/r1", {"metadata": {"finalizers": []}})
    assert await names(CONFIGMAPS) == ["other", "shared"]  # shared still has an owner
    assert await names(DEPLOYMENTS) == []
    assert await names("/api/v1/namespaces/default/pods") == []  # cascades through the Deployment

    await api.ok("DELETE", f"{CONFIGMAPS}/other")
    assert await names(CONFIGMAPS) == []
    assert shared["metadata"]["ownerReferences"][1]["uid"] == other["metadata"]["uid"]


@pytest.mark.asyncio
async def test_watch_resumes_from_a_resource_version(api: Api) -> None:
    first = await api.create(CONFIGMAPS, configmap("a"))
    await api.patch(f"{CONFIGMAPS}/a", {"data": {"k": "v2"}})
    await api.create(CONFIGMAPS, configmap("b", app="x"))
    await api.ok("DELETE", f"{CONFIGMAPS}/a")

    async def watch(query: str, count: int | None = None) -> list[tuple[str, str]]:
        """The first ``count`` events, or all of them until the server ends the stream."""
        events: list[tuple[str, str]] = []
        async with api.session.get(f"{CONFIGMAPS}?watch=true&{query}") as response:
            assert response.content_type == "application/json"  # kubectl decodes nothing else
            async for line in response.content:
                event = json.loads(line)
                events.append((event["type"], event["object"]["metadata"]["name"]))
                if len(events) == count:
                    break
        return events

    since = first["metadata"]["resourceVersion"]
    replayed = await watch(f"resourceVersion={since}", 3)
    assert replayed == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert await watch("", 1) == [("ADDED", "b")]
    assert await watch(f"resourceVersion={since}&labelSelector=app%3Dx", 1) == [("ADDED", "b")]

    # A live event arrives too, and the stream ends at timeoutSeconds.
    started = time.monotonic()
    watching = asyncio.create_task(watch(f"resourceVersion={rv(first) + 3}&timeoutSeconds=1"))
    await asyncio.sleep(0.2)
    await api.create(CONFIGMAPS, configmap("c"))
    assert await watching == [("ADDED", "c")]
    assert 1 <= time.monotonic() - started < 3


@pytest.mark.asyncio
async def test_watch_from_a_forgotten_version_is_expired() -> None:
    async with (
        serve_emulator(emulator=SandboxEmulator(event_log_limit=2)) as server,
        aiohttp.ClientSession(base_url=server.url) as session,
    ):
        api = Api(session)
        for name in "abc":
            await api.create(CONFIGMAPS, configmap(name))
        async with session.get(f"{CONFIGMAPS}?watch=true&resourceVersion=1") as response:
            event = json.loads(await response.content.readline())
        assert (event["type"], event["object"]["code"], event["object"]["reason"]) == (
            "ERROR",
            410,
            "Expired",
        )


@pytest.mark.asyncio
async def test_namespaces_are_objects_and_take_their_contents_along(api: Api) -> None:
    listed = await api.ok("GET", "/api/v1/namespaces")
    assert listed["kind"] == "NamespaceList"
    assert [ns["metadata"]["name"] for ns in listed["items"]] == ["default"]

    created = await api.create("/api/v1/namespaces", {"metadata": {"name": "team"}})
    assert created["status"] == {"phase": "Active"}
    assert "namespace" not in created["metadata"]
    await api.create("/api/v1/namespaces/team/configmaps", configmap("c"))
    assert (await api.ok("GET", "/api/v1/namespaces/team"))["metadata"]["name"] == "team"

    await api.ok("DELETE", "/api/v1/namespaces/team")
    assert (await api.ok("GET", "/api/v1/namespaces/team/configmaps"))["items"] == []
    status, _ = await api.call("GET", "/api/v1/namespaces/team")
    assert status == 404


@pytest.mark.asyncio
async def test_discovery_and_crds_serve_resources(api: Api) -> None:
    core = await api.ok("GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    gelu = await api.ok("GET", "/apis/gelu.dev/v1alpha1")
    by_name = {resource["name"]: resource for resource in gelu["resources"]}
    assert by_name["gelumodelrollouts"]["kind"] == "GeluModelRollout"
    assert by_name["gelumodelrollouts"]["namespaced"] is True
    assert by_name["gelumodelrollouts"]["shortNames"] == ["gmr"]
    assert "gelumodelrollouts/status" in by_name

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}
            ],
        },
    }
    created = await api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert {"type": "Established", "status": "True"}.items() <= created["status"]["conditions"][
        1
    ].items()
    widgets = "/apis/example.com/v1/namespaces/default/widgets"
    await api.create(widgets, {"metadata": {"name": "w"}, "spec": {"size": 1}})
    assert (await api.ok("GET", widgets))["kind"] == "WidgetList"
    assert "widgets/status" in {
        r["name"] for r in (await api.ok("GET", "/apis/example.com/v1"))["resources"]
    }

    await api.ok(
        "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    )
    status, _ = await api.call("GET", widgets)
    assert status == 404


@pytest.mark.asyncio
async def test_apply_creates_and_the_same_apply_again_is_no_write(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    intent = deployment("d1", {"name": "a", "image": "1"})
    status, created = await apply(api, f"{DEPLOYMENTS}/d1", intent, force="true")
    assert status == 201
    meta = created["metadata"]
    assert (meta["namespace"], meta["generation"]) == ("default", 1)
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["managedFields"] == [
        {
            "manager": OPERATOR,
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": meta["creationTimestamp"],
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {"f:matchLabels": {"f:app": {}}},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {}},
                    },
                },
            },
        }
    ]
    assert await api.ok("GET", f"{DEPLOYMENTS}/d1") == created

    # Later (the clock has moved on), the same intent, in JSON and in YAML: nothing changes.
    later = "2099-01-01T00:00:00Z"
    monkeypatch.setattr(emulator_module, "_now", lambda: later)
    for body in (intent, yaml.safe_dump(intent)):
        assert await apply(api, f"{DEPLOYMENTS}/d1", body, force="true") == (200, created)

    changed = copy.deepcopy(intent)
    changed["spec"]["replicas"] = 2
    status, scaled = await apply(api, f"{DEPLOYMENTS}/d1", changed, force="true")
    assert status == 200
    assert (rv(scaled), scaled["metadata"]["generation"]) == (rv(created) + 1, 2)
    assert scaled["metadata"]["managedFields"][0]["time"] == later

    # The no-op applies left no event: the first one after the creation is the change.
    since = created["metadata"]["resourceVersion"]
    async with api.session.get(f"{DEPLOYMENTS}?watch=true&resourceVersion={since}") as response:
        event = json.loads(await response.content.readline())
    assert (event["type"], rv(event["object"])) == ("MODIFIED", rv(scaled))


@pytest.mark.asyncio
async def test_apply_removes_a_selector_key_the_manager_dropped(api: Api) -> None:
    path = f"{SERVICES}/s1"
    status, _ = await apply(api, path, service("s1", app="gelu", track="canary"), force="true")
    assert status == 201
    # Another client labels the Service: that label is not the operator's to remove.
    await api.ok(
        "PATCH", f"{path}?fieldManager=labeller", {"metadata": {"labels": {"a": "b"}}}, MERGE
    )

    status, applied = await apply(api, path, service("s1", app="gelu"), force="true")
    assert status == 200
    assert applied["spec"]["selector"] == {"app": "gelu"}
    assert applied["metadata"]["labels"] == {"a": "b"}
    assert owners(applied)[OPERATOR, "Apply"]["f:spec"]["f:selector"] == {"f:app": {}}
    assert applied["metadata"]["generation"] == 2

    # A key that another manager applied too stays until both of them have dropped it.
    await apply(api, path, service("s1", app="gelu", track="stable"), force="true")
    mesh = {**service("s1"), "spec": {"selector": {"track": "stable"}}}
    assert (await apply(api, path, mesh, manager="mesh"))[0] == 200  # same value: no conflict
    _, kept = await apply(api, path, service("s1", app="gelu"), force="true")
    assert kept["spec"]["selector"] == {"app": "gelu", "track": "stable"}
    _, dropped = await apply(api, path, {**service("s1"), "spec": {}}, manager="mesh")
    assert dropped["spec"]["selector"] == {"app": "gelu"}
    assert ("mesh", "Apply") not in owners(dropped)


@pytest.mark.asyncio
async def test_apply_conflicts_with_another_manager_unless_forced(api: Api) -> None:
    path = f"{CONFIGMAPS}/c1"
    status, created = await apply(api, path, configmap("c1", app="one"))
    assert status == 201
    theirs = {**configmap("c1"), "data": {"k": "other"}}
    theirs["metadata"].pop("labels")

    for force in (None, "false"):
        status, error = await apply(api, path, theirs, manager="helm", force=force)
        assert (status, error["reason"]) == (409, "Conflict")
        assert error["message"] == (
            f'Apply failed with 1 conflict: conflict with "{OPERATOR}": .data.k'
        )
        assert error["details"]["causes"] == [
            {
                "type": "FieldManagerConflict",
                "message": f'conflict with "{OPERATOR}"',
                "field": ".data.k",
            }
        ]
    assert await api.ok("GET", path) == created

    status, forced = await apply(api, path, theirs, manager="helm", force="true")
    assert status == 200
    assert forced["data"] == {"k": "other"}
    assert owners(forced) == {
        (OPERATOR, "Apply"): {"f:metadata": {"f:labels": {"f:app": {}}}},
        ("helm", "Apply"): {"f:data": {"f:k": {}}},
    }
    status, error = await apply(api, path, configmap("c1", app="one"))
    assert (status, error["details"]["causes"][0]["message"]) == (409, 'conflict with "helm"')


@pytest.mark.asyncio
async def test_an_update_takes_fields_so_a_later_apply_conflicts(api: Api) -> None:
    path = f"{DEPLOYMENTS}/d1"
    intent = deployment("d1", {"name": "a", "image": "1"})
    await apply(api, path, intent)
    scaled = await api.patch(f"{path}?fieldManager=hpa", {"spec": {"replicas": 5}})
    assert owners(scaled)["hpa", "Update"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in owners(scaled)[OPERATOR, "Apply"]["f:spec"]

    status, error = await apply(api, path, intent)
    assert (status, error["reason"]) == (409, "Conflict")
    assert error["message"] == (
        'Apply failed with 1 conflict: conflict with "hpa" using apps/v1: .spec.replicas'
    )
    # The value that is there already is no conflict: the field is shared.
    same = copy.deepcopy(intent)
    same["spec"]["replicas"] = 5
    status, shared = await apply(api, path, same)
    assert (status, rv(shared) > rv(scaled)) == (200, True)  # ownership changed: a write
    assert shared["metadata"]["generation"] == scaled["metadata"]["generation"]

    status, forced = await apply(api, path, intent, force="true")
    assert status == 200
    assert forced["spec"]["replicas"] == 1
    assert ("hpa", "Update") not in owners(forced)


@pytest.mark.asyncio
async def test_other_writes_record_their_manager_and_managed_fields_are_the_servers(
    api: Api,
) -> None:
    created = await api.create(f"{CONFIGMAPS}?fieldManager=kubectl-create", configmap("c1", a="1"))
    (entry,) = created["metadata"]["managedFields"]
    assert entry == {
        "manager": "kubectl-create",
        "operation": "Update",
        "apiVersion": "v1",
        "time": entry["time"],
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}},
    }
    # Without a fieldManager, the manager is the client's User-Agent up to its first "/".
    patched = await api.patch(
        f"{CONFIGMAPS}/c1", [{"op": "add", "path": "/data/j", "value": "w"}], JSON_PATCH
    )
    assert owners(patched)["Python", "Update"] == {"f:data": {"f:j": {}}}

    forged = copy.deepcopy(patched)
    forged["metadata"]["managedFields"] = [{"manager": "forged", "operation": "Apply"}]
    forged["data"]["k"] = "v2"
    put = await api.ok("PUT", f"{CONFIGMAPS}/c1?fieldManager=editor", forged)
    assert owners(put) == {
        ("kubectl-create", "Update"): {"f:metadata": {"f:labels": {"f:a": {}}}},
        ("Python", "Update"): {"f:data": {"f:j": {}}},
        ("editor", "Update"): {"f:data": {"f:k": {}}},
    }
    # A body that only rewrites managedFields changes nothing.
    forged = {**put, "metadata": {**put["metadata"], "managedFields": []}}
    assert await api.ok("PUT", f"{CONFIGMAPS}/c1", forged) == put


@pytest.mark.asyncio
async def test_apply_refuses_what_the_real_server_refuses(api: Api) -> None:
    path = f"{DEPLOYMENTS}/d1"
    intent = deployment("d1", {"name": "a", "image": "1"})

    status, error = await apply(api, path, intent, manager=None)
    assert (status, error["reason"]) == (422, "Invalid")  # the real server's answer, not 400
    assert error["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: '
        "fieldManager: Required value: is required for apply patch"
    )
    status, error = await api.call("PATCH", f"{path}?force=true", {"spec": {}}, MERGE)
    assert (status, error["reason"]) == (422, "Invalid")

    wrong_kind = {**intent, "kind": "Service"}
    wrong_version = {**intent, "apiVersion": "apps/v1beta1"}
    other_name = {**intent, "metadata": {"name": "d2"}}
    other_namespace = {**intent, "metadata": {"name": "d1", "namespace": "other"}}
    with_managed_fields = {**intent, "metadata": {"name": "d1", "managedFields": []}}
    cases: list[tuple[Json | str, str]] = [
        (wrong_kind, "invalid object type: apps/v1, Kind=Service"),
        (wrong_version, "invalid object type: apps/v1beta1, Kind=Deployment"),
        (other_name, "the name of the object (d2) does not match the name on the URL (d1)"),
        (other_namespace, "the namespace of the object (other) does not match"),
        (with_managed_fields, "metadata.managedFields must be nil"),
        ("- a list\n- of things\n", "error decoding YAML"),
        ("kind: [unclosed", "error decoding YAML"),
    ]
    for body, message in cases:
        status, error = await apply(api, path, body, force="true")
        assert (status, error["reason"]) == (400, "BadRequest"), body
        assert error["message"].startswith(message), (error["message"], message)
    status, error = await apply(api, f"{CONFIGMAPS}/c1", {**configmap("c1"), "kind": "Secret"})
    assert (status, error["message"]) == (400, "invalid object type: /v1, Kind=Secret")
    status, _ = await api.call("GET", path)
    assert status == 404  # nothing was created


@pytest.mark.asyncio
async def test_apply_custom_resources_and_their_status(api: Api) -> None:
    # Real YAML, as kubectl writes it: an unquoted date is a string, as in JSON.
    manifest = (
        "apiVersion: gelu.dev/v1alpha1\n"
        "kind: GeluModelRollout\n"
        "metadata:\n"
        "  name: r1\n"
        "  annotations:\n"
        "    released: 2024-05-01\n"
        "spec:\n"
        "  model: gelu\n"
        "status:\n"
        "  stage: Forged\n"
    )
    status, created = await apply(api, f"{GMRS}/r1", manifest)
    assert status == 201
    assert created["metadata"]["annotations"] == {"released": "2024-05-01"}
    assert "status" not in created  # the object's apply ignores status, as its writes do

    stage = {**rollout(), "status": {"stage": "Probing"}}
    status, staged = await apply(api, f"{GMRS}/r1/status", stage)
    assert status == 200
    assert (staged["status"], staged["spec"]) == ({"stage": "Probing"}, created["spec"])
    assert staged["metadata"]["generation"] == 1
    (status_entry,) = [
        entry for entry in staged["metadata"]["managedFields"] if entry.get("subresource")
    ]
    assert (status_entry["subresource"], status_entry["fieldsV1"]) == (
        "status",
        {"f:status": {"f:stage": {}}},
    )
    absent = {**rollout("absent"), "status": {"stage": "Probing"}}
    assert (await apply(api, f"{GMRS}/absent/status", absent))[0] == 404

    status, respecced = await apply(api, f"{GMRS}/r1", rollout(model="erf"))
    assert status == 200
    assert (respecced["spec"], respecced["status"]) == ({"model": "erf"}, {"stage": "Probing"})
    assert respecced["metadata"]["generation"] == 2
    assert "annotations" not in respecced["metadata"]  # dropped from the intent: removed


@pytest.mark.asyncio
async def test_kubectl_server_side_apply(server: EmulatorServer, tmp_path: Path) -> None:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(yaml.safe_dump_all([rollout(), service("s1", app="gelu")]))
    args = ("apply", "--server-side", "--validate=false", "-f", str(manifest))

    out = await kubectl(kubeconfig, *args)
    assert "gelumodelrollout.gelu.dev/r1 serverside-applied" in out
    before = server.emulator.get_object("v1/services", "default", "s1")
    assert before is not None
    assert owners(before) == {
        ("kubectl", "Apply"): {"f:spec": {"f:ports": {}, "f:selector": {"f:app": {}}}}
    }
    await kubectl(kubeconfig, *args)
    assert server.emulator.get_object("v1/services", "default", "s1") == before


@pytest.mark.asyncio
async def test_kubectl_apply_get_delete(server: EmulatorServer, tmp_path: Path) -> None:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    manifest = tmp_path / "objects.yaml"

    def write(model: str, image: str) -> None:
        objects = [
            rollout(model=model),
            deployment("d1", {"name": "a", "image": image}),
            configmap("c1"),
        ]
        manifest.write_text(yaml.safe_dump_all(objects))

    write("gelu", "img:1")
    out = await kubectl(kubeconfig, "apply", "--validate=false", "-f", str(manifest))
    assert "gelumodelrollout.gelu.dev/r1 created" in out
    before = server.emulator.get_object(GMR, "default", "r1")
    assert before is not None

    out = await kubectl(kubeconfig, "apply", "--validate=false", "-f", str(manifest))
    assert out.count("unchanged") == 3
    assert server.emulator.get_object(GMR, "default", "r1") == before

    write("erf", "img:2")
    out = await kubectl(kubeconfig, "apply", "--validate=false", "-f", str(manifest))
    assert "gelumodelrollout.gelu.dev/r1 configured" in out
    assert "deployment.apps/d1 configured" in out
    listed = json.loads(await kubectl(kubeconfig, "get", "gmr", "-o", "json"))
    assert [item["spec"]["model"] for item in listed["items"]] == ["erf"]
    assert listed["items"][0]["metadata"]["generation"] == 2
    image = await kubectl(
        kubeconfig,
        "get",
        "deploy",
        "d1",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    )
    assert image == "img:2"

    out = await kubectl(kubeconfig, "delete", "-f", str(manifest))
    assert "deleted" in out
    assert server.emulator.list_objects(GMR) == []
    assert await kubectl(kubeconfig, "get", "gmr,deploy,cm", "-o", "name") == ""

    # kubectl delete waits (by a watch) for a finalizer to go.
    held = {
        **rollout("r2"),
        "metadata": {"name": "r2", "namespace": "default", "finalizers": ["x"]},
    }
    await server.emulator.create_object(GMR, held)
    deleting = asyncio.create_task(kubectl(kubeconfig, "delete", "gmr", "r2", "--timeout=10s"))
    await eventually(
        lambda: (server.emulator.get_object(GMR, "default", "r2") or {})["metadata"].get(
            "deletionTimestamp"
        )
    )
    assert not deleting.done()
    async with aiohttp.ClientSession(base_url=server.url) as session:
        await Api(session).patch(f"{GMRS}/r2", {"metadata": {"finalizers": None}})
    assert "deleted" in await deleting


@pytest.mark.asyncio
async def test_kubernetes_client_with_the_kubeconfig(
    server: EmulatorServer, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
    await server.emulator.create_object(
        GMR, {**rollout(), "metadata": {"name": "r1", "namespace": "default"}}
    )

    def use_client() -> tuple[Any, Any, Any]:
        # The client takes plain dicts as bodies, whatever its annotations say.
        cm: Any = configmap("c1", app="one")
        deploy: Any = deployment("d1", {"name": "a", "image": "1"})
        load: Any = kubernetes.config.new_client_from_config
        client = load(config_file=str(kubeconfig))
        core = kubernetes.client.CoreV1Api(client)
        apps = kubernetes.client.AppsV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        core.create_namespaced_config_map("default", cm)
        listed = core.list_namespaced_config_map("default", label_selector="app=one")
        apps.create_namespaced_deployment("default", deploy)
        # A dict body on a built-in resource goes as a strategic merge patch.
        patched = apps.patch_namespaced_deployment("d1", "default", {"spec": {"replicas": 3}})
        status = custom.patch_namespaced_custom_object_status(
            "gelu.dev",
            "v1alpha1",
            "default",
            "gelumodelrollouts",
            "r1",
            {"status": {"stage": "Probing"}},
        )
        client.close()
        return listed, patched, status

    listed, patched, status = await asyncio.to_thread(use_client)
    assert [item.metadata.name for item in listed.items] == ["c1"]
    assert listed.kind == "ConfigMapList"
    assert (patched.spec.replicas, patched.metadata.generation) == (3, 2)
    assert status["status"] == {"stage": "Probing"}
    assert status["metadata"]["generation"] == 1


@pytest.mark.asyncio
async def test_kopf_operator_sees_a_rollout_and_patches_its_status(server: EmulatorServer) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server.url, scheme="Bearer", token="sandbox")

    @kopf.on.create("gelu.dev", "v1alpha1", "gelumodelrollouts", registry=registry)
    def created(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        patch.status["seenModel"] = spec["model"]
        kopf.info(body, reason="ModelSeen", message=f"model {spec['model']}")

    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(registry=registry, namespaces=["default"], standalone=True, stop_flag=stop)
    )
    try:
        body = {**rollout(), "metadata": {"name": "r1", "namespace": "default"}}
        created_obj = await server.emulator.create_object(GMR, body)

        def handled() -> Json | None:
            found = server.emulator.get_object(GMR, "default", "r1")
            return found if found and "status" in found else None

        seen = await eventually(handled)
        assert seen["status"] == {"seenModel": "gelu"}
        assert seen["metadata"]["generation"] == 1  # status and Kopf's annotations are not spec
        assert rv(seen) > rv(created_obj)
        events = await eventually(lambda: server.emulator.list_objects("v1/events", "default"))
        assert events[0]["involvedObject"]["uid"] == created_obj["metadata"]["uid"]
        assert events[0]["reason"] == "ModelSeen"
    finally:
        stop.set()
        await asyncio.wait_for(operator, timeout=10)
