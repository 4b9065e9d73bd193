"""Crash and restart: the operator SIGKILLed at seeded points in every stage of real rollouts
(Triton pods, a real Prometheus, traffic), started again, and each rollout still ends as it
would have: the healthy candidates promoted, the bad ones rolled back, each once, with
nothing of theirs left behind once they are deleted.

Kill points: a seeded RNG kills the operator a moment after a rollout enters a stage
(Pending and the probe, each step, the end of the last step, just after the outcome was
recorded, the deletion) and at random times between; and once per outcome per round at an
exact point of the outcome's tick, through the API front: while the decision's status write
is held (then refused: nothing recorded, nothing done), or, in odd rounds, after it landed
and while the first apply of an owned object is held (recorded, not carried out).

Bounded to about seven minutes (``GELU_CRASH_ROUNDS``, default 3 rounds of 4 rollouts, and up
to 3 more until there were 30 kills); set ``GELU_RELIABILITY_LONG=1`` for 10 rounds.
``GELU_CRASH_SEED`` picks the kill points.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.reliability.harness import ApiRule, Lab, lab
from tests.reliability.rollouts import (
    TERMINAL,
    condition,
    error_repository,
    finished,
    http_route,
    manifest,
    stage,
)

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

LONG = os.environ.get("GELU_RELIABILITY_LONG") == "1"
ROUNDS = int(os.environ.get("GELU_CRASH_ROUNDS", "10" if LONG else "3"))
SEED = int(os.environ.get("GELU_CRASH_SEED", "13"))
MIN_KILLS_PER_ROUND = 8  # a killer that stopped killing fails the run
MIN_KILLS = 30
"""The fewest kill points of a run: rounds are added (``EXTRA_ROUNDS`` at most) until there
are as many; three rounds gave 28 and 31."""
EXTRA_ROUNDS = 3
MIN_UP_S = 1.0
MIN_STATUS_WRITES = 1
"""Each start of the operator lives until it has finished a tick of every unfinished rollout
(written its status: every analysis, every decision writes it) at least once: killed sooner,
again and again, it would never finish a tick of some of them (one takes up to 6 s on this
busy two-core machine, and each rollout's first tick after a start waits for its place in the
timer's period), which tests nothing but patience."""
RANDOM_KILL_GAP_S = (1.0, 4.0)
POLL_S = 0.25
ROLLOUT_TIMEOUT_S = 420.0
RATE_PER_S = 25.0
ORIGINAL_BACKENDS = [{"group": "", "kind": "Service", "name": "gelu-v1", "port": 8000, "weight": 1}]
ROLLBACK_REASONS = {"ProbeFailed", "FastBurn", "SlowBurn", "ErrorRateAboveTolerance"}
OUTCOME_REASONS = ROLLBACK_REASONS | {"AllStepsPassed"}
PHASES = (
    "pending",
    "step-0",
    "step-1",
    "end-of-last-step",
    "promotion-decided-not-recorded",
    "promotion-recorded-not-acted",
    "just-promoted",
    "rollback-decided-not-recorded",
    "rollback-recorded-not-acted",
    "just-rolled-back",
    "deleting",
)


@dataclass
class Tracked:
    name: str
    expected: str
    route: str | None = None
    stages: list[str] = field(default_factory=list)
    """Every distinct (stage, step) the rollout was seen in, in order."""
    candidate_down: bool = False
    """The candidate was seen at 0 replicas after the rollback was recorded."""
    candidate_back_up: int = 0
    """Polls that found the candidate scaled up again after that."""


@dataclass
class Record:
    kills: list[dict[str, Any]] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def per_phase(self) -> Counter[str]:
        return Counter(p for kill in self.kills for p in kill["phases"].values())


def _seconds_since(timestamp: object) -> float:
    if not isinstance(timestamp, str):
        return 0.0
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (datetime.now(UTC) - moment).total_seconds()


def phase(rollout: Mapping[str, Any] | None) -> str | None:
    """The stage a kill lands in, as the API holds the rollout now."""
    if rollout is None:
        return None
    if (rollout.get("metadata") or {}).get("deletionTimestamp"):
        return "deleting"
    status = rollout.get("status") or {}
    current = stage(rollout)
    if current in ("", "Pending"):
        return "pending"
    if current in TERMINAL:
        recent = _seconds_since(status.get("finishedAt")) < 10
        if not recent:
            return None  # settled: nothing left to interrupt
        return "just-promoted" if current == "Promoted" else "just-rolled-back"
    steps = rollout["spec"]["traffic"]["steps"]
    index = int(status.get("stepIndex") or 0)
    if index == len(steps) - 1:
        elapsed = _seconds_since(status.get("stepStartedAt"))
        if elapsed >= int(steps[index].get("analysisSeconds", 0)) - 2:
            return "end-of-last-step"
    return f"step-{index}"


def _candidate_replicas(stack: Lab, name: str) -> int:
    deployment = stack.get("apps/v1/deployments", f"{name}-candidate")
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)


