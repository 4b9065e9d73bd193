"""The pod runner: the operator's Deployments become real tritonserver processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import tritonclient.http.aio as triton_http

from gelu_lab.sandbox.emulator_server import EmulatorServer, serve_emulator
from gelu_lab.sandbox.kubelet import PodInfo, PodRunner
from gelu_lab.sandbox.kubelet.deployments import (
    PodCounts,
    RolloutPlan,
    deployment_status,
    plan_rollout,
    rolling_limits,
    template_hash,
)
from gelu_lab.sandbox.kubelet.lifecycle import BACKOFF_MAX_S, Backoff, next_backoff, readiness
from gelu_lab.sandbox.kubelet.objects import ANNOTATION_HTTP, ANNOTATION_METRICS
from gelu_lab.sandbox.kubelet.services import selector_matches
from gelu_lab.sandbox.kubelet.volumes import PodSpecError, repository_files
from gelu_lab.sandbox.prometheus import PrometheusServer
from gelu_rollout.adapters.kube import KubeClient, kinds
from gelu_rollout.resources.names import LABEL_ARM, LABEL_REVISION, OwnerRef
from gelu_rollout.resources.workloads import ArmSource, render_config_map, render_deployment
from gelu_rollout.spec import parse_spec
from gelu_rollout.spec.model import ArmSpec
from gelu_rollout.variants import INPUTS, render_repository
from tests.sandbox.sandbox_objects import (
    MODEL,
    NAMESPACE,
    alive,
    create_rollout,
    emulator_client,
    running_pids,
    wait_until,
)

ROLLOUT = "pods-test"
SPEC: dict[str, Any] = {
    "model": {"name": MODEL},
    "baseline": {"variant": "exact", "replicas": 1},
    "candidate": {"variant": "tanh", "replicas": 1},
    "traffic": {"mode": "HTTPRoute", "httpRouteName": "pods-test-route"},
}
BASELINE = f"{ROLLOUT}-baseline"
CANDIDATE = f"{ROLLOUT}-candidate"


def _owner() -> OwnerRef:
    return OwnerRef(name=ROLLOUT, namespace=NAMESPACE, uid="1234")


def _deployment(variant: str = "exact", replicas: int = 1) -> dict[str, Any]:
    spec = parse_spec(SPEC)
    files = render_repository(MODEL, variant)
    return render_deployment(
        _owner(), spec.model, "baseline", ArmSource(ArmSpec(variant=variant), files), replicas
    )


# -- pure parts ----------------------------------------------------------------------------


def test_repository_follows_the_config_map_items() -> None:
    deployment = _deployment()
    template = deployment["spec"]["template"]
    config_map = render_config_map(
        _owner(), "baseline", render_repository(MODEL, "exact"), source="variant/exact"
    )
    name = config_map["metadata"]["name"]
    files = repository_files(template, {name: config_map})
    assert set(files) == {
        PurePosixPath(MODEL, "config.pbtxt"),
        PurePosixPath(MODEL, "1", "model.py"),
    }
    assert (
        files[PurePosixPath(MODEL, "config.pbtxt")] == config_map["data"]["config.pbtxt"].encode()
    )
    with pytest.raises(PodSpecError, match="not found"):
        repository_files(template, {})


def test_repository_without_items_and_with_a_bad_path() -> None:
    template = _deployment()["spec"]["template"]
    volume = template["spec"]["volumes"][0]
    del volume["configMap"]["items"]
    config_map = {"data": {"config.pbtxt": "x"}, "binaryData": {"blob": "AAE="}}
    files = repository_files(template, {volume["configMap"]["name"]: config_map})
    assert files == {
        PurePosixPath(MODEL, "config.pbtxt"): b"x",
        PurePosixPath(MODEL, "blob"): b"\x00\x01",
    }
    volume["configMap"]["items"] = [{"key": "config.pbtxt", "path": "../escape"}]
    with pytest.raises(PodSpecError, match="relative path"):
        repository_files(template, {volume["configMap"]["name"]: config_map})


def test_template_hash_and_rolling_limits() -> None:
    first, second = _deployment("exact"), _deployment("tanh")
    assert template_hash(first["spec"]["template"]) == template_hash(
        _deployment()["spec"]["template"]
    )
    assert template_hash(first["spec"]["template"]) != template_hash(second["spec"]["template"])
    assert rolling_limits(first["spec"], 2) == (1, 0)  # maxSurge 25 % rounds up
    assert rolling_limits({}, 8) == (2, 2)
    assert rolling_limits(
        {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}, 3
    ) == (1, 0)
    assert rolling_limits({"strategy": {"type": "Recreate"}}, 3) is None


@dataclass(frozen=True)
class _Replica:
    hash: str
    index: int
    running: bool = True
    ready: bool = True


def test_rollout_plan_surges_then_stops_old_pods_only_while_enough_are_ready() -> None:
    old = [_Replica("old", 0), _Replica("old", 1)]
    # maxSurge 1, maxUnavailable 0: one new pod first, no old pod stopped yet.
    assert plan_rollout(old, "new", 2, (1, 0)) == RolloutPlan((), 1)
    starting = _Replica("new", 0, running=False, ready=False)
    assert plan_rollout([*old, starting], "new", 2, (1, 0)) == RolloutPlan((), 0)
    # The new pod is ready: one old pod goes (the newest), making room for the next new one.
    ready = _Replica("new", 0)
    assert plan_rollout([*old, ready], "new", 2, (1, 0)) == RolloutPlan((old[1],), 1)
    # Unready old pods go at once; Recreate stops every old pod and starts them all anew.
    unready = _Replica("old", 2, ready=False)
    assert plan_rollout([*old, unready], "new", 2, (1, 0)).stop == (unready,)
    assert plan_rollout(old, "new", 2, None) == RolloutPlan((old[0], old[1]), 2)
    # Scaling down stops surplus pods of the current template: starting ones first.
    late = _Replica("new", 1, running=False, ready=False)
    current = [_Replica("new", 0), late, _Replica("new", 2)]
    assert plan_rollout(current, "new", 2, (1, 0)) == RolloutPlan((late,), 0)
    assert plan_rollout(current, "new", 1, (1, 0)).stop == (late, current[2])


def test_readiness_needs_failures_in_a_row_and_backoff_doubles() -> None:
    assert readiness(True, 0, False, 3) == (True, 1)
    assert readiness(True, 2, False, 3) == (False, 3)
    assert readiness(False, 3, True, 3) == (True, 0)
    assert readiness(False, 0, False, 3) == (False, 1)
    first = next_backoff(None, 100.0)
    assert (first.delay, first.allows(100.5), first.allows(101.0)) == (1.0, False, True)
    assert next_backoff(first, 200.0).delay == 2.0
    assert next_backoff(Backoff(until=0.0, delay=BACKOFF_MAX_S), 0.0).delay == BACKOFF_MAX_S


def test_status_counts_and_keeps_condition_times() -> None:
    deployment = _deployment(replicas=2)
    deployment["metadata"]["generation"] = 3
    status = deployment_status(deployment, PodCounts(3, 2, 1), max_unavailable=0, now="T1")
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 3,
        "replicas": 3,
        "updatedReplicas": 2,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "unavailableReplicas": 1,
    }
    available = status["conditions"][0]
    assert (available["type"], available["status"]) == ("Available", "False")
    deployment["status"] = status
    again = deployment_status(deployment, PodCounts(3, 2, 1), max_unavailable=0, now="T2")
    assert again == status  # nothing changed: nothing to write
    done = deployment_status(deployment, PodCounts(2, 2, 2), max_unavailable=0, now="T3")
    assert [(c["status"], c["reason"], c["lastTransitionTime"]) for c in done["conditions"]] == [
        ("True", "MinimumReplicasAvailable", "T3"),
        ("True", "NewReplicaSetAvailable", "T1"),
    ]


def test_selector_matching() -> None:
    labels = {"a": "1", "b": "2"}
    assert selector_matches({"a": "1"}, labels)
    assert not selector_matches({"a": "1", "c": "3"}, labels)
    assert not selector_matches({}, labels)  # no selector: endpoints managed by hand
    assert not selector_matches(None, labels)


# -- with real servers -----------------------------------------------------------------


async def _both_ready(kube: KubeClient) -> None:
    async def ready() -> bool:
        found = [await _deployment_ready(kube, name, 1) for name in (BASELINE, CANDIDATE)]
        return all(found)

    await wait_until(ready, timeout_s=30, what="both arms ready")


async def _replaced(runner: PodRunner, old: PodInfo) -> PodInfo:
    """The ready pod that took ``old``'s place, once ``old``'s server is gone."""

    async def replacement() -> PodInfo | None:
        pods = [p for p in _pods_of(runner, old.deployment) if p.ready]
        gone = not await asyncio.to_thread(alive, {old.pid or -1})
        return pods[0] if gone and len(pods) == 1 and pods[0].name != old.name else None

    return await wait_until(replacement, timeout_s=20, what=f"{old.name} replaced")


@dataclass
class Stack:
    emulator: EmulatorServer
    kube: KubeClient
    prometheus: PrometheusServer
    runner: PodRunner


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    prometheus = await asyncio.to_thread(PrometheusServer(scrape_interval_seconds=0.5).start)
    try:
        async with serve_emulator() as emulator:
            runner = PodRunner(emulator.url, prometheus=prometheus, log_dir=tmp_path / "logs")
            async with emulator_client(emulator.url) as kube, runner:
                yield Stack(emulator, kube, prometheus, runner)
    finally:
        await asyncio.to_thread(prometheus.stop)


async def _deployment_ready(kube: KubeClient, name: str, replicas: int) -> dict[str, Any] | None:
    found = await kube.get(kinds.DEPLOYMENT, NAMESPACE, name)
    assert found is not None
    status = found.get("status") or {}
    settled = (
        status.get("observedGeneration") == found["metadata"]["generation"]
        and status.get("readyReplicas") == replicas
        and status.get("updatedReplicas") == replicas
        and status.get("replicas") == replicas
    )
    return found if settled else None


def _pods_of(runner: PodRunner, deployment: str) -> list[PodInfo]:
    return [p for p in runner.pods() if p.deployment == deployment and p.phase != "Terminating"]


async def _infer(address: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    client = triton_http.InferenceServerClient(address)
    try:
        rows = np.random.default_rng(0).normal(size=(1, INPUTS)).astype(np.float32)
        tensor = triton_http.InferInput("INPUT0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = await client.infer(MODEL, [tensor])
        output: np.ndarray[Any, np.dtype[np.float32]] = result.as_numpy("OUTPUT0")
        return output
    finally:
        await client.close()


def _served_variant(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/v2/models/{MODEL}/config", timeout=5) as r:
        config = json.load(r)
    return str(config["parameters"]["variant"]["string_value"])


def _target_labels(prometheus: PrometheusServer) -> list[dict[str, str]]:
    return sorted(
        (
            {k: v for k, v in t["labels"].items() if k in ("namespace", "rollout", "arm", "pod")}
            for t in prometheus.active_targets()
            if t.get("health") == "up"
        ),
        key=lambda labels: labels["pod"],
    )


@pytest.mark.triton
@pytest.mark.prometheus
@pytest.mark.asyncio
async def test_deployments_become_servers_and_follow_scale_template_and_deletion(
    stack: Stack,
) -> None:
    kube, runner, prometheus = stack.kube, stack.runner, stack.prometheus
    await create_rollout(kube, ROLLOUT, SPEC)
    await _both_ready(kube)
    (baseline,) = _pods_of(runner, BASELINE)
    (candidate,) = _pods_of(runner, CANDIDATE)
    seen = {p.pid for p in (baseline, candidate) if p.pid is not None}
    assert len(seen) == 2
    assert alive(seen) == seen

    # The pods answer, serve their own variant, and are Pod objects in the API.
    for pod, variant in ((baseline, "exact"), (candidate, "tanh")):
        assert pod.phase == "Running"
        assert pod.ready
        assert pod.http_address
        output = await _infer(pod.http_address)
        assert output.shape == (1, INPUTS)
        assert np.isfinite(output).all()
        assert await asyncio.to_thread(_served_variant, pod.http_address) == variant
        obj = await kube.get(kinds.POD, NAMESPACE, pod.name)
        assert obj is not None
        assert obj["metadata"]["annotations"][ANNOTATION_HTTP] == pod.http_address
        assert obj["metadata"]["annotations"][ANNOTATION_METRICS] == pod.metrics_address
        assert obj["metadata"]["labels"][LABEL_ARM] == pod.arm
        assert obj["status"]["phase"] == "Running"
        assert obj["status"]["podIP"] == "127.0.0.1"
        ready = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
        assert ready["Ready"] == "True"
        assert pod.name.startswith(f"{pod.deployment}-{pod.template_hash}-")
    assert runner.service_endpoints(NAMESPACE, CANDIDATE) == [candidate.http_address]
    assert runner.service_endpoints(NAMESPACE, BASELINE) == [baseline.http_address]
    assert runner.service_endpoints(NAMESPACE, "no-such-service") == []

    # Prometheus scrapes both, labelled by namespace, rollout, arm and pod.
    await asyncio.to_thread(prometheus.wait_for_targets, 2, timeout_s=20)
    assert await asyncio.to_thread(_target_labels, prometheus) == sorted(
        (
            {"namespace": NAMESPACE, "rollout": ROLLOUT, "arm": pod.arm or "", "pod": pod.name}
            for pod in (baseline, candidate)
        ),
        key=lambda labels: labels["pod"],
    )

    # A server that dies is replaced by a new pod; so is a pod whose Pod object is deleted.
    os.kill(candidate.pid or -1, signal.SIGKILL)
    candidate = await _replaced(runner, candidate)
    await kube.delete(kinds.POD, NAMESPACE, baseline.name)
    baseline = await _replaced(runner, baseline)
    await _both_ready(kube)
    seen |= {p.pid for p in (baseline, candidate) if p.pid is not None}

    # Scaling the candidate to 0 stops its server and removes its Pod object and target.
    await kube.merge_patch(kinds.DEPLOYMENT, NAMESPACE, CANDIDATE, {"spec": {"replicas": 0}})
    await wait_until(
        lambda: _deployment_ready(kube, CANDIDATE, 0), timeout_s=20, what="candidate at 0"
    )
    await wait_until(
        lambda: asyncio.to_thread(lambda: not alive({candidate.pid or -1})),
        timeout_s=20,
        what="candidate's server stopped",
    )
    assert _pods_of(runner, CANDIDATE) == []
    assert await kube.get(kinds.POD, NAMESPACE, candidate.name) is None
    targets = json.loads(prometheus.targets_path.read_text())
    assert [group["labels"]["pod"] for group in targets] == [baseline.name]
    assert runner.service_endpoints(NAMESPACE, CANDIDATE) == []

    # A new template (a new ConfigMap): the new pod comes up before the old one goes.
    files = render_repository(MODEL, "sigmoid")
    owner = OwnerRef.from_body(await kube.get(kinds.ROLLOUT, NAMESPACE, ROLLOUT) or {})
    config_map = render_config_map(owner, "baseline", files, source="variant/sigmoid")
    await kube.create(config_map)
    new = render_deployment(
        owner, parse_spec(SPEC).model, "baseline", ArmSource(ArmSpec(variant="tanh"), files), 1
    )
    await kube.merge_patch(
        kinds.DEPLOYMENT,
        NAMESPACE,
        BASELINE,
        {
            "metadata": {"labels": new["metadata"]["labels"]},
            "spec": {"template": new["spec"]["template"]},
        },
    )
    lowest_ready = 1

    async def rolled() -> dict[str, Any] | None:
        nonlocal lowest_ready
        found = await kube.get(kinds.DEPLOYMENT, NAMESPACE, BASELINE)
        assert found is not None
        if found["status"].get("observedGeneration") == found["metadata"]["generation"]:
            lowest_ready = min(lowest_ready, found["status"].get("readyReplicas", 0))
        return await _deployment_ready(kube, BASELINE, 1)

    await wait_until(rolled, timeout_s=30, what="baseline rolled to the new template")
    assert lowest_ready == 1  # maxUnavailable 0: never without a ready pod
    (replacement,) = _pods_of(runner, BASELINE)
    assert replacement.name != baseline.name
    assert replacement.labels[LABEL_REVISION] == new["metadata"]["labels"][LABEL_REVISION]
    assert replacement.http_address is not None
    assert await asyncio.to_thread(_served_variant, replacement.http_address) == "sigmoid"
    await wait_until(
        lambda: asyncio.to_thread(lambda: not alive({baseline.pid or -1})),
        timeout_s=20,
        what="old baseline stopped",
    )
    assert replacement.pid is not None
    seen.add(replacement.pid)

    # Deleting the Deployments stops everything.
    for name in (BASELINE, CANDIDATE):
        await kube.delete(kinds.DEPLOYMENT, NAMESPACE, name)
    await wait_until(
        lambda: asyncio.to_thread(lambda: not runner.pods() and not alive(seen)),
        timeout_s=20,
        what="every server stopped",
    )
    assert await kube.list(kinds.POD, NAMESPACE) == []
    assert json.loads(prometheus.targets_path.read_text()) == []


@pytest.mark.triton
@pytest.mark.asyncio
async def test_leaving_the_runner_stops_starting_and_running_servers(tmp_path: Path) -> None:
    async with serve_emulator() as emulator, emulator_client(emulator.url) as kube:
        runner = PodRunner(emulator.url, log_dir=tmp_path / "logs")
        workdir: Path | None = None

        async def fail_with_servers_up() -> None:
            nonlocal workdir
            async with runner:
                workdir = runner.workdir
                assert workdir is not None
                await create_rollout(kube, ROLLOUT, SPEC)
                await _both_ready(kube)
                # A second baseline pod starts: two running, one starting when it fails.
                await kube.merge_patch(
                    kinds.DEPLOYMENT, NAMESPACE, BASELINE, {"spec": {"replicas": 2}}
                )
                await runner.sync()
                assert [p.phase for p in runner.pods()].count("Pending") == 1
                servers = f"bin/tritonserver --model-repository={workdir}"
                await wait_until(
                    lambda: asyncio.to_thread(lambda: len(running_pids(servers)) == 3),
                    timeout_s=10,
                    what="a third server launched",
                )
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await fail_with_servers_up()
        assert workdir is not None
        assert running_pids(str(workdir)) == set()
        assert not workdir.exists()
        assert runner.pods() == []
        assert await kube.list(kinds.POD, NAMESPACE) == []
        assert (tmp_path / "logs").is_dir()  # logs stay where the caller asked for them


async def _waiting_pod(kube: KubeClient, deployment: str) -> dict[str, Any] | None:
    """A Pod of ``deployment`` whose container waits (a crash loop, a config error)."""
    for pod in await kube.list(kinds.POD, NAMESPACE):
        if not pod["metadata"]["name"].startswith(deployment):
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            if "waiting" in (container.get("state") or {}):
                return pod
    return None


def _stored(uri: str, **storage: str) -> dict[str, Any]:
    arm: dict[str, Any] = {"storageUri": uri, "revision": "1"}
    if storage:
        arm["storage"] = storage
    deployment = render_deployment(
        _owner(), parse_spec(SPEC).model, "candidate", ArmSource(ArmSpec(**arm)), 1
    )
    deployment["metadata"].pop("ownerReferences", None)
    return deployment


@pytest.mark.triton
@pytest.mark.asyncio
async def test_pods_that_cannot_start_are_shown_as_a_kubelet_shows_them(stack: Stack) -> None:
    # A claim nobody made: the container cannot be set up.
    unstartable = _stored("pvc://missing-claim/models")
    name = unstartable["metadata"]["name"]
    await stack.kube.create(unstartable)
    pod = await wait_until(
        lambda: _waiting_pod(stack.kube, name), timeout_s=20, what="a waiting pod"
    )
    [container] = pod["status"]["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    assert (
        'persistentvolumeclaim "missing-claim" not found'
        in container["state"]["waiting"]["message"]
    )
    await stack.kube.delete(kinds.DEPLOYMENT, NAMESPACE, name)
    # A model that does not load: the server exits and the pod crash-loops, its last
    # termination carrying the end of the server's log.
    claim = stack.runner.volume_path(NAMESPACE, "broken")
    (claim / "models" / MODEL).mkdir(parents=True)
    (claim / "models" / MODEL / "config.pbtxt").write_text("this is not a model config\n")
    await stack.kube.create(_stored("pvc://broken/models"))
    pod = await wait_until(
        lambda: _waiting_pod(stack.kube, name), timeout_s=60, what="a crash loop"
    )
    [container] = pod["status"]["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["restartCount"] >= 1
    assert "tritonserver exited" in container["lastState"]["terminated"]["message"]
