"""One reconcile tick of one rollout: observe, decide, act, record.

The imperative shell around :func:`gelu_rollout.rollout.decide.decide`. It reads the world
through the adapters (Kubernetes, Prometheus, Triton), lets ``decide`` choose, makes the owned
resources match the status ``decide`` returned, and hands the status and Events back to the
Kopf handler to write. Kubernetes calls are asynchronous; the blocking Prometheus queries run
in worker threads, so one slow rollout never stalls another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from gelu_rollout.adapters.kube import KubeClient
from gelu_rollout.adapters.kube.kinds import (
    CONFIG_MAP,
    DEPLOYMENT,
    HTTP_ROUTE,
    OWNED_KINDS,
    POD,
    kind_of,
)
from gelu_rollout.adapters.prometheus.observer import Observer
from gelu_rollout.adapters.triton import run_probe, run_sample
from gelu_rollout.analysis.burn_rate import required_window_seconds
from gelu_rollout.analysis.observations import SampledOutputs
from gelu_rollout.analysis.sample_inputs import SampleSource
from gelu_rollout.analysis.verdict import GateResult, inconclusive
from gelu_rollout.metrics import OperatorMetrics
from gelu_rollout.resources.desired import (
    ArmRepositories,
    candidate_traffic_weight,
    desired_resources,
    needs_apply,
    repositories_for,
    repository_problems,
    stale_objects,
)
from gelu_rollout.resources.names import (
    OwnerRef,
    deployment_name,
    label_value,
    owned_selector,
    service_name,
)
from gelu_rollout.resources.pod_status import pod_problems
from gelu_rollout.resources.traffic import (
    is_rollouts_own,
    route_backends,
    route_backends_patch,
    route_restore_patch,
)
from gelu_rollout.resources.workloads import HTTP_PORT
from gelu_rollout.rollout.conditions import ConditionType, Reason, Resources, summarize
from gelu_rollout.rollout.decide import AnalysisState, decide
from gelu_rollout.rollout.evaluate import step_burn_windows
from gelu_rollout.rollout.events import EmitEvent
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, ManualRequest, parse_request
from gelu_rollout.spec.model import RolloutSpec
from gelu_rollout.spec.parse import SpecError, parse_spec, parse_status
from gelu_rollout.spec.status import RolloutStatus, Stage

log = logging.getLogger(__name__)


class EndpointResolver(Protocol):
    """Where a Service answers: ``host:port`` addresses of its ready pods' HTTP endpoint."""

    def __call__(self, namespace: str, service: str) -> list[str]: ...


def cluster_dns(namespace: str, service: str) -> list[str]:
    """In a cluster the Service's DNS name reaches its ready pods."""
    return [f"{service}.{namespace}.svc:{HTTP_PORT}"]


@dataclass(frozen=True)
class TickResult:
    """What the handler writes back: the status (a merge patch) and the Events."""

    status: dict[str, Any]
    events: tuple[EmitEvent, ...] = ()
    results: tuple[GateResult, ...] = ()


@dataclass(frozen=True)
class World:
    """What applying the owned resources found: the ResourcesReady condition."""

    ready: bool
    reason: Reason
    message: str
    original_backend_refs: list[list[dict[str, Any]]] | None = None
    """The route's own backends, found before the operator's first write to it."""


