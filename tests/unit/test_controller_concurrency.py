"""Concurrency around the tick, on the in-memory API and the scripted observer, in seconds:

- a spec edit at every stage restarts the analysis (``SpecChanged``) and nothing is promoted
  on the evidence of the spec before it (docs/operator.md: "a newer [generation] the operator
  can act on starts it again"; docs/gitops.md: a commit that changes ``spec.candidate`` starts
  the rollout again, a finished one included);
- two rollouts of the same model in one namespace, or of the same name in two namespaces:
  their objects, their queries and their outcomes stay apart;
- deletion at every stage: the route gets its own backends back and every owned object is
  the garbage collector's to take;
- what arrives while a tick is inside an await: a manual request, a spec edit, the deletion,
  and a second replica's tick of the same rollout (two replicas without Kopf peering).

After every tick the invariants hold: the candidate's weight is one of the spec's steps (0
before the first and after a rollback, 100 once promoted), an outcome is announced by one
Event in the tick that reaches it and never again, and the owned objects and the route are
what the status says.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import kopf
import pytest

from gelu_rollout.adapters.kube import KubeClient
from gelu_rollout.adapters.kube.kinds import ROLLOUT, Kind
from gelu_rollout.adapters.prometheus.fake import FakeObserver, ObserverCall
from gelu_rollout.adapters.prometheus.queries import build_plan
from gelu_rollout.analysis.verdict import Verdict
from gelu_rollout.controller import Controller, TickResult
from gelu_rollout.handlers import build_registry
from gelu_rollout.metrics import OperatorMetrics
from gelu_rollout.resources.names import LABEL_ROLLOUT, label_value
from gelu_rollout.rollout.conditions import FAILURE_REASONS, Reason
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION
from tests.fakes.kube import FakeKubeAPI, Object
from tests.fakes.world import (
    NAME,
    NAMESPACE,
    SPEC,
    FakeTriton,
    RolloutWorld,
    failing,
    fake_triton,
    healthy,
)
from tests.rollout_helpers import T0

ROUTED: dict[str, Any] = {
    **SPEC,
    "traffic": {**SPEC["traffic"], "mode": "HTTPRoute", "httpRouteName": "gelu"},
    # Out of data, a step pauses a minute after its analysis time.
    "analysis": {**SPEC["analysis"], "insufficientData": {"maxExtensionSeconds": 60}},
}
ORIGINAL_BACKENDS = [{"name": "gelu-mlp", "port": 8000}]
"""The route's own backends, before any rollout (``RolloutWorld.add_route``)."""

PROMOTIONS = {Reason.ALL_STEPS_PASSED.value, Reason.MANUAL_PROMOTION.value}
ROLLBACKS = {reason.value for reason in FAILURE_REASONS.values()} | {Reason.ABORTED.value}
OUTCOMES = PROMOTIONS | ROLLBACKS
TERMINAL = {"Promoted", "RolledBack"}
UID = "u1"  # RolloutWorld's rollout


def missing(call: ObserverCall) -> Observations:
    """Prometheus with nothing to say: every gate Inconclusive."""
    return Observations(
        call.at, call.interval_seconds, None, None, missing_reason="Prometheus unreachable"
    )


@dataclass
class Answers:
    """The observer's script, switched by the test: healthy, failing or missing."""

    mode: Callable[[ObserverCall], Observations] = healthy

    def __call__(self, call: ObserverCall) -> Observations:
        return self.mode(call)


# -- reading the fake API ----------------------------------------------------------------------


def owned(api: FakeKubeAPI, namespace: str, rollout: str) -> dict[tuple[str, str], Object]:
    """Every object in ``namespace`` labelled as ``rollout``'s, by (kind, name)."""
    value = label_value(rollout)
    return {
        (kind, name): obj
        for (kind, ns, name), obj in api.objects.items()
        if ns == namespace
        and kind != ROLLOUT.kind
        and ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_ROLLOUT) == value
    }


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    return {
        str(ref.get("uid"))
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
        if ref.get("controller") is True
    }


def garbage_collect(api: FakeKubeAPI, uid: str) -> None:
    """What Kubernetes' garbage collector does once the rollout is gone: its objects go."""
    for key, obj in list(api.objects.items()):
        if uid in owner_uids(obj):
            del api.objects[key]


def run_deletion_handler(controller: Controller, body: Mapping[str, Any]) -> None:
    """The registered deletion handler, called as Kopf calls it (it takes a few of Kopf's
    many keyword arguments)."""
    registry = build_registry(controller, tick_seconds=5.0)
    handler: Callable[..., Coroutine[Any, Any, None]] = cast(
        Any,
        next(
            h.fn
            for h in registry._changing.get_all_handlers()
            if getattr(h.fn, "__name__", "") == "release"
        ),
    )
    asyncio.run(
        handler(
            body=kopf.Body(cast(Any, copy.deepcopy(dict(body)))),
            logger=logging.getLogger("kopf.objects"),
            retry=0,
        )
    )


def backends(api: FakeKubeAPI, namespace: str = NAMESPACE, route: str = "gelu") -> list[Any]:
    found = api.find("HTTPRoute", namespace, route)
    assert found is not None
    return list(found["spec"]["rules"][0]["backendRefs"])


def weights(api: FakeKubeAPI, namespace: str = NAMESPACE, route: str = "gelu") -> dict[str, int]:
    return {ref["name"]: int(ref.get("weight", 1)) for ref in backends(api, namespace, route)}


def deployment(api: FakeKubeAPI, namespace: str, name: str) -> Object:
    found = api.find("Deployment", namespace, name)
    assert found is not None, f"no Deployment {namespace}/{name}"
    return found


