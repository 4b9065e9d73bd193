"""The status as generic tools read it: kstatus (Flux, kpt), `kubectl wait`'s Ready, and the
observedGeneration of every write.

``kstatus`` below is the reading of sigs.k8s.io/cli-utils/pkg/kstatus for a custom resource: a
generation not yet observed is InProgress, then the first True ``Reconciling`` (InProgress) or
``Stalled`` (Failed) decides, then newer versions read ``Ready`` (True: Current, False:
InProgress) and older ones take the resource as Current. Every case here must read the same
under both.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gelu_rollout.adapters.kube import KubeClient
from gelu_rollout.adapters.kube.kinds import Kind
from gelu_rollout.adapters.prometheus.fake import FakeObserver, ObserverCall
from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.controller import Controller, TickResult
from gelu_rollout.rollout.conditions import Reason, Resources, summarize
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.rollout.requests import ManualRequest, RequestKind
from gelu_rollout.spec import parse_spec
from gelu_rollout.spec.status import RolloutStatus, Stage
from tests.rollout_helpers import T0, Driver, arm, make_spec

KStatus = Literal["InProgress", "Failed", "Current"]
READY = Resources(True, Reason.RESOURCES_APPLIED, "every owned resource is applied and ready")


def kstatus(obj: Mapping[str, Any], *, ready_fallback: bool) -> KStatus:
    generation = (obj.get("metadata") or {}).get("generation")
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition["type"] == "Reconciling" and condition["status"] == "True":
            return "InProgress"
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return "Failed"
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    if ready_fallback and ready is not None and ready["status"] != "True":
        return "InProgress"
    return "Current"


def read(status: RolloutStatus, generation: int = 1) -> KStatus:
    """kstatus's verdict, the same with and without its Ready rule."""
    obj = {"metadata": {"generation": generation}, "status": status.to_dict()}
    verdict = kstatus(obj, ready_fallback=True)
    assert kstatus(obj, ready_fallback=False) == verdict
    return verdict


def summary(status: RolloutStatus) -> dict[str, tuple[str, str]]:
    return {
        c.type: (c.status, c.reason)
        for c in status.conditions
        if c.type in ("Reconciling", "Stalled", "Ready")
    }


def applied(driver: Driver, resources: Resources = READY) -> RolloutStatus:
    """The status as the controller writes it after this tick's apply."""
    return summarize(
        driver.status, driver.now, driver.status.observed_generation, resources=resources
    )


def test_a_progressing_rollout_is_in_progress_with_the_current_reason() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    assert read(applied(driver)) == "InProgress"
    assert summary(driver.status)["Reconciling"] == ("True", "RolloutStarted")
    for _ in range(4):
        driver.tick(generation=1)
    assert summary(applied(driver)) == {
        "Reconciling": ("True", "StepAdvanced"),
        "Stalled": ("False", "NotStalled"),
        "Ready": ("False", "StepAdvanced"),
    }


def test_waiting_for_data_is_reconciling_then_a_pause_is_stalled() -> None:
    spec = make_spec(insufficientData={"maxExtensionSeconds": 120})
    driver = Driver(spec)
    driver.tick(missing=True, generation=1)
    for _ in range(4):
        driver.tick(missing=True, generation=1)
    stage = driver.status.stage
    assert stage is Stage.PROGRESSING
    assert summary(driver.status)["Reconciling"] == ("True", "InsufficientData")
    assert read(applied(driver)) == "InProgress"
    driver.tick(missing=True, generation=1)
    assert driver.status.stage is Stage.PAUSED
    assert summary(applied(driver)) == {
        "Reconciling": ("False", "NotReconciling"),
        "Stalled": ("True", "InsufficientData"),
        "Ready": ("False", "InsufficientData"),
    }
    assert read(applied(driver)) == "Failed"
    driver.tick(request=ManualRequest(RequestKind.RETRY, "r1"), generation=1)
    assert summary(driver.status)["Reconciling"] == ("True", "Retried")
    assert read(applied(driver)) == "InProgress"


