"""Run one demo scenario on the local sandbox and report how it went.

Applies the scenario's rollout with the real ``kubectl``, sends traffic through the weights the
operator sets, shows the rollout live, and returns the outcome, the timings and the ledger. The
sandbox (and every process and file it made) is gone when this returns or raises, a
cancellation included (:func:`~gelu_lab.sandbox.shutdown.run_until_stopped` turns SIGINT,
SIGTERM and SIGHUP into one).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, RenderableType
from rich.live import Live

from gelu_lab.demo.scenarios import (
    ROLLOUT_NAME,
    Scenario,
    candidate_objects,
    demo_manifest,
    load_example,
    read_repository,
)
from gelu_lab.sandbox.stack import sandbox
from gelu_lab.sandbox.traffic import TrafficGenerator

TERMINAL = ("Promoted", "RolledBack")


@dataclass
class DemoResult:
    scenario: str
    expected: str
    outcome: str
    seconds_apply_to_outcome: float | None
    seconds_fault_to_zero_weight: float | None
    message: str
    ledger: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)
    rollout: dict[str, Any] = field(default_factory=dict)
    """The rollout object as last read, for the decision report; not in :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        del result["rollout"]
        return result


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def fault_to_zero_weight(status: Mapping[str, Any], scenario: Scenario) -> float | None:
    """Seconds from the faulty candidate's first exposure to its weight going to 0.

    A candidate caught by the probe was exposed when the rollout started probing; one caught
    on traffic, when its first step began (``startedAt`` is reset then).
    """
    if not scenario.faulty or status.get("stage") != "RolledBack":
        return None
    started, finished = _time(status.get("startedAt")), _time(status.get("finishedAt"))
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds(), 1)


def _kubectl_gelu() -> str:
    """How to call the plugin from here: ``kubectl gelu`` if it is on PATH, else its path."""
    if shutil.which("kubectl-gelu") is not None:
        return "kubectl gelu"
    beside = Path(sys.executable).parent / "kubectl-gelu"
    if not beside.exists():
        return "kubectl gelu"
    return str(beside.relative_to(Path.cwd()) if beside.is_relative_to(Path.cwd()) else beside)


async def run_scenario(
    scenario: Scenario,
    *,
    example: Path,
    repository: Path | None = None,
    timeout_s: float = 170.0,
    view: Callable[[Mapping[str, Any], Mapping[str, Any]], RenderableType] | None = None,
    console: Console | None = None,
    rate_per_s: float = 40.0,
) -> DemoResult:
    """Run ``scenario`` end to end; ``view(rollout, traffic)`` draws the live display."""
    base = load_example(example)
    model = str(base["spec"]["model"]["name"])
    files = None
    if repository is not None:
        model, files = read_repository(repository)
        base["spec"]["model"]["name"] = model
    candidate, objects = candidate_objects(scenario, model, files)
    manifest = demo_manifest(base, candidate)
    async with sandbox() as stack:
        for obj in objects:
            await stack.apply(yaml.safe_dump(obj))
        path = stack.workdir / "rollout.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        applied = time.monotonic()
        await stack.apply(path)
        rollout: Mapping[str, Any] = {}
        outcome_at: float | None = None
        if console is not None:
            console.print(
                f"[dim]follow it from another terminal: {_kubectl_gelu()} status {ROLLOUT_NAME}"
                f" --watch --kubeconfig {stack.kubeconfig}[/dim]",
                highlight=False,
            )
        generator = TrafficGenerator(
            stack.api.url,
            "default",
            ROLLOUT_NAME,
            stack.pods.service_pods,
            rate_per_s=rate_per_s,
            duration_s=timeout_s,
            gateway=stack.gateway,  # the example's analysis.latencyHistogram reads it
        )
        async with generator:
            # Redrawn when the rollout is read again, not on a timer: each frame is measured to
            # fit the screen, and cropped should it still not (a screen under ~20 lines).
            live = (
                Live(console=console, auto_refresh=False, vertical_overflow="crop")
                if view
                else None
            )
            try:
                if live is not None:
                    live.start()
                while time.monotonic() - applied < timeout_s:
                    if stack.operator_stopped:
                        assert stack.operator is not None
                        operator = stack.operator
                        problem = None if operator.cancelled() else operator.exception()
                        raise RuntimeError(f"the operator stopped: {problem or 'no error'}")
                    rollout = await stack.rollout(ROLLOUT_NAME)
                    traffic = {arm: asdict(c) for arm, c in generator.counts().items()}
                    if live is not None and view is not None:
                        live.update(view(rollout, traffic), refresh=True)
                    if (rollout.get("status") or {}).get("stage") in TERMINAL:
                        outcome_at = time.monotonic()
                        break
                    await asyncio.sleep(0.5)
            finally:
                if live is not None:
                    live.stop()
            traffic = {arm: asdict(c) for arm, c in generator.counts().items()}
        events = [
            {
                "type": str(e.get("type")),
                "reason": str(e.get("reason")),
                "message": str(e.get("message")),
            }
            for e in await stack.events(ROLLOUT_NAME)
        ]
    status = dict(rollout.get("status") or {})
    outcome = str(status.get("stage")) if outcome_at is not None else "TimedOut"
    return DemoResult(
        scenario=scenario.name,
        expected=scenario.expected,
        outcome=outcome,
        seconds_apply_to_outcome=round(outcome_at - applied, 1) if outcome_at else None,
        seconds_fault_to_zero_weight=fault_to_zero_weight(status, scenario),
        message=str(status.get("message", "")),
        ledger=list(status.get("ledger") or []),
        events=events,
        traffic=traffic,
        rollout=dict(rollout),
    )
