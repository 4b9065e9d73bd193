"""The crash window between acting and recording, on the fakes, in milliseconds: the tick that
rolls the candidate back acts, and the operator dies before Kopf writes its status.

Without the decision written first, the next operator finds the old status and decides
again: the rollback is announced (an Event, the outcome counter) a second time, and a
decision that comes out otherwise on the new evidence undoes the first one.
With it (``record_decisions_first``, as ``run.py`` wires the operator), the status already
says RolledBack: the candidate stays at 0 and nothing is announced again. The same through
real processes: ``test_crash_restart.py``.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta
from typing import Any

import pytest

from gelu_rollout.adapters.kube.kinds import DEPLOYMENT, ROLLOUT
from gelu_rollout.resources.names import deployment_name
from tests.fakes.world import NAME, NAMESPACE, RolloutWorld, failing, fake_triton

OUTCOMES = {"FastBurn", "SlowBurn", "ErrorRateAboveTolerance", "AllStepsPassed"}


def _stored(world: RolloutWorld) -> dict[str, Any]:
    return copy.deepcopy(world.api.objects[(ROLLOUT.kind, NAMESPACE, NAME)])


def _candidate_replicas(world: RolloutWorld) -> int:
    deployment = world.api.objects[(DEPLOYMENT.kind, NAMESPACE, deployment_name(NAME, "candidate"))]
    return int(deployment["spec"]["replicas"])


@pytest.mark.parametrize("record_first", [True, False], ids=["recorded-first", "acted-first"])
def test_a_crash_after_the_rollback_acted_never_brings_the_candidate_back(
    monkeypatch: pytest.MonkeyPatch, record_first: bool
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld(script=failing)
    world.controller.record_decisions_first = record_first
    # The rollout lives in the fake API too, where the decision's own write lands.
    world.api.put(world.body)
    announced: list[str] = []
    names: set[str] = set()

    async def post(method: str, path: str, *, body: Any = None, **_: Any) -> tuple[int, Any]:
        # The Events the tick posts itself, right after its record (the fake API has no
        # Events of its own); a second of the same name is refused, as the API server does.
        assert (method, path) == ("POST", f"/api/v1/namespaces/{NAMESPACE}/events")
        if body["metadata"]["name"] in names:
            return 409, {"reason": "AlreadyExists"}
        names.add(body["metadata"]["name"])
        if body["reason"] in OUTCOMES:
            announced.append(body["reason"])
        return 201, body

    world.api.request = post  # type: ignore[attr-defined]
    crashed = False
    for _ in range(40):
        before = world.body.get("status") or {}
        world.now += timedelta(seconds=5)
        result = asyncio.run(world.controller.reconcile(copy.deepcopy(world.body)))
        announced += [e.reason for e in result.events if e.reason in OUTCOMES]
        # Kopf's status patch lands on the rollout as the API has it (the record included).
        after = {**(_stored(world).get("status") or before), **result.status}
        if not crashed and after.get("stage") == "RolledBack":
            # Acted (the candidate is at 0), then killed: Kopf's status write never happens;
            # the next operator reads the rollout from the API.
            assert _candidate_replicas(world) == 0
            crashed = True
            world.body = _stored(world)
            continue
        world.body["status"] = {k: v for k, v in after.items() if v is not None}
        world.api.put(world.body)
        if crashed:
            break
    assert crashed
    if record_first:
        assert world.body["status"]["stage"] == "RolledBack"
        assert _candidate_replicas(world) == 0
        assert len(announced) == 1, announced
    else:
        # What the early write prevents: the old status read back, the rollback decided and
        # announced again (here at once, its analysis being due; with less evidence in the
        # new window it would first render the candidate's weight again).
        assert len(announced) == 2, announced


@pytest.mark.parametrize("dies", ["before-the-post", "after-the-post"])
def test_the_outcome_event_is_posted_once_whenever_the_operator_dies_in_its_tick(
    monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    """Killed between the decision's record and its Event's POST, or between the POST and
    the end of the tick: the next operator finds the Events recorded with the decision and
    posts what did not go out; the API server refuses a second Event of the same name."""
    fake_triton(monkeypatch)
    world = RolloutWorld(script=failing)
    world.controller.record_decisions_first = True
    world.api.put(world.body)
    posted: dict[str, str] = {}
    crash = {"armed": True}

    class Killed(BaseException):
        """The process ends here (not an error any handler would catch)."""

    async def post(method: str, path: str, *, body: Any = None, **_: Any) -> tuple[int, Any]:
        assert (method, path) == ("POST", f"/api/v1/namespaces/{NAMESPACE}/events")
        name = body["metadata"]["name"]
        if body["reason"] in OUTCOMES and crash["armed"] and dies == "before-the-post":
            crash["armed"] = False
            raise Killed
        if name in posted:
            return 409, {"reason": "AlreadyExists", "message": f"events {name!r} already exists"}
        posted[name] = body["reason"]
        if body["reason"] in OUTCOMES and crash["armed"]:
            crash["armed"] = False
            raise Killed  # after the POST landed
        return 201, body

    world.api.request = post  # type: ignore[attr-defined]
    for _ in range(40):
        world.now += timedelta(seconds=5)
        try:
            result = asyncio.run(world.controller.reconcile(copy.deepcopy(world.body)))
        except Killed:
            # Kopf's status write never happens; a new operator reads the rollout anew.
            world.restart()
            world.body = _stored(world)
            assert world.body["status"]["announcing"], "the record holds the Events"
            continue
        stored = _stored(world).get("status") or {}
        status = {**stored, **result.status}
        world.body["status"] = {k: v for k, v in status.items() if v is not None}
        world.api.put(world.body)
        if world.body["status"].get("stage") == "RolledBack" and not crash["armed"]:
            break
    assert not crash["armed"], "the tick never got to the Event"
    assert world.body["status"]["stage"] == "RolledBack"
    assert "announcing" not in world.body["status"]
    outcomes = [reason for reason in posted.values() if reason in OUTCOMES]
    assert len(outcomes) == 1, posted
