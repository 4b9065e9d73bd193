"""The sandbox's kubelet: Deployments in the API emulator become ``tritonserver`` processes.

``PodRunner`` polls the Kubernetes API (every ``poll_interval_s``, and at once when a pod it
started becomes ready) for the Deployments the operator manages, and keeps, for each, as many
pods of its *current* pod template as ``spec.replicas`` asks for. A pod is a real Triton server
on free loopback ports, serving a model repository laid out from the ConfigMap volumes the
template mounts under ``--model-repository`` (each ConfigMap read from the API, its ``items``
mapping keys to paths, as the kubelet does).

It does what the deployment controller, the kubelet and kube-proxy do, in the small:

- **rollouts**: a new template (a new revision label, a new ConfigMap name) is rolled in under
  the Deployment's ``RollingUpdate`` strategy: at most ``maxSurge`` extra pods, and old pods
  stopped only while at least ``replicas - maxUnavailable`` pods stay ready (the operator asks
  for ``maxUnavailable: 0``: new pods first, then the old ones go). ``Recreate`` stops the old
  pods at once. Scaling down and deleting a Deployment stop its pods.
- **status**: each Deployment's status subresource carries ``observedGeneration``,
  ``replicas``, ``updatedReplicas``, ``readyReplicas``, ``availableReplicas``,
  ``unavailableReplicas`` and the ``Available`` and ``Progressing`` conditions.
- **Pod objects**: one per pod, named ``<deployment>-<template hash>-<n>``, labelled as the
  template says (plus ``pod-template-hash``) and owned by the Deployment; ``Pending`` while the
  server starts, then ``Running`` with ``podIP: 127.0.0.1``, the ``Ready`` condition, and the
  annotations ``sandbox.gelu.dev/http``, ``sandbox.gelu.dev/metrics`` (``127.0.0.1:PORT``) and
  ``sandbox.gelu.dev/pid``. Deleting a Pod object stops its server; the Deployment gets a new
  pod, as a ReplicaSet would.
- **readiness**: the template's readiness probe path is polled every tick; a pod is unready
  after ``failureThreshold`` failures in a row, and a server whose process died is replaced.
- **Services**: :meth:`PodRunner.service_endpoints` resolves a Service to the HTTP addresses of
  the ready pods its selector matches, as cluster DNS and kube-proxy would; the operator's probe
  and the traffic generator go through it.
- **Prometheus**: every running pod is a file-SD scrape target of the given
  :class:`~gelu_lab.sandbox.prometheus.PrometheusServer`, labelled ``namespace``,
  ``rollout``, ``arm`` and ``pod``.

Starting and stopping servers is blocking work (about 1.5 s to start, up to 3 s to stop), done
in a thread pool so that many pods start at once and the event loop (which may serve the
emulator itself) never waits. :meth:`PodRunner.stop` stops every server, whatever state it is
in; the process registry of :mod:`gelu_lab.sandbox.processes` is the last safety net.

Simplifications: the container's ``args`` other than ``--model-repository`` are not passed on
(the launcher sets the ports, ``--metrics-config=summary_latencies=true`` and loads every model
at startup, like ``--model-control-mode=none``); probes run every tick instead of every
``periodSeconds``; ``minReadySeconds`` and ``paused`` are ignored; a crashed server is replaced
by a new pod rather than restarted in place.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import hashlib
import itertools
import json
import logging
import math
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Final, Literal, Self

import aiohttp

from gelu_lab.sandbox.api import ApiError, JsonObject, KubeApi, namespaced_path
from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_lab.sandbox.triton import LOOPBACK, TritonInstall, TritonServer, find_triton
from gelu_rollout.resources.names import LABEL_ARM, LABEL_MANAGED_BY, LABEL_ROLLOUT, MANAGED_BY
from gelu_rollout.resources.workloads import CONTAINER_NAME, METRICS_PORT, MODEL_ROOT

logger = logging.getLogger(__name__)

ANNOTATION_HTTP: Final = "sandbox.gelu.dev/http"
ANNOTATION_METRICS: Final = "sandbox.gelu.dev/metrics"
ANNOTATION_PID: Final = "sandbox.gelu.dev/pid"
LABEL_TEMPLATE_HASH: Final = "pod-template-hash"
MANAGED_SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

DEFAULT_POLL_INTERVAL_S: Final = 0.5
DEFAULT_MAX_WORKERS: Final = 8
BACKOFF_FIRST_S: Final = 1.0
BACKOFF_MAX_S: Final = 30.0
PROBE_TIMEOUT_S: Final = 1.0
_READY_PATH: Final = "/v2/health/ready"

PodPhase = Literal["Pending", "Running", "Terminating"]


def _deployments(namespace: str | None, name: str = "") -> str:
    return namespaced_path("/apis/apps/v1", "deployments", namespace, name)


def _pods(namespace: str | None, name: str = "") -> str:
    return namespaced_path("/api/v1", "pods", namespace, name)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# -- pure helpers: templates, repositories, selectors, status ----------------------------


class PodSpecError(ValueError):
    """A pod template the sandbox cannot run (a missing ConfigMap or key, an unsafe path)."""


def template_hash(template: Mapping[str, Any]) -> str:
    """A short, stable hash of a pod template (the ``pod-template-hash`` label)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def main_container(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Triton container of a pod template: the one named ``tritonserver``, else the first."""
    containers = [c for c in _list(_dict(template.get("spec")).get("containers")) if _dict(c)]
    if not containers:
        raise PodSpecError("the pod template has no containers")
    named = [c for c in containers if c.get("name") == CONTAINER_NAME]
    return dict(named[0] if named else containers[0])


def model_root(container: Mapping[str, Any]) -> PurePosixPath:
    """The container's ``--model-repository`` (``/models`` unless its args say otherwise)."""
    for arg in [*_list(container.get("command")), *_list(container.get("args"))]:
        if isinstance(arg, str) and arg.startswith("--model-repository="):
            return PurePosixPath(arg.split("=", 1)[1])
    return PurePosixPath(MODEL_ROOT)


def _safe_relative(path: str, what: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if not path or relative.is_absolute() or ".." in relative.parts:
        raise PodSpecError(f"{what} must be a relative path without '..', got {path!r}")
    return relative


def config_map_names(template: Mapping[str, Any]) -> list[str]:
    """The ConfigMaps the Triton container mounts under its model repository, sorted."""
    container = main_container(template)
    root = model_root(container)
    volumes = {
        v.get("name"): v for v in _list(_dict(template.get("spec")).get("volumes")) if _dict(v)
    }
    names = set()
    for mount in _list(container.get("volumeMounts")):
        mount_path = PurePosixPath(str(_dict(mount).get("mountPath", "")))
        if mount_path != root and root not in mount_path.parents:
            continue
        config_map = _dict(_dict(volumes.get(_dict(mount).get("name"))).get("configMap"))
        if config_map.get("name"):
            names.add(str(config_map["name"]))
    return sorted(names)


def _config_map_files(
    volume: Mapping[str, Any], config_map: Mapping[str, Any] | None
) -> dict[PurePosixPath, bytes]:
    """The files a ConfigMap volume shows (path inside the volume -> content)."""
    source = _dict(volume.get("configMap"))
    name, optional = source.get("name"), bool(source.get("optional"))
    if config_map is None:
        if optional:
            return {}
        raise PodSpecError(f'configmap "{name}" not found')
    contents: dict[str, bytes] = {
        str(key): str(value).encode() for key, value in _dict(config_map.get("data")).items()
    }
    for key, value in _dict(config_map.get("binaryData")).items():
        contents[str(key)] = base64.b64decode(str(value))
    items = _list(source.get("items"))
    if not items:
        return {_safe_relative(key, "a ConfigMap key"): text for key, text in contents.items()}
    files = {}
    for item in items:
        key, path = str(_dict(item).get("key", "")), str(_dict(item).get("path", ""))
        if key not in contents:
            if optional:
                continue
            raise PodSpecError(f'configmap "{name}" has no key "{key}"')
        files[_safe_relative(path, "a ConfigMap item path")] = contents[key]
    return files


def repository_files(
    template: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, Any] | None]
) -> dict[PurePosixPath, bytes]:
    """The model repository a pod template serves: path under the repository root -> content.

    Only the ConfigMap volumes the Triton container mounts at or under its
    ``--model-repository`` count (``emptyDir`` and other volumes hold no models); ``items``
    put keys at their paths, a ``subPath`` mount takes one path of its volume.
    ``config_maps`` holds the ConfigMap objects by name (None: not found).
    """
    container = main_container(template)
    root = model_root(container)
    volumes = {
        v.get("name"): v for v in _list(_dict(template.get("spec")).get("volumes")) if _dict(v)
    }
    files: dict[PurePosixPath, bytes] = {}
    for mount in map(_dict, _list(container.get("volumeMounts"))):
        mount_path = PurePosixPath(str(mount.get("mountPath", "")))
        if mount_path != root and root not in mount_path.parents:
            continue
        volume = _dict(volumes.get(mount.get("name")))
        if "configMap" not in volume:
            continue
        name = str(_dict(volume["configMap"]).get("name", ""))
        shown = _config_map_files(volume, config_maps.get(name))
        at = mount_path.relative_to(root)
        sub_path = str(mount.get("subPath") or "")
        if sub_path:
            wanted = _safe_relative(sub_path, "a subPath")
            if wanted in shown:
                files[at] = shown[wanted]
            continue
        for path, content in shown.items():
            files[at / path] = content
    return files