def probe(verdict: Verdict) -> GateResult:
    return GateResult("probe", verdict, 0.001, 0.05, 280, 0.0, f"probe said {verdict.value}")


def test_a_probe_inconclusive_past_its_deadline_is_stalled_until_it_answers() -> None:
    driver = Driver(
        make_spec(probe={"enabled": True}, insufficientData={"maxExtensionSeconds": 120})
    )
    driver.tick(missing=True, generation=1)
    driver.tick(probe=probe(Verdict.INCONCLUSIVE), generation=1)
    assert read(applied(driver)) == "InProgress"
    for _ in range(3):
        driver.tick(probe=probe(Verdict.INCONCLUSIVE), generation=1)
    assert summary(driver.status)["Stalled"] == ("True", "ProbeInconclusive")
    assert read(applied(driver)) == "Failed"
    driver.tick(probe=probe(Verdict.PASS), generation=1)
    assert read(applied(driver)) == "InProgress"


def test_rolled_back_is_failed_and_promoted_is_current() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    driver.tick(candidate=arm(nonfinite=1, windows=driver.windows()), generation=1)
    assert summary(applied(driver)) == {
        "Reconciling": ("False", "NotReconciling"),
        "Stalled": ("True", "NonFiniteOutputs"),
        "Ready": ("False", "NonFiniteOutputs"),
    }
    assert read(applied(driver)) == "Failed"
    driver.tick(request=ManualRequest(RequestKind.RETRY, "r1"), generation=1)
    assert read(applied(driver)) == "InProgress"
    while driver.status.stage is not Stage.PROMOTED:
        driver.tick(generation=1)
    assert summary(applied(driver)) == {
        "Reconciling": ("False", "NotReconciling"),
        "Stalled": ("False", "NotStalled"),
        "Ready": ("True", "AllStepsPassed"),
    }
    assert read(applied(driver)) == "Current"


def test_promoted_is_ready_only_once_the_baseline_serves_the_candidate() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    driver.tick(request=ManualRequest(RequestKind.PROMOTE, "p1"), generation=1)
    waiting = Resources(False, Reason.WAITING_FOR_PODS, "waiting for gelu-mlp-baseline")
    rolling = applied(driver, waiting)
    assert summary(rolling)["Reconciling"] == ("True", "WaitingForPods")
    assert rolling.condition("Reconciling").message == (  # type: ignore[union-attr]
        "promoted on request; waiting for gelu-mlp-baseline"
    )
    assert read(rolling) == "InProgress"
    later = driver.now + timedelta(seconds=30)
    done = summarize(rolling, later, 1, resources=READY, previous=rolling.conditions)
    assert summary(done)["Ready"] == ("True", "ManualPromotion")
    assert done.condition("Ready").last_transition_time == later  # type: ignore[union-attr]
    assert read(done) == "Current"


@pytest.mark.parametrize(
    "reason", [Reason.INVALID_SPEC, Reason.REPOSITORY_MISSING, Reason.ROUTE_MISSING]
)
def test_what_a_person_must_fix_is_stalled_whatever_the_stage(reason: Reason) -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    for stage_status in (driver.status, driver.status.model_copy(update={"stage": Stage.PROMOTED})):
        blocked = summarize(stage_status, driver.now, 1, resources=Resources(False, reason, "x"))
        assert summary(blocked)["Stalled"] == ("True", reason.value)
        assert summary(blocked)["Ready"] == ("False", reason.value)
        assert blocked.condition("ResourcesReady").reason == reason.value  # type: ignore[union-attr]
        assert read(blocked) == "Failed"


def test_a_condition_set_twice_in_a_tick_keeps_its_written_transition_time() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    blocked = summarize(
        driver.status, driver.now, 1, resources=Resources(False, Reason.ROUTE_MISSING, "gone")
    )
    # The next tick: decide's own summary (no route known) says Reconciling; the controller's
    # says Stalled again. Stalled has been True all along.
    driver.status = blocked
    driver.tick(generation=1)
    again = summarize(
        driver.status,
        driver.now,
        1,
        resources=Resources(False, Reason.ROUTE_MISSING, "gone"),
        previous=blocked.conditions,
    )
    for type_ in ("Reconciling", "Stalled", "Ready"):
        assert (
            again.condition(type_).last_transition_time  # type: ignore[union-attr]
            == blocked.condition(type_).last_transition_time  # type: ignore[union-attr]
        )


