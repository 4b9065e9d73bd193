"""The gelu-rollout command line."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from gelu_rollout.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def test_validate_prints_the_spec_with_defaults() -> None:
    result = CliRunner().invoke(app, ["validate", str(ROOT / "examples" / "rollout.yaml")])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load(result.output)["spec"]
    assert spec["analysis"]["falseRollbackBudget"] == 0.01
    assert spec["candidate"]["variant"] == "tanh"


def test_validate_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "gelu.dev/v1alpha1",
                "kind": "GeluModelRollout",
                "metadata": {"name": "x"},
                "spec": {
                    "model": {"name": "m"},
                    "baseline": {"variant": "exact"},
                    "candidate": {"variant": "exact"},
                    "analysis": {"falseRollbackBudget": 0.5, "intervl": 30},
                },
            }
        )
    )
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "3 problem(s)" in result.output
    assert "spec.analysis.falseRollbackBudget" in result.output
    assert "spec.analysis.intervl: unknown field" in result.output


def test_validate_reports_unreadable_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_replay_replays_a_nan_rollout_to_a_rollback() -> None:
    result = CliRunner().invoke(app, ["replay", "--scenario", "nan-burst"])
    assert result.exit_code == 0, result.output
    assert "RolledBack" in result.output
    assert "NonFiniteOutputs" in result.output


def test_replay_promotes_a_healthy_rollout() -> None:
    result = CliRunner().invoke(app, ["replay"])
    assert result.exit_code == 0, result.output
    assert "Promoted" in result.output


def test_replay_rejects_unknown_scenarios() -> None:
    result = CliRunner().invoke(app, ["replay", "--scenario", "nope"])
    assert result.exit_code == 1
    assert "unknown scenario" in result.output
