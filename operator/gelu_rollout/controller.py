"""One reconcile tick of one rollout: observe, decide, act, record.

The imperative shell around :func:`gelu_rollout.rollout.decide.decide`. It reads the world
through the adapters (Kubernetes, Prometheus, Triton), lets ``decide`` choose, makes the owned
resources match the status ``decide`` returned, and hands the status and Events back to the
Kopf handler to write. A decision that moves the world is written (with its Events) before it
is acted on (``record_decisions_first``): a crash inside the tick never leaves the world ahead
of the status. Kubernetes calls are asynchronous; the blocking Prometheus queries run
in worker threads, so one slow rollout never stalls another.

:meth:`Controller.reconcile` is what the Kopf timer calls: :meth:`Controller.tick` under the
error policy (:mod:`gelu_rollout.adapters.errors`, docs/operator.md). A tick the API server
refused for good becomes a Stalled condition and one Event, and the rollout waits for a
change; a transient failure is handed back for Kopf to retry with a growing delay; a finished
rollout whose objects were checked a moment ago is not read at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from gelu_rollout.adapters.errors import Failure, FailureKind, classify
from gelu_rollout.adapters.kube import KubeClient, KubeError
from gelu_rollout.adapters.kube.kinds import (
    CONFIG_MAP,
    DEPLOYMENT,
    HTTP_ROUTE,
    OWNED_KINDS,
    POD,
    ROLLOUT,
    kind_of,
)
from gelu_rollout.adapters.prometheus.observer import Observer
from gelu_rollout.adapters.triton import load_version, run_probe, run_sample
from gelu_rollout.analysis.burn_rate import required_window_seconds
from gelu_rollout.analysis.observations import SampledOutputs
from gelu_rollout.analysis.sample_inputs import SampleSource
from gelu_rollout.analysis.verdict import GateResult, inconclusive
from gelu_rollout.metrics import OperatorMetrics, RolloutSample
from gelu_rollout.resources.desired import (
    ArmRepositories,
    candidate_traffic_weight,
    desired_resources,
    guarded,
    needs_apply,
    repositories_for,
    repository_problems,
    stale_objects,
    taken_by_another,
)
from gelu_rollout.resources.model_versions import versions_to_load
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
from gelu_rollout.rollout.progress import deadline_exceeded, not_ready_since
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, ManualRequest, parse_request
from gelu_rollout.rollout.window import observation_window_seconds
from gelu_rollout.spec.model import RolloutSpec
from gelu_rollout.spec.parse import SpecError, parse_spec, parse_status
from gelu_rollout.spec.status import RolloutStatus, Stage

log = logging.getLogger(__name__)

PERMANENT_RECHECK_SECONDS: Final = 300.0
"""After a permanent failure (a 403, a 422 ...) the rollout waits for a change to it (its spec's
generation, its request annotation) and tries again after this long without one: RBAC fixed or
an admission policy relaxed is seen within five minutes."""

TERMINAL_SETTLE_SECONDS: Final = 120.0
"""A finished rollout is ticked in full this long after its outcome: its arms' Deployments roll
to their last replicas and model, and Ready follows them."""

TERMINAL_RECHECK_SECONDS: Final = 600.0
"""Past that, a finished rollout whose owned objects were ready is read and applied again only
on a change to it or this often: a drifted or deleted owned object is put back within ten
minutes, and the timer's other firings cost no API request."""

EVENT_COMPONENT: Final = "kopf"
EVENT_MESSAGE_LIMIT: Final = 1024
"""The Events the tick posts itself look as Kopf's do (its component and message length),
but for their names, fixed with the decision (see ANNOUNCING) where Kopf's are generated."""
ANNOUNCING: Final = "announcing"
"""A status field between a decision's record and the end of its tick: the Events that
announce the decision, each with the name it is posted under. A tick that finds it (the
process died in between) posts them again under the same names, which the API server refuses
for those already there: each is posted once whatever the crash."""

TERMINAL_STAGES: Final = frozenset(stage.value for stage in Stage if stage.terminal)


class EndpointResolver(Protocol):
    """Where a Service answers: ``host:port`` addresses of its ready pods' HTTP endpoint."""

    def __call__(self, namespace: str, service: str) -> list[str]: ...


def cluster_dns(namespace: str, service: str) -> list[str]:
    """In a cluster the Service's DNS name reaches its ready pods."""
    return [f"{service}.{namespace}.svc:{HTTP_PORT}"]