def serves(api: FakeKubeAPI, namespace: str, name: str) -> tuple[str, str]:
    """(source, image) of a Deployment's pods: where its repository ConfigMap came from
    (``variant/tanh``) and the server image."""
    template = deployment(api, namespace, name)["spec"]["template"]["spec"]
    config_maps = [v["configMap"]["name"] for v in template["volumes"] if "configMap" in v]
    assert len(config_maps) == 1, template["volumes"]
    repository = api.find("ConfigMap", namespace, config_maps[0])
    assert repository is not None, f"{name} mounts {config_maps[0]}, which is not there"
    source = str(repository["metadata"]["annotations"]["gelu.dev/source"])
    return source, str(template["containers"][0]["image"])


def replicas(api: FakeKubeAPI, namespace: str, name: str) -> int:
    return int(deployment(api, namespace, name)["spec"]["replicas"])


def outcomes(reasons: list[str]) -> list[str]:
    return [reason for reason in reasons if reason in OUTCOMES]


# -- the invariants, after every tick ------------------------------------------------------------


def check_invariants(
    api: FakeKubeAPI,
    body: Mapping[str, Any],
    before: str | None,
    events: list[str],
    *,
    promoted_image: str | None = None,
) -> None:
    """What must hold after a tick of the rollout ``body`` (as stored after it) that began at
    stage ``before`` and posted ``events``."""
    metadata, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    stage = status["stage"]
    assert status.get("observedGeneration") == metadata["generation"]
    # The weight: one of this spec's steps, 0 before the first and after a rollback.
    steps = [int(step["weight"]) for step in spec["traffic"]["steps"]]
    index, weight = int(status.get("stepIndex", 0)), int(status.get("candidateWeight", 0))
    expected = {"Pending": 0, "Promoted": 100, "RolledBack": 0}.get(stage)
    if expected is None:
        assert index < len(steps), (index, steps)
        expected = steps[index]
    assert weight == expected, (stage, index, weight, steps)
    # One outcome Event, in the tick that reached the outcome, of the outcome reached.
    announced = outcomes(events)
    if stage in TERMINAL and before not in TERMINAL:
        assert len(announced) == 1, (before, stage, events)
        assert announced[0] in (PROMOTIONS if stage == "Promoted" else ROLLBACKS), announced
    else:
        assert announced == [], (before, stage, events)
    # The owned objects are what the status says, all of them the rollout's to take away.
    objects = owned(api, namespace, name)
    assert objects, "the rollout owns nothing"
    for (kind, object_name), obj in objects.items():
        assert owner_uids(obj) == {metadata["uid"]}, (kind, object_name)
    live = int(weight if stage not in TERMINAL else 0)
    candidate, baseline = spec["candidate"], spec["baseline"]
    candidate_source = f"variant/{candidate['variant']}"
    running = replicas(api, namespace, f"{name}-candidate")
    if stage in TERMINAL:
        assert running == 0
    elif spec["traffic"].get("mode") == "HTTPRoute":
        assert running == int(candidate.get("replicas", 1))
    else:
        assert running >= 1  # ReplicaRatio: as many as the weight needs
    assert replicas(api, namespace, f"{name}-baseline") == int(baseline.get("replicas", 1))
    assert serves(api, namespace, f"{name}-candidate")[0] == candidate_source
    baseline_source, baseline_image = serves(api, namespace, f"{name}-baseline")
    if stage == "Promoted":
        assert baseline_source == candidate_source
        if promoted_image is not None:
            assert baseline_image == promoted_image
    else:
        assert baseline_source == f"variant/{baseline['variant']}"
    route = spec["traffic"].get("httpRouteName")
    if route is not None:
        assert weights(api, namespace, route) == {
            f"{name}-baseline": 100 - live,
            f"{name}-candidate": live,
        }


class Checked:
    """A RolloutWorld ticked with the invariants checked after every tick."""

    def __init__(self, world: RolloutWorld) -> None:
        self.world = world
        self.promoted_image: str | None = None

    def tick(self, seconds: float = 60.0) -> TickResult:
        before = self.world.stage
        result = self.world.tick(seconds)
        check_invariants(
            self.world.api,
            self.world.body,
            before,
            [e.reason for e in result.events],
            promoted_image=self.promoted_image,
        )
        return result

    def run_until(self, stage: str, limit: int = 40) -> None:
        for _ in range(limit):
            if self.world.stage == stage:
                return
            self.tick()
        raise AssertionError(f"not {stage} after {limit} ticks: {self.world.status}")


# -- a rollout taken to each stage -------------------------------------------------------------

STAGES = ["Pending", "step-1", "step-2", "Paused", "Promoted", "RolledBack"]


def reach(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Checked, FakeTriton, Answers, RolloutWorld | None]:
    """A routed rollout at ``stage`` (``step-2``: the last step, its analysis one tick from a
    promotion, with a twin driven alike that shows it); every tick checked."""
    triton = fake_triton(monkeypatch, Verdict.INCONCLUSIVE if stage == "Pending" else Verdict.PASS)
    answers = Answers(
        failing if stage == "RolledBack" else missing if stage == "Paused" else healthy
    )
    checked = Checked(RolloutWorld(ROUTED, script=answers))
    checked.world.add_route()
    twin: RolloutWorld | None = None
    if stage == "step-2":
        twin = RolloutWorld(ROUTED)
        twin.add_route()
    for _ in range(2):
        checked.tick()
        if twin is not None:
            twin.tick(60)
    target = {"step-1": "Progressing", "step-2": "Progressing"}.get(stage, stage)
    if stage == "step-2":
        while checked.world.candidate_weight() != 50:
            checked.tick()
            cast(RolloutWorld, twin).tick(60)
        for _ in range(2):
            checked.tick()
            cast(RolloutWorld, twin).tick(60)
    else:
        checked.run_until(target)
    assert checked.world.stage == target
    return checked, triton, answers, twin


EDITED_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3-edited"


