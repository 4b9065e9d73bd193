"""Helpers of the pod-runner and traffic tests: a rollout's objects created through the API."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from gelu_lab.sandbox.login import emulator_login
from gelu_rollout.adapters.kube import KubeClient
from gelu_rollout.resources.desired import desired_resources, repositories_for
from gelu_rollout.resources.names import OwnerRef
from gelu_rollout.spec import API_VERSION, KIND, RolloutSpec, parse_spec
from gelu_rollout.spec.status import RolloutStatus

NAMESPACE = "default"
MODEL = "gelu_mlp"

T = TypeVar("T")


def emulator_client(url: str) -> KubeClient:
    """The operator's client, logged in to the API emulator at ``url``."""
    return KubeClient(emulator_login(url))


def rollout_manifest(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": dict(spec),
    }


async def create_rollout(
    kube: KubeClient, name: str, spec: Mapping[str, Any], status: RolloutStatus | None = None
) -> tuple[OwnerRef, RolloutSpec, list[dict[str, Any]]]:
    """Create the rollout object and every object the operator would render for it.

    The objects are owned by the rollout (its real uid: the API server collects objects
    whose owner does not exist).
    """
    created = await kube.create(rollout_manifest(name, spec))
    owner = OwnerRef.from_body(created)
    parsed = parse_spec(created)
    objects = desired_resources(owner, parsed, status or RolloutStatus(), repositories_for(parsed))
    for obj in objects:
        await kube.create(obj)
    return owner, parsed, objects


async def wait_until(
    check: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str, poll_s: float = 0.1
) -> T:
    """Poll ``check`` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(poll_s)


def running_pids(pattern: str) -> set[int]:
    """Pids of the processes whose command line contains ``pattern`` (``pgrep -f``)."""
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return {int(line) for line in done.stdout.split()}


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that are still tritonserver processes."""
    return running_pids("tritonserver") & pids
