"""Deleting a rollout in HTTPRoute mode, end to end: the route gets its own backends back
before the arm Services go."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from gelu_lab.sandbox.stack import KubectlError, sandbox
from tests.e2e.test_operator import apply, manifest

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

ORIGINAL = [{"group": "", "kind": "Service", "name": "gelu-v1", "port": 8000, "weight": 1}]


def backends(route: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [rule.get("backendRefs") or [] for rule in route["spec"]["rules"]]


@pytest.mark.asyncio
async def test_deleting_a_rollout_gives_the_route_its_backends_back() -> None:
    async with sandbox() as stack:
        await apply(
            stack,
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "gelu", "namespace": "default"},
                "spec": {
                    "parentRefs": [{"name": "gateway"}],
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                            "backendRefs": ORIGINAL,
                        }
                    ],
                },
            },
        )
        await apply(
            stack,
            manifest(
                "routed",
                {"variant": "tanh"},
                mode="HTTPRoute",
                route="gelu",
                steps=[{"weight": 25, "analysisSeconds": 600}],
            ),
        )
        await stack.wait_for(
            "routed", lambda r: (r.get("status") or {}).get("stage") == "Progressing", timeout_s=90
        )
        route = await stack.get("httproute", "gelu")
        weights = {ref["name"]: ref["weight"] for ref in backends(route)[0]}
        assert weights == {"routed-baseline": 75, "routed-candidate": 25}
        rollout = await stack.rollout("routed")
        assert rollout["status"]["originalBackendRefs"] == [ORIGINAL]

        await stack.kubectl("delete", "gmr", "routed", "--wait=false")
        for _ in range(120):
            with contextlib.suppress(KubectlError):
                await stack.rollout("routed")
                await asyncio.sleep(0.5)
                continue
            break
        else:
            raise AssertionError("the rollout was not deleted within 60 s")
        route = await stack.get("httproute", "gelu")
        assert backends(route) == [ORIGINAL]
        assert route["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/v2"
        print("E2E delete: the route has", backends(route))