def edited_spec() -> dict[str, Any]:
    """Another candidate (variant and image) and other steps: nothing of the old fits."""
    spec = copy.deepcopy(ROUTED)
    spec["candidate"] = {"variant": "sigmoid", "replicas": 2, "pod": {"image": EDITED_IMAGE}}
    spec["traffic"]["steps"] = [
        {"weight": 20, "analysisSeconds": 120},
        {"weight": 40, "analysisSeconds": 120},
        {"weight": 80, "analysisSeconds": 120},
    ]
    return spec


@pytest.mark.parametrize("stage", STAGES)
def test_a_spec_edit_restarts_the_analysis_and_never_promotes_on_the_old_evidence(
    monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    checked, triton, answers, twin = reach(stage, monkeypatch)
    world = checked.world
    if twin is not None:
        # The old candidate's evidence is one tick from its promotion.
        twin.tick(60)
        assert twin.stage == "Promoted"
    probes = len(triton.calls)
    world.edit(edited_spec())
    edited_at = world.now
    result = checked.tick()
    # Every stage, the finished ones too, starts over from the probe: docs/operator.md
    # (startedGeneration) and docs/gitops.md ("starts the rollout again").
    assert [e.reason for e in result.events] == ["SpecChanged"]
    assert world.stage == "Pending"
    assert world.condition("Progressing") == ("True", "SpecChanged")
    assert world.condition("Promoted") == ("False", "NotPromoted")
    assert world.condition("RolledBack") == ("False", "NotRolledBack")
    assert (world.status["startedGeneration"], world.status["observedGeneration"]) == (2, 2)
    assert world.status.get("finishedAt") is None
    segments = world.status["analysis"]["segments"]
    assert len(segments) == 1, "the old steps' evidence is gone"
    assert world.status["analysis"]["look"] == 0
    assert serves(world.api, NAMESPACE, "gelu-mlp-candidate") == ("variant/sigmoid", EDITED_IMAGE)
    # Until the new candidate is promoted the baseline serves spec.baseline: after an edit of
    # a promoted rollout, the model from before that promotion.
    assert serves(world.api, NAMESPACE, "gelu-mlp-baseline")[0] == "variant/exact"
    # The new candidate is probed, then judged on its own evidence through every new step.
    answers.mode = healthy
    triton.verdict = Verdict.PASS
    checked.promoted_image = EDITED_IMAGE
    stages_after: list[str] = []
    for _ in range(30):
        checked.tick()
        if not stages_after or stages_after[-1] != world.stage:
            stages_after.append(str(world.stage))
        if world.stage == "Promoted":
            break
    assert stages_after == ["Progressing", "Promoted"], stages_after
    assert len(triton.calls) > probes, "the new candidate was probed"
    assert triton.calls[-1][1] == "gelu-mlp-candidate.prod:8000"
    finished = datetime.fromisoformat(world.status["finishedAt"])
    assert finished - edited_at >= timedelta(seconds=360), "all three new steps' time"
    assert serves(world.api, NAMESPACE, "gelu-mlp-baseline") == ("variant/sigmoid", EDITED_IMAGE)
    # Over the whole rollout: one outcome per start, SpecChanged between two.
    reasons = [e.reason for e in world.events if e.reason in OUTCOMES | {"SpecChanged"}]
    for first, second in itertools.pairwise(reasons):
        assert not (first in OUTCOMES and second in OUTCOMES), reasons


def test_an_edit_of_the_steps_alone_restarts_too_and_the_weight_follows_the_new_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked, _, _, _ = reach("step-1", monkeypatch)
    world = checked.world
    spec = copy.deepcopy(ROUTED)
    spec["traffic"]["steps"] = [{"weight": 30, "analysisSeconds": 60}]
    world.edit(spec)
    assert [e.reason for e in checked.tick().events] == ["SpecChanged"]
    checked.tick()
    assert (world.stage, world.candidate_weight()) == ("Progressing", 30)
    checked.run_until("Promoted")


# -- the operator against the fake API: rollouts in it, replicas of it, hooks into it --


@dataclass(frozen=True)
class Posted:
    """An Event about a rollout: posted by the controller itself or by Kopf after the tick."""

    namespace: str
    name: str
    type: str
    reason: str


@dataclass(frozen=True)
class Call:
    verb: str
    kind: str
    namespace: str
    name: str
    subresource: str | None = None


Hook = tuple[Callable[[Call], bool], Callable[[], Awaitable[None]]]


class HookedAPI(FakeKubeAPI):
    """The fake API where a test can step in: ``at(when, action)`` runs ``action`` once, just
    before the first request ``when`` matches is served, while its requester waits inside
    that await. ``posted`` is the Events in the order they were posted: the controller's own
    (with its record of a decision) and, after each tick, Kopf's."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[Hook] = []
        self.posted: list[Posted] = []
        self.calls: list[Call] = []

    def at(self, when: Callable[[Call], bool], action: Callable[[], Awaitable[None]]) -> None:
        self.hooks.append((when, action))

    async def _step_in(self, call: Call) -> None:
        self.calls.append(call)
        for hook in list(self.hooks):
            when, action = hook
            if hook in self.hooks and when(call):
                self.hooks.remove(hook)
                await action()

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> Object | None:
        await self._step_in(Call("get", kind.kind, namespace or "", name, subresource))
        return await super().get(kind, namespace, name, subresource=subresource)

    async def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[Object]:
        await self._step_in(Call("list", kind.kind, namespace or "", ""))
        return await super().list(kind, namespace, label_selector)

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> Object:
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name"))
        await self._step_in(Call("apply", str(obj["kind"]), namespace, name))
        return await super().apply(obj, force=force)

    async def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> Object:
        await self._step_in(Call("patch", kind.kind, namespace or "", name, subresource))
        return await super().merge_patch(kind, namespace, name, patch, subresource=subresource)

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        await self._step_in(Call("delete", kind.kind, namespace or "", name))
        return await super().delete(kind, namespace, name)

    async def request(
        self, method: str, path: str, *, body: Any = None, **_: Any
    ) -> tuple[int, Any]:
        """The Events endpoint, the only raw request the controller makes."""
        assert method == "POST", (method, path)
        assert path.endswith("/events"), path
        involved = body["involvedObject"]
        self.posted.append(
            Posted(involved["namespace"], involved["name"], body["type"], body["reason"])
        )
        return 201, body


def writes_status(call: Call) -> bool:
    return (call.verb, call.kind, call.subresource) == ("patch", ROLLOUT.kind, "status")


@dataclass
class Replica:
    """One operator process: its controller (and memory), ticking rollouts the way Kopf's
    timer does: the body as the API has it, then the status patch and the Events."""

    cluster: Cluster
    controller: Controller
    observer: FakeObserver

    async def fire(self, namespace: str, name: str) -> TickResult:
        api = self.cluster.api
        body = api.find(ROLLOUT.kind, namespace, name)
        assert body is not None
        result = await self.controller.reconcile(body)
        if result.status:
            # Kopf's patch: a merge patch of the status subresource, no precondition.
            await api.merge_patch(
                ROLLOUT, namespace, name, {"status": result.status}, subresource="status"
            )
        # Kopf posts the tick's Events after it: into the one log of the API's Events.
        api.posted.extend(Posted(namespace, name, e.type, e.reason) for e in result.events)
        return result

    def release(self, namespace: str, name: str) -> None:
        """The deletion handler, as Kopf calls it when the rollout is deleted."""
        body = self.cluster.api.find(ROLLOUT.kind, namespace, name)
        assert body is not None
        run_deletion_handler(self.controller, body)


@dataclass
class Cluster:
    """Rollouts in one fake API, ticked by one operator (or more: ``replica``), on one clock;
    the decisions recorded first, as ``run.py`` wires the operator."""

    api: HookedAPI = field(default_factory=HookedAPI)
    now: datetime = T0

    def replica(self, script: Callable[[ObserverCall], Observations] = healthy) -> Replica:
        observer = FakeObserver([script] * 2000)
        controller = Controller(
            kube=cast(KubeClient, self.api),
            observer=observer,
            endpoints=lambda namespace, service: [f"{service}.{namespace}:8000"],
            metrics=OperatorMetrics(),
            clock=lambda: self.now,
            record_decisions_first=True,
        )
        return Replica(self, controller, observer)

    def add(
        self, name: str, spec: Mapping[str, Any], *, namespace: str = NAMESPACE, uid: str
    ) -> None:
        self.api.put(
            {
                "apiVersion": "gelu.dev/v1alpha1",
                "kind": "GeluModelRollout",
                "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 1},
                "spec": copy.deepcopy(dict(spec)),
            }
        )

    def add_route(self, name: str = "gelu", namespace: str = NAMESPACE) -> None:
        self.api.put(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"rules": [{"backendRefs": copy.deepcopy(ORIGINAL_BACKENDS)}]},
            }
        )

    def rollout(self, name: str = NAME, namespace: str = NAMESPACE) -> Object:
        found = self.api.objects.get((ROLLOUT.kind, namespace, name))
        assert found is not None
        return found

    def status(self, name: str = NAME, namespace: str = NAMESPACE) -> dict[str, Any]:
        return dict(self.rollout(name, namespace).get("status") or {})

    def stage(self, name: str = NAME, namespace: str = NAMESPACE) -> str | None:
        return self.status(name, namespace).get("stage")

    def edit(self, spec: Mapping[str, Any], name: str = NAME, namespace: str = NAMESPACE) -> None:
        """A spec edit as the API server takes it: a new generation."""
        stored = self.rollout(name, namespace)
        stored["spec"] = copy.deepcopy(dict(spec))
        stored["metadata"]["generation"] += 1

    def annotate(self, value: str, name: str = NAME, namespace: str = NAMESPACE) -> None:
        """``kubectl annotate``: metadata only, the generation stays."""
        metadata = self.rollout(name, namespace)["metadata"]
        metadata.setdefault("annotations", {})[REQUEST_ANNOTATION] = value

    def reasons(self, name: str = NAME, namespace: str = NAMESPACE) -> list[str]:
        """Every Event about the rollout, the controller's own posts and Kopf's."""
        return [e.reason for e in self.api.posted if (e.namespace, e.name) == (namespace, name)]

    def delete(self, replica: Replica, name: str = NAME, namespace: str = NAMESPACE) -> None:
        """``kubectl delete``: the operator's deletion handler, then the rollout and, through
        their owner references, its objects go."""
        uid = str(self.rollout(name, namespace)["metadata"]["uid"])
        replica.release(namespace, name)
        self.api.remove(ROLLOUT.kind, namespace, name)
        garbage_collect(self.api, uid)


def rollout_spec(mode: str = "ReplicaRatio", route: str = "gelu") -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    if mode == "HTTPRoute":
        spec["traffic"] = {**spec["traffic"], "mode": "HTTPRoute", "httpRouteName": route}
    return spec


def by_rollout(call: ObserverCall) -> Observations:
    """gelu-a's candidate is healthy, gelu-b's fails requests."""
    return failing(call) if call.rollout == "gelu-b" else healthy(call)


def check_queries(call: ObserverCall, namespace: str, name: str) -> None:
    """The call asked for this rollout's series only: every query's selector names its
    namespace and its pods' rollout label, which only its own Deployments set."""
    assert (call.namespace, call.rollout, call.rollout_name) == (
        namespace,
        label_value(name),
        name,
    )
    plan = build_plan(
        call.namespace,
        call.rollout,
        call.model,
        call.interval_seconds,
        call.burn_windows_seconds,
        rollout_name=call.rollout_name,
    )
    selector = f'namespace="{namespace}",rollout="{label_value(name)}"'
    for expression in plan.expressions():
        assert selector in expression, expression


def test_two_rollouts_of_one_model_in_one_namespace_keep_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    cluster = Cluster()
    operator = cluster.replica(by_rollout)
    cluster.add("gelu-a", rollout_spec(), uid="uid-a")
    cluster.add("gelu-b", rollout_spec(), uid="uid-b")
    names = {"gelu-a": "uid-a", "gelu-b": "uid-b"}
    for _ in range(12):
        cluster.now += timedelta(seconds=60)
        for name in names:
            before = cluster.stage(name)
            calls, requests = len(operator.observer.calls), len(cluster.api.calls)
            posted = len(cluster.reasons(name))
            asyncio.run(operator.fire(NAMESPACE, name))
            tick = cluster.reasons(name)[posted:]
            for call in operator.observer.calls[calls:]:
                check_queries(call, NAMESPACE, name)
            # Every write of this tick was to this rollout's own objects.
            for request in cluster.api.calls[requests:]:
                if request.verb in ("apply", "patch", "delete", "create"):
                    assert request.name == name or request.name.startswith(f"{name}-"), request
            check_invariants(cluster.api, cluster.rollout(name), before, tick)
    assert cluster.stage("gelu-a") == "Promoted"
    assert cluster.stage("gelu-b") == "RolledBack"
    assert outcomes(cluster.reasons("gelu-a")) == ["AllStepsPassed"]
    assert len(outcomes(cluster.reasons("gelu-b"))) == 1
    assert outcomes(cluster.reasons("gelu-b"))[0] in ROLLBACKS
    # Their objects: apart, each the garbage collector's to take with its own rollout only.
    a, b = owned(cluster.api, NAMESPACE, "gelu-a"), owned(cluster.api, NAMESPACE, "gelu-b")
    assert a
    assert b
    assert not set(a) & set(b)
    assert all(owner_uids(o) == {"uid-a"} for o in a.values())
    assert all(owner_uids(o) == {"uid-b"} for o in b.values())
    assert replicas(cluster.api, NAMESPACE, "gelu-b-candidate") == 0
    assert replicas(cluster.api, NAMESPACE, "gelu-a-candidate") == 0  # promoted: the baseline
    assert serves(cluster.api, NAMESPACE, "gelu-a-baseline")[0] == "variant/tanh"
    assert serves(cluster.api, NAMESPACE, "gelu-b-baseline")[0] == "variant/exact"
    # Each Service in front selects its own rollout's pods, and only its own pods carry the
    # rollout label its queries select on.
    for name in names:
        service = cluster.api.find("Service", NAMESPACE, name)
        assert service is not None
        assert service["spec"]["selector"][LABEL_ROLLOUT] == name
        for arm in ("baseline", "candidate"):
            template = deployment(cluster.api, NAMESPACE, f"{name}-{arm}")["spec"]["template"]
            assert template["metadata"]["labels"][LABEL_ROLLOUT] == name


def test_one_rollouts_rollback_and_deletion_leave_the_other_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    cluster = Cluster()
    operator = cluster.replica(by_rollout)
    cluster.add("gelu-a", rollout_spec("HTTPRoute", "route-a"), uid="uid-a")
    cluster.add("gelu-b", rollout_spec("HTTPRoute", "route-b"), uid="uid-b")
    cluster.add_route("route-a")
    cluster.add_route("route-b")
    for _ in range(3):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, "gelu-a"))
    assert cluster.stage("gelu-a") == "Progressing"
    # gelu-b runs to its rollback while gelu-a sits at its first step: not one of gelu-a's
    # objects is written meanwhile (their resourceVersions stay), nor its route.
    snapshot = copy.deepcopy(owned(cluster.api, NAMESPACE, "gelu-a"))
    route_a = cluster.api.find("HTTPRoute", NAMESPACE, "route-a")
    for _ in range(6):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, "gelu-b"))
    assert cluster.stage("gelu-b") == "RolledBack"
    assert owned(cluster.api, NAMESPACE, "gelu-a") == snapshot
    assert cluster.api.find("HTTPRoute", NAMESPACE, "route-a") == route_a
    # gelu-b deleted: its route gets its own backends back, gelu-a's stays at its weights,
    # and gelu-a goes on to its promotion.
    cluster.delete(operator, "gelu-b")
    assert owned(cluster.api, NAMESPACE, "gelu-b") == {}
    assert backends(cluster.api, route="route-b") == ORIGINAL_BACKENDS
    assert owned(cluster.api, NAMESPACE, "gelu-a") == snapshot
    assert weights(cluster.api, route="route-a") == {"gelu-a-baseline": 90, "gelu-a-candidate": 10}
    for _ in range(8):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, "gelu-a"))
    assert cluster.stage("gelu-a") == "Promoted"
    assert outcomes(cluster.reasons("gelu-a")) == ["AllStepsPassed"]


