"""Dependency faults against real servers: Prometheus closed, slow past the query timeout,
answering an empty vector or non-JSON; the candidate's Triton crash-looping (held within the
progress deadline, rolled back past it); the Kubernetes API answering 409 and 5xx. The
operator runs in its own process and reaches Prometheus and the API through fronts the test
controls (:mod:`tests.reliability.harness`).

Each fault: never a promotion or a step while it lasts; the documented state with its
condition and Event; and the rollout goes on to its outcome once the dependency is back.
(``tests/unit/test_controller_errors.py`` classifies each error with fakes; these are the
same faults through real sockets, Kopf and the operator's own process.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from gelu_rollout.variants.repository import render_repository
from tests.reliability.harness import ApiRule, Lab, lab
from tests.reliability.rollouts import (
    MODEL,
    STEP_SECONDS,
    condition,
    finished,
    manifest,
    stage,
)

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

RATE_PER_S = 25.0
MAX_EXTENSION_SECONDS = 10
PROMETHEUS_TIMEOUT_SECONDS = 2.0


def _step(rollout: Mapping[str, Any] | None) -> int:
    return int(((rollout or {}).get("status") or {}).get("stepIndex") or 0)


async def _until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not so after {timeout_s:g}s"
        await asyncio.sleep(0.2)


def _has_event(stack: Lab, name: str, reason: str) -> Callable[[], bool]:
    return lambda: reason in stack.event_reasons(name)


def _in_step(step: int) -> Callable[[Mapping[str, Any]], bool]:
    return lambda rollout: stage(rollout) == "Progressing" and _step(rollout) == step


def _past_step(step: int) -> Callable[[Mapping[str, Any]], bool]:
    return lambda rollout: _step(rollout) > step or finished(rollout)


def _held(rollout: Mapping[str, Any]) -> bool:
    """Paused for want of data, and saying so: Stalled with the reason."""
    if stage(rollout) != "Paused":
        return False
    stalled: Mapping[str, Any] = next(
        (c for c in rollout["status"].get("conditions") or [] if c.get("type") == "Stalled"), {}
    )
    return stalled.get("status") == "True"


async def _hold_without_moving(
    stack: Lab, name: str, step: int, timeout_s: float
) -> dict[str, Any]:
    """Wait until the rollout is Paused and Stalled; it must not step or finish meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rollout = stack.rollout(name)
        assert rollout is not None
        assert not finished(rollout), f"finished during the fault: {rollout['status']}"
        assert _step(rollout) == step, f"stepped during the fault: {rollout['status']}"
        if _held(rollout):
            return rollout
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"{name} not paused in {timeout_s:g}s: {stack.rollout(name)}\n{stack.operator.log_tail()}"
    )


@pytest.mark.asyncio
async def test_prometheus_closed_slow_empty_or_garbage_pauses_and_resumes() -> None:
    """One rollout, one fault per step: each pauses it (Stalled, a Warning Event), none moves
    it; healed, it resumes, and after the last it is promoted."""
    faults = ("closed", "slow", "empty", "garbage")
    weights = (10, 20, 30, 40)
    name = "promfaults"
    async with lab(prometheus_timeout_seconds=PROMETHEUS_TIMEOUT_SECONDS) as stack:
        body = manifest(
            name,
            {"variant": "tanh"},
            weights=weights,
            max_extension_seconds=MAX_EXTENSION_SECONDS,
        )
        await stack.apply(body)
        front = stack.prometheus_front
        seen: list[str] = []
        async with stack.traffic(name, RATE_PER_S, 600):
            for step, fault in enumerate(faults):
                await stack.wait_for(name, _in_step(step), timeout_s=120)
                started = time.monotonic()
                if fault == "closed":
                    front.close()
                elif fault == "slow":
                    front.mode, front.delay_s = "slow", PROMETHEUS_TIMEOUT_SECONDS + 1.5
                else:
                    front.mode = fault
                held = await _hold_without_moving(
                    stack, name, step, STEP_SECONDS + MAX_EXTENSION_SECONDS + 40
                )
                stalled = condition(held, "Stalled")
                assert stalled["reason"] in ("InsufficientData", "GateWithoutData"), stalled
                assert condition(held, "Promoted")["status"] == "False"
                assert held["status"]["candidateWeight"] == weights[step]
                latest = [e for e in held["status"]["ledger"] if e["gate"] == "errorRate"][-1]
                assert latest["verdict"] == "Inconclusive", latest
                # Its Event, posted as the pause is recorded.
                await _until(_has_event(stack, name, str(stalled["reason"])), 10)
                paused_after = time.monotonic() - started
                # Healed: the rollout resumes by itself and steps on.
                if fault == "closed":
                    front.open()
                front.mode = "pass"
                healed = time.monotonic()
                await stack.wait_for(name, _past_step(step), timeout_s=120)
                seen.append(
                    f"{fault}: paused after {paused_after:.0f}s ({stalled['reason']}: "
                    f"{latest['message'][:60]!r}), on after {time.monotonic() - healed:.0f}s"
                )
            done = await stack.wait_for(name, finished, timeout_s=120)
        assert done["status"]["stage"] == "Promoted", done["status"]
        assert "AnalysisResumed" in stack.event_reasons(name)
        print("FAULTS prometheus:", "; ".join(seen))


