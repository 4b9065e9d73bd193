"""The sandbox's clients: inference requests sent through the weights the operator set.

``TrafficGenerator`` sends batch-1 requests of N(0, scale²) rows (seeded) to a rollout's model
at a steady rate, for a bounded time or count, the way clients of the rollout would reach it:

- **ReplicaRatio**: through the rollout's Service ``<rollout>``, round-robin over the ready
  pods it selects (the operator widens its selector to the candidate once its weight is above
  0, so each arm's share is its share of the ready pods);
- **HTTPRoute**: through the HTTPRoute that ``spec.traffic.httpRouteName`` names, as a Gateway
  would: a backend of its first rule picked at random in proportion to the weights (seeded),
  then a ready pod of that Service, round-robin.

The rollout and its HTTPRoute are read from the API every ``refresh_interval_s``; Services are
resolved to pods by an :data:`EndpointResolver` such as
:meth:`gelu_lab.sandbox.kubelet.PodRunner.service_pods`. Successes and failures are counted per
arm (the ``gelu.dev/arm`` label of the pod that was sent the request); a request with nowhere to
go (no rollout yet, no ready pod, all weights 0) is counted as unrouted and not sent.

The rate is an open-loop schedule (a request every ``1 / rate`` seconds, whatever the answers'
latency) capped at ``max_in_flight`` requests at a time; a schedule that falls behind by more
than a second skips ahead instead of bursting.

The generator plays the Gateway for the operator's tail-latency test too: it times each
request it sends (from the call to the answer, or to its failure or timeout; the requests go
out on an event loop of their own, in a thread, so that a busy caller's loop does not add to
their time) into the request-duration histogram of a :class:`GatewayMetrics`,
``gelu_gateway_request_duration_seconds``, labelled as a mesh labels it:
``destination_service_namespace``, ``destination_service_name`` (the Service of the arm whose
pod answered, ``<rollout>-baseline`` or ``<rollout>-candidate``, in either traffic mode) and
``response_code`` (``200``; the server's error status, ``500`` where it gives none; ``0`` when
no answer came). :meth:`GatewayMetrics.serve` exports it on a ``/metrics`` endpoint for
Prometheus to scrape (the sandbox's stack does: ``stack.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar

import numpy as np
import tritonclient.http.aio as triton_http
from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server
from tritonclient.utils import InferenceServerException

from gelu_lab.sandbox.login import emulator_login
from gelu_rollout.adapters.kube import KubeClient, KubeError
from gelu_rollout.adapters.kube.kinds import HTTP_ROUTE, ROLLOUT
from gelu_rollout.resources.names import ARMS, LABEL_ARM, service_name
from gelu_rollout.variants.catalog import INPUTS

DEFAULT_RATE_PER_S: Final = 50.0
DEFAULT_DURATION_S: Final = 60.0
DEFAULT_REFRESH_S: Final = 1.0
DEFAULT_MAX_IN_FLIGHT: Final = 16
DEFAULT_REQUEST_TIMEOUT_S: Final = 5.0
INPUT_NAME: Final = "INPUT0"
OUTPUT_NAME: Final = "OUTPUT0"
UNKNOWN_ARM: Final = "unknown"
_MAX_LAG_S: Final = 1.0
T = TypeVar("T")

GATEWAY_METRIC: Final = "gelu_gateway_request_duration_seconds"
"""The Gateway's request-duration histogram; its buckets are ``..._bucket{le}`` in seconds."""
GATEWAY_LABELS: Final = (
    "destination_service_namespace",
    "destination_service_name",
    "response_code",
)
GATEWAY_BUCKETS: Final[tuple[float, ...]] = tuple(
    float(f"{0.0005 * 2 ** (k / 5):.4g}") for k in range(73)
)
"""Bucket upper bounds in seconds: 0.5 ms to 10.8 s, log-spaced by 2^(1/5), about 15% apart
(five to a doubling), rounded to four digits; fine enough that the tail test's edges lie
within 15% of the baseline's P99 and of ``(1 + maxRegression)`` times it."""
NO_ANSWER: Final = "0"