def test_rollouts_of_one_name_in_two_namespaces_keep_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)

    def by_namespace(call: ObserverCall) -> Observations:
        return failing(call) if call.namespace == "team-b" else healthy(call)

    cluster = Cluster()
    operator = cluster.replica(by_namespace)
    for namespace, uid in (("team-a", "uid-a"), ("team-b", "uid-b")):
        cluster.add(NAME, rollout_spec("HTTPRoute"), namespace=namespace, uid=uid)
        cluster.add_route(namespace=namespace)
    for _ in range(10):
        cluster.now += timedelta(seconds=60)
        for namespace in ("team-a", "team-b"):
            calls = len(operator.observer.calls)
            asyncio.run(operator.fire(namespace, NAME))
            for call in operator.observer.calls[calls:]:
                check_queries(call, namespace, NAME)
    assert cluster.stage(NAME, "team-a") == "Promoted"
    assert cluster.stage(NAME, "team-b") == "RolledBack"
    assert outcomes(cluster.reasons(NAME, "team-a")) == ["AllStepsPassed"]
    assert outcomes(cluster.reasons(NAME, "team-b"))[0] in ROLLBACKS
    assert len(outcomes(cluster.reasons(NAME, "team-b"))) == 1
    for namespace, uid in (("team-a", "uid-a"), ("team-b", "uid-b")):
        objects = owned(cluster.api, namespace, NAME)
        assert objects
        assert all(owner_uids(o) == {uid} for o in objects.values())
        assert weights(cluster.api, namespace) == {
            "gelu-mlp-baseline": 100,
            "gelu-mlp-candidate": 0,
        }
    assert serves(cluster.api, "team-a", "gelu-mlp-baseline")[0] == "variant/tanh"
    assert serves(cluster.api, "team-b", "gelu-mlp-baseline")[0] == "variant/exact"
    # The deletion of one forgets only it: the other's memory (its settled rest) stays.
    cluster.now += timedelta(seconds=600)
    asyncio.run(operator.fire("team-a", NAME))
    assert asyncio.run(operator.fire("team-a", NAME)).rested
    cluster.delete(operator, NAME, "team-b")
    operator.controller.forget("team-b", NAME)
    assert asyncio.run(operator.fire("team-a", NAME)).rested
    assert backends(cluster.api, "team-b") == ORIGINAL_BACKENDS
    assert owned(cluster.api, "team-b", NAME) == {}
    assert owned(cluster.api, "team-a", NAME)


