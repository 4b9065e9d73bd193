"""A rollout that really rolled back, made by the pure ``decide()`` over scripted ticks: the
probe passes, step 1 is healthy and advances, and at step 2 the candidate's failures climb
until the error gates fail."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.spec import parse_spec
from gelu_rollout.spec.status import RolloutStatus
from tests.rollout_helpers import Driver, arm

NAME = "gelu-mlp-canary"
NAMESPACE = "serving"
HEALTHY_TICKS = 4
FAILURES_AT_STEP_2 = (6.0, 12.0, 25.0, 45.0, 70.0)


def probe_pass() -> GateResult:
    return GateResult(
        "probe", Verdict.PASS, 0.0004, 0.05, 256, 0.0, "256 rows within 0.05 of the baseline"
    )


def spec_dict() -> dict[str, Any]:
    return {
        "model": {"name": "gelu-mlp"},
        "baseline": {"variant": "exact"},
        "candidate": {"variant": "tanh", "replicas": 2},
        "traffic": {
            "steps": [
                {"weight": 10, "analysisSeconds": 180},
                {"weight": 50, "analysisSeconds": 300},
            ]
        },
        "analysis": {"intervalSeconds": 60, "warmupSeconds": 0, "probe": {"enabled": True}},
    }


def rolled_back_status() -> RolloutStatus:
    """The final status, with every tick's gates in its history."""
    driver = Driver(parse_spec(spec_dict()))
    driver.tick(missing=True, advance=False)  # Pending: the probe starts
    driver.tick(missing=True, probe=probe_pass())
    for _ in range(HEALTHY_TICKS):
        driver.tick(candidate=arm(windows=driver.windows(), p99_ms=52.0))
    assert driver.status.step_index == 1, driver.status.message
    for failures in FAILURES_AT_STEP_2:
        driver.tick(candidate=arm(failures=failures, windows=driver.windows(), p99_ms=55.0))
        if driver.status.stage.terminal:
            break
    return driver.status


def rolled_back_rollout(**metadata: Any) -> dict[str, Any]:
    """The rollout object as the API server would return it after the rollback."""
    return {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": NAME, "namespace": NAMESPACE, **metadata},
        "spec": spec_dict(),
        "status": rolled_back_status().to_dict(),
    }


def probe_failed_rollout() -> dict[str, Any]:
    """A rollout the probe rolled back, before any traffic moved."""
    driver = Driver(parse_spec(spec_dict()))
    driver.tick(missing=True, advance=False)
    driver.tick(missing=True, probe=replace(probe_pass(), verdict=Verdict.INCONCLUSIVE))
    failed = GateResult(
        "probe",
        Verdict.FAIL,
        3.5,
        0.05,
        256,
        0.0,
        "candidate differs from the baseline by up to 3.5",
        critical=True,
    )
    driver.tick(missing=True, probe=failed)
    assert driver.status.stage.terminal, driver.status.message
    return {
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": spec_dict(),
        "status": driver.status.to_dict(),
    }