class GatewayMetrics:
    """The Gateway's request-duration histogram, in a registry of its own, and optionally an
    HTTP ``/metrics`` endpoint serving it (:meth:`serve`, :meth:`close`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.histogram = Histogram(
            GATEWAY_METRIC,
            "Duration of the requests the sandbox's Gateway sent, from the call to the answer.",
            labelnames=GATEWAY_LABELS,
            buckets=GATEWAY_BUCKETS,
            registry=self.registry,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe(self, namespace: str, service: str, code: str, seconds: float) -> None:
        self.histogram.labels(namespace, service, code).observe(max(seconds, 0.0))

    def prepare(self, namespace: str, services: Sequence[str]) -> None:
        """Export the successful requests' series of ``services`` at zero before any request:
        Prometheus' ``increase`` counts from a series' first scrape, so a series that
        appears with its first request would lose what came before that scrape."""
        for service in services:
            self.histogram.labels(namespace, service, "200")

    def text(self) -> str:
        """The exposition text, as the endpoint serves it."""
        return generate_latest(self.registry).decode()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve ``/metrics`` on ``host:port`` (0: a free port) in a thread; the address."""
        if self._server is None:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return self.address

    @property
    def address(self) -> str:
        """``host:port`` of the endpoint; RuntimeError when not serving."""
        if self._server is None:
            raise RuntimeError("the Gateway's metrics are not being served")
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def response_code(error: BaseException | None) -> str:
    """The response code a Gateway would record: 200, the server's error status (500 when it
    gives none), or 0 when no answer came (a timeout, a connection that failed)."""
    if error is None:
        return "200"
    if isinstance(error, InferenceServerException):
        status = error.status()
        return str(status) if status is not None and str(status).isdigit() else "500"
    return NO_ANSWER


class Endpoint(Protocol):
    """A ready pod behind a Service (``PodInfo`` is one)."""

    @property
    def http_address(self) -> str | None: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


EndpointResolver = Callable[[str, str], Sequence[Endpoint]]
"""``(namespace, service) -> the ready pods behind it``."""


@dataclass(frozen=True)
class ArmCounts:
    """Requests sent to one arm's pods, and how they ended (the rest are in flight)."""

    sent: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Backend:
    """A Service traffic may go to, with its weight."""

    namespace: str
    service: str
    weight: int = 1


@dataclass(frozen=True)
class Routing:
    """Where a rollout's requests go now: its model, and the weighted Services in front."""

    model: str
    backends: tuple[Backend, ...]


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def route_name_of(rollout: Mapping[str, Any]) -> str | None:
    """The HTTPRoute a rollout's traffic goes through, or None in ReplicaRatio mode."""
    traffic = _dict(_dict(rollout.get("spec")).get("traffic"))
    if traffic.get("mode", "ReplicaRatio") != "HTTPRoute":
        return None
    name = traffic.get("httpRouteName")
    return str(name) if name else None


def routing_of(rollout: Mapping[str, Any], route: Mapping[str, Any] | None) -> Routing:
    """The routing of a GeluModelRollout object (and its HTTPRoute, in HTTPRoute mode).

    ReplicaRatio: one backend, the rollout's Service. HTTPRoute: the Service backends of the
    route's first rule that has any (weight 1 where none is given, as the Gateway API says);
    none while the route is missing.
    """
    meta, spec = _dict(rollout.get("metadata")), _dict(rollout.get("spec"))
    namespace, name = str(meta.get("namespace", "default")), str(meta.get("name", ""))
    model = str(_dict(spec.get("model")).get("name", ""))
    if route_name_of(rollout) is None:
        return Routing(model, (Backend(namespace, service_name(name)),))
    rules = _dict(_dict(route).get("spec")).get("rules") if route is not None else None
    for rule in rules if isinstance(rules, list) else []:
        refs = [_dict(ref) for ref in _dict(rule).get("backendRefs") or []]
        backends = tuple(
            Backend(
                str(ref.get("namespace") or namespace),
                str(ref["name"]),
                int(ref.get("weight", 1)),
            )
            for ref in refs
            if ref.get("name")
            and ref.get("group", "") in ("", "core")
            and ref.get("kind", "Service") == "Service"
        )
        if backends:
            return Routing(model, backends)
    return Routing(model, ())


def pick_backend(backends: Sequence[Backend], rng: random.Random) -> Backend | None:
    """A backend drawn in proportion to the weights; None when every weight is 0."""
    total = sum(max(b.weight, 0) for b in backends)
    if total <= 0:
        return None
    draw = rng.uniform(0, total)
    for backend in backends:
        draw -= max(backend.weight, 0)
        if draw < 0:
            return backend
    return [b for b in backends if b.weight > 0][-1]