def test_a_rollout_never_takes_over_a_service_another_rollout_owns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``gelu`` owns the Service ``gelu-baseline`` (its baseline arm's: the probe's way in,
    and the route's backend in HTTPRoute mode); a rollout named ``gelu-baseline`` in
    ReplicaRatio mode renders a Service of that name too (the one in front of both its arms).
    The first owner keeps it, selecting its own baseline's pods, tick after tick."""
    fake_triton(monkeypatch)
    cluster = Cluster()
    operator = cluster.replica()
    cluster.add("gelu", rollout_spec(), uid="uid-gelu")
    cluster.add("gelu-baseline", rollout_spec(), uid="uid-other")
    held: list[tuple[str, str]] = []
    for _ in range(3):
        cluster.now += timedelta(seconds=60)
        for name in ("gelu", "gelu-baseline"):
            asyncio.run(operator.fire(NAMESPACE, name))
            service = cluster.api.find("Service", NAMESPACE, "gelu-baseline")
            assert service is not None
            selector = service["spec"]["selector"]
            held.append(
                (
                    ",".join(sorted(owner_uids(service))),
                    f"{selector[LABEL_ROLLOUT]}/{selector.get('gelu.dev/arm', 'both arms')}",
                )
            )
    # Otherwise whichever rollout wrote last owns it: the other's probe (and route) reach
    # the wrong pods, and deleting either rollout takes the Service from the other.
    assert set(held) == {("uid-gelu", "gelu/baseline")}, held
    # The second says why it does not go on, and never gets further than Pending.
    ready = next(
        c for c in cluster.status("gelu-baseline")["conditions"] if c["type"] == "ResourcesReady"
    )
    assert ready["reason"] == "ResourceConflict", ready
    assert "Service prod/gelu-baseline" in ready["message"], ready
    assert "GeluModelRollout gelu" in ready["message"], ready
    assert cluster.stage("gelu-baseline") in (None, "Pending")
    assert cluster.reasons("gelu-baseline").count("ResourceConflict") == 1
    # The first goes on as if the second were not there.
    assert cluster.stage("gelu") == "Progressing"


# -- deletion -------------------------------------------------------------------------------------


def release(world: RolloutWorld) -> None:
    """The deletion handler, as Kopf calls it, with the rollout as the world has it."""
    run_deletion_handler(world.controller, world.body)


@pytest.mark.parametrize("stage", STAGES)
def test_deleting_a_rollout_gives_the_route_back_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    checked, _, _, _ = reach(stage, monkeypatch)
    world = checked.world
    assert owned(world.api, NAMESPACE, NAME)
    release(world)
    garbage_collect(world.api, UID)
    assert owned(world.api, NAMESPACE, NAME) == {}, "every owned object had its owner reference"
    assert backends(world.api) == ORIGINAL_BACKENDS
    # A second call (Kopf retries a handler that raised) changes nothing.
    release(world)
    assert backends(world.api) == ORIGINAL_BACKENDS


def test_deleting_a_replica_ratio_rollout_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    for _ in range(3):
        world.tick(60)
    assert world.stage == "Progressing"
    release(world)
    garbage_collect(world.api, UID)
    assert owned(world.api, NAMESPACE, NAME) == {}
    assert world.api.objects == {}


def progressing_cluster(
    monkeypatch: pytest.MonkeyPatch, *, ticks: int = 4
) -> tuple[Cluster, Replica]:
    """A routed rollout in the fake API, its first step's analysis done after ``ticks``
    (the next tick advances it to 50%)."""
    fake_triton(monkeypatch)
    cluster = Cluster()
    operator = cluster.replica()
    cluster.add(NAME, ROUTED, uid=UID)
    cluster.add_route()
    for _ in range(ticks):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, NAME))
    assert (cluster.stage(), cluster.status()["candidateWeight"]) == ("Progressing", 10)
    return cluster, operator


