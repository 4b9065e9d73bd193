"""The timer's first firing is spread over one period by the rollout's uid (handlers.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from typing import Any, cast

import kopf
import pytest
from kopf._core.intents.causes import DaemonCause
from kopf._core.intents.stoppers import DaemonStopper

from gelu_rollout.handlers import build_registry, first_tick_delay_seconds
from gelu_rollout.spec.resource import GROUP, PLURAL, VERSION
from tests.fakes.world import RolloutWorld

UID = "5f0c8a52-1d3b-4c1e-9a7e-2b6f4e0d9c31"


def test_the_delay_is_the_same_for_the_same_uid_and_within_the_period() -> None:
    for period in (0.5, 5.0, 30.0):
        delay = first_tick_delay_seconds(UID, period)
        assert 0 <= delay < period
        assert first_tick_delay_seconds(UID, period) == delay
    # The place in the period is the uid's: the same fraction of any period.
    assert first_tick_delay_seconds(UID, 30.0) == pytest.approx(
        6 * first_tick_delay_seconds(UID, 5.0)
    )


def test_the_delay_does_not_depend_on_the_process() -> None:
    # Python's own hash of a str changes with PYTHONHASHSEED; the spread must not.
    code = (
        "from gelu_rollout.handlers import first_tick_delay_seconds as f; "
        f"print(repr(f({UID!r}, 30.0)))"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert seen == {repr(first_tick_delay_seconds(UID, 30.0))}


def test_many_rollouts_cover_the_period() -> None:
    period = 30.0
    delays = [
        first_tick_delay_seconds(str(uuid.UUID(int=i * 7919 + 1)), period) for i in range(1000)
    ]
    assert all(0 <= d < period for d in delays)
    # Ten slices of 3 s: each holds about a hundred of the thousand, none is empty or crowded.
    counts = [0] * 10
    for delay in delays:
        counts[int(delay // 3.0)] += 1
    assert min(counts) > 50, counts
    assert max(counts) < 150, counts


def _timer(registry: kopf.OperatorRegistry) -> Any:
    timers = [
        h for h in registry._spawning.get_all_handlers() if getattr(h.fn, "__name__", "") == "tick"
    ]
    assert len(timers) == 1
    return timers[0]


def _kopf_kwargs(metadata: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments Kopf passes a timer's ``initial_delay`` (those of its cause)."""
    cause = DaemonCause(
        logger=logging.getLogger("test"),
        indices={},
        memo=cast(Any, kopf.Memo()),
        resource=kopf.Resource(GROUP, VERSION, PLURAL),
        patch=kopf.Patch(),
        body=kopf.Body(cast(kopf.RawBody, {"metadata": metadata, "spec": {}})),
        stopper=DaemonStopper(),
    )
    return cause.kwargs


def test_the_registered_timer_waits_its_rollouts_delay() -> None:
    world = RolloutWorld()
    timer = _timer(build_registry(world.controller, tick_seconds=5.0))
    assert timer.interval == 5.0
    for uid in (UID, str(uuid.UUID(int=42))):
        kwargs = _kopf_kwargs({"name": "gelu", "namespace": "ns", "uid": uid})
        assert timer.initial_delay(**kwargs) == first_tick_delay_seconds(uid, 5.0)
    # An object without a uid (never one from an API server) is placed by its name.
    kwargs = _kopf_kwargs({"name": "gelu", "namespace": "ns"})
    assert timer.initial_delay(**kwargs) == first_tick_delay_seconds("gelu", 5.0)