def _broken_repository(name: str) -> dict[str, Any]:
    """The tanh variant whose model.py fails as Triton loads it: the server exits, again
    and again (CrashLoopBackOff)."""
    files = render_repository(MODEL, "tanh")
    key = next(k for k in files if k.endswith("model.py"))
    files[key] += "\nraise RuntimeError('this model does not load')\n"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": files,
    }


@pytest.mark.asyncio
async def test_a_crash_looping_candidate_holds_the_rollout_until_it_is_mended() -> None:
    name = "crashloop"
    async with lab() as stack:
        await stack.apply(_broken_repository("broken-tanh"))
        body = manifest(name, {"repository": {"configMapName": "broken-tanh"}}, weights=(50,))
        await stack.apply(body)

        def pods_failing(rollout: Mapping[str, Any]) -> bool:
            conditions = (rollout.get("status") or {}).get("conditions") or []
            return any(c.get("reason") == "PodsFailing" for c in conditions)

        started = time.monotonic()
        failing = await stack.wait_for(name, pods_failing, timeout_s=90)
        # Within the default progress deadline (600 s): it stays Pending and says why (here:
        # another 30 s), never sending the candidate traffic.
        await asyncio.sleep(30)
        held = stack.rollout(name)
        assert held is not None
        assert stage(held) == "Pending", held["status"]
        assert int(held["status"].get("candidateWeight") or 0) == 0
        assert condition(held, "Stalled")["reason"] == "PodsFailing"
        assert "candidate pod" in condition(held, "ResourcesReady")["message"]
        assert stack.event_reasons(name).count("PodsFailing") >= 1
        print(
            f"FAULTS crash loop: PodsFailing after {time.monotonic() - started:.0f}s:",
            condition(failing, "ResourcesReady")["message"][:200],
        )
        # Mended: the repository fixed, the candidate's pods start and the rollout goes on.
        await stack.apply(
            {**_broken_repository("broken-tanh"), "data": render_repository(MODEL, "tanh")}
        )
        async with stack.traffic(name, RATE_PER_S, 300):
            done = await stack.wait_for(name, finished, timeout_s=180)
        assert done["status"]["stage"] == "Promoted", done["status"]


@pytest.mark.asyncio
async def test_a_candidate_that_never_gets_ready_is_rolled_back_at_its_progress_deadline() -> None:
    """The crash-looping candidate again, with progressDeadlineSeconds 30: rolled back
    (ProgressDeadlineExceeded: the condition and one Warning Event) once its pods have not been
    ready for longer, scaled to 0, and never a step: no traffic ever moved to it."""
    name = "neverready"
    deadline_s = 30
    async with lab() as stack:
        await stack.apply(_broken_repository("broken-tanh"))
        body = manifest(name, {"repository": {"configMapName": "broken-tanh"}}, weights=(50,))
        body["spec"]["progressDeadlineSeconds"] = deadline_s
        await stack.apply(body)
        applied = time.monotonic()
        stages: list[str] = []
        weights: set[int] = set()
        rollout: Mapping[str, Any] | None = None
        while not finished(rollout):
            assert time.monotonic() < applied + deadline_s + 90, (
                f"not rolled back: {rollout}\n{stack.operator.log_tail()}"
            )
            await asyncio.sleep(0.2)
            rollout = stack.rollout(name)
            status = (rollout or {}).get("status") or {}
            if "stage" in status and (not stages or stages[-1] != status["stage"]):
                stages.append(str(status["stage"]))
            weights.add(int(status.get("candidateWeight") or 0))
        took = time.monotonic() - applied
        assert rollout is not None
        assert stages == ["Pending", "RolledBack"], stages
        assert weights == {0}, "the candidate was given traffic"
        assert not rollout["status"].get("ledger"), "a gate judged traffic that never moved"
        rolled = condition(rollout, "RolledBack")
        assert (rolled["status"], rolled["reason"]) == ("True", "ProgressDeadlineExceeded")
        message = str(rolled["message"])
        assert f"past spec.progressDeadlineSeconds ({deadline_s}s): " in message, message
        waited = int(message.removeprefix("not ready for ").split("s,")[0])
        assert waited > deadline_s, message
        # What was not ready: the candidate's pod and its crash, or its Deployment waiting.
        assert f"{name}-candidate" in message, message
        assert condition(rollout, "Stalled")["reason"] == "ProgressDeadlineExceeded"
        await _until(_has_event(stack, name, "ProgressDeadlineExceeded"), 10)
        posted = [e for e in stack.events(name) if e.get("reason") == "ProgressDeadlineExceeded"]
        assert [e.get("type") for e in posted] == ["Warning"]
        assert message.startswith(str(posted[0].get("message"))), posted  # Events are cut short
        candidate = stack.get("apps/v1/deployments", f"{name}-candidate")
        assert candidate is not None
        assert candidate["spec"]["replicas"] == 0
        print(f"FAULTS progress deadline: RolledBack {took:.0f}s after the apply:", message[:200])