def test_a_tick_in_flight_when_the_rollout_is_deleted_does_not_take_the_route_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kopf runs the deletion handler while the timer's tick is still running (it only asks
    timers to stop, and waits for them before it lets the rollout go): here the handler runs
    while the tick that advances to 50% is between reading the route and patching it."""
    cluster, operator = progressing_cluster(monkeypatch)

    released: list[str] = []

    async def delete() -> None:
        # kubectl delete: the finalizer holds the rollout, Kopf calls the deletion handler.
        body = cluster.api.find(ROLLOUT.kind, NAMESPACE, NAME)
        assert body is not None
        released.append(await operator.controller.release(body))

    cluster.api.at(lambda call: call.verb == "list", delete)
    cluster.now += timedelta(seconds=60)
    asyncio.run(operator.fire(NAMESPACE, NAME))
    assert released == ["HTTPRoute prod/gelu has its backends from before the rollout"]
    assert cluster.status()["candidateWeight"] == 50, "the tick in flight went on"
    # The timer stopped, Kopf lets the rollout go, the garbage collector takes its objects.
    cluster.api.remove(ROLLOUT.kind, NAMESPACE, NAME)
    garbage_collect(cluster.api, UID)
    assert owned(cluster.api, NAMESPACE, NAME) == {}
    assert backends(cluster.api) == ORIGINAL_BACKENDS, (
        "the route points at the deleted arm Services: " + str(backends(cluster.api))
    )


def test_a_lost_first_status_write_does_not_lose_the_routes_own_backends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first tick patches the route to the arms and learns its own backends; its status
    (which keeps them) is written by Kopf after the tick. Lost (the operator restarted in
    between, or a second replica's write came last), the next tick finds the route already
    the rollout's, and the deletion has nothing right to give back."""
    fake_triton(monkeypatch)
    cluster = Cluster()
    first = cluster.replica()
    cluster.add(NAME, ROUTED, uid=UID)
    cluster.add_route()
    cluster.now += timedelta(seconds=5)
    body = cluster.api.find(ROLLOUT.kind, NAMESPACE, NAME)
    assert body is not None
    asyncio.run(first.controller.reconcile(body))  # acted; killed before Kopf's patch
    assert weights(cluster.api) == {"gelu-mlp-baseline": 100, "gelu-mlp-candidate": 0}
    restarted = cluster.replica()
    for _ in range(3):
        cluster.now += timedelta(seconds=60)
        asyncio.run(restarted.fire(NAMESPACE, NAME))
    assert cluster.stage() == "Progressing"
    recorded = cluster.status().get("originalBackendRefs")
    cluster.delete(restarted)
    assert owned(cluster.api, NAMESPACE, NAME) == {}
    assert backends(cluster.api) == ORIGINAL_BACKENDS, (
        f"originalBackendRefs recorded after the restart: {recorded!r}; the route's backends "
        f"after the deletion: {backends(cluster.api)!r}"
    )


