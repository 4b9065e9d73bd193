"""One pod's life: its Triton server started and stopped in a worker thread, its readiness
probed, and the backoff of a Deployment whose pods fail to start.

Starting a server is blocking work (about 1.5 s, up to 3 s to stop), so :func:`start_server`
and :func:`stop_server` run in a thread pool; a pod stopped while it starts is marked
``abandoned`` and its server stopped as soon as it is up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import aiohttp

from gelu_lab.sandbox.kubelet.fields import ObjectKey, mapping
from gelu_lab.sandbox.kubelet.volumes import write_files
from gelu_lab.sandbox.triton import LOOPBACK, TritonServer
from gelu_rollout.resources.names import LABEL_ARM
from gelu_rollout.resources.workloads import METRICS_PORT

BACKOFF_FIRST_S: Final = 1.0
BACKOFF_MAX_S: Final = 30.0
PROBE_TIMEOUT_S: Final = 1.0
READY_PATH: Final = "/v2/health/ready"

PodPhase = Literal["Pending", "Running", "Terminating"]


@dataclass(frozen=True)
class PodInfo:
    """A snapshot of one pod the runner keeps."""

    namespace: str
    name: str
    deployment: str
    template_hash: str
    labels: Mapping[str, str]
    phase: PodPhase
    ready: bool
    http_address: str | None = None
    metrics_address: str | None = None
    pid: int | None = None

    @property
    def arm(self) -> str | None:
        return self.labels.get(LABEL_ARM)


@dataclass(frozen=True)
class ReadinessProbe:
    path: str = READY_PATH
    port: object = "http"
    timeout_s: float = PROBE_TIMEOUT_S
    failure_threshold: int = 3

    @staticmethod
    def of(container: Mapping[str, Any]) -> ReadinessProbe:
        """The container's HTTP readiness probe (Triton's ready endpoint when it has none)."""
        probe = mapping(container.get("readinessProbe"))
        http_get = mapping(probe.get("httpGet"))
        timeout, threshold = probe.get("timeoutSeconds"), probe.get("failureThreshold")
        return ReadinessProbe(
            path=str(http_get.get("path") or READY_PATH),
            port=http_get.get("port", "http"),
            timeout_s=float(timeout)
            if isinstance(timeout, int) and timeout > 0
            else PROBE_TIMEOUT_S,
            failure_threshold=threshold if isinstance(threshold, int) and threshold > 0 else 3,
        )


@dataclass(eq=False)
class Pod:
    """A pod the runner keeps: its server, and where it is in its life.

    The event loop owns every field but ``abandoned``, which worker threads read under
    ``lock``.
    """

    namespace: str
    deployment: str
    deployment_uid: str
    name: str
    hash: str
    index: int
    labels: dict[str, str]
    directory: Path
    server: TritonServer
    probe: ReadinessProbe
    state: Literal["starting", "running", "stopping"] = "starting"
    ready: bool = False
    failures: int = 0
    has_object: bool = False
    abandoned: bool = False  # stop it as soon as it has started
    lock: threading.Lock = field(default_factory=threading.Lock)
    start_future: asyncio.Future[None] | None = None
    stop_future: asyncio.Future[None] | None = None

    @property
    def key(self) -> ObjectKey:
        """The Deployment's ``(namespace, name)``."""
        return (self.namespace, self.deployment)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def info(self) -> PodInfo:
        phase: PodPhase = (
            "Running" if self.running else "Pending" if self.state == "starting" else "Terminating"
        )
        return PodInfo(
            namespace=self.namespace,
            name=self.name,
            deployment=self.deployment,
            template_hash=self.hash,
            labels=dict(self.labels),
            phase=phase,
            ready=self.running and self.ready,
            http_address=self.server.http_url if self.running else None,
            metrics_address=self.server.metrics_address if self.running else None,
            pid=self.server.pid if self.running else None,
        )


# -- the server, in a worker thread ----------------------------------------------------------


def start_server(pod: Pod, files: Mapping[PurePosixPath, bytes]) -> None:
    """Lay the repository out and start the server (stopped again if abandoned meanwhile)."""
    write_files(pod.directory / "models", files)
    pod.server.start()
    with pod.lock:
        abandoned = pod.abandoned
    if abandoned:
        pod.server.stop()


def stop_server(pod: Pod) -> None:
    with pod.lock:
        pod.abandoned = True
    pod.server.stop()


def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, does not)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# -- readiness -------------------------------------------------------------------------------


async def probe(session: aiohttp.ClientSession, pod: Pod) -> bool:
    """One try of the pod's readiness probe."""
    ports = pod.server.ports
    if ports is None:
        return False
    port = ports.metrics if pod.probe.port in ("metrics", METRICS_PORT) else ports.http
    url = f"http://{LOOPBACK}:{port}{pod.probe.path}"
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=pod.probe.timeout_s)
        ) as response:
            return 200 <= response.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def readiness(ready: bool, failures: int, ok: bool, threshold: int) -> tuple[bool, int]:
    """``(ready, failures in a row)`` after a probe: a ready pod turns unready only after
    ``threshold`` failures in a row; one success makes it ready."""
    failures = 0 if ok else failures + 1
    return ok or (ready and failures < threshold), failures


# -- backoff -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """When a Deployment whose pods failed may try again."""

    until: float
    delay: float

    def allows(self, now: float) -> bool:
        return now >= self.until


def next_backoff(previous: Backoff | None, now: float) -> Backoff:
    """The backoff after one more failure at ``now`` (the loop's clock): the delay doubles from
    :data:`BACKOFF_FIRST_S` up to :data:`BACKOFF_MAX_S`."""
    delay = min(previous.delay * 2, BACKOFF_MAX_S) if previous is not None else BACKOFF_FIRST_S
    return Backoff(until=now + delay, delay=delay)