class Killer:
    """Kills the operator at seeded points and starts it again at once (or after a short
    down-time), recording where each rollout was."""

    def __init__(self, stack: Lab, rng: random.Random, record: Record) -> None:
        self.stack = stack
        self.rng = rng
        self.record = record
        self.seen: set[tuple[str, str]] = set()
        self.up_since = time.monotonic()
        self.written_at_start = stack.front.status_written.copy()
        self.next_random_kill = self.up_since + rng.uniform(*RANDOM_KILL_GAP_S)

    async def kill_and_restart(
        self, tracked: list[Tracked], forced: dict[str, str], release: ApiRule | None = None
    ) -> None:
        phases = {t.name: p for t in tracked if (p := phase(self.stack.rollout(t.name)))}
        phases.update(forced)
        self.stack.operator.kill()
        if release is not None:
            release.release()  # the held request is refused, to a dead client
        self.record.kills.append({"at": time.monotonic(), "phases": phases})
        await asyncio.sleep(self.rng.uniform(0, 1.0))  # down-time
        self.record.restart_s.append(await self.stack.operator.start())
        self.up_since = time.monotonic()
        self.written_at_start = self.stack.front.status_written.copy()
        self.next_random_kill = self.up_since + self.rng.uniform(*RANDOM_KILL_GAP_S)

    def _acted_on_each(self, tracked: list[Tracked]) -> bool:
        """This start has written the status of every rollout not yet finished."""
        since = self.stack.front.status_written - self.written_at_start
        return all(
            since[t.name] >= MIN_STATUS_WRITES
            for t in tracked
            if stage(self.stack.rollout(t.name)) not in TERMINAL
        )

    async def maybe_kill(self, tracked: list[Tracked]) -> None:
        if time.monotonic() - self.up_since < MIN_UP_S:
            return
        if not self._acted_on_each(tracked):
            # Not acted yet since it started: the random kill's clock starts when it has.
            self.next_random_kill = time.monotonic() + self.rng.uniform(*RANDOM_KILL_GAP_S)
            return
        fresh = [
            (t.name, p)
            for t in tracked
            if (p := phase(self.stack.rollout(t.name))) is not None and (t.name, p) not in self.seen
        ]
        self.seen.update(fresh)
        if fresh and self.rng.random() < 0.7:
            await asyncio.sleep(self.rng.uniform(0, 1.0))
            await self.kill_and_restart(tracked, {})
        elif time.monotonic() >= self.next_random_kill:
            await self.kill_and_restart(tracked, {})


def _observe(stack: Lab, tracked: list[Tracked]) -> None:
    for t in tracked:
        rollout = stack.rollout(t.name)
        if rollout is None:
            continue
        status = rollout.get("status") or {}
        seen = f"{stage(rollout) or 'none'}/{status.get('stepIndex', 0)}"
        if not t.stages or t.stages[-1] != seen:
            t.stages.append(seen)
        if stage(rollout) == "RolledBack":
            # Scaled down once the rollback is acted on (a kill may delay that); never up again.
            if _candidate_replicas(stack, t.name) == 0:
                t.candidate_down = True
            elif t.candidate_down:
                t.candidate_back_up += 1


@dataclass
class OutcomeTrap:
    """Kills the operator at the exact moment of one outcome: before its record lands (the
    decision's status write held, then refused: nothing recorded, nothing done), or after it
    landed and before the first owned object was changed (the next apply held)."""

    rollout: str
    phase: str
    trigger: ApiRule


def _outcome_traps(stack: Lab, tracked: list[Tracked], round_no: int) -> list[OutcomeTrap]:
    # Every round traps each outcome both ways, on two rollouts each: the outcome's write held
    # and refused (decided, not recorded), and the first apply after it held (recorded, not
    # acted); which rollout gets which alternates from round to round.
    traps = []
    for outcome in ("Promoted", "RolledBack"):
        for index, t in enumerate(t for t in tracked if t.expected == outcome):
            traps.append(_outcome_trap(stack, t, outcome, (index + round_no) % 2 == 1))
    return traps