@st.composite
def ticks(draw: st.DrawFn) -> list[dict[str, Any]]:
    plan = []
    generation = 1
    for _ in range(draw(st.integers(0, 14))):
        if draw(st.integers(0, 7)) == 0:
            generation += 1  # a spec change
        request = None
        if draw(st.integers(0, 6)) == 0:
            request = ManualRequest(
                draw(st.sampled_from(list(RequestKind))), str(draw(st.integers(0, 3)))
            )
        plan.append(
            {
                "generation": generation,
                "request": request,
                "missing": draw(st.integers(0, 3)) == 0,
                "nonfinite": draw(st.sampled_from([0.0, 0.0, 0.0, 0.0, 1.0])),
            }
        )
    return plan


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks())
def test_every_decision_reads_as_exactly_one_state_of_the_current_generation(
    plan: list[dict[str, Any]],
) -> None:
    driver = Driver(make_spec(insufficientData={"maxExtensionSeconds": 60}))
    driver.tick(missing=True, generation=1)
    for tick in plan:
        windows = driver.windows()
        driver.tick(
            candidate=arm(nonfinite=tick["nonfinite"], windows=windows),
            missing=tick["missing"],
            request=tick["request"],
            generation=tick["generation"],
        )
        status, generation = driver.status, tick["generation"]
        assert status.observed_generation == generation
        assert {c.observed_generation for c in status.conditions} == {generation}
        true = [t for t, (value, _) in summary(status).items() if value == "True"]
        expected = {
            Stage.PENDING: "Reconciling",
            Stage.PROGRESSING: "Reconciling",
            Stage.PAUSED: "Stalled",
            Stage.ROLLED_BACK: "Stalled",
            Stage.PROMOTED: "Ready",
        }[status.stage]
        assert true == [expected]
        assert (
            read(status, generation)
            == {
                "Reconciling": "InProgress",
                "Stalled": "Failed",
                "Ready": "Current",
            }[expected]
        )


# -- the controller: every status write carries the generation -------------------------------

SPEC: dict[str, Any] = {
    "model": {"name": "gelu-mlp"},
    "baseline": {"variant": "exact"},
    "candidate": {"variant": "tanh", "replicas": 2},
    "traffic": {
        "steps": [{"weight": 10, "analysisSeconds": 180}, {"weight": 50, "analysisSeconds": 180}]
    },
    "analysis": {"intervalSeconds": 60, "warmupSeconds": 0, "probe": {"enabled": False}},
}
REPOSITORY = {"config.pbtxt": 'name: "gelu-mlp"', "model.py": "# the model"}


def healthy(call: ObserverCall) -> Observations:
    """Both arms alike and busy: enough for every gate to pass."""
    windows = call.burn_windows_seconds
    return Observations(call.at, call.interval_seconds, arm(windows=windows), arm(windows=windows))


