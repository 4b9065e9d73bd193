"""``Controller.reconcile`` through whole rollouts, against the in-memory API and the scripted
observer, with the probe faked: no Triton, no Prometheus, no API server, in seconds.

Also the cost of a finished rollout (what each timer firing asks of the API server) and the
Kopf glue, called as Kopf calls the registered handlers.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import kopf
import pytest

from gelu_rollout.adapters.errors import RETRY_CAP_SECONDS
from gelu_rollout.adapters.kube.kinds import HTTP_ROUTE
from gelu_rollout.adapters.prometheus.fake import FakeObserver
from gelu_rollout.analysis.verdict import Verdict
from gelu_rollout.controller import TERMINAL_RECHECK_SECONDS, TERMINAL_SETTLE_SECONDS
from gelu_rollout.handlers import build_registry
from tests.fakes.kube import Request
from tests.fakes.world import NAME, NAMESPACE, SPEC, RolloutWorld, failing, fake_triton

ROUTED: dict[str, Any] = {
    **SPEC,
    "traffic": {**SPEC["traffic"], "mode": "HTTPRoute", "httpRouteName": "gelu"},
}


def deployment_replicas(world: RolloutWorld) -> dict[str, int]:
    return {
        d["metadata"]["name"]: int(d["spec"]["replicas"]) for d in world.api.of_kind("Deployment")
    }


def route_weights(world: RolloutWorld) -> dict[str, int]:
    route = world.api.find("HTTPRoute", NAMESPACE, "gelu")
    assert route is not None
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {ref["name"]: int(ref.get("weight", 1)) for ref in refs}


# -- whole rollouts ------------------------------------------------------------------------


def test_a_healthy_candidate_is_probed_analysed_and_promoted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    triton = fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED)
    world.add_route()
    world.tick()
    assert world.stage == "Pending"
    assert world.candidate_weight() == 0
    assert route_weights(world) == {"gelu-mlp-baseline": 100, "gelu-mlp-candidate": 0}
    assert triton.calls == [], "no probe before both arms run"
    world.tick()
    # Both arms' pods are ready (the fake's kubelet): the probe ran once, on both Services.
    assert triton.calls == [
        ("gelu-mlp-baseline.prod:8000", "gelu-mlp-candidate.prod:8000", "gelu-mlp")
    ]
    assert world.stage == "Progressing"
    assert route_weights(world) == {"gelu-mlp-baseline": 90, "gelu-mlp-candidate": 10}
    world.run_until("Promoted")
    assert world.stages == ["Pending", "Progressing", "Promoted"]
    assert world.condition("Promoted") == ("True", "AllStepsPassed")
    assert world.condition("Ready") == ("True", "AllStepsPassed")
    assert "StepAdvanced" in [e.reason for e in world.events]
    assert world.warnings() == []
    assert world.failures("transient") == world.failures("permanent") == 0
    assert len(triton.calls) == 1


def test_a_candidate_that_fails_requests_is_rolled_back(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED, script=failing)
    world.add_route()
    world.run_until("RolledBack")
    assert world.stages == ["Pending", "Progressing", "RolledBack"]
    status, reason = world.condition("RolledBack")
    assert status == "True"
    assert reason in ("FastBurn", "ErrorRateAboveTolerance")
    assert world.condition("Promoted")[0] == "False"
    assert world.candidate_weight() == 0
    assert route_weights(world) == {"gelu-mlp-baseline": 100, "gelu-mlp-candidate": 0}
    assert deployment_replicas(world)["gelu-mlp-candidate"] == 0
    assert reason in world.warnings()


def test_a_failed_probe_rolls_back_before_any_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_triton(monkeypatch, Verdict.FAIL)
    world = RolloutWorld(ROUTED)
    world.add_route()
    world.tick()
    world.tick()
    assert world.stages == ["Pending", "RolledBack"]
    assert world.condition("RolledBack") == ("True", "ProbeFailed")
    assert route_weights(world)["gelu-mlp-candidate"] == 0
    assert isinstance(world.observer, FakeObserver)
    assert world.observer.calls == [], "no metrics are asked for before any traffic"


# -- a finished rollout costs nothing between rechecks ----------------------------------------


def test_a_finished_rollout_stops_reading_and_writing_between_rare_rechecks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED)
    world.add_route()
    world.run_until("Promoted")
    # Before: the tick itself reads every owned object every time (and applies what changed).
    world.api.reset_counts()
    asyncio.run(world.controller.tick(copy.deepcopy(world.body)))
    full_tick = world.api.count()
    assert full_tick >= 4, world.api.requests
    assert world.api.count("list") == 3
    # Within the settling time the timer still ticks in full: Ready follows the pods.
    world.api.reset_counts()
    world.tick()
    assert world.api.count() == full_tick
    # After: once settled, a firing asks nothing of the API server ...
    world.tick(seconds=TERMINAL_SETTLE_SECONDS)
    world.api.reset_counts()
    firings = int(TERMINAL_RECHECK_SECONDS // 5) - 1
    for _ in range(firings):
        assert world.tick().rested
    assert world.api.count() == 0, world.api.requests[:5]
    # ... until the rare recheck, which reads and applies everything once more.
    world.tick(seconds=10)
    assert world.api.count() == full_tick
    world.api.reset_counts()
    world.tick()
    assert world.api.count() == 0
    assert world.stage == "Promoted"


def test_an_object_is_applied_when_its_rendering_changes_or_it_drifted_not_every_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    world.run_until("Progressing")
    world.api.reset_counts()
    world.tick(seconds=60)
    assert world.api.count("apply") == 0, world.api.requests
    # Another hand changed an owned Deployment: put back at the next tick, and only it.
    deployment = world.api.find("Deployment", NAMESPACE, "gelu-mlp-baseline")
    assert deployment is not None
    deployment["spec"]["replicas"] = 7
    world.api.put(deployment)
    world.tick(seconds=60)
    applies = [r for r in world.api.requests if r.verb == "apply"]
    assert [(r.kind, r.name) for r in applies] == [("Deployment", "gelu-mlp-baseline")]
    repaired = world.api.find("Deployment", NAMESPACE, "gelu-mlp-baseline") or {}
    assert repaired["spec"]["replicas"] != 7
    # A restarted operator finds each object's fingerprint as it renders it: nothing to apply.
    world.restart()
    world.api.reset_counts()
    world.tick(seconds=60)
    assert world.api.count("apply") == 0
    # A change of the rendering (the candidate pods' node selector): that Deployment is
    # applied, and the field dropped again when the spec drops it.
    candidate = world.body["spec"]["candidate"]
    for selector in ({"pool": "gpu"}, None):
        pod = {"nodeSelector": selector} if selector else {}
        world.edit({**world.body["spec"], "candidate": {**candidate, "pod": pod}})
        world.api.reset_counts()
        world.tick(seconds=60)
        assert ("Deployment", "gelu-mlp-candidate") in {
            (r.kind, r.name) for r in world.api.requests if r.verb == "apply"
        }
        live = world.api.find("Deployment", NAMESPACE, "gelu-mlp-candidate") or {}
        assert live["spec"]["template"]["spec"].get("nodeSelector") == selector


def test_a_finished_rollouts_deleted_object_comes_back_at_the_recheck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    world.run_until("Promoted")
    world.tick(seconds=TERMINAL_SETTLE_SECONDS)
    world.api.remove("Service", NAMESPACE, "gelu-mlp-baseline")
    world.tick()
    assert world.api.find("Service", NAMESPACE, "gelu-mlp-baseline") is None
    world.tick(seconds=TERMINAL_RECHECK_SECONDS)
    assert world.api.find("Service", NAMESPACE, "gelu-mlp-baseline") is not None


def test_a_spec_change_or_a_request_wakes_a_finished_rollout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch, Verdict.FAIL)
    world = RolloutWorld()
    world.run_until("RolledBack")
    world.tick(seconds=TERMINAL_SETTLE_SECONDS)
    assert world.tick().rested
    # A manual retry is read at the next firing, not at the recheck.
    world.request("retry/1")
    result = world.tick()
    assert not result.rested
    assert world.status["handledRequest"] == "1"
    assert world.stage == "Pending"
    world.run_until("RolledBack", seconds=5)
    world.tick(seconds=TERMINAL_SETTLE_SECONDS)
    assert world.tick().rested
    edited = copy.deepcopy(SPEC)
    edited["candidate"] = {"variant": "sigmoid", "replicas": 2}
    world.edit(edited)
    assert not world.tick().rested
    assert "SpecChanged" in [e.reason for e in world.events]
    assert world.status["observedGeneration"] == 2


# -- the Kopf glue -----------------------------------------------------------------------------


def name_of(fn: object) -> str:
    return str(getattr(fn, "__name__", ""))


class Handlers:
    """The registered handlers of ``build_registry``, called as Kopf calls them; Events posted
    through ``kopf.event`` are collected."""

    def __init__(self, world: RolloutWorld, monkeypatch: pytest.MonkeyPatch) -> None:
        self.world = world
        self.registry = build_registry(world.controller, tick_seconds=5.0)
        self.events: list[tuple[str, str, str]] = []

        def record(_: Any, *, type: str, reason: str, message: str) -> None:
            self.events.append((type, reason, message))

        # The handlers post through kopf.event; Kopf's poster is not running here.
        monkeypatch.setattr(kopf, "event", record)
        spawning = self.registry._spawning.get_all_handlers()
        changing = self.registry._changing.get_all_handlers()
        watching = self.registry._watching.get_all_handlers()
        # Kopf passes many more keyword arguments; these handlers take only a few.
        self.timer: Callable[..., Any] = next(h.fn for h in spawning if name_of(h.fn) == "tick")
        self.release: Callable[..., Any] = next(
            h.fn for h in changing if name_of(h.fn) == "release"
        )
        self.forget: Callable[..., Any] = next(h.fn for h in watching if name_of(h.fn) == "forget")

    def tick(self, seconds: float = 5.0) -> kopf.Patch:
        """One timer firing through the handler; the patch is written back to the world."""
        self.world.now += timedelta(seconds=seconds)
        patch = kopf.Patch()
        body = kopf.Body(cast(Any, copy.deepcopy(self.world.body)))
        logger = logging.getLogger("kopf.objects")
        try:
            asyncio.run(self.timer(body=body, patch=patch, logger=logger))
        finally:
            status = {**(self.world.body.get("status") or {}), **dict(patch.get("status") or {})}
            self.world.body["status"] = {k: v for k, v in status.items() if v is not None}
        return patch


def test_the_timer_handler_writes_the_status_and_posts_the_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    handlers = Handlers(world, monkeypatch)
    patch = handlers.tick()
    assert patch["status"]["stage"] == "Pending"
    assert ("Normal", "RolloutStarted") in [(t, r) for t, r, _ in handlers.events]
    for _ in range(20):
        handlers.tick(seconds=60)
    assert world.stage == "Promoted"
    # Settled: a firing reads nothing and leaves Kopf no status to patch (no request at all).
    handlers.tick(seconds=TERMINAL_SETTLE_SECONDS)
    world.api.reset_counts()
    assert not handlers.tick()
    assert world.api.count() == 0


def test_the_timer_handler_retries_a_transient_failure_with_a_growing_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    handlers = Handlers(world, monkeypatch)
    handlers.tick()
    world.api.fail("list", status=503)
    delays = []
    for _ in range(7):
        with pytest.raises(kopf.TemporaryError) as raised:
            handlers.tick()
        assert "transient failure" in str(raised.value)
        assert "HTTP 503" in str(raised.value)
        delays.append(raised.value.delay)
    assert delays == [5.0, 10.0, 20.0, 40.0, RETRY_CAP_SECONDS, RETRY_CAP_SECONDS, 60.0]
    world.api.heal()
    handlers.tick()
    # Recovered: the next failure starts from the first delay again.
    world.api.fail("list", status=503, times=1)
    with pytest.raises(kopf.TemporaryError) as raised:
        handlers.tick()
    assert raised.value.delay == 5.0


def test_the_timer_handler_writes_a_permanent_failure_and_does_not_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    handlers = Handlers(world, monkeypatch)
    world.api.fail("apply", "Deployment", status=403)
    patch = handlers.tick()
    stalled = next(c for c in patch["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "Forbidden")
    assert [(t, r) for t, r, _ in handlers.events] == [("Warning", "Forbidden")]
    # Waiting: the next firings neither fail nor post again, and leave Kopf nothing to patch.
    for _ in range(3):
        assert not handlers.tick()
    assert len(handlers.events) == 1


def test_deleting_a_rollout_whose_route_cannot_be_restored_waits_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED)
    world.add_route()
    world.tick()
    world.tick()
    assert route_weights(world)["gelu-mlp-candidate"] == 10
    handlers = Handlers(world, monkeypatch)
    world.api.fail("patch", "HTTPRoute", status=403)
    body = kopf.Body(cast(Any, copy.deepcopy(world.body)))
    logger = logging.getLogger("kopf.objects")
    for retry in range(2):
        with pytest.raises(kopf.TemporaryError) as raised:
            asyncio.run(handlers.release(body=body, logger=logger, retry=retry))
        assert raised.value.delay == 300.0
    # One Event for the problem, not one per attempt.
    assert [(t, r) for t, r, _ in handlers.events] == [("Warning", "Forbidden")]
    world.api.heal()
    world.api.fail("patch", "HTTPRoute", status=500, times=1)
    with pytest.raises(kopf.TemporaryError) as raised:
        asyncio.run(handlers.release(body=body, logger=logger, retry=2))
    assert raised.value.delay == 20.0
    asyncio.run(handlers.release(body=body, logger=logger, retry=3))
    assert route_weights(world) == {"gelu-mlp": 1}
    assert world.api.requests[-1] == Request("patch", HTTP_ROUTE.kind, NAMESPACE, "gelu")


def test_a_deleted_rollout_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    handlers = Handlers(world, monkeypatch)
    world.api.fail("apply", "Deployment", status=403)
    handlers.tick()
    assert world.tick().rested
    handlers.forget(type="DELETED", namespace=NAMESPACE, name=NAME)
    # A rollout of the same name made afresh is not held by the old one's wait.
    assert not world.tick().rested