# -- a manual request or an edit while a tick is inside an await ------------------------------


def test_a_request_that_arrives_while_a_tick_runs_is_acted_on_once_at_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, operator = progressing_cluster(monkeypatch, ticks=2)

    async def abort() -> None:
        cluster.annotate("abort/1")

    # The tick read the rollout without the annotation; the user's write lands while the
    # tick reads the owned objects; Kopf's status patch after it leaves the annotation as it is.
    cluster.api.at(lambda call: call.verb == "list", abort)
    cluster.now += timedelta(seconds=60)
    asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.stage() == "Progressing"
    assert cluster.rollout()["metadata"]["annotations"][REQUEST_ANNOTATION] == "abort/1"
    for _ in range(3):
        cluster.now += timedelta(seconds=5)
        asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.stage() == "RolledBack"
    assert cluster.status()["handledRequest"] == "1"
    assert outcomes(cluster.reasons()) == ["Aborted"]
    assert weights(cluster.api) == {"gelu-mlp-baseline": 100, "gelu-mlp-candidate": 0}


def test_an_abort_that_arrives_while_a_tick_promotes_is_ignored_not_a_rollback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, operator = progressing_cluster(monkeypatch)
    for _ in range(3):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.status()["candidateWeight"] == 50

    async def abort() -> None:
        cluster.annotate("abort/1")

    # Between the promoting tick's read and its record of the promotion.
    cluster.api.at(writes_status, abort)
    cluster.now += timedelta(seconds=60)
    asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.stage() == "Promoted"
    for _ in range(3):
        cluster.now += timedelta(seconds=5)
        asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.stage() == "Promoted"
    assert cluster.status()["handledRequest"] == "1"
    assert outcomes(cluster.reasons()) == ["AllStepsPassed"]
    assert cluster.reasons().count("RequestIgnored") == 1
    assert serves(cluster.api, NAMESPACE, "gelu-mlp-baseline")[0] == "variant/tanh"


def test_a_second_request_while_the_first_is_acted_on_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, operator = progressing_cluster(monkeypatch, ticks=2)
    cluster.annotate("promote/1")

    async def again() -> None:
        cluster.annotate("promote/2")  # a second click

    cluster.api.at(writes_status, again)
    cluster.now += timedelta(seconds=60)
    asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.stage() == "Promoted"
    assert cluster.status()["handledRequest"] == "1"
    for _ in range(3):
        cluster.now += timedelta(seconds=5)
        asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.status()["handledRequest"] == "2"
    assert outcomes(cluster.reasons()) == ["ManualPromotion"]
    assert cluster.reasons().count("RequestIgnored") == 1