class FakeKube:
    """The few calls a tick makes, over a dict; apply keeps the status the cluster wrote."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def put(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", "prod"), meta["name"])] = copy.deepcopy(
            dict(obj)
        )

    def pods_ready(self) -> None:
        for (kind, _, _), obj in self.objects.items():
            if kind == "Deployment":
                obj["status"] = {"readyReplicas": obj["spec"]["replicas"]}

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> dict[str, Any] | None:
        found = self.objects.get((kind.kind, namespace or "", name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        wanted = dict(pair.split("=", 1) for pair in (label_selector or "").split(",") if pair)
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in self.objects.items()
            if k == kind.kind
            and ns == namespace
            and wanted.items() <= (obj["metadata"].get("labels") or {}).items()
        ]

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        new = copy.deepcopy(dict(obj))
        if key in self.objects and "status" in self.objects[key]:
            new["status"] = self.objects[key]["status"]
        self.objects[key] = new
        return copy.deepcopy(new)

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        return self.objects.pop((kind.kind, namespace or "", name), None) is not None

    async def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        obj = self.objects[(kind.kind, namespace or "", name)]
        obj["spec"] = {**obj.get("spec", {}), **patch.get("spec", {})}
        return copy.deepcopy(obj)


class Cluster:
    """One rollout, ticked by a real Controller; the status is written back as Kopf does."""

    def __init__(self, spec: Mapping[str, Any] = SPEC) -> None:
        self.kube = FakeKube()
        self.now = T0
        self.controller = Controller(
            kube=cast(KubeClient, self.kube),
            observer=FakeObserver([healthy] * 100),
            endpoints=lambda namespace, service: [],
            clock=lambda: self.now,
        )
        self.body: dict[str, Any] = {
            "apiVersion": "gelu.dev/v1alpha1",
            "kind": "GeluModelRollout",
            "metadata": {"name": "gelu-mlp", "namespace": "prod", "uid": "u1", "generation": 1},
            "spec": copy.deepcopy(dict(spec)),
        }

    def edit(self, spec: Mapping[str, Any]) -> None:
        self.body["spec"] = copy.deepcopy(dict(spec))
        self.body["metadata"]["generation"] += 1

    def promote(self) -> None:
        """Tick an analysis interval at a time until the rollout is promoted."""
        for _ in range(20):
            if self.status.get("stage") == "Promoted":
                return
            assert self.condition("Ready")[0] == "False"
            self.tick(seconds=60)
        raise AssertionError(f"not promoted: {self.status.get('message')}")

    def tick(self, seconds: float = 5.0) -> TickResult:
        self.now += timedelta(seconds=seconds)
        result = asyncio.run(self.controller.tick(copy.deepcopy(self.body)))
        status = {**(self.body.get("status") or {}), **result.status}
        self.body["status"] = {k: v for k, v in status.items() if v is not None}
        return result

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body["status"])

    def condition(self, type_: str) -> tuple[str, str]:
        found = next(c for c in self.status["conditions"] if c["type"] == type_)
        return found["status"], found["reason"]

    def current(self) -> bool:
        """Whether the status and every condition speak of the object's generation."""
        generation = self.body["metadata"]["generation"]
        return self.status["observedGeneration"] == generation and all(
            c["observedGeneration"] == generation for c in self.status["conditions"]
        )

    def kstatus(self) -> KStatus:
        verdict = kstatus(self.body, ready_fallback=True)
        assert kstatus(self.body, ready_fallback=False) == verdict
        return verdict


def test_a_tick_that_decides_nothing_still_writes_the_generation() -> None:
    cluster = Cluster()
    cluster.tick()
    cluster.tick()  # the first look at the metrics: the next is an interval away
    assert cluster.status["stage"] == "Progressing"
    # Conditions written by an operator that forgot to say which generation they judged.
    cluster.body["status"]["conditions"] = [
        {k: v for k, v in c.items() if k != "observedGeneration"}
        for c in cluster.status["conditions"]
    ]
    before = cluster.status["analysis"]
    result = cluster.tick(seconds=1)
    assert cluster.status["analysis"] == before, "the tick decided something"
    assert not result.results
    assert cluster.current()
    assert cluster.condition("ResourcesReady") == ("False", "WaitingForPods")
    cluster.kube.pods_ready()
    cluster.tick(seconds=1)
    assert cluster.condition("ResourcesReady") == ("True", "ResourcesApplied")
    assert cluster.condition("Reconciling") == ("True", "RolloutStarted")
    assert cluster.kstatus() == "InProgress"


