"""Start the operator: wire the adapters into a controller and run Kopf."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import kopf

from gelu_rollout.adapters.kube import KubeClient, login_for
from gelu_rollout.adapters.prometheus.observer import PrometheusObserver
from gelu_rollout.controller import Controller, EndpointResolver, cluster_dns
from gelu_rollout.handlers import build_registry
from gelu_rollout.metrics import OperatorMetrics


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster."""
    tick_seconds: float = 5.0
    scrape_interval_seconds: float = 15.0
    prometheus_timeout_seconds: float = 5.0
    metrics_port: int | None = 8080
    liveness_port: int | None = 8081
    bind_address: str = "0.0.0.0"  # the ports of the operator's pod
    peering: bool = False


async def run_operator(
    config: OperatorConfig,
    *,
    endpoints: EndpointResolver = cluster_dns,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    metrics: OperatorMetrics | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or the process is signalled)."""
    # One login for Kopf and the operator's client: Kopf calls it as its login handler.
    login = login_for(config.kubeconfig, config.context)
    metrics = metrics or OperatorMetrics()
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port, config.bind_address)
    with PrometheusObserver(
        config.prometheus_url,
        config.prometheus_timeout_seconds,
        scrape_interval_seconds=config.scrape_interval_seconds,
    ) as observer:
        kube = KubeClient(login)
        controller = Controller(kube, observer, endpoints, metrics)
        registry = build_registry(controller, tick_seconds=config.tick_seconds, login=login)
        liveness = (
            f"http://{config.bind_address}:{config.liveness_port}/healthz"
            if config.liveness_port is not None
            else None
        )
        try:
            await kopf.operator(
                registry=registry,
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                standalone=not config.peering,
                liveness_endpoint=liveness,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            await kube.close()


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
