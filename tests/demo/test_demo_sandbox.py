"""The demo end to end: the same code path `make demo` runs, on the real sandbox."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gelu_lab.demo.run import run_scenario
from gelu_lab.demo.scenarios import SCENARIOS
from tests.demo.runs import Run

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "rollout.yaml"
CLI = Path(sys.executable).parent / "gelu-rollout"


@pytest.mark.asyncio
async def test_healthy_scenario_is_promoted() -> None:
    result = await run_scenario(SCENARIOS["healthy"], example=EXAMPLE)
    assert result.outcome == "Promoted", result.message
    assert result.seconds_apply_to_outcome is not None
    assert result.seconds_fault_to_zero_weight is None
    gates = {e["gate"] for e in result.ledger}
    assert {"probe", "nonFinite", "errorRate", "divergence"} <= gates
    assert result.traffic["candidate"]["succeeded"] > 0
    assert [e["reason"] for e in result.events][-1] == "AllStepsPassed"


def test_nan_scenario_through_the_cli_writes_its_json(tmp_path: Path) -> None:
    # The run's own TMPDIR and mark: what it left is told apart from other tests' runs.
    run = Run(tmp_path)
    out = tmp_path / "nan.json"
    done = subprocess.run(
        [str(CLI), "demo", "--scenario", "nan", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        env=run.env(),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["scenario"] == "nan"
    assert result["outcome"] == "RolledBack"
    assert result["seconds_apply_to_outcome"] > 0
    assert 0 < result["seconds_fault_to_zero_weight"] <= result["seconds_apply_to_outcome"]
    assert [e["gate"] for e in result["ledger"] if e["verdict"] == "Fail"] == ["probe"]
    assert "RolledBack" in done.stdout
    assert run.leftovers() == ([], [])


def test_ctrl_c_stops_the_demo_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = Run(tmp_path)
    demo = subprocess.Popen(
        [str(CLI), "demo", "--scenario", "healthy"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=run.env({"COLUMNS": "120"}),
    )
    time.sleep(12)  # the sandbox is up and the rollout under way
    demo.send_signal(signal.SIGINT)
    _, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 130
    assert "interrupted" in stderr
    assert run.leftovers() == ([], [])