def test_an_invalid_spec_is_observed_stalled_and_reported_once() -> None:
    cluster = Cluster()
    cluster.tick()
    cluster.edit({**SPEC, "candidate": {"variant": "exact"}})
    result = cluster.tick()
    assert cluster.current()
    assert cluster.condition("Stalled") == ("True", "InvalidSpec")
    assert cluster.condition("Ready") == ("False", "InvalidSpec")
    assert cluster.condition("Reconciling") == ("False", "NotReconciling")
    assert cluster.kstatus() == "Failed"
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "InvalidSpec")]
    assert cluster.tick().events == ()
    # The spec the rollout runs on is still the first one; a valid edit starts it again.
    assert cluster.status["startedGeneration"] == 1
    cluster.edit(SPEC)
    result = cluster.tick()
    assert "SpecChanged" in [e.reason for e in result.events]
    assert cluster.status["startedGeneration"] == 3
    assert cluster.current()
    assert cluster.kstatus() == "InProgress"


def test_a_missing_repository_is_observed_and_a_spec_change_behind_it_still_restarts() -> None:
    cluster = Cluster()
    cluster.tick()
    cluster.kube.pods_ready()
    for _ in range(4):
        cluster.tick(seconds=60)
    assert cluster.status["stepIndex"] == 1
    with_repository = {
        **SPEC,
        "candidate": {"replicas": 2, "repository": {"configMapName": "v2"}},
    }
    cluster.edit(with_repository)
    result = cluster.tick()
    assert cluster.current()
    assert cluster.condition("Stalled") == ("True", "RepositoryMissing")
    assert cluster.kstatus() == "Failed"
    assert [e.reason for e in result.events] == ["RepositoryMissing"]
    assert cluster.status["stepIndex"] == 1, "nothing moves while the repository is missing"
    cluster.kube.put(
        {"kind": "ConfigMap", "metadata": {"name": "v2", "namespace": "prod"}, "data": REPOSITORY}
    )
    result = cluster.tick()
    assert "SpecChanged" in [e.reason for e in result.events]
    assert (cluster.status["stepIndex"], cluster.status["startedGeneration"]) == (0, 2)
    assert cluster.condition("Stalled") == ("False", "NotStalled")
    assert cluster.current()


def test_a_missing_route_stalls_the_rollout_until_it_exists() -> None:
    spec = {**SPEC, "traffic": {**SPEC["traffic"], "mode": "HTTPRoute", "httpRouteName": "gelu"}}
    cluster = Cluster(spec)
    cluster.tick()
    assert cluster.condition("Stalled") == ("True", "HTTPRouteMissing")
    assert cluster.condition("ResourcesReady") == ("False", "HTTPRouteMissing")
    assert cluster.current()
    assert cluster.kstatus() == "Failed"
    cluster.kube.put(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "gelu", "namespace": "prod"},
            "spec": {"rules": [{"backendRefs": []}]},
        }
    )
    cluster.kube.pods_ready()
    cluster.tick()
    assert cluster.condition("Stalled") == ("False", "NotStalled")
    assert cluster.condition("Reconciling") == ("True", "RolloutStarted")
    assert cluster.kstatus() == "InProgress"


def test_kubectl_wait_for_ready_returns_once_promoted_and_served() -> None:
    cluster = Cluster()
    cluster.tick()
    cluster.kube.pods_ready()
    cluster.promote()
    # The baseline's Deployment now serves the candidate's model: its new pods are not ready.
    for (kind, _, _), obj in cluster.kube.objects.items():
        if kind == "Deployment":
            obj["status"] = {"readyReplicas": 0}
    cluster.tick()
    assert cluster.condition("Ready") == ("False", "WaitingForPods")
    assert cluster.kstatus() == "InProgress"
    cluster.kube.pods_ready()
    cluster.tick()
    assert cluster.condition("Ready") == ("True", "AllStepsPassed")
    assert cluster.kstatus() == "Current"
    assert cluster.current()


def test_a_spec_not_yet_observed_reads_in_progress() -> None:
    cluster = Cluster()
    cluster.tick()
    cluster.kube.pods_ready()
    cluster.promote()
    assert cluster.kstatus() == "Current"
    sigmoid = {**SPEC, "candidate": {"variant": "sigmoid", "replicas": 2}}
    parse_spec(sigmoid)
    cluster.edit(sigmoid)
    assert cluster.kstatus() == "InProgress"
    cluster.tick()
    assert cluster.kstatus() == "InProgress"
    assert cluster.condition("Reconciling") == ("True", "SpecChanged")