def test_a_spec_edit_while_the_promoting_tick_runs_restarts_at_the_next_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tick judged (and promotes) the generation it read; the edit that landed meanwhile
    is a new generation, which the next tick starts again from the probe."""
    cluster, operator = progressing_cluster(monkeypatch)
    for _ in range(3):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, NAME))
    new = edited_spec()

    async def edit() -> None:
        cluster.edit(new)

    cluster.api.at(lambda call: call.verb == "list", edit)
    cluster.now += timedelta(seconds=60)
    asyncio.run(operator.fire(NAMESPACE, NAME))
    status = cluster.status()
    assert (status["stage"], status["observedGeneration"]) == ("Promoted", 1)
    assert cluster.rollout()["metadata"]["generation"] == 2
    edited_at = cluster.now
    before = cluster.stage()
    seen: list[str] = []
    for _ in range(20):
        cluster.now += timedelta(seconds=60)
        reasons = len(cluster.reasons())
        asyncio.run(operator.fire(NAMESPACE, NAME))
        check_invariants(
            cluster.api,
            cluster.rollout(),
            before,
            cluster.reasons()[reasons:],
            promoted_image=EDITED_IMAGE,
        )
        before = cluster.stage()
        if not seen or seen[-1] != before:
            seen.append(str(before))
        if before == "Promoted":
            break
    assert seen == ["Pending", "Progressing", "Promoted"], seen
    assert "SpecChanged" in cluster.reasons()
    finished = datetime.fromisoformat(cluster.status()["finishedAt"])
    assert finished - edited_at >= timedelta(seconds=360)
    assert outcomes(cluster.reasons()) == ["AllStepsPassed", "AllStepsPassed"]


# -- two replicas without peering: two ticks of one rollout at once ---------------------------


def last_step(monkeypatch: pytest.MonkeyPatch) -> tuple[Cluster, Replica]:
    """At 50%, the last step's analysis one tick from the promotion."""
    cluster, operator = progressing_cluster(monkeypatch)
    for _ in range(3):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, NAME))
    assert cluster.status()["candidateWeight"] == 50
    return cluster, operator


def test_two_replicas_ticking_at_once_announce_the_promotion_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, first = last_step(monkeypatch)
    second = cluster.replica()
    cluster.now += timedelta(seconds=60)

    async def both() -> None:
        # Each reads the rollout before either writes (the metrics query is each one's
        # first real wait).
        await asyncio.gather(first.fire(NAMESPACE, NAME), second.fire(NAMESPACE, NAME))

    asyncio.run(both())
    assert cluster.stage() == "Promoted"
    assert outcomes(cluster.reasons()) == ["AllStepsPassed"], cluster.reasons()


def test_two_replicas_seeing_different_evidence_never_both_promote_and_roll_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One replica's metrics query is answered before a burst of failures, the other's after
    it; the second's whole tick runs while the first waits to record its promotion."""
    cluster, first = last_step(monkeypatch)
    second = cluster.replica(failing)

    async def other_replica() -> None:
        await second.fire(NAMESPACE, NAME)

    cluster.api.at(writes_status, other_replica)
    cluster.now += timedelta(seconds=60)
    asyncio.run(first.fire(NAMESPACE, NAME))
    announced = outcomes(cluster.reasons())
    status = cluster.status()
    assert len(announced) == 1, (
        f"announced {announced}; the status says {status['stage']}, the baseline serves "
        f"{serves(cluster.api, NAMESPACE, 'gelu-mlp-baseline')[0]}, the candidate has "
        f"{replicas(cluster.api, NAMESPACE, 'gelu-mlp-candidate')} replicas"
    )


def test_two_replicas_acting_on_one_manual_promotion_announce_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, first = progressing_cluster(monkeypatch, ticks=2)
    second = cluster.replica()
    cluster.annotate("promote/1")
    cluster.now += timedelta(seconds=60)

    async def both() -> None:
        await asyncio.gather(first.fire(NAMESPACE, NAME), second.fire(NAMESPACE, NAME))

    asyncio.run(both())
    assert cluster.stage() == "Promoted"
    assert cluster.status()["handledRequest"] == "1"
    assert outcomes(cluster.reasons()) == ["ManualPromotion"], cluster.reasons()


def test_two_replicas_one_tick_apart_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas whose ticks do not overlap are two ticks of one operator: the second
    reads what the first wrote and decides nothing again."""
    cluster, first = last_step(monkeypatch)
    second = cluster.replica()
    cluster.now += timedelta(seconds=60)
    asyncio.run(first.fire(NAMESPACE, NAME))
    asyncio.run(second.fire(NAMESPACE, NAME))
    cluster.now += timedelta(seconds=5)
    asyncio.run(second.fire(NAMESPACE, NAME))
    asyncio.run(first.fire(NAMESPACE, NAME))
    assert cluster.stage() == "Promoted"
    assert outcomes(cluster.reasons()) == ["AllStepsPassed"]


def test_a_slow_tick_of_a_second_replica_does_not_undo_the_promotion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second replica's tick read the rollout at its last step with nothing due, and
    stalls in its LIST while the first replica's tick promotes; what it writes after, from
    what it read, is the last step again."""
    cluster, first = last_step(monkeypatch)
    second = cluster.replica()

    async def promote_meanwhile() -> None:
        cluster.now += timedelta(seconds=30)
        await first.fire(NAMESPACE, NAME)
        assert cluster.stage() == "Promoted"

    cluster.now += timedelta(seconds=30)  # the analysis is due in 30 s
    cluster.api.at(lambda call: call.verb == "list", promote_meanwhile)
    asyncio.run(second.fire(NAMESPACE, NAME))
    for _ in range(3):
        cluster.now += timedelta(seconds=60)
        asyncio.run(first.fire(NAMESPACE, NAME))
    assert cluster.stage() == "Promoted"
    assert outcomes(cluster.reasons()) == ["AllStepsPassed"], cluster.reasons()


def test_a_tick_that_records_first_leaves_no_applying_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decision is written first with ResourcesReady ``Applying``; the tick's own write at
    its end changes from that record, not from the status it read, so the summary moves on
    even where it equals the one the tick found."""
    cluster, operator = progressing_cluster(monkeypatch)
    reasons = []
    for _ in range(8):
        cluster.now += timedelta(seconds=60)
        asyncio.run(operator.fire(NAMESPACE, NAME))
        ready = next(c for c in cluster.status()["conditions"] if c["type"] == "ResourcesReady")
        reasons.append((cluster.stage(), ready["reason"]))
    assert ("Promoted", "ResourcesApplied") in reasons, reasons
    assert all(reason != "Applying" for _, reason in reasons), reasons
