"""The traffic generator: requests follow the HTTPRoute weights or the replica ratio."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from gelu_lab.sandbox.emulator import serve_emulator
from gelu_lab.sandbox.kubelet import PodInfo, PodRunner
from gelu_lab.sandbox.traffic import (
    ArmCounts,
    Backend,
    Routing,
    TrafficGenerator,
    pick_backend,
    routing_of,
)
from gelu_rollout.adapters.kube import KubeClient, kinds
from gelu_rollout.resources.names import OwnerRef
from gelu_rollout.resources.traffic import render_service, route_backends_patch
from tests.sandbox.sandbox_objects import (
    MODEL,
    NAMESPACE,
    create_rollout,
    emulator_client,
    rollout_manifest,
    wait_until,
)

ROLLOUT = "traffic-test"
ROUTE = "traffic-test-route"
SPEC: dict[str, Any] = {
    "model": {"name": MODEL},
    "baseline": {"variant": "exact", "replicas": 2},
    "candidate": {"variant": "tanh", "replicas": 1},
    "traffic": {"mode": "HTTPRoute", "httpRouteName": ROUTE},
}


# -- routing, without servers ----------------------------------------------------------------


def test_routing_of_both_modes() -> None:
    replica_ratio = rollout_manifest("r", {"model": {"name": "m"}})
    assert routing_of(replica_ratio, None) == Routing("m", (Backend(NAMESPACE, "r"),))
    by_route = rollout_manifest(
        "r", {"model": {"name": "m"}, "traffic": {"mode": "HTTPRoute", "httpRouteName": "web"}}
    )
    assert routing_of(by_route, None) == Routing("m", ())
    route = {"spec": {"rules": [{"matches": [{"path": {"value": "/"}}]}]}}
    route["spec"].update(route_backends_patch(route, "r", 30)["spec"])
    assert routing_of(by_route, route) == Routing(
        "m", (Backend(NAMESPACE, "r-baseline", 70), Backend(NAMESPACE, "r-candidate", 30))
    )
    other = {"spec": {"rules": [{"backendRefs": [{"name": "x", "kind": "Bucket"}, {"name": "y"}]}]}}
    assert routing_of(by_route, other).backends == (Backend(NAMESPACE, "y", 1),)


def test_backends_are_drawn_by_weight() -> None:
    rng = random.Random(1)
    backends = (
        Backend(NAMESPACE, "a", 75),
        Backend(NAMESPACE, "b", 25),
        Backend(NAMESPACE, "c", 0),
    )
    draws = [pick_backend(backends, rng) for _ in range(4000)]
    share = sum(1 for b in draws if b is not None and b.service == "b") / len(draws)
    assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(draws))
    assert all(b is not None and b.service != "c" for b in draws)
    assert pick_backend((Backend(NAMESPACE, "a", 0),), rng) is None


@pytest.mark.asyncio
async def test_ends_at_its_deadline_and_stops_promptly() -> None:
    def nowhere(namespace: str, service: str) -> list[PodInfo]:
        return []

    async with serve_emulator() as emulator:
        started = time.monotonic()
        counts = await TrafficGenerator(
            emulator.url, NAMESPACE, "absent", nowhere, rate_per_s=100, duration_s=0.5
        ).run()
        assert time.monotonic() - started < 2.0
        assert counts == {}

        generator = TrafficGenerator(
            emulator.url, NAMESPACE, "absent", nowhere, rate_per_s=100, duration_s=60
        )
        started = time.monotonic()
        await generator.start()
        await asyncio.sleep(0.5)
        stopping = time.monotonic()
        await generator.stop()
        assert time.monotonic() - stopping < 1.0
        assert not generator.running
        # No rollout: nothing is sent, every request is unrouted, at the rate asked for.
        assert generator.counts() == {}
        assert 10 <= generator.unrouted <= 100 * (stopping - started) + 2

        with pytest.raises(ValueError, match="end by itself"):
            TrafficGenerator(emulator.url, NAMESPACE, "r", nowhere, duration_s=None)


# -- through real servers ---------------------------------------------------------------------


@dataclass
class Stack:
    url: str
    kube: KubeClient
    runner: PodRunner
    owner: OwnerRef


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with (
        serve_emulator() as emulator,
        emulator_client(emulator.url) as kube,
        PodRunner(emulator.url) as runner,
    ):
        owner, _, _ = await create_rollout(kube, ROLLOUT, SPEC)

        async def ready() -> bool:
            return len([p for p in runner.pods() if p.ready]) == 3

        await wait_until(ready, timeout_s=40, what="three pods ready")
        yield Stack(emulator.url, kube, runner, owner)


def _success_count(metrics_address: str | None) -> float:
    """A pod's own count of successful requests (Triton's metrics)."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as response:
        text = response.read().decode()
    sample = rf'^nv_inference_request_success{{model="{MODEL}",version="1"}} (\S+)$'
    match = re.search(sample, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.triton
@pytest.mark.asyncio(loop_scope="module")
async def test_httproute_weights_split_the_traffic(stack: Stack) -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": NAMESPACE},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": []}]},
    }
    await stack.kube.create(route)
    await stack.kube.merge_patch(
        kinds.HTTP_ROUTE, NAMESPACE, ROUTE, route_backends_patch(route, ROLLOUT, 25)
    )
    requests = 400
    counts = await TrafficGenerator(
        stack.url,
        NAMESPACE,
        ROLLOUT,
        stack.runner.service_pods,
        rate_per_s=200,
        max_requests=requests,
        duration_s=30,
        seed=7,
    ).run()
    candidate, baseline = counts["candidate"], counts["baseline"]
    assert candidate.sent + baseline.sent == requests
    assert candidate.failed == baseline.failed == 0
    assert candidate.succeeded == candidate.sent
    tolerance = 4 * math.sqrt(requests * 0.25 * 0.75)
    assert abs(candidate.sent - requests * 0.25) <= tolerance


@pytest.mark.triton
@pytest.mark.asyncio(loop_scope="module")
async def test_replica_ratio_follows_the_pod_counts(stack: Stack) -> None:
    # ReplicaRatio: one Service in front of both arms' pods (2 baseline, 1 candidate).
    await stack.kube.create(render_service(stack.owner, None))
    await stack.kube.merge_patch(
        kinds.ROLLOUT,
        NAMESPACE,
        ROLLOUT,
        {"spec": {"traffic": {"mode": "ReplicaRatio", "httpRouteName": None}}},
    )
    await stack.runner.sync()
    pods = stack.runner.pods()
    before = {p.name: await asyncio.to_thread(_success_count, p.metrics_address) for p in pods}
    requests = 300
    counts = await TrafficGenerator(
        stack.url,
        NAMESPACE,
        ROLLOUT,
        stack.runner.service_pods,
        rate_per_s=200,
        max_requests=requests,
        duration_s=30,
    ).run()
    assert counts == {
        "baseline": ArmCounts(sent=200, succeeded=200, failed=0),
        "candidate": ArmCounts(sent=100, succeeded=100, failed=0),
    }
    # Round-robin: every pod served its third, as each pod's own metrics say.
    for pod in pods:
        served = await asyncio.to_thread(_success_count, pod.metrics_address)
        assert served - before[pod.name] == 100