class PodAddressResolver(Protocol):
    """Where one pod's Triton answers HTTP: ``host:port``, or None while it has no address."""

    def __call__(self, pod: Mapping[str, Any]) -> str | None: ...


def pod_ip(pod: Mapping[str, Any]) -> str | None:
    """In a cluster a pod answers on its IP (an IPv6 one in brackets)."""
    address = (pod.get("status") or {}).get("podIP")
    if not address:
        return None
    return f"[{address}]:{HTTP_PORT}" if ":" in str(address) else f"{address}:{HTTP_PORT}"


@dataclass(frozen=True)
class Retry:
    """A tick failed in a way a later attempt may not: the handler retries after a delay
    that grows with ``attempt`` (1 for the first failure in a row)."""

    attempt: int
    failure: Failure


@dataclass(frozen=True)
class TickResult:
    """What the handler writes back: the status (a merge patch) and the Events; ``retry`` when
    the tick failed and is to be retried; ``rested`` when nothing was read or written (the
    rollout waits for a change, or finished and was checked a moment ago)."""

    status: dict[str, Any]
    events: tuple[EmitEvent, ...] = ()
    results: tuple[GateResult, ...] = ()
    retry: Retry | None = None
    rested: bool = False


RolloutKey = tuple[str, str]
"""(namespace, name) of a rollout."""

ChangeMarker = tuple[object, object]
"""What a person changes to make a waiting rollout act: (generation, request annotation)."""