def write_files(root: Path, files: Mapping[PurePosixPath, bytes]) -> Path:
    """Write ``files`` under ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a Service's ``spec.selector`` (equality on every key) selects ``labels``.

    A Service without a selector selects no pods (its endpoints are managed by hand).
    """
    if not selector:
        return False
    return all(labels.get(key) == value for key, value in selector.items())


def _int_or_percent(value: object, replicas: int, *, round_up: bool, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.endswith("%") and value[:-1].strip().isdigit():
        share = replicas * int(value[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    return default


def rolling_limits(spec: Mapping[str, Any], replicas: int) -> tuple[int, int] | None:
    """(maxSurge, maxUnavailable) of a Deployment; None for the ``Recreate`` strategy.

    Defaults are Kubernetes' (25 % each; surge rounds up, unavailability down); when both come
    out 0 the surge is 1, as the API server's validation guarantees.
    """
    strategy = _dict(spec.get("strategy"))
    if strategy.get("type") == "Recreate":
        return None
    rolling = _dict(strategy.get("rollingUpdate"))
    surge = _int_or_percent(
        rolling.get("maxSurge", "25%"), replicas, round_up=True, default=math.ceil(replicas / 4)
    )
    unavailable = _int_or_percent(
        rolling.get("maxUnavailable", "25%"), replicas, round_up=False, default=replicas // 4
    )
    if surge == 0 and unavailable == 0:
        surge = 1
    return surge, unavailable


def _replicas(spec: Mapping[str, Any]) -> int:
    """``spec.replicas`` of a Deployment (1 when unset, as the API server defaults it)."""
    value = spec.get("replicas")
    return max(value, 0) if isinstance(value, int) and not isinstance(value, bool) else 1


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PodCounts:
    """The pods of one Deployment, as its status counts them (terminating pods not counted)."""

    total: int = 0
    updated: int = 0
    ready: int = 0


def _condition(
    live: Mapping[str, Any], type_: str, status: bool, reason: str, message: str, now: str
) -> JsonObject:
    """A Deployment condition; its times stay as they were while its status (and reason) do."""
    value = "True" if status else "False"
    previous: Mapping[str, Any] = next(
        (_dict(c) for c in _list(live.get("conditions")) if _dict(c).get("type") == type_), {}
    )
    same_status = previous.get("status") == value
    same_reason = same_status and previous.get("reason") == reason
    return {
        "type": type_,
        "status": value,
        "lastUpdateTime": previous.get("lastUpdateTime", now) if same_reason else now,
        "lastTransitionTime": previous.get("lastTransitionTime", now) if same_status else now,
        "reason": reason,
        "message": message,
    }


def deployment_status(
    deployment: Mapping[str, Any],
    counts: PodCounts,
    *,
    max_unavailable: int,
    now: str | None = None,
) -> JsonObject:
    """The status the deployment controller would report for ``counts`` of pods.

    Conditions keep their timestamps while they hold, so an unchanged Deployment gets an
    unchanged status (and no write).
    """
    now = now or _now()
    meta, spec = _meta(deployment), _dict(deployment.get("spec"))
    live = _dict(deployment.get("status"))
    replicas = _replicas(spec)
    name = str(meta.get("name"))
    available = counts.ready >= replicas - max_unavailable
    complete = counts.updated == replicas and counts.total == replicas and counts.ready == replicas
    return {
        "observedGeneration": int(meta.get("generation", 1)),
        "replicas": counts.total,
        "updatedReplicas": counts.updated,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.ready,
        "unavailableReplicas": max(replicas - counts.ready, 0),
        "conditions": [
            _condition(
                live,
                "Available",
                available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                now,
            ),
            _condition(
                live,
                "Progressing",
                True,
                "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                f'Deployment "{name}" has successfully progressed.'
                if complete
                else f'Deployment "{name}" is progressing.',
                now,
            ),
        ],
    }


# -- pods ----------------------------------------------------------------------------------


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


@dataclass(eq=False)
class _Pod:
    namespace: str
    deployment: str
    deployment_uid: str
    name: str
    hash: str
    index: int
    labels: dict[str, str]
    directory: Path
    server: TritonServer
    probe: _ReadinessProbe
    state: Literal["starting", "running", "stopping"] = "starting"
    ready: bool = False
    failures: int = 0
    has_object: bool = False
    abandoned: bool = False  # stop it as soon as it has started
    lock: threading.Lock = field(default_factory=threading.Lock)
    start_future: asyncio.Future[None] | None = None
    stop_future: asyncio.Future[None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.deployment)

    def info(self) -> PodInfo:
        running = self.state == "running"
        phase: PodPhase = (
            "Running" if running else "Pending" if self.state == "starting" else "Terminating"
        )
        return PodInfo(
            namespace=self.namespace,
            name=self.name,
            deployment=self.deployment,
            template_hash=self.hash,
            labels=dict(self.labels),
            phase=phase,
            ready=running and self.ready,
            http_address=self.server.http_url if running else None,
            metrics_address=self.server.metrics_address if running else None,
            pid=self.server.pid if running else None,
        )


@dataclass(frozen=True)
class _ReadinessProbe:
    path: str = _READY_PATH
    port: object = "http"
    timeout_s: float = PROBE_TIMEOUT_S
    failure_threshold: int = 3

    @staticmethod
    def of(container: Mapping[str, Any]) -> _ReadinessProbe:
        """The container's HTTP readiness probe (Triton's ready endpoint when it has none)."""
        probe = _dict(container.get("readinessProbe"))
        http_get = _dict(probe.get("httpGet"))
        timeout, threshold = probe.get("timeoutSeconds"), probe.get("failureThreshold")
        return _ReadinessProbe(
            path=str(http_get.get("path") or _READY_PATH),
            port=http_get.get("port", "http"),
            timeout_s=float(timeout)
            if isinstance(timeout, int) and timeout > 0
            else PROBE_TIMEOUT_S,
            failure_threshold=threshold if isinstance(threshold, int) and threshold > 0 else 3,
        )


def _process_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, does not)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class _Backoff:
    until: float = 0.0
    delay: float = BACKOFF_FIRST_S


class PodRunner:
    """Keeps the pods of the operator's Deployments running as ``tritonserver`` processes.

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`::

        async with PodRunner(emulator.url, prometheus=prometheus) as runner:
            ...
            runner.service_endpoints("default", "gelu-tanh")  # ["127.0.0.1:40123", ...]

    ``namespace`` limits it to one namespace (all of them by default). ``log_dir`` keeps each
    server's log as ``<namespace>_<pod>.log`` after the pod is gone; without it, a pod's log
    lives in its temporary folder and goes with it.
    """

    def __init__(
        self,
        api_url: str,
        *,
        prometheus: PrometheusServer | None = None,
        log_dir: Path | None = None,
        namespace: str | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        max_workers: int = DEFAULT_MAX_WORKERS,
        install: TritonInstall | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.api = KubeApi(api_url)
        self.prometheus = prometheus
        self.log_dir = log_dir
        self.namespace = namespace
        self.poll_interval_s = poll_interval_s
        self.max_workers = max_workers
        self.install = install
        self.ready_timeout_s = ready_timeout_s
        self._pods: dict[tuple[str, str], _Pod] = {}  # (namespace, pod name) -> pod
        self._counters: dict[tuple[str, str, str], itertools.count[int]] = {}
        self._backoff: dict[tuple[str, str], _Backoff] = {}
        self._services: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        self._snapshot: tuple[tuple[PodInfo, ...], dict[tuple[str, str], Any]] = ((), {})
        self._targets: list[ScrapeTarget] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._workdir: Path | None = None
        self._task: asyncio.Task[None] | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._ticks = 0
        self._tick_done = asyncio.Condition()
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Self:
        """Check the Triton install, then start reconciling in the background."""
        if self._task is not None:
            raise RuntimeError("the pod runner is already running")
        loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix="pod-runner"
        )
        try:
            if self.install is None:
                self.install = await loop.run_in_executor(self._executor, find_triton)
            self._workdir = Path(tempfile.mkdtemp(prefix="gelu-pods-"))
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._task = asyncio.create_task(self._run(), name="pod-runner")
        return self

    async def stop(self) -> None:
        """Stop reconciling, stop every server, delete the Pod objects, clear the targets."""
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._stop_everything()
        finally:
            self._stop_everything_now()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            await self.api.close()
            if self._probe_session is not None:
                await self._probe_session.close()
                self._probe_session = None
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def sync(self, timeout_s: float = 10.0) -> None:
        """Wait until a full pass over the API that began after this call has finished."""
        async with self._tick_done:
            wanted = self._ticks + 2  # the pass under way may have read the API already
            self._wake.set()
            await asyncio.wait_for(
                self._tick_done.wait_for(lambda: self._ticks >= wanted), timeout_s
            )

    # -- what tests, the operator and the traffic generator read --------------------------

    def pods(self) -> list[PodInfo]:
        """Every pod the runner keeps (starting, running and terminating), by name."""
        return list(self._snapshot[0])

    def service_pods(self, namespace: str, service: str) -> list[PodInfo]:
        """The ready pods the Service's selector matches, by name (none for an unknown Service).

        Safe to call from any thread; the Services are read from the API every poll, so a new
        Service or a changed selector shows here within ``poll_interval_s``.
        """
        pods, services = self._snapshot
        spec = services.get((namespace, service))
        if spec is None:
            return []
        selector = _dict(_dict(spec).get("selector"))
        return [
            pod
            for pod in pods
            if pod.namespace == namespace and pod.ready and selector_matches(selector, pod.labels)
        ]

    def service_endpoints(self, namespace: str, service: str) -> list[str]:
        """HTTP ``host:port`` of the ready pods behind a Service (the cluster DNS stand-in)."""
        return [
            pod.http_address for pod in self.service_pods(namespace, service) if pod.http_address
        ]

    @property
    def workdir(self) -> Path | None:
        """The folder of the pods' model repositories while running (every server's
        ``--model-repository`` is under it); None before start and after stop."""
        return self._workdir

    @property
    def ticks(self) -> int:
        """How many passes over the API have finished."""
        return self._ticks

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._tick()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.last_error != str(error):
                    logger.warning("pod runner pass failed: %s", error)
                self.last_error = str(error)
            async with self._tick_done:
                self._ticks += 1
                self._tick_done.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def _tick(self) -> None:
        await self._collect_finished()
        # Pods before Deployments: a Deployment deleted in between (its Pod objects collected
        # with it) is then seen gone, rather than seen short of the pods it just lost.
        with_objects = {key for key, pod in self._pods.items() if pod.has_object}
        pod_objects = await self.api.list(_pods(self.namespace), label_selector=MANAGED_SELECTOR)
        deployments = await self.api.list(
            _deployments(self.namespace), label_selector=MANAGED_SELECTOR
        )
        services = await self.api.list(namespaced_path("/api/v1", "services", self.namespace))
        self._services = {
            (str(_meta(s).get("namespace")), str(_meta(s).get("name"))): _dict(s.get("spec"))
            for s in services
        }
        # A Pod object deleted by someone else: its server goes, the Deployment gets a new one.
        existing = {
            (str(_meta(p).get("namespace")), str(_meta(p).get("name"))) for p in pod_objects
        }
        for key in with_objects - existing:
            pod = self._pods.get(key)
            if pod is not None and pod.state != "stopping":
                logger.info("pod %s/%s was deleted: stopping its server", *key)
                pod.has_object = False
                await self._stop_pod(pod)
        await self._probe_all()
        wanted: set[tuple[str, str]] = set()
        for deployment in deployments:
            meta = _meta(deployment)
            if meta.get("deletionTimestamp"):
                continue
            key = (str(meta.get("namespace")), str(meta.get("name")))
            wanted.add(key)
            try:
                await self._reconcile(deployment)
            except (PodSpecError, ApiError) as error:
                logger.warning("deployment %s/%s: %s", *key, error)
        for pod in list(self._pods.values()):
            if pod.key not in wanted and pod.state != "stopping":
                await self._stop_pod(pod)
        for key in list(self._backoff):
            if key not in wanted:
                del self._backoff[key]
        self._sync_targets()
        self._publish()
        for deployment in deployments:
            if not _meta(deployment).get("deletionTimestamp"):
                await self._report(deployment)

    def _publish(self) -> None:
        pods = tuple(
            sorted((p.info() for p in self._pods.values()), key=lambda p: (p.namespace, p.name))
        )
        self._snapshot = (pods, dict(self._services))

    # -- one Deployment --------------------------------------------------------------------

    def _of(self, key: tuple[str, str]) -> list[_Pod]:
        return [p for p in self._pods.values() if p.key == key and p.state != "stopping"]

    async def _reconcile(self, deployment: Mapping[str, Any]) -> None:
        meta, spec = _meta(deployment), _dict(deployment.get("spec"))
        key = (str(meta.get("namespace")), str(meta.get("name")))
        replicas = _replicas(spec)
        template = _dict(spec.get("template"))
        current = template_hash(template)
        pods = self._of(key)
        new = [p for p in pods if p.hash == current]
        old = [p for p in pods if p.hash != current]

        def victims(candidates: Iterable[_Pod]) -> list[_Pod]:
            # Starting pods go first, then unready ones, then the newest.
            return sorted(candidates, key=lambda p: (p.state == "running", p.ready, -p.index))

        for pod in victims(new)[: max(len(new) - replicas, 0)]:
            await self._stop_pod(pod)
        new = [p for p in new if p.state != "stopping"]
        new_ready = sum(1 for p in new if p.state == "running" and p.ready)
        limits = rolling_limits(spec, replicas)
        if limits is None:  # Recreate
            for pod in old:
                await self._stop_pod(pod)
            surge = replicas
        else:
            surge, unavailable = limits
            old_ready = [p for p in old if p.state == "running" and p.ready]
            for pod in old:
                if pod not in old_ready:
                    await self._stop_pod(pod)
            may_stop = len(old_ready) + new_ready - (replicas - unavailable)
            for pod in victims(old_ready)[: max(may_stop, 0)]:
                await self._stop_pod(pod)
        total = len(self._of(key))
        missing = replicas - len(new)
        room = replicas + surge - total
        count = min(missing, room)
        backoff = self._backoff.get(key)
        if count > 0 and (backoff is None or asyncio.get_running_loop().time() >= backoff.until):
            await self._start_pods(deployment, template, current, count)

    async def _start_pods(
        self, deployment: Mapping[str, Any], template: Mapping[str, Any], hash_: str, count: int
    ) -> None:
        meta = _meta(deployment)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        config_maps = {
            cm: await self.api.get(namespaced_path("/api/v1", "configmaps", namespace, cm))
            for cm in config_map_names(template)
        }
        try:
            files = repository_files(template, config_maps)
        except PodSpecError:
            self._fail((namespace, name))
            raise
        container = main_container(template)
        probe = _ReadinessProbe.of(container)
        labels = {str(k): str(v) for k, v in _dict(_meta(template).get("labels")).items()}
        labels[LABEL_TEMPLATE_HASH] = hash_
        counter = self._counters.setdefault((namespace, name, hash_), itertools.count())
        assert self._workdir is not None
        for _ in range(count):
            index = next(counter)
            pod_name = f"{name}-{hash_}-{index}"
            directory = self._workdir / namespace / pod_name
            log_path = (
                self.log_dir / f"{namespace}_{pod_name}.log" if self.log_dir is not None else None
            )
            pod = _Pod(
                namespace=namespace,
                deployment=name,
                deployment_uid=str(meta.get("uid", "")),
                name=pod_name,
                hash=hash_,
                index=index,
                labels=dict(labels),
                directory=directory,
                server=TritonServer(
                    directory / "models",
                    install=self.install,
                    log_path=log_path if log_path is not None else directory / "tritonserver.log",
                    ready_timeout_s=self.ready_timeout_s,
                ),
                probe=probe,
            )
            await self._create_object(pod, template)
            self._pods[(namespace, pod_name)] = pod
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, _start_server, pod, files
            )
            pod.start_future = future
            future.add_done_callback(lambda _: self._wake.set())
            logger.info("starting pod %s/%s", namespace, pod_name)

    def _fail(self, key: tuple[str, str]) -> None:
        backoff = self._backoff.setdefault(key, _Backoff(delay=BACKOFF_FIRST_S / 2))
        backoff.delay = min(backoff.delay * 2, BACKOFF_MAX_S)
        backoff.until = asyncio.get_running_loop().time() + backoff.delay

    async def _collect_finished(self) -> None:
        for pod in list(self._pods.values()):
            if pod.state == "starting" and pod.start_future is not None and pod.start_future.done():
                await self._started(pod)
            elif pod.state == "stopping" and pod.stop_future is not None and pod.stop_future.done():
                del self._pods[(pod.namespace, pod.name)]
                shutil.rmtree(pod.directory, ignore_errors=True)

    async def _started(self, pod: _Pod) -> None:
        assert pod.start_future is not None
        error = pod.start_future.exception()
        if error is not None or pod.abandoned:
            if error is not None:
                logger.warning("pod %s/%s failed to start: %s", pod.namespace, pod.name, error)
                self._fail(pod.key)
            await self._stop_pod(pod)
            return
        self._backoff.pop(pod.key, None)
        pod.state, pod.ready, pod.failures = "running", True, 0
        self._publish()
        logger.info(
            "pod %s/%s is ready: http %s, metrics %s",
            pod.namespace,
            pod.name,
            pod.server.http_url,
            pod.server.metrics_address,
        )
        if pod.has_object:
            annotations = {
                ANNOTATION_HTTP: pod.server.http_url,
                ANNOTATION_METRICS: pod.server.metrics_address,
                ANNOTATION_PID: str(pod.server.pid),
            }
            await self._quietly(
                f"annotating pod {pod.namespace}/{pod.name}",
                self.api.patch(
                    _pods(pod.namespace, pod.name), {"metadata": {"annotations": annotations}}
                ),
            )
            await self._patch_pod_status(pod)

    async def _stop_pod(self, pod: _Pod) -> None:
        """Take a pod out of service at once; its server stops in the background."""
        if pod.state == "stopping":
            return
        was_starting = pod.state == "starting"
        pod.state, pod.ready = "stopping", False
        self._publish()  # out of the Services' endpoints before anything else
        logger.info("stopping pod %s/%s", pod.namespace, pod.name)
        loop = asyncio.get_running_loop()
        if was_starting and pod.start_future is not None and not pod.start_future.done():
            pod.abandoned = True
            start = pod.start_future

            async def after_start() -> None:
                with contextlib.suppress(Exception):
                    await start
                await loop.run_in_executor(self._executor, _stop_server, pod)

            pod.stop_future = asyncio.ensure_future(after_start())
        else:
            pod.stop_future = loop.run_in_executor(self._executor, _stop_server, pod)
        pod.stop_future.add_done_callback(lambda _: self._wake.set())
        if pod.has_object:
            pod.has_object = False
            await self._quietly(
                f"deleting pod {pod.namespace}/{pod.name}",
                self.api.delete(_pods(pod.namespace, pod.name)),
            )

    async def _quietly(self, what: str, call: Awaitable[object]) -> None:
        """Make an API call whose failure must not stop the pass (logged, retried never)."""
        try:
            await call
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            logger.warning("%s: %s", what, error)

    # -- Pod objects and readiness ---------------------------------------------------------

    async def _create_object(self, pod: _Pod, template: Mapping[str, Any]) -> None:
        template_meta = _meta(template)
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "labels": dict(pod.labels),
                "annotations": dict(_dict(template_meta.get("annotations"))),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": pod.deployment,
                        "uid": pod.deployment_uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**_dict(template.get("spec")), "nodeName": "sandbox"},
        }
        try:
            await self.api.create(_pods(pod.namespace), body)
        except ApiError as error:
            if error.status != 409:
                raise
            # A Pod object of that name that no server backs (a runner before this one).
            await self.api.delete(_pods(pod.namespace, pod.name))
            await self.api.create(_pods(pod.namespace), body)
        pod.has_object = True
        await self._patch_pod_status(pod)

    async def _patch_pod_status(self, pod: _Pod) -> None:
        running = pod.state == "running"
        now = _now()
        ready = "True" if running and pod.ready else "False"
        status: JsonObject = {
            "phase": "Running" if running else "Pending",
            "hostIP": LOOPBACK,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
        }
        if running:
            status.update(
                podIP=LOOPBACK,
                podIPs=[{"ip": LOOPBACK}],
                containerStatuses=[
                    {
                        "name": CONTAINER_NAME,
                        "ready": pod.ready,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {}},
                    }
                ],
            )
        await self._quietly(
            f"status of pod {pod.namespace}/{pod.name}",
            self.api.patch(_pods(pod.namespace, pod.name) + "/status", {"status": status}),
        )

    async def _probe_all(self) -> None:
        running = [p for p in self._pods.values() if p.state == "running"]
        if not running:
            return
        if self._probe_session is None:
            self._probe_session = aiohttp.ClientSession()
        session = self._probe_session
        results = await asyncio.gather(*(self._probe(session, pod) for pod in running))
        for pod, ok in zip(running, results, strict=True):
            if pod.state != "running":
                continue
            if not _process_alive(pod.server.pid):
                logger.warning("pod %s/%s: the server exited", pod.namespace, pod.name)
                self._fail(pod.key)
                await self._stop_pod(pod)
                continue
            pod.failures = 0 if ok else pod.failures + 1
            ready = ok or (pod.ready and pod.failures < pod.probe.failure_threshold)
            if ready != pod.ready:
                pod.ready = ready
                logger.info("pod %s/%s ready: %s", pod.namespace, pod.name, ready)
                if pod.has_object:
                    await self._patch_pod_status(pod)

    async def _probe(self, session: aiohttp.ClientSession, pod: _Pod) -> bool:
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

    # -- Deployment status and scrape targets ----------------------------------------------

    async def _report(self, deployment: Mapping[str, Any]) -> None:
        meta, spec = _meta(deployment), _dict(deployment.get("spec"))
        key = (str(meta.get("namespace")), str(meta.get("name")))
        current = template_hash(_dict(spec.get("template")))
        pods = self._of(key)
        counts = PodCounts(
            total=len(pods),
            updated=sum(1 for p in pods if p.hash == current),
            ready=sum(1 for p in pods if p.state == "running" and p.ready),
        )
        replicas = _replicas(spec)
        limits = rolling_limits(spec, replicas)
        status = deployment_status(
            deployment, counts, max_unavailable=0 if limits is None else limits[1]
        )
        if status != deployment.get("status"):
            await self.api.patch(_deployments(*key) + "/status", {"status": status})

    def _sync_targets(self) -> None:
        if self.prometheus is None or not self.prometheus.running:
            return
        targets = []
        for pod in sorted(self._pods.values(), key=lambda p: (p.namespace, p.name)):
            if pod.state != "running":
                continue
            labels = {"namespace": pod.namespace, "pod": pod.name}
            for target_label, pod_label in (("rollout", LABEL_ROLLOUT), ("arm", LABEL_ARM)):
                if pod.labels.get(pod_label):
                    labels[target_label] = pod.labels[pod_label]
            targets.append(ScrapeTarget(pod.server.metrics_address, labels))
        if targets != self._targets:
            self.prometheus.set_targets(targets)
            self._targets = targets

    # -- shutdown --------------------------------------------------------------------------

    async def _stop_everything(self) -> None:
        for pod in list(self._pods.values()):
            await self._stop_pod(pod)
        futures = [p.stop_future for p in self._pods.values() if p.stop_future is not None]
        await asyncio.gather(*futures, return_exceptions=True)
        await self._collect_finished()
        self._sync_targets()
        self._publish()

    def _stop_everything_now(self) -> None:
        """The last resort (a cancelled or failed stop): stop what is left, here and now."""
        for pod in list(self._pods.values()):
            with pod.lock:
                pod.abandoned = True
            _stop_server(pod)
            shutil.rmtree(pod.directory, ignore_errors=True)
        self._pods.clear()
        if self.prometheus is not None and self.prometheus.running and self._targets:
            with contextlib.suppress(OSError):
                self.prometheus.set_targets([])
            self._targets = []
        self._publish()


def _start_server(pod: _Pod, files: Mapping[PurePosixPath, bytes]) -> None:
    """In a worker thread: lay the repository out and start the server (stopped if abandoned)."""
    write_files(pod.directory / "models", files)
    pod.server.start()
    with pod.lock:
        abandoned = pod.abandoned
    if abandoned:
        pod.server.stop()


def _stop_server(pod: _Pod) -> None:
    with pod.lock:
        pod.abandoned = True
    pod.server.stop()


__all__ = [
    "ANNOTATION_HTTP",
    "ANNOTATION_METRICS",
    "ANNOTATION_PID",
    "ApiError",
    "KubeApi",
    "PodCounts",
    "PodInfo",
    "PodRunner",
    "PodSpecError",
    "config_map_names",
    "deployment_status",
    "repository_files",
    "rolling_limits",
    "selector_matches",
    "template_hash",
]
