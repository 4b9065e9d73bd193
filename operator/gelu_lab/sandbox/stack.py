"""The whole local stack in one place: API emulator, Prometheus, pod runner, operator, traffic.

Used by the end-to-end tests and the demo. Everything binds to loopback, lives in one
temporary folder, and is stopped (processes and files) when the context exits, whatever
happened inside.

The stack's Gateway is its traffic: every :class:`~gelu_lab.sandbox.traffic.TrafficGenerator`
given ``gateway=stack.gateway`` records its requests' durations in the one
``gelu_gateway_request_duration_seconds`` histogram, whose endpoint Prometheus scrapes as the
target group ``gateway`` (:data:`GATEWAY_TARGET_LABELS`), beside the pods; a rollout's
``analysis.latencyHistogram`` points at it (``examples/rollout.yaml``).

The operator's own metrics (``gelu_rollout_*``) are served on a free loopback port and scraped
as the target group ``operator`` (:data:`OPERATOR_TARGET_LABELS`); ``rule_files`` (promtool rule
files, e.g. ``monitoring/rules/*.yaml``) are evaluated by the stack's Prometheus, so the
recording rules and the dashboards' queries can be checked against a real rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from gelu_lab.sandbox.emulator_server import EmulatorServer, serve_emulator
from gelu_lab.sandbox.kubelet import PodRunner
from gelu_lab.sandbox.processes import remove_folder, temporary_folder
from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_lab.sandbox.shutdown import reclaim_signals
from gelu_lab.sandbox.traffic import GatewayMetrics
from gelu_rollout.metrics import OperatorMetrics
from gelu_rollout.resources.crd import render_crd
from gelu_rollout.run import OperatorConfig, run_operator
from gelu_rollout.spec.resource import PLURAL

SCRAPE_INTERVAL_SECONDS = 1.0
TICK_SECONDS = 1.0
GATEWAY_GROUP = "gateway"
GATEWAY_TARGET_LABELS = {"component": "gateway"}
"""The Gateway's scrape target labels: no ``namespace``, ``rollout`` or ``arm``, which would
clash with its series' own labels or make it look like a pod of a rollout."""
OPERATOR_GROUP = "operator"
OPERATOR_TARGET_LABELS = {"component": "operator"}
"""The operator's scrape target labels: none that its series carry themselves (``namespace``,
``rollout``, ``model``), which Prometheus would rename ``exported_*``."""


class KubectlError(RuntimeError):
    pass


