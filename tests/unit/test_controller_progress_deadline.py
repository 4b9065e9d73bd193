"""The progress deadline through ``Controller.reconcile``, against the in-memory API: a
candidate whose pods never get ready is rolled back once ``progressDeadlineSeconds`` have
passed, not before, measured from a moment kept in the status that a restart does not lose."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from gelu_rollout.adapters.prometheus.fake import FakeObserver
from gelu_rollout.resources.names import deployment_name, object_labels
from tests.fakes.world import NAME, NAMESPACE, SPEC, RolloutWorld, fake_triton
from tests.rollout_helpers import T0

DEADLINE = 120
TICK = 5.0  # the operator's timer
CANDIDATE = deployment_name(NAME, "candidate")
LOG_TAIL = "E1201 failed to load 'gelu-mlp' version 1: RuntimeError: this model does not load"

ROUTED: dict[str, Any] = {
    **SPEC,
    "traffic": {**SPEC["traffic"], "mode": "HTTPRoute", "httpRouteName": "gelu"},
    "progressDeadlineSeconds": DEADLINE,
}


def crash_looping_candidate(world: RolloutWorld) -> None:
    """The candidate's Deployment never has a ready pod, and its pod says why."""
    world.api.never_ready.add(CANDIDATE)
    world.api.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{CANDIDATE}-7d9f-x2k",
                "namespace": NAMESPACE,
                "labels": object_labels(NAME, "candidate"),
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "tritonserver",
                        "restartCount": 2,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "message": LOG_TAIL}},
                    }
                ]
            },
        }
    )


def route_weights(world: RolloutWorld) -> dict[str, int]:
    route = world.api.find("HTTPRoute", NAMESPACE, "gelu")
    assert route is not None
    return {r["name"]: int(r.get("weight", 1)) for r in route["spec"]["rules"][0]["backendRefs"]}


def candidate_replicas(world: RolloutWorld) -> int:
    found = world.api.find("Deployment", NAMESPACE, CANDIDATE)
    assert found is not None
    return int(found["spec"]["replicas"])


def not_ready_since(world: RolloutWorld) -> datetime | None:
    value = world.status.get("notReadySince")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def broken_world(monkeypatch: pytest.MonkeyPatch) -> tuple[RolloutWorld, list[Any]]:
    triton = fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED)
    world.add_route()
    crash_looping_candidate(world)
    return world, triton.calls


def tick_until(world: RolloutWorld, seconds_after_t0: float) -> None:
    while world.now < T0 + timedelta(seconds=seconds_after_t0):
        world.tick(TICK)


def test_a_never_ready_candidate_is_rolled_back_after_the_deadline_and_not_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, probes = broken_world(monkeypatch)
    world.tick(TICK)
    started = world.now
    assert world.stage == "Pending"
    assert not_ready_since(world) == started
    assert world.condition("ResourcesReady") == ("False", "PodsFailing")
    # Every tick up to the deadline: Pending, Stalled PodsFailing, no traffic, no probe.
    while world.now + timedelta(seconds=TICK) <= started + timedelta(seconds=DEADLINE):
        world.tick(TICK)
        assert world.stage == "Pending", world.status.get("message")
        assert world.condition("Stalled") == ("True", "PodsFailing")
        assert route_weights(world)["gelu-mlp-candidate"] == 0
        assert not_ready_since(world) == started
    assert "ProgressDeadlineExceeded" not in world.warnings()
    # The first tick past it rolls back, as every rollback does.
    world.tick(TICK)
    assert world.stages == ["Pending", "RolledBack"]
    assert world.condition("RolledBack") == ("True", "ProgressDeadlineExceeded")
    message = world.condition_message("RolledBack")
    assert message.startswith(
        f"not ready for {DEADLINE + TICK:.0f}s, past spec.progressDeadlineSeconds ({DEADLINE}s): "
        f"candidate pod {CANDIDATE}-7d9f-x2k: CrashLoopBackOff after 2 restart(s): "
    )
    assert LOG_TAIL in message
    assert world.condition("Stalled") == ("True", "ProgressDeadlineExceeded")
    assert world.warnings().count("ProgressDeadlineExceeded") == 1
    event = next(e for e in world.events if e.reason == "ProgressDeadlineExceeded")
    assert event.message == message
    assert route_weights(world) == {"gelu-mlp-baseline": 100, "gelu-mlp-candidate": 0}
    assert candidate_replicas(world) == 0
    # Scaled to 0 the candidate is "ready": the record is cleared, and the rollout rests.
    assert world.condition("ResourcesReady") == ("True", "ResourcesApplied")
    assert "notReadySince" not in world.status
    assert probes == [], "never probed: the candidate never answered"
    assert isinstance(world.observer, FakeObserver)
    assert world.observer.calls == [], "no traffic moved, so no metrics were asked for"
    for _ in range(5):
        world.tick(TICK)
    assert world.stages == ["Pending", "RolledBack"]
    assert world.warnings().count("ProgressDeadlineExceeded") == 1


def test_the_moment_survives_a_restart_of_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    world, _ = broken_world(monkeypatch)
    world.tick(TICK)
    started = not_ready_since(world)
    assert started == T0 + timedelta(seconds=TICK)
    tick_until(world, DEADLINE - 30)
    world.restart()
    # The new operator measures from the recorded moment, not from its own start.
    world.tick(TICK)
    assert not_ready_since(world) == started
    assert world.stage == "Pending"
    tick_until(world, TICK + DEADLINE)
    assert world.stage == "Pending"
    world.tick(TICK)
    assert world.condition("RolledBack") == ("True", "ProgressDeadlineExceeded")
    assert world.now - started == timedelta(seconds=DEADLINE + TICK)


def test_a_candidate_that_stops_being_ready_mid_step_is_rolled_back_from_that_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED)
    world.add_route()
    world.tick(TICK)
    world.tick(TICK)
    assert world.stage == "Progressing"
    assert route_weights(world)["gelu-mlp-candidate"] == 10
    assert "notReadySince" not in world.status
    # Ready for a while (a tick judged), then it crash-loops.
    world.tick(60)
    assert world.stage == "Progressing"
    crash_looping_candidate(world)
    world.tick(TICK)
    stopped = world.now
    assert not_ready_since(world) == stopped
    while world.now + timedelta(seconds=TICK) <= stopped + timedelta(seconds=DEADLINE):
        world.tick(TICK)
        assert world.stage == "Progressing"
    world.tick(TICK)
    assert world.stages == ["Pending", "Progressing", "RolledBack"]
    assert world.condition("RolledBack") == ("True", "ProgressDeadlineExceeded")
    assert route_weights(world) == {"gelu-mlp-baseline": 100, "gelu-mlp-candidate": 0}
    assert candidate_replicas(world) == 0


def test_pods_that_get_ready_within_the_deadline_clear_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED)
    world.add_route()
    world.api.never_ready.add(CANDIDATE)  # pulling a large image, say
    world.tick(TICK)
    assert world.condition("ResourcesReady") == ("False", "WaitingForPods")
    tick_until(world, DEADLINE - 10)
    assert world.stage == "Pending"
    world.api.never_ready.clear()
    world.tick(TICK)
    world.tick(TICK)
    assert "notReadySince" not in world.status
    assert world.stage == "Progressing"
    world.run_until("Promoted")
    assert "ProgressDeadlineExceeded" not in [e.reason for e in world.events]
