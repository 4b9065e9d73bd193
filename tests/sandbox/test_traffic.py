"""The traffic generator: requests follow the HTTPRoute weights or the replica ratio, and the
Gateway's request-duration histogram it exports is what the operator's queries read."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import re
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from tritonclient.utils import InferenceServerException

from gelu_lab.sandbox.emulator_server import serve_emulator
from gelu_lab.sandbox.kubelet import PodInfo, PodRunner
from gelu_lab.sandbox.kubelet.discovery import scrape_targets
from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_lab.sandbox.stack import GATEWAY_GROUP, GATEWAY_TARGET_LABELS
from gelu_lab.sandbox.traffic import (
    GATEWAY_BUCKETS,
    GATEWAY_METRIC,
    ArmCounts,
    Backend,
    GatewayMetrics,
    Routing,
    TrafficGenerator,
    pick_backend,
    response_code,
    routing_of,
)
from gelu_rollout.adapters.kube import KubeClient, kinds
from gelu_rollout.adapters.prometheus import PrometheusObserver
from gelu_rollout.resources.names import OwnerRef
from gelu_rollout.resources.traffic import render_service, route_backends_patch
from gelu_rollout.spec.model import LatencyHistogramSource
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


def test_gateway_buckets_are_log_spaced_from_half_a_millisecond_to_ten_seconds() -> None:
    assert GATEWAY_BUCKETS[0] == 0.0005
    assert GATEWAY_BUCKETS[-1] >= 10
    ratios = [b / a for a, b in itertools.pairwise(GATEWAY_BUCKETS)]
    assert all(1.14 < r < 1.16 for r in ratios)
    # Four digits: the le labels stay short and readable.
    assert all(len(f"{b:.4g}") == len(repr(b)) for b in GATEWAY_BUCKETS)


def bucket_lines(text: str, service: str, code: str = "200") -> dict[str, float]:
    pattern = (
        rf'^{GATEWAY_METRIC}_bucket{{destination_service_name="{service}",'
        rf'destination_service_namespace="[^"]*",le="([^"]+)",response_code="{code}"}} (\S+)$'
    )
    return {le: float(v) for le, v in re.findall(pattern, text, re.MULTILINE)}


def served_counts(gateway: GatewayMetrics) -> dict[str, float]:
    """Requests recorded per destination Service (every response code)."""
    counts: dict[str, float] = {}
    pattern = rf'^{GATEWAY_METRIC}_count{{destination_service_name="([^"]+)",[^}}]*}} (\S+)$'
    for service, value in re.findall(pattern, gateway.text(), re.MULTILINE):
        counts[service] = counts.get(service, 0.0) + float(value)
    return counts


def test_the_gateway_histogram_is_served_in_seconds() -> None:
    with GatewayMetrics() as gateway:
        gateway.prepare(NAMESPACE, ["r-baseline", "r-candidate"])
        gateway.observe(NAMESPACE, "r-candidate", "200", 0.0031)
        gateway.observe(NAMESPACE, "r-candidate", "200", 0.02)
        gateway.observe(NAMESPACE, "r-candidate", "0", 5.0)
        address = gateway.serve()
        assert gateway.serve() == address  # once
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            text = response.read().decode()
    assert address.startswith("127.0.0.1:")
    candidate = bucket_lines(text, "r-candidate")
    assert len(candidate) == len(GATEWAY_BUCKETS) + 1
    # le-cumulative, in seconds: 3.1 ms lies in (3.031 ms, 3.482 ms], 20 ms in (18.38, 21.11].
    assert candidate["0.003031"] == 0
    assert candidate["0.003482"] == 1
    assert candidate["0.01838"] == 1
    assert candidate["0.02111"] == 2
    assert candidate["+Inf"] == 2
    # The prepared Service is there at zero before its first request.
    assert bucket_lines(text, "r-baseline")["+Inf"] == 0
    assert bucket_lines(text, "r-candidate", code="0")["+Inf"] == 1
    assert served_counts(gateway) == {"r-baseline": 0, "r-candidate": 3}
    with pytest.raises(RuntimeError, match="not being served"):
        _ = gateway.address


def test_response_codes_as_a_gateway_records_them() -> None:
    assert response_code(None) == "200"
    assert response_code(InferenceServerException("overloaded", status="503")) == "503"
    assert response_code(InferenceServerException("injected failure")) == "500"
    assert response_code(TimeoutError()) == "0"
    assert response_code(ConnectionRefusedError()) == "0"


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
    generator = TrafficGenerator(
        stack.url,
        NAMESPACE,
        ROLLOUT,
        stack.runner.service_pods,
        rate_per_s=200,
        max_requests=requests,
        duration_s=30,
        seed=7,
    )
    counts = await generator.run()
    candidate, baseline = counts["candidate"], counts["baseline"]
    assert candidate.sent + baseline.sent == requests
    assert candidate.failed == baseline.failed == 0
    assert candidate.succeeded == candidate.sent
    tolerance = 4 * math.sqrt(requests * 0.25 * 0.75)
    assert abs(candidate.sent - requests * 0.25) <= tolerance
    # Every request was timed, under the backend Service it went to.
    assert served_counts(generator.gateway) == {
        f"{ROLLOUT}-baseline": baseline.sent,
        f"{ROLLOUT}-candidate": candidate.sent,
    }


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


@pytest.mark.triton
@pytest.mark.prometheus
@pytest.mark.asyncio(loop_scope="module")
async def test_the_gateway_histogram_is_scraped_and_read_by_the_operators_queries(
    stack: Stack,
) -> None:
    # Still ReplicaRatio (the test above): one Service in front of 2 baseline and 1 candidate
    # pods; the Gateway names each request's arm Service all the same.
    source = LatencyHistogramSource.model_validate(
        {
            "metric": f"{GATEWAY_METRIC}_bucket",
            "armLabel": "destination_service_name",
            "matchers": [
                {"label": "destination_service_namespace", "value": NAMESPACE},
                {"label": "response_code", "value": "200"},
            ],
        }
    )
    with (
        PrometheusServer(scrape_interval_seconds=1.0) as prometheus,
        GatewayMetrics() as gateway,
    ):
        services = [f"{ROLLOUT}-baseline", f"{ROLLOUT}-candidate"]
        gateway.prepare(NAMESPACE, services)
        prometheus.set_targets(scrape_targets(stack.runner.pods()))
        prometheus.set_targets(
            [ScrapeTarget(gateway.serve(), GATEWAY_TARGET_LABELS)], group=GATEWAY_GROUP
        )
        await asyncio.to_thread(prometheus.wait_for_targets, 4)
        # The Gateway's target is scraped beside the pods, and its zero series are in.
        targets = await asyncio.to_thread(prometheus.active_targets)
        assert sum(t["labels"].get("component") == "gateway" for t in targets) == 1
        await asyncio.sleep(2.5)
        requests = 300
        counts = await TrafficGenerator(
            stack.url,
            NAMESPACE,
            ROLLOUT,
            stack.runner.service_pods,
            rate_per_s=150,
            max_requests=requests,
            duration_s=30,
            gateway=gateway,
        ).run()
        assert counts["baseline"].succeeded == 200
        assert counts["candidate"].succeeded == 100

        def scraped_all() -> bool:
            answer = json.loads(
                urllib.request.urlopen(
                    f"{prometheus.url}/api/v1/query?query=sum({GATEWAY_METRIC}_count)", timeout=5
                ).read()
            )
            result = answer["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) == requests

        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(scraped_all):
            assert time.monotonic() < deadline, "the Gateway's last counts were never scraped"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # a few more scrapes of the same values

        with PrometheusObserver(prometheus.url, scrape_interval_seconds=1.0) as observer:
            obs = await asyncio.to_thread(
                observer.observe,
                NAMESPACE,
                ROLLOUT,
                MODEL,
                20,
                [],
                datetime.now(UTC),
                latency_histogram=source,
                rollout_name=ROLLOUT,
            )
    assert obs.missing_reason is None
    edges_ms = [b * 1000 for b in GATEWAY_BUCKETS]
    for arm, served in (("baseline", 200), ("candidate", 100)):
        observed = getattr(obs, arm)
        assert observed is not None
        histogram = observed.latency_histogram
        assert histogram is not None, arm
        assert histogram.edges == pytest.approx(edges_ms, rel=1e-12)
        # increase() extrapolates a little past the last change; nothing is lost.
        assert served <= histogram.requests <= served * 1.2
        assert observed.requests == pytest.approx(histogram.requests, rel=0.2)
        p50 = histogram.quantile(0.5)
        assert p50 is not None
        assert 0.1 < p50 < 1000
        # Triton's own counters give the means, and compute is part of the whole.
        assert observed.latency_mean_ms is not None
        assert observed.queue_ms is not None
        assert observed.compute_ms is not None
        assert 0 < observed.compute_ms <= observed.latency_mean_ms
        assert observed.queue_ms <= observed.latency_mean_ms