class TrafficGenerator:
    """Requests to one rollout at ``rate_per_s``, until ``duration_s`` or ``max_requests``.

    Use it as an async context manager (it stops on exit), or :meth:`start` then :meth:`wait`
    or :meth:`stop`; :meth:`run` does all of it. ``model`` overrides the rollout's
    ``spec.model.name``. Each request's duration goes to ``gateway`` (by default a
    :class:`GatewayMetrics` of the generator's own, not served).
    """

    def __init__(
        self,
        api_url: str,
        namespace: str,
        rollout: str,
        resolver: EndpointResolver,
        *,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        duration_s: float | None = DEFAULT_DURATION_S,
        max_requests: int | None = None,
        scale: float = 1.0,
        seed: int = 0,
        model: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        refresh_interval_s: float = DEFAULT_REFRESH_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        gateway: GatewayMetrics | None = None,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        if duration_s is None and max_requests is None:
            raise ValueError("give duration_s or max_requests: the traffic must end by itself")
        self.api = KubeClient(emulator_login(api_url))
        self.namespace = namespace
        self.rollout = rollout
        self.resolver = resolver
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.max_requests = max_requests
        self.scale = scale
        self.model = model
        self.max_in_flight = max_in_flight
        self.refresh_interval_s = refresh_interval_s
        self.request_timeout_s = request_timeout_s
        self.gateway = gateway if gateway is not None else GatewayMetrics()
        self._inputs = np.random.default_rng(seed)
        self._choices = random.Random(seed)
        self._routing: Routing | None = None
        self._round_robin: dict[tuple[str, str], int] = {}
        self._clients: dict[str, triton_http.InferenceServerClient] = {}  # on the wire loop
        self._wire: _WireLoop | None = None
        self._counts: dict[str, ArmCounts] = {}
        self._unrouted = 0
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Self:
        if self._task is not None:
            raise RuntimeError("the traffic generator was started already")
        self._task = asyncio.create_task(self._run(), name=f"traffic-{self.rollout}")
        return self

    async def wait(self) -> dict[str, ArmCounts]:
        """Wait until the traffic ends by itself; the counts per arm."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.counts()

    async def stop(self) -> dict[str, ArmCounts]:
        """Stop now (requests in flight are abandoned, counted as neither); the counts."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return self.counts()

    async def run(self) -> dict[str, ArmCounts]:
        """Send all the traffic, then return the counts per arm."""
        await self.start()
        try:
            return await self.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- counters --------------------------------------------------------------------------

    def counts(self) -> dict[str, ArmCounts]:
        """Per arm (``baseline``, ``candidate``): requests sent, succeeded, failed."""
        with self._lock:
            return dict(self._counts)

    @property
    def unrouted(self) -> int:
        """Requests that had nowhere to go (not sent)."""
        with self._lock:
            return self._unrouted

    @property
    def routing(self) -> Routing | None:
        """The routing last read from the API (None before the rollout is found)."""
        return self._routing

    def _count(self, arm: str, *, sent: int = 0, succeeded: int = 0, failed: int = 0) -> None:
        with self._lock:
            old = self._counts.get(arm, ArmCounts())
            self._counts[arm] = ArmCounts(
                old.sent + sent, old.succeeded + succeeded, old.failed + failed
            )

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        self._wire = _WireLoop(f"gateway-{self.rollout}")
        refresher = asyncio.create_task(self._refresh_forever())
        try:
            await self._refresh()
            await self._send_all()
        finally:
            # Ended by itself, nothing is in flight any more; stopped, what is in flight goes.
            pending = [refresher, *self._in_flight]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._wire.run(self._close_clients())
            self._wire.close()
            await self.api.close()

    async def _send_all(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.duration_s if self.duration_s is not None else None
        period = 1.0 / self.rate_per_s
        slots = asyncio.Semaphore(self.max_in_flight)
        next_at, sent = start, 0
        while self.max_requests is None or sent < self.max_requests:
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            if next_at > now:
                await asyncio.sleep(next_at - now)
                continue
            if now - next_at > _MAX_LAG_S:
                next_at = now  # fell behind: skip ahead rather than burst
            await slots.acquire()
            task = asyncio.create_task(self._one())
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            task.add_done_callback(lambda _: slots.release())
            sent += 1
            next_at += period
        await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            rollout = await self.api.get(ROLLOUT, self.namespace, self.rollout)
            if rollout is None:
                self._routing = None
                return
            route = None
            route_name = route_name_of(rollout)
            if route_name is not None:
                route = await self.api.get(HTTP_ROUTE, self.namespace, route_name)
            self._routing = routing_of(rollout, route)
            self.gateway.prepare(self.namespace, [service_name(self.rollout, a) for a in ARMS])
            self.last_error = None
        except (KubeError, ValueError) as error:  # ValueError: a weight that is no number
            self.last_error = str(error)  # keep the last routing; the API may be back soon

    def _pick(self) -> tuple[str, str, str, Backend] | None:
        """(arm, http address, model, backend) for the next request, or None: nowhere to
        go."""
        routing = self._routing
        if routing is None:
            return None
        backend = pick_backend(routing.backends, self._choices)
        if backend is None:
            return None
        ready = [
            (endpoint.http_address, endpoint.labels.get(LABEL_ARM, UNKNOWN_ARM))
            for endpoint in self.resolver(backend.namespace, backend.service)
            if endpoint.http_address
        ]
        if not ready:
            return None
        key = (backend.namespace, backend.service)
        turn = self._round_robin.get(key, 0)
        self._round_robin[key] = turn + 1
        address, arm = ready[turn % len(ready)]
        assert address is not None
        return arm, address, self.model or routing.model, backend

    def _destination(self, arm: str, backend: Backend) -> str:
        """The Service the Gateway records: the arm's own (also behind the shared Service of
        ReplicaRatio mode, as a mesh names the destination workload), else the backend."""
        return service_name(self.rollout, arm) if arm in ARMS else backend.service

    async def _one(self) -> None:
        picked = self._pick()
        rows = self._inputs.normal(0.0, self.scale, size=(1, INPUTS)).astype(np.float32)
        if picked is None:
            with self._lock:
                self._unrouted += 1
            return
        arm, address, model, backend = picked
        self._count(arm, sent=1)
        assert self._wire is not None
        ok, error, seconds = await self._wire.run(self._send(address, model, rows))
        self._count(arm, succeeded=int(ok), failed=int(not ok))
        self.gateway.observe(
            backend.namespace, self._destination(arm, backend), response_code(error), seconds
        )

    async def _send(
        self, address: str, model: str, rows: np.ndarray[Any, np.dtype[np.float32]]
    ) -> tuple[bool, BaseException | None, float]:
        """One request, on the wire loop: whether it succeeded, its error, its seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                client = self._client(address)
                tensor = triton_http.InferInput(INPUT_NAME, list(rows.shape), "FP32")
                tensor.set_data_from_numpy(rows)
                result = await client.infer(model, [tensor])
                seconds = loop.time() - started
                output = result.as_numpy(OUTPUT_NAME)
        except asyncio.CancelledError:
            raise
        except Exception as failure:
            return False, failure, loop.time() - started
        return output is not None and output.shape == rows.shape, None, seconds

    def _client(self, address: str) -> triton_http.InferenceServerClient:
        """The client of one pod, made on (and only used on) the wire loop."""
        client = self._clients.get(address)
        if client is None:
            client = triton_http.InferenceServerClient(address, conn_timeout=self.request_timeout_s)
            self._clients[address] = client
        return client

    async def _close_clients(self) -> None:
        """On the wire loop: end what is still running there, close the pods' clients."""
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()


class _WireLoop:
    """An event loop in a thread of its own, where the requests go out and are timed.

    The generator shares its caller's loop with whatever else runs there (in the sandbox:
    the operator, the kubelet, the API emulator); a busy stretch of that loop would delay
    every answer it is waiting for and show up as latency no Gateway would measure. Here
    only the requests run, so their durations are the wire's and the servers'.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the wire loop and wait for it here (cancelling it there when
        cancelled here)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


__all__ = [
    "GATEWAY_BUCKETS",
    "GATEWAY_LABELS",
    "GATEWAY_METRIC",
    "ArmCounts",
    "Backend",
    "Endpoint",
    "EndpointResolver",
    "GatewayMetrics",
    "Routing",
    "TrafficGenerator",
    "pick_backend",
    "response_code",
    "route_name_of",
    "routing_of",
]