@dataclass(frozen=True)
class _Wait:
    """A rollout not to be read again before ``until`` unless ``change`` changes."""

    change: ChangeMarker
    until: datetime


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
    pod_address: PodAddressResolver = pod_ip
    probe_timeout_seconds: float = 10.0
    sample_timeout_seconds: float = 5.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    record_decisions_first: bool = False
    """Write a decision that moves the world (another stage, step or weight) to the status
    subresource before acting on it. The operator does (``run.py``): killed between acting and
    Kopf's status write, it would otherwise find the old status on restart, undo what it had
    done (the candidate back up after its rollback, the baseline back to its old model after
    the promotion), decide again and announce the outcome twice. Recorded first, the next tick
    carries out the recorded decision; a failed write (a 5xx) acts on nothing. Fakes that keep
    the rollout outside their API leave it off."""
    # Bad request annotations already reported, so each is an Event once, not every tick.
    _reported: set[tuple[str, str, str]] = field(default_factory=set)
    # The error policy's memory, per rollout (lost on a restart, which costs one full tick):
    # waits after a permanent failure, finished rollouts' last check, failures in a row,
    # rollouts whose unexpected error was logged with its traceback, and the last reason
    # metrics were missing (logged when it changes).
    _waits: dict[RolloutKey, _Wait] = field(default_factory=dict)
    _checked: dict[RolloutKey, _Wait] = field(default_factory=dict)
    _failures: dict[RolloutKey, int] = field(default_factory=dict)
    _traced: set[RolloutKey] = field(default_factory=set)
    _missing: dict[RolloutKey, str] = field(default_factory=dict)

    async def reconcile(self, body: Mapping[str, Any]) -> TickResult:
        """One firing of the rollout's timer: :meth:`tick` under the error policy.

        Nothing is read or written while the rollout waits after a permanent failure (until a
        change to it, or :data:`PERMANENT_RECHECK_SECONDS`), or while it is finished and its
        objects were found ready less than :data:`TERMINAL_RECHECK_SECONDS` ago (with no
        change since). A failed tick is classified (:func:`~gelu_rollout.adapters.errors.classify`)
        and counted: a permanent failure is written as the Stalled condition (and one Event per
        distinct problem); a transient or unexpected one comes back as ``retry``.
        """
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        now = self.clock()
        change = _change_marker(metadata)
        for waits in (self._waits, self._checked):
            wait = waits.get(key)
            if wait is not None and wait.change == change and now < wait.until:
                return TickResult({}, rested=True)
            waits.pop(key, None)
        try:
            result = await self.tick(body)
        except Exception as error:
            return self._failed(key, body, error, now)
        self._failures.pop(key, None)
        self._traced.discard(key)
        if _settled({**(body.get("status") or {}), **result.status}, now):
            self._checked[key] = _Wait(change, now + timedelta(seconds=TERMINAL_RECHECK_SECONDS))
        return result

    def first_report(self, namespace: str, name: str, problem: str) -> bool:
        """True the first time ``problem`` of the rollout is reported: an Event once."""
        key = (namespace, name, problem)
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    def forget(self, namespace: str, name: str) -> None:
        """The rollout was deleted: drop what the controller remembers of it."""
        key = (namespace, name)
        for memory in (self._waits, self._checked, self._failures, self._missing):
            memory.pop(key, None)
        self._traced.discard(key)
        self._reported = {r for r in self._reported if r[:2] != key}

    def _failed(
        self, key: RolloutKey, body: Mapping[str, Any], error: Exception, now: datetime
    ) -> TickResult:
        """What a failed tick becomes under the error policy; nothing of it was written."""
        failure = classify(error)
        namespace, name = key
        self.metrics.reconcile_failed(namespace, name, failure.kind.counted_as)
        if failure.kind is FailureKind.PERMANENT and failure.reason is not None:
            self._failures.pop(key, None)
            metadata = body.get("metadata") or {}
            self._waits[key] = _Wait(
                _change_marker(metadata), now + timedelta(seconds=PERMANENT_RECHECK_SECONDS)
            )
            log.warning(
                "%s/%s: %s: %s; waiting for a change to the rollout (or %gs)",
                namespace,
                name,
                failure.reason.value,
                failure.message,
                PERMANENT_RECHECK_SECONDS,
            )
            generation = metadata.get("generation")
            return self._not_ready(
                body,
                failure.reason,
                failure.message,
                generation if isinstance(generation, int) else None,
            )
        attempt = self._failures.get(key, 0) + 1
        self._failures[key] = attempt
        if failure.kind is FailureKind.UNEXPECTED and key not in self._traced:
            # A bug: its traceback once per rollout (until a tick succeeds), not every retry.
            self._traced.add(key)
            log.error(
                "%s/%s: unexpected error in the tick; retried with back-off, this traceback is "
                "logged once",
                namespace,
                name,
                exc_info=error,
            )
        return TickResult({}, retry=Retry(attempt, failure))

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
        await self.kube.merge_patch(HTTP_ROUTE, namespace, route_name, guarded(patch, route))
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
            return self._not_ready(body, Reason.INVALID_SPEC, str(error), generation)
        try:
            status = parse_status(raw_status)
        except SpecError as error:
            # A status edited by hand: start over rather than act on what cannot be read.
            events.append(
                EmitEvent("Warning", Reason.SPEC_CHANGED.value, f"unreadable status reset: {error}")
            )
            status = RolloutStatus()
        found = status  # as the tick found it: the metrics count what changed from it
        written = status.conditions
        announcing = raw_status.get(ANNOUNCING)
        if isinstance(announcing, list) and announcing:
            # A decision recorded by a tick that died before it ended: its Events may not
            # have gone out. The tick's status write at its end clears the field.
            await self._post_events(body, announcing)
        owner = OwnerRef.from_body(body)
        repositories, problem = await self._repositories(spec, namespace)
        if repositories is None:
            return self._not_ready(body, Reason.REPOSITORY_MISSING, problem, generation)
        route, route_problem = await self._route(spec, namespace)
        if route_problem:
            # No route, no traffic of the rollout's to judge or to move: nothing is decided
            # (no step, no promotion) until it exists.
            return self._not_ready(body, Reason.ROUTE_MISSING, route_problem, generation)

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
            if self.record_decisions_first and _moves_the_world(found, status):
                # The record says what is decided, not that the world follows yet: Ready (and
                # kubectl wait, Argo CD, Flux) only once the objects are applied below.
                recorded = summarize(
                    status,
                    now,
                    generation,
                    resources=Resources(
                        False, Reason.APPLYING, "the decision is recorded; its objects follow"
                    ),
                    previous=written,
                )
                # On the status this tick decided from: had anyone written it since (a second
                # replica during a hand-over), the API server refuses it (409) and the next
                # attempt decides again from what they wrote.
                # Its Events go with it, under names of their own: see ANNOUNCING.
                announced = _announcements(body, events, now)
                record = {**_status_patch(raw_status, recorded), ANNOUNCING: announced}
                await self.kube.merge_patch(
                    ROLLOUT,
                    namespace,
                    name,
                    guarded({"status": record}, body),
                    subresource="status",
                )
                # What the tick's own write at its end changes from: the record, now stored.
                raw_status = {
                    key: value
                    for key, value in {**raw_status, **record}.items()
                    if value is not None
                }
                # Its Events too, before the act: the next operator, finding the decision
                # recorded, will not decide it again, and posts only what did not go out.
                await self._post_events(body, announced)
                events.clear()
        world = await self._apply(owner, spec, status, repositories, route)
        if world.original_backend_refs is not None:
            status = status.model_copy(
                update={"original_backend_refs": world.original_backend_refs}
            )
        if world.reason in (Reason.PODS_FAILING, Reason.RESOURCE_CONFLICT):
            before = next((c for c in written if c.type == ConditionType.RESOURCES_READY), None)
            if before is None or before.message != world.message:
                events.append(EmitEvent("Warning", world.reason.value, world.message))
        # What the progress deadline is measured from, in the status: a restarted operator
        # measures from the same moment.
        resources = Resources(world.ready, world.reason, world.message)
        status = status.model_copy(
            update={"not_ready_since": not_ready_since(status, resources, now)}
        )
        # Every tick, decided or not: the summary follows the resources, and observedGeneration
        # says this generation was judged.
        status = summarize(
            status,
            now,
            generation,
            resources=resources,
            previous=written,
        )
        self.metrics.record(
            RolloutSample.of(
                namespace, name, spec.model.name, before=found, after=status, results=results
            ),
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

    async def _route(
        self, spec: RolloutSpec, namespace: str
    ) -> tuple[Mapping[str, Any] | None, str]:
        """The user's HTTPRoute the spec names (None in other traffic modes), or why not."""
        route_name = spec.traffic.http_route_name
        if spec.traffic.mode != "HTTPRoute" or route_name is None:
            return None, ""
        route = await self.kube.get(HTTP_ROUTE, namespace, route_name)
        if route is None:
            return None, f"spec.traffic.httpRouteName: HTTPRoute {namespace}/{route_name} not found"
        return route, ""

    @staticmethod
    def _due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
        if status.stage is Stage.PENDING:
            return True
        if status.stage.terminal:
            return False
        if deadline_exceeded(spec, status, now) is not None:
            return True  # the rollback is due now, not at the next analysis interval
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
        interval = observation_window_seconds(spec, status, now)
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
        self._note_missing((namespace, name), observations.missing_reason)
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

    def _note_missing(self, key: RolloutKey, reason: str | None) -> None:
        """One log line when a rollout's metrics go missing (Prometheus down, slow, answering
        nonsense) and one when they are back; the gates say Inconclusive meanwhile."""
        before = self._missing.get(key)
        if reason == before:
            return
        if reason is None:
            self._missing.pop(key, None)
            log.info("%s/%s: metrics are back", *key)
        else:
            self._missing[key] = reason
            log.warning("%s/%s: no metrics: %s", *key, reason)

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
        route: Mapping[str, Any] | None = None,
    ) -> World:
        """Make the owned objects match ``status``, and the user's ``route`` (as the tick
        read it; None when the traffic goes another way) carry its weights."""
        desired = desired_resources(owner, spec, status, repositories)
        # One list per owned kind serves the whole tick: applying, pruning, readiness.
        existing = {
            _key(obj): obj
            for kind in OWNED_KINDS
            for obj in await self.kube.list(kind, owner.namespace, owned_selector(owner.name))
        }
        # A name not among the rollout's own objects may still be taken (another rollout's
        # Service, the user's own): looked up once, while it is new, and never taken over.
        for obj in desired:
            if _key(obj) in existing:
                continue
            found = await self.kube.get(kind_of(obj), owner.namespace, _key(obj)[2])
            holder = None if found is None else taken_by_another(found, owner)
            if holder is not None:
                return World(
                    False,
                    Reason.RESOURCE_CONFLICT,
                    f"{obj['kind']} {owner.namespace}/{_key(obj)[2]} is already there and "
                    f"belongs to {holder}: rename the rollout or remove that object",
                )
        # Server-side apply (which drops the fields the operator set before and no longer
        # renders) of each object the live one does not match: its fingerprint annotation
        # says whether it was applied from this very rendering, so an unchanged object costs
        # no request, and a changed rendering or drift by another hand is applied.
        for obj in desired:
            if needs_apply(obj, existing.get(_key(obj))):
                existing[_key(obj)] = await self.kube.apply(obj)
        for stale in stale_objects(owner, existing.values(), desired):
            await self.kube.delete(kind_of(stale), owner.namespace, _key(stale)[2])
        originals = None
        if route is not None and spec.traffic.http_route_name is not None:
            route_name = spec.traffic.http_route_name
            patch = route_backends_patch(route, owner.name, candidate_traffic_weight(status))
            if status.original_backend_refs is None:
                # Before the first weight: what to give back when the rollout is deleted.
                current = route_backends(route)
                originals = [] if is_rollouts_own(current, owner.name) else current
                if self.record_decisions_first and needs_apply(patch, route):
                    # Recorded before the route changes: found already changed, they are lost.
                    await self.kube.merge_patch(
                        ROLLOUT,
                        owner.namespace,
                        owner.name,
                        {"status": {"originalBackendRefs": originals}},
                        subresource="status",
                    )
            # The route is the user's: patch only its backends' weights, never own it whole.
            if needs_apply(patch, route):
                try:
                    await self.kube.merge_patch(
                        HTTP_ROUTE, owner.namespace, route_name, guarded(patch, route)
                    )
                except KubeError as error:
                    if error.status != 404:
                        raise
                    # Deleted since the read: the same as not found, seen again next tick.
                    return World(
                        False,
                        Reason.ROUTE_MISSING,
                        f"spec.traffic.httpRouteName: HTTPRoute {owner.namespace}/{route_name} "
                        "not found",
                    )
        waiting = [
            obj["metadata"]["name"]
            for obj in desired
            if obj["kind"] == "Deployment"
            and not _deployment_ready(existing.get(_key(obj)) or {}, int(obj["spec"]["replicas"]))
        ]
        if waiting:
            pods = await self.kube.list(POD, owner.namespace, owned_selector(owner.name))
            problems = pod_problems(pods) + await self._load_versions(spec, pods)
            if problems:
                return World(False, Reason.PODS_FAILING, "; ".join(problems[:3]), originals)
            return World(
                False, Reason.WAITING_FOR_PODS, f"waiting for {', '.join(waiting)}", originals
            )
        return World(
            True, Reason.RESOURCES_APPLIED, "every owned resource is applied and ready", originals
        )

    async def _load_versions(self, spec: RolloutSpec, pods: list[dict[str, Any]]) -> list[str]:
        """Load the asked-for model version on each pod that is up but not ready (see
        :mod:`gelu_rollout.resources.model_versions`), all at once; why each that failed did."""
        loads = [
            (load, address)
            for load in versions_to_load(pods)
            if (address := self.pod_address(load.pod)) is not None
        ]
        answers = await asyncio.gather(
            *(
                load_version(
                    address, spec.model.name, load.version, timeout_s=self.probe_timeout_seconds
                )
                for load, address in loads
            )
        )
        return sorted(
            f"{load.arm} pod {load.name}: version {load.version} of {spec.model.name} "
            f"does not load: {answer}"
            for (load, _), answer in zip(loads, answers, strict=True)
            if answer
        )

    # -- record ------------------------------------------------------------------------------

    async def _post_events(
        self, body: Mapping[str, Any], announced: Sequence[Mapping[str, Any]]
    ) -> None:
        """Post the ``announced`` Events (see :func:`_announcements`) about the rollout now,
        with the fields Kopf's poster gives them (the handler's go through Kopf after the
        tick). One already there (409: posted before a crash) is done; a refused one is
        logged, not failed: Events are auxiliary, as they are to Kopf."""
        metadata = body.get("metadata") or {}
        namespace = str(metadata.get("namespace"))
        involved = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
            "namespace": namespace,
        }
        now = self.clock().isoformat()
        for event in announced:
            obj = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"namespace": namespace, "name": str(event.get("name"))},
                "type": str(event.get("type")),
                "reason": str(event.get("reason")),
                "message": str(event.get("message"))[:EVENT_MESSAGE_LIMIT],
                "reportingComponent": EVENT_COMPONENT,
                "source": {"component": EVENT_COMPONENT},
                "involvedObject": involved,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "eventTime": now,
            }
            try:
                code, answer = await self.kube.request(
                    "POST", f"/api/v1/namespaces/{namespace}/events", body=obj
                )
            except Exception as error:  # no answer at all: as good as refused
                code, answer = 0, str(error)
            if code not in (200, 201, 409):
                log.warning(
                    "%s/%s: the %s Event was not posted (%s): %s",
                    namespace,
                    metadata.get("name"),
                    event.get("reason"),
                    code or "no answer",
                    answer.get("message") if isinstance(answer, dict) else answer,
                )

    def _not_ready(
        self, body: Mapping[str, Any], reason: Reason, message: str, generation: int | None
    ) -> TickResult:
        """The spec cannot be acted on: say why (Stalled, Ready and ResourcesReady False), touch
        nothing else. The generation counts as observed: its problem is what the status says."""
        raw_status = body.get("status") or {}
        try:
            found = parse_status(raw_status)
        except SpecError:
            found = RolloutStatus()
        previous = found.condition(ConditionType.STALLED.value)
        events: tuple[EmitEvent, ...] = ()
        if previous is None or (previous.reason, previous.message) != (reason.value, message):
            events = (EmitEvent("Warning", reason.value, message),)
        status = summarize(
            found, self.clock(), generation, resources=Resources(False, reason, message)
        )
        metadata = body.get("metadata") or {}
        self.metrics.record(
            RolloutSample.of(
                str(metadata.get("namespace")),
                str(metadata.get("name")),
                _model_name(body),
                before=found,
                after=status,
            )
        )
        return TickResult(_status_patch(raw_status, status), events)