async def drift(stack: Lab, name: str) -> None:
    """Mark the rollout's Deployments as not rendered by the operator (their fingerprint
    annotation changed by hand)."""
    for arm in ("baseline", "candidate"):
        await stack.kubectl(
            "annotate", "deployment", f"{name}-{arm}", "gelu.dev/rendered=edited", "--overwrite"
        )


@pytest.mark.asyncio
async def test_the_api_answering_409_and_5xx_never_promotes_and_recovers() -> None:
    """409 and then 503 on the operator's applies, 500 on its status writes, each for a while
    through the last step: nothing moves; then the rollout is promoted. (Its reads of its own
    objects come from a watch, not from a LIST per tick: their faults are the cache's tests'.)"""
    name = "apifaults"
    async with lab() as stack:
        await stack.apply(manifest(name, {"variant": "tanh"}, weights=(50,)))
        async with stack.traffic(name, RATE_PER_S, 300):
            await stack.wait_for(name, lambda r: stage(r) == "Progressing", timeout_s=120)
            started = time.monotonic()
            rules = [
                # Server-side applies of the owned objects (fieldManager gelu-rollout).
                ApiRule("PATCH", r"/(deployments|services|configmaps)/", status=409),
                ApiRule("PATCH", r"/(deployments|services|configmaps)/", status=503),
                ApiRule("PATCH", rf"/gelumodelrollouts/{name}(/status)?$", status=500),
            ]
            for rule in rules:
                stack.front.add(rule)
                # Another hand changes the Deployments: the operator, which applies only what
                # differs from its rendering, must apply them back, and meets the rule.
                await drift(stack, name)
                # A tick that had listed before the rule came may still apply or write: count
                # from the first refusal on (ticks run one at a time per rollout), once the
                # watch has delivered what got through before it.
                await asyncio.wait_for(rule.seen.wait(), timeout=90)
                await asyncio.sleep(1.0)
                applies = stack.front.applies
                before = stack.rollout(name)
                assert before is not None
                # Until the operator has met it a few times: its back-off grows (up to a
                # minute), so this lasts through the end of the step, when it would promote.
                deadline = time.monotonic() + 150
                while rule.matched < 3 or time.monotonic() < started + STEP_SECONDS:
                    assert time.monotonic() < deadline, f"{rule} met {rule.matched} times"
                    rollout = stack.rollout(name)
                    assert rollout is not None
                    assert stage(rollout) == "Progressing", rollout["status"]
                    await asyncio.sleep(0.2)
                stack.front.rules.remove(rule)
                after = stack.rollout(name)
                assert after is not None
                if "gelumodelrollouts" in rule.path:
                    # Its status writes failed: nothing of the status changed.
                    assert after["status"] == before["status"]
                else:
                    assert stack.front.applies == applies  # none of its applies got through
                # Healed: the next attempt (after its back-off) acts again (drifted anew: the
                # status rule let its applies through).
                await drift(stack, name)
                deadline = time.monotonic() + 90
                while stack.front.applies == applies:
                    assert time.monotonic() < deadline, "no tick acted after the fault healed"
                    await asyncio.sleep(0.2)
            done = await stack.wait_for(name, finished, timeout_s=120)
        assert done["status"]["stage"] == "Promoted", done["status"]
        # One decision, announced once, though it was refused (409, 5xx) again and again.
        assert stack.event_reasons(name).count("AllStepsPassed") == 1
        log = stack.operator.log_text()
        print(
            "FAULTS api:",
            ", ".join(f"{r.method} {r.path} -> {r.status}: {r.matched} answered" for r in rules),
            f"; tracebacks in the log: {log.count('Traceback')}",
        )