def _outcome_trap(stack: Lab, t: Tracked, outcome: str, recorded: bool) -> OutcomeTrap:
    kind = "promotion" if outcome == "Promoted" else "rollback"
    write = ApiRule(
        "PATCH",
        rf"/gelumodelrollouts/{t.name}/status$",
        status=None if recorded else 503,
        remaining=1,
        body=rf'"stage":\s*"{outcome}"',
        hold=not recorded,
    )
    trigger = write
    if recorded:
        # Armed by the write itself, so no apply slips through in between.
        trigger = write.then = ApiRule(
            "PATCH", rf"/deployments/{t.name}-", status=503, remaining=1, hold=True
        )
    stack.front.add(write)
    phase = f"{kind}-recorded-not-acted" if recorded else f"{kind}-decided-not-recorded"
    return OutcomeTrap(t.name, phase, trigger)


async def _run_round(stack: Lab, round_no: int, rng: random.Random, record: Record) -> None:
    suffix = f"r{round_no}"
    route = f"route-{suffix}"
    await stack.apply(http_route(route, ORIGINAL_BACKENDS))
    await stack.apply(error_repository(f"errors-{suffix}"))
    tracked = [
        Tracked(f"good-{suffix}", "Promoted"),
        Tracked(f"routed-{suffix}", "Promoted", route=route),
        Tracked(f"errors-{suffix}", "RolledBack"),
        Tracked(f"nan-{suffix}", "RolledBack"),
    ]
    # The latency gate off too: with four rollouts on two cores, its power plan was out of
    # reach of a 20 s step at this traffic in two runs (the healthy candidate held, no
    # evidence of harm, PowerPlanInfeasible): a matter of that gate's power, not of crashes.
    await stack.apply(manifest(tracked[0].name, {"variant": "tanh"}, latency=False))
    await stack.apply(manifest(tracked[1].name, {"variant": "tanh"}, route=route, latency=False))
    await stack.apply(
        manifest(
            tracked[2].name,
            {"repository": {"configMapName": f"errors-{suffix}"}},
            latency=False,
        )
    )
    await stack.apply(manifest(tracked[3].name, {"variant": "tanh-fp16-naive"}, latency=False))
    traps = _outcome_traps(stack, tracked, round_no)
    killer = Killer(stack, rng, record)
    async with contextlib.AsyncExitStack() as traffic:
        for t in tracked[:3]:
            await traffic.enter_async_context(stack.traffic(t.name, RATE_PER_S, ROLLOUT_TIMEOUT_S))
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S

        async def spring_traps() -> None:
            for trap in [trap for trap in traps if trap.trigger.seen.is_set()]:
                traps.remove(trap)
                await killer.kill_and_restart(
                    tracked, {trap.rollout: trap.phase}, release=trap.trigger
                )

        # Until every rollout is finished and no trap is left holding a request: the last
        # outcome's own trap springs after its record made it finished.
        while not all(stage(stack.rollout(t.name)) in TERMINAL for t in tracked) or any(
            trap.trigger.seen.is_set() for trap in traps
        ):
            assert time.monotonic() < deadline, (
                f"round {round_no}: not finished in {ROLLOUT_TIMEOUT_S:g}s: "
                f"{[(t.name, t.stages) for t in tracked]}\n{_where_they_are(stack, tracked)}\n"
                f"{_recent_requests(stack)}\n{stack.operator.log_tail()}"
            )
            _observe(stack, tracked)
            await spring_traps()
            await killer.maybe_kill(tracked)
            await asyncio.sleep(POLL_S)
        # A moment after the outcome, for the just-after kills and the candidates to settle.
        settle = time.monotonic() + 10
        while time.monotonic() < settle:
            _observe(stack, tracked)
            await spring_traps()
            await killer.maybe_kill(tracked)
            await asyncio.sleep(POLL_S)
        # Then no more kills: the outcome is recorded before it is acted on, and the last start
        # must get to act on it and write the summary (Ready, or Stalled) that says it has.
        acted = time.monotonic() + 60
        while not all(finished(stack.rollout(t.name)) for t in tracked):
            assert time.monotonic() < acted, [(t.name, t.stages) for t in tracked]
            _observe(stack, tracked)
            await asyncio.sleep(POLL_S)
    for t in tracked:
        rollout = stack.rollout(t.name)
        assert rollout is not None
        _check_outcome(stack, t, rollout)
        record.outcomes[f"{t.expected}"] += 1
    # Deleting them, the operator killed a moment after the deletion began.
    for t in tracked:
        await stack.kubectl("delete", "gmr", t.name, "--wait=false")
    await asyncio.sleep(rng.uniform(0, 0.5))
    await killer.kill_and_restart(tracked, {t.name: "deleting" for t in tracked})
    deadline = time.monotonic() + 60
    while any(stack.rollout(t.name) is not None for t in tracked):
        assert time.monotonic() < deadline, "rollouts not deleted within 60 s"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # garbage collection of the owned objects
    for t in tracked:
        assert stack.owned(t.name) == [], f"{t.name} left {stack.owned(t.name)}"
    restored = stack.get("gateway.networking.k8s.io/v1/httproutes", route)
    assert restored is not None
    assert restored["spec"]["rules"][0]["backendRefs"] == ORIGINAL_BACKENDS