def _model_name(body: Mapping[str, Any]) -> str:
    """spec.model.name as written, for the metrics of a spec that may not parse ("" if none)."""
    spec = body.get("spec")
    model = spec.get("model") if isinstance(spec, Mapping) else None
    name = model.get("name") if isinstance(model, Mapping) else None
    return name if isinstance(name, str) else ""


def _moves_the_world(before: RolloutStatus, after: RolloutStatus) -> bool:
    """A decision the owned objects render differently: another stage, step or weight."""
    return (before.stage, before.step_index, candidate_traffic_weight(before)) != (
        after.stage,
        after.step_index,
        candidate_traffic_weight(after),
    )


def _change_marker(metadata: Mapping[str, Any]) -> ChangeMarker:
    return (metadata.get("generation"), (metadata.get("annotations") or {}).get(REQUEST_ANNOTATION))


def _settled(status: Mapping[str, Any], now: datetime) -> bool:
    """The status a tick wrote is of a finished rollout whose owned objects are ready, and its
    outcome is :data:`TERMINAL_SETTLE_SECONDS` old: it may rest between rechecks."""
    if status.get("stage") not in TERMINAL_STAGES:
        return False
    ready = next(
        (
            c
            for c in status.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == ConditionType.RESOURCES_READY.value
        ),
        None,
    )
    if ready is None or ready.get("status") != "True":
        return False
    finished = status.get("finishedAt")
    if not isinstance(finished, str):
        return True  # finished before finishedAt was kept: long settled
    try:
        finished_at = datetime.fromisoformat(finished)
    except ValueError:
        return False
    if finished_at.tzinfo is None:
        finished_at = finished_at.replace(tzinfo=UTC)
    return now - finished_at >= timedelta(seconds=TERMINAL_SETTLE_SECONDS)


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


