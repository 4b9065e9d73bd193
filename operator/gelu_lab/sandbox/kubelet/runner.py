"""The pod runner: the loop that reads the API and keeps each Deployment's pods running.

The decisions are the pure functions of the modules beside it; this module holds the state
(the pods by name, the backoffs, the last Services), makes the API calls and schedules the
servers' starts and stops on its thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import itertools
import logging
import shutil
from collections.abc import Awaitable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from gelu_lab.sandbox.kubelet.containers import env_references, server_setup
from gelu_lab.sandbox.kubelet.deployments import (
    LABEL_TEMPLATE_HASH,
    PodCounts,
    deployment_status,
    desired_replicas,
    plan_rollout,
    rolling_limits,
    template_hash,
)
from gelu_lab.sandbox.kubelet.discovery import TargetFile, scrape_targets
from gelu_lab.sandbox.kubelet.fields import ObjectKey, key_of, mapping, metadata
from gelu_lab.sandbox.kubelet.lifecycle import (
    Backoff,
    Pod,
    PodInfo,
    ReadinessProbe,
    next_backoff,
    probe,
    process_alive,
    readiness,
    start_server,
    stop_server,
)
from gelu_lab.sandbox.kubelet.objects import (
    ANNOTATION_HTTP,
    crashed_status,
    pod_object,
    pod_status,
    server_annotations,
)
from gelu_lab.sandbox.kubelet.services import ServiceSpecs, service_pods, service_specs
from gelu_lab.sandbox.kubelet.volumes import (
    PodSpecError,
    config_map_names,
    main_container,
    repository_files,
)
from gelu_lab.sandbox.login import emulator_login
from gelu_lab.sandbox.processes import remove_folder, temporary_folder
from gelu_lab.sandbox.prometheus import PrometheusServer
from gelu_lab.sandbox.triton import TritonInstall, TritonServer, find_triton
from gelu_rollout.adapters.kube import KubeClient, KubeError
from gelu_rollout.adapters.kube.kinds import CONFIG_MAP, DEPLOYMENT, POD, SERVICE, Kind
from gelu_rollout.resources.names import LABEL_MANAGED_BY, MANAGED_BY

logger = logging.getLogger(__name__)

MANAGED_SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
SECRET: Final = Kind("v1", "Secret", "secrets")
"""Read for the containers' env (the operator itself never reads a Secret)."""
FIELD_MANAGER: Final = "sandbox-kubelet"  # its writes are the kubelet's, not the operator's
DEFAULT_POLL_INTERVAL_S: Final = 0.5
DEFAULT_MAX_WORKERS: Final = 8


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        volumes_root: Path | None = None,
    ) -> None:
        self.api = KubeClient(emulator_login(api_url), field_manager=FIELD_MANAGER)
        self.log_dir = log_dir
        self.namespace = namespace
        self.poll_interval_s = poll_interval_s
        self.max_workers = max_workers
        self.install = install
        self.ready_timeout_s = ready_timeout_s
        self._pods: dict[ObjectKey, Pod] = {}  # by (namespace, pod name)
        self._counters: dict[tuple[str, str, str], itertools.count[int]] = {}
        self._backoff: dict[ObjectKey, Backoff] = {}  # by Deployment
        self._services: ServiceSpecs = {}
        # The crash-looping Pod object each Deployment's last failed start left, and how many
        # times in a row it failed.
        self._crashed: dict[ObjectKey, str] = {}
        self._restarts: dict[ObjectKey, int] = {}
        self._volumes_root = volumes_root
        # What other threads read: replaced whole, never changed in place.
        self._snapshot: tuple[tuple[PodInfo, ...], ServiceSpecs] = ((), {})
        self._targets = TargetFile(prometheus)
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
            self._workdir = temporary_folder("gelu-pods-")
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
                remove_folder(self._workdir)
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
        pods, specs = self._snapshot
        return service_pods(pods, specs, namespace, service)

    def service_endpoints(self, namespace: str, service: str) -> list[str]:
        """HTTP ``host:port`` of the ready pods behind a Service (the cluster DNS stand-in)."""
        return [
            pod.http_address for pod in self.service_pods(namespace, service) if pod.http_address
        ]

    @staticmethod
    def pod_address(pod: Mapping[str, Any]) -> str | None:
        """HTTP ``host:port`` of one Pod object's server (the pod IP stand-in)."""
        address = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HTTP)
        return str(address) if address else None

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
        pod_objects = await self.api.list(POD, self.namespace, MANAGED_SELECTOR)
        deployments = await self.api.list(DEPLOYMENT, self.namespace, MANAGED_SELECTOR)
        self._services = service_specs(await self.api.list(SERVICE, self.namespace))
        # A Pod object deleted by someone else: its server goes, the Deployment gets a new one.
        for key in with_objects - {key_of(p) for p in pod_objects}:
            pod = self._pods.get(key)
            if pod is not None and pod.state != "stopping":
                logger.info("pod %s/%s was deleted: stopping its server", *key)
                pod.has_object = False
                await self._stop_pod(pod)
        await self._probe_all()
        live = [d for d in deployments if not metadata(d).get("deletionTimestamp")]
        for deployment in live:
            try:
                await self._reconcile(deployment)
            except (PodSpecError, KubeError) as error:
                logger.warning("deployment %s/%s: %s", *key_of(deployment), error)
        wanted = {key_of(d) for d in live}
        for pod in list(self._pods.values()):
            if pod.key not in wanted and pod.state != "stopping":
                await self._stop_pod(pod)
        self._backoff = {key: b for key, b in self._backoff.items() if key in wanted}
        self._targets.publish(scrape_targets(p.info() for p in self._pods.values()))
        self._publish()
        for deployment in live:
            await self._report(deployment)

    def _publish(self) -> None:
        pods = tuple(
            sorted((p.info() for p in self._pods.values()), key=lambda p: (p.namespace, p.name))
        )
        self._snapshot = (pods, self._services)

    # -- one Deployment --------------------------------------------------------------------

    def _of(self, key: ObjectKey) -> list[Pod]:
        return [p for p in self._pods.values() if p.key == key and p.state != "stopping"]

    async def _reconcile(self, deployment: Mapping[str, Any]) -> None:
        spec = mapping(deployment.get("spec"))
        key = key_of(deployment)
        replicas = desired_replicas(spec)
        template = mapping(spec.get("template"))
        current = template_hash(template)
        if replicas == 0:
            await self._clear_crashed(key)
        plan = plan_rollout(self._of(key), current, replicas, rolling_limits(spec, replicas))
        for pod in plan.stop:
            await self._stop_pod(pod)
        backoff = self._backoff.get(key)
        now = asyncio.get_running_loop().time()
        if plan.start > 0 and (backoff is None or backoff.allows(now)):
            await self._start_pods(deployment, template, current, plan.start)

    async def _start_pods(
        self, deployment: Mapping[str, Any], template: Mapping[str, Any], hash_: str, count: int
    ) -> None:
        namespace, name = key_of(deployment)
        await self._clear_crashed((namespace, name))
        config_maps = {
            cm: await self.api.get(CONFIG_MAP, namespace, cm) for cm in config_map_names(template)
        }
        referenced = {
            ref: await self.api.get(SECRET if ref[0] == "Secret" else CONFIG_MAP, namespace, ref[1])
            for ref in env_references(template)
        }
        try:
            files = repository_files(template, config_maps)
            setup = server_setup(
                template,
                lambda kind, obj: referenced.get((kind, obj)),
                volumes_root=self.volumes_root,
                namespace=namespace,
            )
        except PodSpecError as error:
            self._fail((namespace, name))
            await self._report_unstartable(
                deployment, template, hash_, "CreateContainerConfigError", str(error)
            )
            raise
        readiness_probe = ReadinessProbe.of(main_container(template))
        labels = {str(k): str(v) for k, v in mapping(metadata(template).get("labels")).items()}
        labels[LABEL_TEMPLATE_HASH] = hash_
        counter = self._counters.setdefault((namespace, name, hash_), itertools.count())
        assert self._workdir is not None
        for _ in range(count):
            index = next(counter)
            pod_name = f"{name}-{hash_}-{index}"
            directory = self._workdir / namespace / pod_name
            log_path = (
                self.log_dir / f"{namespace}_{pod_name}.log"
                if self.log_dir is not None
                else directory / "tritonserver.log"
            )
            pod = Pod(
                namespace=namespace,
                deployment=name,
                deployment_uid=str(metadata(deployment).get("uid", "")),
                name=pod_name,
                hash=hash_,
                index=index,
                labels=dict(labels),
                directory=directory,
                server=TritonServer(
                    setup.repository or directory / "models",
                    install=self.install,
                    log_path=log_path,
                    ready_timeout_s=self.ready_timeout_s,
                    extra_args=setup.args,
                    extra_env=setup.env,
                ),
                probe=readiness_probe,
            )
            await self._create_object(pod, template)
            self._pods[(namespace, pod_name)] = pod
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, start_server, pod, files
            )
            pod.start_future = future
            future.add_done_callback(lambda _: self._wake.set())
            logger.info("starting pod %s/%s", namespace, pod_name)

    def _fail(self, key: ObjectKey) -> None:
        now = asyncio.get_running_loop().time()
        self._backoff[key] = next_backoff(self._backoff.get(key), now)

    async def _collect_finished(self) -> None:
        for pod in list(self._pods.values()):
            if pod.state == "starting" and pod.start_future is not None and pod.start_future.done():
                await self._started(pod)
            elif pod.state == "stopping" and pod.stop_future is not None and pod.stop_future.done():
                del self._pods[(pod.namespace, pod.name)]
                shutil.rmtree(pod.directory, ignore_errors=True)

    async def _started(self, pod: Pod) -> None:
        assert pod.start_future is not None
        error = pod.start_future.exception()
        if error is not None or pod.abandoned:
            if error is not None:
                logger.warning("pod %s/%s failed to start: %s", pod.namespace, pod.name, error)
                self._fail(pod.key)
                if pod.has_object and not pod.abandoned:
                    # The Pod object stays, crash-looping, until the next attempt replaces it:
                    # what a kubelet shows, and where the operator reads why.
                    restarts = self._restarts.get(pod.key, 0)
                    self._restarts[pod.key] = restarts + 1
                    await self._quietly(
                        f"status of pod {pod.namespace}/{pod.name}",
                        self.api.merge_patch(
                            POD,
                            pod.namespace,
                            pod.name,
                            {
                                "status": crashed_status(
                                    "CrashLoopBackOff", str(error), restarts + 1, _now()
                                )
                            },
                            subresource="status",
                        ),
                    )
                    self._crashed[pod.key] = pod.name
                    pod.has_object = False
            await self._stop_pod(pod)
            return
        self._restarts.pop(pod.key, None)
        self._backoff.pop(pod.key, None)
        # As a kubelet does: ready once the container's own readiness probe passes (the server
        # being up is not enough: the probe may ask for one model version).
        if self._probe_session is None:
            self._probe_session = aiohttp.ClientSession()
        pod.state, pod.failures = "running", 0
        pod.ready = await probe(self._probe_session, pod)
        self._publish()
        logger.info(
            "pod %s/%s is running (ready: %s): http %s, metrics %s",
            pod.namespace,
            pod.name,
            pod.ready,
            pod.server.http_url,
            pod.server.metrics_address,
        )
        if pod.has_object:
            await self._quietly(
                f"annotating pod {pod.namespace}/{pod.name}",
                self.api.merge_patch(
                    POD,
                    pod.namespace,
                    pod.name,
                    {"metadata": {"annotations": server_annotations(pod)}},
                ),
            )
            await self._patch_pod_status(pod)

    async def _stop_pod(self, pod: Pod) -> None:
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
                await loop.run_in_executor(self._executor, stop_server, pod)

            pod.stop_future = asyncio.ensure_future(after_start())
        else:
            pod.stop_future = loop.run_in_executor(self._executor, stop_server, pod)
        pod.stop_future.add_done_callback(lambda _: self._wake.set())
        if pod.has_object:
            pod.has_object = False
            await self._quietly(
                f"deleting pod {pod.namespace}/{pod.name}",
                self.api.delete(POD, pod.namespace, pod.name),
            )

    async def _quietly(self, what: str, call: Awaitable[object]) -> None:
        """Make an API call whose failure must not stop the pass (logged, retried never); an
        object already gone is no failure."""
        try:
            await call
        except KubeError as error:
            if error.status != 404:
                logger.warning("%s: %s", what, error)

    # -- Pod objects and readiness ---------------------------------------------------------

    async def _clear_crashed(self, key: ObjectKey) -> None:
        """Delete the crash-looping Pod object a Deployment's last failed attempt left."""
        crashed = self._crashed.pop(key, None)
        if crashed is not None:
            await self._quietly(
                f"deleting pod {key[0]}/{crashed}", self.api.delete(POD, key[0], crashed)
            )

    async def _report_unstartable(
        self,
        deployment: Mapping[str, Any],
        template: Mapping[str, Any],
        hash_: str,
        reason: str,
        message: str,
    ) -> None:
        """A Pod object for a Deployment whose container cannot even be set up (a missing
        Secret, claim or key), waiting with ``reason``, as a kubelet would show it."""
        namespace, name = key_of(deployment)
        pod_name = f"{name}-{hash_}-unstartable"
        labels = {str(k): str(v) for k, v in mapping(metadata(template).get("labels")).items()}
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": {**labels, LABEL_TEMPLATE_HASH: hash_},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": str(metadata(deployment).get("uid", "")),
                        "controller": True,
                    }
                ],
            },
            "spec": mapping(template.get("spec")),
        }
        with contextlib.suppress(KubeError):
            await self.api.create(body)
        await self._quietly(
            f"status of pod {namespace}/{pod_name}",
            self.api.merge_patch(
                POD,
                namespace,
                pod_name,
                {"status": crashed_status(reason, message, 0, _now())},
                subresource="status",
            ),
        )
        self._crashed[(namespace, name)] = pod_name

    @property
    def volumes_root(self) -> Path:
        """Where the folders standing for PersistentVolumeClaims are: the one given, else
        ``volumes/`` in the runner's own folder (gone when it stops)."""
        if self._volumes_root is not None:
            return self._volumes_root
        if self._workdir is None:
            raise RuntimeError("the pod runner has not been started")
        return self._workdir / "volumes"

    def volume_path(self, namespace: str, claim: str) -> Path:
        """The folder that stands for PersistentVolumeClaim ``claim`` (created here)."""
        folder = self.volumes_root / namespace / claim
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def _create_object(self, pod: Pod, template: Mapping[str, Any]) -> None:
        body = pod_object(pod, template)
        try:
            await self.api.create(body)
        except KubeError as error:
            if error.status != 409:
                raise
            # A Pod object of that name that no server backs (a runner before this one).
            await self.api.delete(POD, pod.namespace, pod.name)
            await self.api.create(body)
        pod.has_object = True
        await self._patch_pod_status(pod)

    async def _patch_pod_status(self, pod: Pod) -> None:
        await self._quietly(
            f"status of pod {pod.namespace}/{pod.name}",
            self.api.merge_patch(
                POD,
                pod.namespace,
                pod.name,
                {"status": pod_status(pod, _now())},
                subresource="status",
            ),
        )

    async def _probe_all(self) -> None:
        running = [p for p in self._pods.values() if p.running]
        if not running:
            return
        if self._probe_session is None:
            self._probe_session = aiohttp.ClientSession()
        session = self._probe_session
        results = await asyncio.gather(*(probe(session, pod) for pod in running))
        for pod, ok in zip(running, results, strict=True):
            if not pod.running:
                continue
            if not process_alive(pod.server.pid):
                logger.warning("pod %s/%s: the server exited", pod.namespace, pod.name)
                self._fail(pod.key)
                await self._stop_pod(pod)
                continue
            ready, pod.failures = readiness(
                pod.ready, pod.failures, ok, pod.probe.failure_threshold
            )
            if ready != pod.ready:
                pod.ready = ready
                logger.info("pod %s/%s ready: %s", pod.namespace, pod.name, ready)
                if pod.has_object:
                    await self._patch_pod_status(pod)

    # -- Deployment status -----------------------------------------------------------------

    async def _report(self, deployment: Mapping[str, Any]) -> None:
        spec = mapping(deployment.get("spec"))
        namespace, name = key_of(deployment)
        counts = PodCounts.of(
            self._of((namespace, name)), template_hash(mapping(spec.get("template")))
        )
        limits = rolling_limits(spec, desired_replicas(spec))
        status = deployment_status(
            deployment, counts, max_unavailable=0 if limits is None else limits[1], now=_now()
        )
        if status == deployment.get("status"):
            return
        try:
            await self.api.merge_patch(
                DEPLOYMENT, namespace, name, {"status": status}, subresource="status"
            )
        except KubeError as error:
            if error.status != 404:  # deleted since the pass listed it
                raise

    # -- shutdown --------------------------------------------------------------------------

    async def _stop_everything(self) -> None:
        for pod in list(self._pods.values()):
            await self._stop_pod(pod)
        futures = [p.stop_future for p in self._pods.values() if p.stop_future is not None]
        await asyncio.gather(*futures, return_exceptions=True)
        await self._collect_finished()
        self._targets.publish(scrape_targets(p.info() for p in self._pods.values()))
        self._publish()

    def _stop_everything_now(self) -> None:
        """The last resort (a cancelled or failed stop): stop what is left, here and now."""
        for pod in list(self._pods.values()):
            with pod.lock:
                pod.abandoned = True
            stop_server(pod)
            shutil.rmtree(pod.directory, ignore_errors=True)
        self._pods.clear()
        self._targets.clear()
        self._publish()
