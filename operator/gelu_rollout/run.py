"""Start the operator: wire the adapters into a controller and run Kopf."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import kopf

# Kopf exports no name for the type of a peer's identity (a NewType of str).
from kopf._core.engines.peering import Identity

from gelu_rollout.adapters.kube import OWNED_KINDS, Kind, KubeClient, Login, login_for
from gelu_rollout.adapters.kube.cache import CachedKubeClient
from gelu_rollout.adapters.kube.kinds import POD
from gelu_rollout.adapters.prometheus.observer import PrometheusObserver
from gelu_rollout.controller import (
    Controller,
    EndpointResolver,
    PodAddressResolver,
    cluster_dns,
    pod_ip,
)
from gelu_rollout.handlers import build_registry
from gelu_rollout.metrics import OperatorMetrics
from gelu_rollout.resources.names import LABEL_MANAGED_BY, LABEL_ROLLOUT, MANAGED_BY

log = logging.getLogger(__name__)

# Kopf's peering objects: a ClusterKopfPeering for an operator of the whole cluster, a
# KopfPeering in each namespace of a namespaced one (Kopf's own choice of scope).
CLUSTER_PEERING: Final = Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", False)
NAMESPACED_PEERING: Final = Kind("kopf.dev/v1", "KopfPeering", "kopfpeerings")
PEERING_RETRY_MAX_SECONDS: Final = 60.0


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
    peering_name: str | None = None
    """Kopf peering under this name; None runs standalone (one replica only)."""
    peering_priority: int | None = None
    """This replica's priority among its peers; None derives one from the pod's name."""


def peering_identity() -> str:
    """The pod's name: ``$POD_ID`` (the chart sets it), else the host name, which in a pod is
    the pod's name too."""
    return os.environ.get("POD_ID") or socket.gethostname()


def replica_identity() -> str:
    """The name this replica has among its peers, which the operator hands to Kopf and derives
    the priority from: the pod's name where ``$POD_ID`` gives it, else the host name and a
    suffix of this process's own. Without ``$POD_ID`` Kopf would name itself
    ``user@host/time/random``, and a priority from the bare host name would be the same for
    two operators on one host (a workstation, pods with ``hostNetwork`` or a ``hostname`` of
    their own): Kopf pauses every operator beside a live peer of its own priority."""
    identity = peering_identity()
    if not os.environ.get("POD_ID"):
        identity = f"{identity}/{secrets.token_hex(4)}"
    return identity


def peering_priority(identity: str) -> int:
    """A priority of this replica's own, stable for its life. Kopf pauses every operator that
    sees a live peer of the same priority, so replicas of one Deployment must differ: a hash
    of the pod's name makes them differ but for a 1 in 2**31 chance per pair."""
    return zlib.crc32(identity.encode()) & 0x7FFFFFFF


def peering_object(kind: Kind, name: str, namespace: str | None) -> dict[str, object]:
    metadata: dict[str, str] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata}


async def ensure_peering(
    kube: KubeClient,
    name: str,
    namespaces: Sequence[str],
    *,
    retry_seconds: float = 5.0,
) -> None:
    """Create the peering objects Kopf needs where they are missing, retrying (with backoff)
    until each exists: with a named peering, Kopf pauses until its object is there, and the
    peering CRD may be served only moments after the chart installed it."""
    pending: list[tuple[Kind, str | None]] = (
        [(NAMESPACED_PEERING, namespace) for namespace in namespaces]
        if namespaces
        else [(CLUSTER_PEERING, None)]
    )
    delay = retry_seconds
    while pending:
        for kind, namespace in list(pending):
            where = f"in {namespace}" if namespace else "cluster-wide"
            try:
                status, data = await kube.request(
                    "POST", kind.path(namespace), body=peering_object(kind, name, namespace)
                )
            except Exception as error:  # no API server yet, a failed login: try again later
                status, data = 0, str(error)
            if status in (200, 201, 202, 409):  # 409: it exists already
                pending.remove((kind, namespace))
                if status != 409:
                    log.info("created the %s %r %s", kind.kind, name, where)
                continue
            message = data.get("message") if isinstance(data, dict) else data
            detail = f"HTTP {status}: {message}" if status else message
            log.warning(
                "cannot create the %s %r %s (%s); retrying in %g s",
                kind.kind,
                name,
                where,
                detail,
                delay,
            )
        if pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, PEERING_RETRY_MAX_SECONDS)


def owned_objects_client(login: Login, namespaces: Sequence[str] = ()) -> KubeClient:
    """The controller's client: the rollouts' own objects (and their pods) read from a watch
    of what carries the operator's label, in ``namespaces`` or in all of them."""
    return CachedKubeClient(
        login,
        kinds=(*OWNED_KINDS, POD),
        selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
        index_label=LABEL_ROLLOUT,
        namespaces=namespaces,
    )


async def run_operator(
    config: OperatorConfig,
    *,
    endpoints: EndpointResolver = cluster_dns,
    pod_address: PodAddressResolver = pod_ip,
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
        kube = owned_objects_client(login, config.namespaces)
        controller = Controller(
            kube,
            observer,
            endpoints,
            metrics,
            pod_address,
            record_decisions_first=True,
        )
        registry = build_registry(controller, tick_seconds=config.tick_seconds, login=login)
        liveness = (
            f"http://{config.bind_address}:{config.liveness_port}/healthz"
            if config.liveness_port is not None
            else None
        )
        # Peering maps onto Kopf's settings: peering.name (and peering.mandatory, so the
        # operator pauses rather than runs unpeered), peering.priority, peering.standalone.
        peering = config.peering_name
        priority = None
        identity = None
        ensuring: asyncio.Task[None] | None = None
        if peering is not None:
            identity = replica_identity()
            priority = config.peering_priority
            if priority is None:
                priority = peering_priority(identity)
            log.info("peering %r as %r with priority %d", peering, identity, priority)
            ensuring = asyncio.create_task(ensure_peering(kube, peering, config.namespaces))
        try:
            await kopf.operator(
                registry=registry,
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                standalone=peering is None,
                peering_name=peering,
                priority=priority,
                identity=Identity(identity) if identity is not None else None,
                liveness_endpoint=liveness,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            if ensuring is not None:
                ensuring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ensuring
            await kube.close()


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