@dataclass
class Sandbox:
    """A running stack; ``kubectl`` talks to its API through a kubeconfig in ``workdir``."""

    workdir: Path
    api: EmulatorServer
    prometheus: PrometheusServer
    pods: PodRunner
    kubeconfig: Path
    stop_operator: Callable[[], None]
    gateway: GatewayMetrics
    """The traffic's request-duration histogram, served and scraped (pass it to traffic)."""
    operator_metrics: OperatorMetrics
    """The operator's own metrics, served on :attr:`operator_metrics_address` and scraped."""
    operator_metrics_address: str
    operator: asyncio.Task[None] | None = None

    @property
    def operator_stopped(self) -> bool:
        """Whether the operator has exited (before the stack stopped it: it failed)."""
        return self.operator is not None and self.operator.done()

    async def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """Run the real kubectl against the sandbox; raise with its stderr on failure."""
        command = ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]
        done = await asyncio.to_thread(
            subprocess.run, command, input=stdin, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    async def apply(self, manifest: str | Path) -> str:
        """``kubectl apply`` a file, or manifest text."""
        if isinstance(manifest, Path):
            return await self.kubectl("apply", "--validate=false", "-f", str(manifest))
        return await self.kubectl("apply", "--validate=false", "-f", "-", stdin=manifest)

    async def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            await self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        )
        return result

    async def rollout(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return await self.get(PLURAL, name, namespace)

    async def wait_for(
        self,
        name: str,
        until: Callable[[Mapping[str, Any]], bool],
        *,
        timeout_s: float,
        namespace: str = "default",
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """Poll the rollout until ``until(rollout)``; TimeoutError with its last status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: dict[str, Any] = {}
        while loop.time() < deadline:
            with contextlib.suppress(KubectlError):
                last = await self.rollout(name, namespace)
                if until(last):
                    return last
            await asyncio.sleep(poll_s)
        status = json.dumps(last.get("status", {}), indent=1)[:4000]
        raise TimeoutError(f"rollout {name} did not get there in {timeout_s:g}s; status:\n{status}")

    async def events(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        """Events about the rollout, oldest first."""
        listed = json.loads(await self.kubectl("get", "events", "-n", namespace, "-o", "json"))
        items: list[dict[str, Any]] = [
            e
            for e in listed.get("items", [])
            if (e.get("involvedObject") or {}).get("name") == name
        ]
        return sorted(items, key=lambda e: int(e["metadata"].get("resourceVersion") or 0))


async def _until_ready(operator: asyncio.Task[None], ready: asyncio.Event) -> None:
    """Wait until the operator is ready; raise if it ends or takes too long first."""
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({waiter, operator}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if ready.is_set():
        return
    if operator.done():
        problem = operator.exception() if not operator.cancelled() else None
        raise RuntimeError(f"the operator stopped before it was ready: {problem or 'no error'}")
    raise TimeoutError("the operator was not ready after 30s")


@contextlib.contextmanager
def _serve_operator_metrics(metrics: OperatorMetrics) -> Iterator[str]:
    """Serve ``metrics`` on a loopback port the kernel picks (port 0: no race for it); the
    address. The server stops on exit, unlike the operator's own ``--metrics-port`` one,
    which lives as long as its process: a test may start many stacks in one process."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        port: int = server.server_address[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.asynccontextmanager
async def sandbox(
    *,
    tick_seconds: float = TICK_SECONDS,
    scrape_interval_seconds: float = SCRAPE_INTERVAL_SECONDS,
    keep_logs: Path | None = None,
    rule_files: Iterable[str | os.PathLike[str]] = (),
) -> AsyncIterator[Sandbox]:
    """Start the stack; on exit stop everything and remove the temporary folder.

    ``rule_files``: promtool rule files for the stack's Prometheus to evaluate."""
    workdir = temporary_folder("gelu-sandbox-")
    operator_metrics = OperatorMetrics()
    try:
        with (
            PrometheusServer(
                scrape_interval_seconds=scrape_interval_seconds, rule_files=rule_files
            ) as prometheus,
            GatewayMetrics() as gateway,
            _serve_operator_metrics(operator_metrics) as operator_metrics_address,
        ):
            prometheus.set_targets(
                [ScrapeTarget(gateway.serve(), GATEWAY_TARGET_LABELS)], group=GATEWAY_GROUP
            )
            prometheus.set_targets(
                [ScrapeTarget(operator_metrics_address, OPERATOR_TARGET_LABELS)],
                group=OPERATOR_GROUP,
            )
            async with serve_emulator() as api:
                kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
                crd = workdir / "crd.json"
                crd.write_text(json.dumps(render_crd()))
                runner = PodRunner(api.url, prometheus=prometheus, log_dir=workdir / "pods")
                await runner.start()
                stop = asyncio.Event()
                ready = asyncio.Event()
                config = OperatorConfig(
                    prometheus_url=prometheus.url,
                    kubeconfig=str(kubeconfig),
                    namespaces=("default",),
                    tick_seconds=tick_seconds,
                    scrape_interval_seconds=scrape_interval_seconds,
                    # The stack serves the operator's metrics itself (above).
                    metrics_port=None,
                    liveness_port=None,
                    bind_address="127.0.0.1",
                )
                stack = Sandbox(
                    workdir,
                    api,
                    prometheus,
                    runner,
                    kubeconfig,
                    stop.set,
                    gateway,
                    operator_metrics,
                    operator_metrics_address,
                )
                try:
                    await stack.kubectl("apply", "--validate=false", "-f", str(crd))
                    operator = stack.operator = asyncio.create_task(
                        run_operator(
                            config,
                            endpoints=runner.service_endpoints,
                            pod_address=runner.pod_address,
                            stop_flag=stop,
                            ready_flag=ready,
                            metrics=operator_metrics,
                        )
                    )
                    try:
                        await _until_ready(operator, ready)
                        # Kopf took SIGINT and SIGTERM: a signal must stop all of the stack.
                        reclaim_signals()
                        yield stack
                    finally:
                        stop.set()
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(operator, 30)
                finally:
                    await runner.stop()
    finally:
        if keep_logs is not None:
            shutil.copytree(workdir, keep_logs, dirs_exist_ok=True)
        remove_folder(workdir)