def _recent_requests(stack: Lab, seconds: float = 60.0) -> str:
    """The operator's requests that reached the API in the last ``seconds``, but its reads
    of the rollouts' own Events."""
    since = time.time() - seconds
    lines = [
        f"  {r.at - since:5.1f}s {r.method} {r.path}{'?' + r.query if r.query else ''}"
        for r in stack.front.reached
        if r.at >= since and "/events" not in r.path
    ]
    return f"the operator's requests in the last {seconds:g}s:\n" + "\n".join(lines[-80:])


def _where_they_are(stack: Lab, tracked: list[Tracked]) -> str:
    """Each rollout's message and conditions, for a round that did not finish."""
    lines = []
    for t in tracked:
        status = (stack.rollout(t.name) or {}).get("status") or {}
        conditions = [
            f"{c.get('type')}={c.get('status')} {c.get('reason')}: {str(c.get('message'))[:160]}"
            for c in status.get("conditions") or []
        ]
        lines.append(f"{t.name}: {status.get('message')!r}; " + "; ".join(conditions))
        lines.append(f"  events {stack.event_reasons(t.name)}")
    return "\n".join(lines)


def _check_outcome(stack: Lab, t: Tracked, rollout: Mapping[str, Any]) -> None:
    history = f"{t.name}: seen {t.stages}; events {stack.event_reasons(t.name)}"
    assert stage(rollout) == t.expected, history
    terminal_seen = [s for s in t.stages if s.split("/")[0] in TERMINAL]
    # Once finished, never anything else: no second outcome, no outcome undone.
    assert {s.split("/")[0] for s in terminal_seen} == {t.expected}, history
    first = t.stages.index(terminal_seen[0])
    assert all(s.split("/")[0] == t.expected for s in t.stages[first:]), history
    outcome_events = [r for r in stack.event_reasons(t.name) if r in OUTCOME_REASONS]
    assert len(outcome_events) >= 1, history
    assert len(outcome_events) == 1, f"outcome announced more than once: {history}"
    assert t.candidate_back_up == 0, f"the candidate came back after its rollback: {history}"
    assert _candidate_replicas(stack, t.name) == 0, history
    if t.expected == "Promoted":
        assert condition(rollout, "Promoted")["reason"] == "AllStepsPassed", history
        baseline = stack.get("apps/v1/deployments", f"{t.name}-baseline")
        candidate = stack.get("apps/v1/deployments", f"{t.name}-candidate")
        assert baseline is not None
        assert candidate is not None
        revision = "gelu.dev/revision"
        assert (
            baseline["spec"]["template"]["metadata"]["labels"][revision]
            == candidate["spec"]["template"]["metadata"]["labels"][revision]
        ), history
    else:
        assert condition(rollout, "RolledBack")["reason"] in ROLLBACK_REASONS, history
    if t.route is not None:
        route = stack.get("gateway.networking.k8s.io/v1/httproutes", t.route)
        assert route is not None
        weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
        assert weights == {f"{t.name}-baseline": 100, f"{t.name}-candidate": 0}, history


@pytest.mark.asyncio
async def test_the_operator_killed_anywhere_still_reaches_each_rollouts_outcome() -> None:
    rng = random.Random(SEED)
    record = Record()
    started = time.monotonic()
    rounds = 0
    async with lab() as stack:
        while rounds < ROUNDS or (len(record.kills) < MIN_KILLS and rounds < ROUNDS + EXTRA_ROUNDS):
            await _run_round(stack, rounds, rng, record)
            rounds += 1
    seconds = time.monotonic() - started
    per_phase = record.per_phase()
    restart = sorted(record.restart_s)
    print(
        f"CRASH seed {SEED}: {len(record.kills)} SIGKILLs in {rounds} rounds, {seconds:.0f}s; "
        f"rollout-kill points by stage {dict(sorted(per_phase.items()))}; "
        f"outcomes {dict(record.outcomes)}; restart to ready median "
        f"{restart[len(restart) // 2]:.1f}s, max {restart[-1]:.1f}s"
    )
    assert len(record.kills) >= max(MIN_KILLS, MIN_KILLS_PER_ROUND * rounds)
    assert set(PHASES) <= set(per_phase), (
        f"stages never interrupted: {set(PHASES) - set(per_phase)}"
    )
