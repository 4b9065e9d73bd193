"""The sandbox with the operator in a process of its own, and the dependencies between it and
the operator made faulty on demand.

:func:`lab` starts what :func:`gelu_lab.sandbox.stack.sandbox` starts (the API emulator, a
real Prometheus, Triton processes as pods, the Gateway's histogram), but runs the operator as
a child process (:class:`~gelu_lab.sandbox.operator_process.OperatorProcess`) that a test can
SIGKILL and start again. The operator reaches its two dependencies through fronts the test
controls, while everything else (kubectl, the pod runner, the traffic) talks to them directly:

- :class:`ApiFront`: the emulator served on a second port, whose rules fail the operator's
  requests that match (an HTTP status for the next K of them), or hold one until the test
  lets it go (so the operator can be killed at an exact point: after it changed the world,
  before its status write reached the API);
- :class:`PrometheusFront`: a loopback proxy to the real Prometheus that can be closed (no
  listener: connection refused), opened again on the same port, made slow (past the
  operator's query timeout), or answer an empty vector or non-JSON.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import http.server
import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp.web
import yaml

from gelu_lab.sandbox.emulator import SandboxEmulator
from gelu_lab.sandbox.emulator_server import EmulatorServer, serve_emulator, write_kubeconfig
from gelu_lab.sandbox.kubelet import PodRunner
from gelu_lab.sandbox.operator_process import EndpointsPublisher, OperatorProcess
from gelu_lab.sandbox.processes import DIRECT, free_port, remove_folder, temporary_folder
from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_lab.sandbox.stack import GATEWAY_GROUP, GATEWAY_TARGET_LABELS, KubectlError
from gelu_lab.sandbox.traffic import GatewayMetrics, TrafficGenerator
from gelu_rollout.resources.crd import render_crd
from gelu_rollout.spec.resource import GROUP, PLURAL, VERSION

ROLLOUTS = f"{GROUP}/{VERSION}/{PLURAL}"
EMPTY_VECTOR = b'{"status":"success","data":{"resultType":"vector","result":[]}}'


# -- the API front --------------------------------------------------------------------------


@dataclasses.dataclass
class ApiRule:
    """Requests of the operator that match ``method`` and the ``path`` pattern (and, where
    given, ``body`` in their body) are answered ``status`` instead of reaching the emulator
    (``status`` None: they reach it), ``remaining`` times (None: until removed). ``seen`` is
    set at the first match, and ``then`` joins the rules at that very moment. ``hold``: the
    first match waits, unanswered, until :meth:`release`, then gets ``status``."""

    method: str
    path: str
    status: int | None = 503
    remaining: int | None = None
    body: str | None = None
    hold: bool = False
    then: ApiRule | None = None
    matched: int = 0
    seen: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _released: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if method != self.method or re.search(self.path, path) is None:
            return False
        return self.body is None or re.search(self.body, body.decode(errors="replace")) is not None

    def release(self) -> None:
        self._released.set()


_STATUS_PATH = re.compile(r"/gelumodelrollouts/([^/]+)/status$")
_REASONS = {409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


class ApiRequest(NamedTuple):
    """A request that reached the emulator through a front: when (``time.time()``, so it
    compares with the API's own timestamps), and what."""

    at: float
    method: str
    path: str
    query: str


class ApiFront:
    """The emulator's handler behind :attr:`rules` (see :class:`ApiRule`)."""

    def __init__(self, emulator: SandboxEmulator) -> None:
        self.emulator = emulator
        self.rules: list[ApiRule] = []
        self.answered: dict[int, int] = {}  # status -> how many faults were answered
        self.applies = 0
        """The operator's applies of Deployments that reached the emulator: each tick that
        got as far as acting makes two (one per arm)."""
        self.applied: collections.Counter[str] = collections.Counter()
        """The same, by Deployment name (``<rollout>-<arm>``)."""
        self.status_written: collections.Counter[str] = collections.Counter()
        """The operator's status writes that reached the emulator, by rollout: each tick that
        observed, decided or acted makes one (a tick that changed nothing, none)."""
        self.reached: list[ApiRequest] = []
        """Every request of the operator that reached the emulator, in order of arrival."""

    def add(self, rule: ApiRule) -> ApiRule:
        self.rules.append(rule)
        return rule

    async def __call__(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        rule = next((r for r in self.rules if r.matches(request.method, request.path, body)), None)
        if rule is None or rule.status is None:
            self.reached.append(
                ApiRequest(time.time(), request.method, request.path, request.query_string)
            )
        if rule is None:
            if request.method == "PATCH" and "/deployments/" in request.path:
                self.applies += 1
                self.applied[request.path.rsplit("/", 1)[-1]] += 1
            if request.method == "PATCH" and (written := _STATUS_PATH.search(request.path)):
                self.status_written[written.group(1)] += 1
            return await self.emulator(request)
        rule.matched += 1
        if rule.remaining is not None:
            rule.remaining -= 1
        rule.seen.set()
        if rule.then is not None:
            self.rules.append(rule.then)
            rule.then = None
        if rule.hold:
            rule.hold = False  # one request is held; the next ones are answered at once
            await rule._released.wait()
        if rule.status is None:
            return await self.emulator(request)
        self.answered[rule.status] = self.answered.get(rule.status, 0) + 1
        reason = _REASONS.get(rule.status, "InternalError")
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": reason,
            "message": f"injected fault: {reason}",
            "code": rule.status,
        }
        return aiohttp.web.json_response(status, status=rule.status)


@contextlib.asynccontextmanager
async def serve_front(front: ApiFront) -> AsyncIterator[str]:
    server = aiohttp.web.Server(front, handler_cancellation=True)
    runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{int(runner.addresses[0][1])}"
    finally:
        await runner.cleanup()


# -- the Prometheus front -------------------------------------------------------------------


class PrometheusFront:
    """A loopback proxy to ``upstream``; :attr:`mode` is ``pass``, ``slow`` (wait
    :attr:`delay_s`, then pass), ``empty`` (a successful empty vector) or ``garbage``
    (non-JSON); :meth:`close` stops listening (connection refused) and :meth:`open` listens
    again on the same port. :attr:`queries` counts the requests it was sent."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.mode = "pass"
        self.delay_s = 0.0
        self.queries = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                front.queries += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if front.mode == "slow":
                    time.sleep(front.delay_s)
                if front.mode == "empty":
                    self._send(200, EMPTY_VECTOR, "application/json")
                    return
                if front.mode == "garbage":
                    self._send(200, b"<html>502 Bad Gateway</html>", "text/html")
                    return
                request = urllib.request.Request(
                    front.upstream + self.path, data=body, method=self.command
                )
                if self.headers.get("Content-Type"):
                    request.add_header("Content-Type", self.headers["Content-Type"])
                try:
                    with DIRECT.open(request, timeout=30) as response:
                        self._send(
                            response.status, response.read(), response.headers.get_content_type()
                        )
                except urllib.error.HTTPError as error:
                    self._send(error.code, error.read(), "application/json")
                except OSError:
                    self._send(502, b"upstream unreachable", "text/plain")

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                with contextlib.suppress(OSError):  # the client gave up (its timeout)
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# -- the lab --------------------------------------------------------------------------------


@dataclasses.dataclass
class Lab:
    workdir: Path
    api: EmulatorServer
    front: ApiFront
    prometheus: PrometheusServer
    prometheus_front: PrometheusFront
    pods: PodRunner
    gateway: GatewayMetrics
    operator: OperatorProcess
    kubeconfig: Path

    async def kubectl(self, *args: str, stdin: str | None = None) -> str:
        command = ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def apply(self, obj: Mapping[str, Any]) -> None:
        await self.kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(dict(obj)))

    def rollout(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        """The rollout as stored now (read in process: polling it costs no request)."""
        return self.api.emulator.get_object(ROLLOUTS, namespace, name)

    def get(self, resource: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.api.emulator.get_object(resource, namespace, name)

    def owned(self, rollout: str, namespace: str = "default") -> list[str]:
        """``Kind/name`` of every Deployment, Service and ConfigMap labelled as the rollout's."""
        found = []
        for resource in ("apps/v1/deployments", "v1/services", "v1/configmaps"):
            for obj in self.api.emulator.list_objects(resource, namespace):
                labels = (obj.get("metadata") or {}).get("labels") or {}
                if labels.get("gelu.dev/rollout") == rollout:
                    found.append(f"{obj.get('kind')}/{obj['metadata']['name']}")
        return sorted(found)

    def events(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        items = [
            e
            for e in self.api.emulator.list_objects("v1/events", namespace)
            if (e.get("involvedObject") or {}).get("name") == name
        ]
        return sorted(items, key=lambda e: int(e["metadata"].get("resourceVersion") or 0))

    def event_reasons(self, name: str) -> list[str]:
        return [str(e.get("reason")) for e in self.events(name)]

    async def wait_for(
        self,
        name: str,
        until: Callable[[Mapping[str, Any]], bool],
        *,
        timeout_s: float,
        poll_s: float = 0.2,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = self.rollout(name)
            if found is not None:
                last = found
                if until(found):
                    return found
            await asyncio.sleep(poll_s)
        status = json.dumps(last.get("status", {}), indent=1)[:3000]
        raise TimeoutError(
            f"rollout {name} did not get there in {timeout_s:g}s; status:\n{status}\n"
            f"operator log:\n{self.operator.log_tail(3000)}"
        )

    def traffic(self, name: str, rate_per_s: float, seconds: float) -> TrafficGenerator:
        return TrafficGenerator(
            self.api.url,
            "default",
            name,
            self.pods.service_pods,
            rate_per_s=rate_per_s,
            duration_s=seconds,
            gateway=self.gateway,
        )


@contextlib.asynccontextmanager
async def lab(
    *,
    tick_seconds: float = 1.0,
    scrape_interval_seconds: float = 1.0,
    prometheus_timeout_seconds: float = 2.0,
    start_operator: bool = True,
) -> AsyncIterator[Lab]:
    """The stack, the fronts, and the operator started (unless ``start_operator`` is false)."""
    workdir = temporary_folder("gelu-reliability-")
    try:
        with (
            PrometheusServer(scrape_interval_seconds=scrape_interval_seconds) as prometheus,
            GatewayMetrics() as gateway,
        ):
            prometheus.set_targets(
                [ScrapeTarget(gateway.serve(), GATEWAY_TARGET_LABELS)], group=GATEWAY_GROUP
            )
            prometheus_front = PrometheusFront(prometheus.url)
            prometheus_front.open()
            async with serve_emulator() as api:
                front = ApiFront(api.emulator)
                async with serve_front(front) as front_url:
                    kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
                    operator_kubeconfig = write_kubeconfig(
                        workdir / "operator-kubeconfig", front_url
                    )
                    crd = workdir / "crd.json"
                    crd.write_text(json.dumps(render_crd()))
                    runner = PodRunner(api.url, prometheus=prometheus, log_dir=workdir / "pods")
                    await runner.start()
                    endpoints = EndpointsPublisher(
                        workdir / "endpoints.json",
                        lambda: api.emulator.list_objects("v1/services"),
                        runner.service_endpoints,
                    )
                    operator = OperatorProcess(
                        workdir,
                        {
                            "prometheus_url": prometheus_front.url,
                            "kubeconfig": str(operator_kubeconfig),
                            "namespaces": ["default"],
                            "tick_seconds": tick_seconds,
                            "scrape_interval_seconds": scrape_interval_seconds,
                            "prometheus_timeout_seconds": prometheus_timeout_seconds,
                            "metrics_port": None,
                            "liveness_port": None,
                            "bind_address": "127.0.0.1",
                        },
                        workdir / "endpoints.json",
                    )
                    stack = Lab(
                        workdir,
                        api,
                        front,
                        prometheus,
                        prometheus_front,
                        runner,
                        gateway,
                        operator,
                        kubeconfig,
                    )
                    try:
                        async with endpoints:
                            await stack.kubectl("apply", "--validate=false", "-f", str(crd))
                            if start_operator:
                                await operator.start()
                            yield stack
                    finally:
                        await operator.stop()
                        await runner.stop()
                        prometheus_front.close()
    finally:
        keep = os.environ.get("GELU_RELIABILITY_LOGS")
        if keep:  # the operator's and the pods' logs, for a failure's post-mortem
            shutil.copytree(workdir, Path(keep) / workdir.name, dirs_exist_ok=True)
        remove_folder(workdir)


# -- more operator processes ----------------------------------------------------------------


@dataclasses.dataclass
class Replica:
    """An operator process beside the lab's, with an API front of its own: the requests in
    :attr:`front` are this process's and no other's."""

    name: str
    front: ApiFront
    process: OperatorProcess


@contextlib.asynccontextmanager
async def replica(
    stack: Lab, name: str, *, env: Mapping[str, str] | None = None, **config: Any
) -> AsyncIterator[Replica]:
    """Another operator process on the lab's stack (not started): the lab operator's config
    with ``config`` over it, its own API front, kubeconfig and folder (``workdir/name``, its
    log), and ``env`` added to its environment. Stopped on the way out."""
    front = ApiFront(stack.api.emulator)
    async with serve_front(front) as front_url:
        workdir = stack.workdir / name
        workdir.mkdir()
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", front_url)
        process = OperatorProcess(
            workdir,
            {**stack.operator.config, "kubeconfig": str(kubeconfig), **config},
            stack.operator.endpoints_file,
            env=dict(env or {}),
        )
        try:
            yield Replica(name, front, process)
        finally:
            await process.stop()