@dataclass
class Controller:
    kube: KubeClient
    observer: Observer
    endpoints: EndpointResolver = cluster_dns
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    probe_timeout_seconds: float = 10.0
    sample_timeout_seconds: float = 5.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Bad request annotations already reported, so each is an Event once, not every tick.
    _reported: set[tuple[str, str, str]] = field(default_factory=set)

    async def release(self, body: Mapping[str, Any]) -> str:
        """Before a deleted rollout's objects go: give its HTTPRoute back the backends it had
        before the rollout (the arm Services it points at are about to be deleted). Returns
        what was done, for the log."""
        namespace = str((body.get("metadata") or {}).get("namespace"))
        try:
            spec = parse_spec(body)
            status = parse_status(body.get("status") or {})
        except SpecError as error:
            return f"nothing to restore: {error}"
        route_name = spec.traffic.http_route_name
        if spec.traffic.mode != "HTTPRoute" or route_name is None:
            return "no route to restore"
        if status.original_backend_refs is None:
            return f"HTTPRoute {namespace}/{route_name} was never changed"
        route = await self.kube.get(HTTP_ROUTE, namespace, route_name)
        if route is None:
            return f"HTTPRoute {namespace}/{route_name} is gone"
        patch = route_restore_patch(route, status.original_backend_refs)
        if patch is None:
            return f"HTTPRoute {namespace}/{route_name} already has its own backends"
        await self.kube.merge_patch(HTTP_ROUTE, namespace, route_name, patch)
        return f"HTTPRoute {namespace}/{route_name} has its backends from before the rollout"

    async def tick(self, body: Mapping[str, Any]) -> TickResult:
        started = time.monotonic()
        metadata = body.get("metadata") or {}
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        generation = metadata.get("generation")
        generation = generation if isinstance(generation, int) else None
        raw_status = body.get("status") or {}
        events: list[EmitEvent] = []
        try:
            spec = parse_spec(body)
        except SpecError as error:
            return self._not_ready(raw_status, Reason.INVALID_SPEC, str(error), generation)
        try:
            status = parse_status(raw_status)
        except SpecError as error:
            # A status edited by hand: start over rather than act on what cannot be read.
            events.append(
                EmitEvent("Warning", Reason.SPEC_CHANGED.value, f"unreadable status reset: {error}")
            )
            status = RolloutStatus()
        written = status.conditions
        owner = OwnerRef.from_body(body)
        repositories, problem = await self._repositories(spec, namespace)
        if repositories is None:
            return self._not_ready(raw_status, Reason.REPOSITORY_MISSING, problem, generation)

        request, request_problem = _request(metadata, status)
        if request_problem is not None and (namespace, name, request_problem) not in self._reported:
            self._reported.add((namespace, name, request_problem))
            events.append(EmitEvent("Warning", Reason.INVALID_REQUEST.value, request_problem))
        now = self.clock()
        results: tuple[GateResult, ...] = ()
        if (
            self._due(spec, status, now)
            or request is not None
            or generation != status.rollout_generation()
        ):
            observations = await self._observe(spec, status, namespace, name, now, request)
            decision = decide(spec, status, observations, now, generation=generation)
            status, results = decision.status, decision.results
            events.extend(decision.events)
        world = await self._apply(owner, spec, status, repositories)
        if world.original_backend_refs is not None:
            status = status.model_copy(
                update={"original_backend_refs": world.original_backend_refs}
            )
        if world.reason is Reason.PODS_FAILING:
            before = next((c for c in written if c.type == ConditionType.RESOURCES_READY), None)
            if before is None or before.message != world.message:
                events.append(EmitEvent("Warning", world.reason.value, world.message))
        # Every tick, decided or not: the summary follows the resources, and observedGeneration
        # says this generation was judged.
        status = summarize(
            status,
            now,
            generation,
            resources=Resources(world.ready, world.reason, world.message),
            previous=written,
        )
        self.metrics.record(
            namespace,
            name,
            status.stage,
            status.candidate_weight,
            results,
            time.monotonic() - started,
        )
        return TickResult(_status_patch(raw_status, status), tuple(events), results)

    # -- observe ---------------------------------------------------------------------------

    async def _repositories(
        self, spec: RolloutSpec, namespace: str
    ) -> tuple[ArmRepositories | None, str]:
        config_maps: dict[str, Mapping[str, str]] = {}
        for arm_name, arm in (("baseline", spec.baseline), ("candidate", spec.candidate)):
            if arm.repository is None:
                continue
            cm_name = arm.repository.config_map_name
            live = await self.kube.get(CONFIG_MAP, namespace, cm_name)
            if live is None:
                return (
                    None,
                    f"spec.{arm_name}.repository: ConfigMap {namespace}/{cm_name} not found",
                )
            data = live.get("data") or {}
            problems = repository_problems(data)
            if problems:
                return None, f"spec.{arm_name}.repository: ConfigMap {cm_name}: " + "; ".join(
                    problems
                )
            config_maps[cm_name] = data
        return repositories_for(spec, config_maps), ""

    @staticmethod
    def _due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
        if status.stage is Stage.PENDING:
            return True
        if status.stage.terminal:
            return False
        observed = AnalysisState.from_dict(status.analysis).observed_at
        interval = timedelta(seconds=spec.analysis.interval_seconds)
        return observed is None or now - observed >= interval

    async def _observe(
        self,
        spec: RolloutSpec,
        status: RolloutStatus,
        namespace: str,
        name: str,
        now: datetime,
        request: ManualRequest | None,
    ) -> Observations:
        interval = float(spec.analysis.interval_seconds)
        if status.stage is Stage.PENDING or status.stage.terminal:
            probe = None
            if status.stage is Stage.PENDING and status.started_at is not None:
                probe = await self._probe(spec, namespace, name)
            return Observations(now, interval, None, None, "not analysing", request, probe)
        windows = required_window_seconds(step_burn_windows(spec, status.step_index))
        # The metrics and the sampled comparison are independent: ask both at once.
        observations, (sample, sample_missing) = await asyncio.gather(
            asyncio.to_thread(
                self.observer.observe,
                namespace,
                label_value(name),
                spec.model.name,
                interval,
                windows,
                now,
                latency_histogram=spec.analysis.latency_histogram,
                rollout_name=name,
            ),
            self._sample(spec, status, namespace, name),
        )
        return Observations(
            now,
            interval,
            observations.baseline,
            observations.candidate,
            observations.missing_reason,
            request,
            sample=sample,
            sample_missing=sample_missing,
        )

    async def _sample_source(
        self, spec: RolloutSpec, namespace: str
    ) -> tuple[SampleSource | None, str]:
        """The user's sample inputs, if the spec names a ConfigMap of them, or why not."""
        name = spec.analysis.output_sample.config_map_name
        if name is None:
            return None, ""
        live = await self.kube.get(CONFIG_MAP, namespace, name)
        if live is None:
            return None, (
                f"analysis.outputSample.configMapName: ConfigMap {namespace}/{name} not found"
            )
        return SampleSource(name, live.get("data") or {}, live.get("binaryData") or {}), ""

    async def _sample(
        self, spec: RolloutSpec, status: RolloutStatus, namespace: str, name: str
    ) -> tuple[SampledOutputs | None, str]:
        """This tick's sampled comparison, or None and why there is none."""
        sampling = spec.analysis.output_sample
        if not sampling.enabled:
            return None, "off (analysis.outputSample.enabled is false)"
        baseline = self.endpoints(namespace, service_name(name, "baseline"))
        candidate = self.endpoints(namespace, service_name(name, "candidate"))
        if not baseline or not candidate:
            return None, "no ready endpoint for both arms"
        source, problem = await self._sample_source(spec, namespace)
        if problem:
            return None, problem
        # Each tick of the rollout draws its own rows.
        tick = AnalysisState.from_dict(status.analysis).segments[0].ticks
        outcome = await run_sample(
            baseline[0],
            candidate[0],
            spec.model.name,
            rows=sampling.rows,
            tick=tick,
            samples=source,
            timeout_s=self.sample_timeout_seconds,
        )
        if isinstance(outcome, str):
            return None, outcome
        return outcome, ""

    async def _probe(self, spec: RolloutSpec, namespace: str, name: str) -> GateResult | None:
        """The probe's result once both arms have a ready pod; None while they start."""
        if not spec.analysis.probe.enabled:
            return None
        ready = await self._arms_ready(namespace, name)
        if not ready:
            return None
        baseline = self.endpoints(namespace, service_name(name, "baseline"))
        candidate = self.endpoints(namespace, service_name(name, "candidate"))
        if not baseline or not candidate:
            return None
        source, problem = await self._sample_source(spec, namespace)
        if problem:
            return inconclusive("probe", f"probe could not run: {problem}")
        outcome = await run_probe(
            baseline[0],
            candidate[0],
            spec.model.name,
            rows=spec.analysis.probe.rows,
            max_abs_error=spec.analysis.probe.max_abs_error,
            max_latency_ratio=spec.analysis.probe.max_latency_ratio,
            timeout_s=self.probe_timeout_seconds,
            samples=source,
        )
        return outcome if isinstance(outcome, GateResult) else outcome.result

    async def _arms_ready(self, namespace: str, name: str) -> bool:
        for arm in ("baseline", "candidate"):
            live = await self.kube.get(DEPLOYMENT, namespace, deployment_name(name, arm))
            if live is None or not _deployment_ready(live):
                return False
        return True

    # -- act ---------------------------------------------------------------------------------

    async def _apply(
        self,
        owner: OwnerRef,
        spec: RolloutSpec,
        status: RolloutStatus,
        repositories: ArmRepositories,
    ) -> World:
        desired = desired_resources(owner, spec, status, repositories)
        # One list per owned kind serves the whole tick: applying, pruning, readiness.
        existing = {
            _key(obj): obj
            for kind in OWNED_KINDS
            for obj in await self.kube.list(kind, owner.namespace, owned_selector(owner.name))
        }
        # Server-side apply every tick: the API server makes an unchanged object a no-op, and
        # drops the fields the operator set before and no longer renders.
        for obj in desired:
            existing[_key(obj)] = await self.kube.apply(obj)
        for stale in stale_objects(owner, existing.values(), desired):
            await self.kube.delete(kind_of(stale), owner.namespace, _key(stale)[2])
        originals = None
        if spec.traffic.mode == "HTTPRoute" and spec.traffic.http_route_name is not None:
            route_name = spec.traffic.http_route_name
            route = await self.kube.get(HTTP_ROUTE, owner.namespace, route_name)
            if route is None:
                return World(
                    False,
                    Reason.ROUTE_MISSING,
                    f"spec.traffic.httpRouteName: HTTPRoute {owner.namespace}/{route_name} "
                    "not found",
                )
            if status.original_backend_refs is None:
                # Before the first weight: what to give back when the rollout is deleted.
                current = route_backends(route)
                originals = [] if is_rollouts_own(current, owner.name) else current
            patch = route_backends_patch(route, owner.name, candidate_traffic_weight(status))
            # The route is the user's: patch only its backends' weights, never own it whole.
            if needs_apply(patch, route):
                await self.kube.merge_patch(HTTP_ROUTE, owner.namespace, route_name, patch)
        waiting = [
            obj["metadata"]["name"]
            for obj in desired
            if obj["kind"] == "Deployment"
            and not _deployment_ready(existing.get(_key(obj)) or {}, int(obj["spec"]["replicas"]))
        ]
        if waiting:
            pods = await self.kube.list(POD, owner.namespace, owned_selector(owner.name))
            problems = pod_problems(pods)
            if problems:
                return World(False, Reason.PODS_FAILING, "; ".join(problems[:3]), originals)
            return World(
                False, Reason.WAITING_FOR_PODS, f"waiting for {', '.join(waiting)}", originals
            )
        return World(
            True, Reason.RESOURCES_APPLIED, "every owned resource is applied and ready", originals
        )

    # -- record ------------------------------------------------------------------------------

    def _not_ready(
        self, raw_status: Mapping[str, Any], reason: Reason, message: str, generation: int | None
    ) -> TickResult:
        """The spec cannot be acted on: say why (Stalled, Ready and ResourcesReady False), touch
        nothing else. The generation counts as observed: its problem is what the status says."""
        try:
            status = parse_status(raw_status)
        except SpecError:
            status = RolloutStatus()
        previous = status.condition(ConditionType.STALLED.value)
        events: tuple[EmitEvent, ...] = ()
        if previous is None or (previous.reason, previous.message) != (reason.value, message):
            events = (EmitEvent("Warning", reason.value, message),)
        status = summarize(
            status, self.clock(), generation, resources=Resources(False, reason, message)
        )
        return TickResult(_status_patch(raw_status, status), events)


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name): an owned object's identity within the rollout's namespace."""
    return (str(obj["apiVersion"]), str(obj["kind"]), str(obj["metadata"]["name"]))


def _deployment_ready(live: Mapping[str, Any], replicas: int | None = None) -> bool:
    spec_replicas = (
        replicas if replicas is not None else (live.get("spec") or {}).get("replicas", 1)
    )
    observed = live.get("status") or {}
    ready = int(observed.get("readyReplicas") or 0)
    if spec_replicas == 0:
        return True
    return ready >= max(int(spec_replicas), 1)


def _request(
    metadata: Mapping[str, Any], status: RolloutStatus
) -> tuple[ManualRequest | None, str | None]:
    value = (metadata.get("annotations") or {}).get(REQUEST_ANNOTATION)
    if not isinstance(value, str) or not value.strip():
        return None, None
    try:
        request = parse_request(value)
    except ValueError as error:
        if status.handled_request == value:
            return None, None
        return None, f"annotation {REQUEST_ANNOTATION}: {error}"
    return (None, None) if request.id == status.handled_request else (request, None)


def _status_patch(old: Mapping[str, Any], status: RolloutStatus) -> dict[str, Any]:
    """A merge patch from ``old`` to ``status``: fields that went away are nulled."""
    new = status.to_dict()
    known = set(RolloutStatus.model_fields) | {
        f.alias for f in RolloutStatus.model_fields.values() if f.alias
    }
    for key in old:
        if key not in new and key in known:
            new[key] = None
    return new