def _announcements(
    body: Mapping[str, Any], events: Sequence[EmitEvent], now: datetime
) -> list[dict[str, str]]:
    """``events`` as the status records them before they are posted (:data:`ANNOUNCING`),
    each with a name fixed by the rollout, the moment of the decision and its place."""
    metadata = body.get("metadata") or {}
    name, uid = str(metadata.get("name")), str(metadata.get("uid"))
    announced = []
    for index, event in enumerate(events):
        key = f"{uid}/{now.isoformat()}/{index}/{event.reason}".encode()
        digest = hashlib.blake2b(key, digest_size=8).hexdigest()
        announced.append(
            {
                "name": f"{name[:200]}.{digest}",
                "type": event.type,
                "reason": event.reason,
                "message": event.message[:EVENT_MESSAGE_LIMIT],
            }
        )
    return announced


def _status_patch(old: Mapping[str, Any], status: RolloutStatus) -> dict[str, Any]:
    """A merge patch from ``old`` to ``status``: the fields that changed, and those that went
    away nulled. Only those: a tick that read a status somebody changed since (a second
    replica's during a hand-over) then writes back what it changed, never the stage or the
    step it left as it found them over theirs."""
    new = status.to_dict()
    known = set(RolloutStatus.model_fields) | {
        f.alias for f in RolloutStatus.model_fields.values() if f.alias
    }
    patch = {key: value for key, value in new.items() if old.get(key) != value}
    for key in old:
        if key not in new and (key in known or key == ANNOUNCING):
            patch[key] = None
    return patch
