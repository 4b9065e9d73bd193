"""The operator's Kubernetes client against the sandbox's API emulator over real HTTP, and its
login against a server that rotates tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf
import pytest
import pytest_asyncio

from gelu_lab.sandbox.emulator_server import serve_emulator
from gelu_rollout.adapters.kube import FIELD_MANAGER, KubeClient, KubeError, login_for
from gelu_rollout.adapters.kube.kinds import CONFIG_MAP, DEPLOYMENT, SERVICE

NS = "default"


def service(selector: dict[str, str], **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": NS, "labels": labels},
        "spec": {"selector": selector, "ports": [{"port": 8000}]},
    }


@pytest_asyncio.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeClient]:
    async with serve_emulator() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        async with KubeClient(login_for(str(kubeconfig))) as client:
            yield client


@pytest.mark.asyncio
async def test_create_get_list_patch_delete(kube: KubeClient) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": NS, "labels": {"app": "x"}},
        "data": {"a": "1"},
    }
    created = await kube.create(config_map)
    assert created["metadata"]["uid"]
    assert await kube.get(CONFIG_MAP, NS, "missing") is None
    listed = await kube.list(CONFIG_MAP, NS, "app=x")
    assert [(o["kind"], o["metadata"]["name"]) for o in listed] == [("ConfigMap", "cm")]
    assert await kube.list(CONFIG_MAP, None, "app=y") == []
    patched = await kube.merge_patch(CONFIG_MAP, NS, "cm", {"data": {"b": "2"}})
    assert patched["data"] == {"a": "1", "b": "2"}
    with pytest.raises(KubeError) as refused:
        await kube.create(config_map)
    assert (refused.value.status, refused.value.reason) == (409, "AlreadyExists")
    assert await kube.delete(CONFIG_MAP, NS, "cm") is True
    assert await kube.delete(CONFIG_MAP, NS, "cm") is False
    with pytest.raises(KubeError, match="404"):
        await kube.merge_patch(CONFIG_MAP, NS, "cm", {"data": {}})


@pytest.mark.asyncio
async def test_apply_creates_then_owns_its_fields_and_drops_the_ones_it_no_longer_sets(
    kube: KubeClient,
) -> None:
    first = await kube.apply(service({"rollout": "r", "arm": "baseline"}, team="ml"))
    managers = {m["manager"] for m in first["metadata"].get("managedFields", [])}
    assert FIELD_MANAGER in managers
    version = first["metadata"]["resourceVersion"]
    again = await kube.apply(service({"rollout": "r", "arm": "baseline"}, team="ml"))
    assert again["metadata"]["resourceVersion"] == version  # an unchanged apply is no write
    # A label someone else added stays; the selector key the operator dropped goes.
    await kube.merge_patch(SERVICE, NS, "svc", {"metadata": {"labels": {"owner": "sre"}}})
    applied = await kube.apply(service({"rollout": "r"}, team="ml"))
    assert applied["spec"]["selector"] == {"rollout": "r"}
    assert applied["metadata"]["labels"] == {"team": "ml", "owner": "sre"}


@pytest.mark.asyncio
async def test_status_subresource_patch(kube: KubeClient) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    await kube.create(deployment)
    await kube.merge_patch(
        DEPLOYMENT, NS, "d", {"status": {"readyReplicas": 1}}, subresource="status"
    )
    live = await kube.get(DEPLOYMENT, NS, "d")
    assert live is not None
    assert live["status"]["readyReplicas"] == 1


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_kube_error_without_status(tmp_path: Path) -> None:
    async with KubeClient(lambda: kopf.ConnectionInfo(server="http://127.0.0.1:1")) as client:
        with pytest.raises(KubeError, match="the connection to the server") as e:
            await client.get(CONFIG_MAP, NS, "x")
    assert e.value.status is None


@pytest.mark.asyncio
async def test_a_401_logs_in_again_once_and_retries() -> None:
    """Tokens rotate (projected service-account tokens, exec plugins): the client asks the
    login again when the server stops accepting the one it has."""
    accepted = {"token": "old"}
    seen: list[str] = []

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        token = request.headers.get("Authorization", "")
        seen.append(token)
        if token != f"Bearer {accepted['token']}":
            return aiohttp.web.json_response({"message": "Unauthorized"}, status=401)
        return aiohttp.web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})

    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/namespaces/default/configmaps/x", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    logins: list[str] = []

    def login() -> kopf.ConnectionInfo:
        logins.append(accepted["token"])  # the login reads the token as it is now
        return kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token=accepted["token"])

    try:
        async with KubeClient(login) as client:
            assert await client.get(CONFIG_MAP, NS, "x") is not None
            accepted["token"] = "new"  # rotated on the server's side
            assert await client.get(CONFIG_MAP, NS, "x") is not None
            assert logins == ["old", "new"]
            accepted["token"] = "revoked-for-good"
            logins_before = len(logins)

            def refused() -> kopf.ConnectionInfo:
                logins.append("stale")
                return kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token="stale")

            client._login = refused  # a login that cannot help: one retry, then the 401
            with pytest.raises(KubeError) as error:
                await client.get(CONFIG_MAP, NS, "x")
            assert error.value.status == 401
            assert len(logins) == logins_before + 1
    finally:
        await runner.cleanup()
    assert seen[:3] == ["Bearer old", "Bearer old", "Bearer new"]
