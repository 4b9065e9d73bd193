"""The decision benchmark end to end on a small generated suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gelu_lab.bench.decisions import benchmark, goals, summarize_policy
from gelu_lab.bench.generate import FAULTS, generate_suite
from gelu_lab.bench.policies.base import Outcome
from gelu_lab.bench.policies.gelu import GeluRolloutPolicy
from gelu_lab.bench.scenario import Scenario, save_scenarios
from gelu_rollout.cli.main import app

POLICY_KEYS = {
    "false_rollback_rate",
    "severe_detection_rate",
    "moderate_detection_rate",
    "median_delay_ticks_severe",
    "p90_delay_ticks_severe",
    "detection_rate_by_fault",
}


@pytest.fixture(scope="module")
def small_suite() -> list[Scenario]:
    return generate_suite(seed=11, healthy=12, per_fault=2)


def test_generator_is_seeded_and_covers_every_fault(small_suite: list[Scenario]) -> None:
    again = generate_suite(seed=11, healthy=12, per_fault=2)
    assert again == small_suite
    assert generate_suite(seed=12, healthy=12, per_fault=2) != small_suite
    kinds = {s.kind for s in small_suite}
    assert kinds == {"healthy"} | {f.kind for f in FAULTS}
    assert len(FAULTS) >= 8
    for scenario in small_suite:
        assert (scenario.expected == "rollback") == (scenario.fault_onset_tick is not None)
        for previous, tick in zip(scenario.ticks, scenario.ticks[1:], strict=False):
            assert tick.candidate.requests >= previous.candidate.requests


def test_report_has_the_documented_shape(small_suite: list[Scenario]) -> None:
    report = benchmark(small_suite, workers=1)
    assert report["scenarios"] == len(small_suite)
    assert set(report["policies"]) == {"gelu-rollout", "flagger-style", "kayenta-style"}
    for summary in report["policies"].values():
        assert set(summary) >= POLICY_KEYS
        assert set(summary["detection_rate_by_fault"]) == {f.kind for f in FAULTS}
        assert summary["parameters"]
    assert set(report["goals"]) >= {"false_rollbacks_at_most_1pct", "no_worse_than_references"}


def test_summary_counts_detection_only_after_onset(small_suite: list[Scenario]) -> None:
    from gelu_lab.bench.decisions import Run

    faulty = next(s for s in small_suite if s.kind == "errors-10x")
    healthy = next(s for s in small_suite if s.kind == "healthy")
    onset = faulty.fault_onset_tick or 0
    runs = [
        Run(faulty, {"p": Outcome("rollback", onset + 3, "")}),
        Run(healthy, {"p": Outcome("rollback", 2, "")}),
    ]
    summary = summarize_policy("p", runs)
    assert summary["false_rollback_rate"] == 1.0
    assert summary["severe_detection_rate"] == 1.0
    assert summary["median_delay_ticks_severe"] == 3
    early = [Run(faulty, {"p": Outcome("rollback", onset - 1, "")})] if onset > 0 else []
    if early:
        assert summarize_policy("p", early)["severe_detection_rate"] == 0.0


def test_goals_compare_with_the_references() -> None:
    ours = {
        "false_rollback_rate": 0.005,
        "healthy_promoted_rate": 0.9,
        "severe_detection_rate": 1.0,
        "moderate_detection_rate": 0.95,
        "median_delay_ticks_severe": 1.0,
        "p90_delay_ticks_severe": 2.0,
        "faulty_promoted_rate": 0.05,
        "detection_rate_by_fault": {"a": 1.0, "b": 0.5},
    }
    weaker = dict(ours, false_rollback_rate=0.2, detection_rate_by_fault={"a": 0.9, "b": 0.5})
    result = goals(ours, {"ref": weaker})
    assert all(v for k, v in result.items() if k != "worse_than_a_reference_on")
    assert result["worse_than_a_reference_on"] == []
    better = dict(ours, moderate_detection_rate=0.97, detection_rate_by_fault={"a": 1.0, "b": 0.6})
    result = goals(ours, {"ref": better})
    assert not result["no_worse_than_references"]
    assert result["worse_than_a_reference_on"] == [
        "moderate_detection_rate: 0.95 vs ref 0.97",
        "detection_rate_by_fault[b]: 0.5 vs ref 0.6",
    ]
    assert not goals(dict(ours, false_rollback_rate=0.02), {})["false_rollbacks_at_most_1pct"]


def test_our_policy_promotes_healthy_and_catches_nan(small_suite: list[Scenario]) -> None:
    policy = GeluRolloutPolicy()
    nan = [s for s in small_suite if s.kind == "nan-burst"]
    for scenario in nan:
        outcome = policy.run(scenario)
        assert outcome.decision == "rollback"
        assert outcome.tick == scenario.fault_onset_tick
    healthy = [policy.run(s) for s in small_suite if s.kind == "healthy"]
    assert not any(o.decision == "rollback" for o in healthy)
    assert sum(o.decision == "promote" for o in healthy) >= len(healthy) // 2


def test_cli_runs_scenario_files_and_writes_json(
    tmp_path: Path, small_suite: list[Scenario]
) -> None:
    save_scenarios(small_suite[:15], tmp_path / "scenarios")
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "decisions",
            "--scenarios",
            str(tmp_path / "scenarios"),
            "--json",
            str(out),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["scenarios"] == 15
    assert "flagger-style" in result.output
    assert "kayenta-style" in result.output
    assert "threshold=5" in result.output  # the references' parameters are printed


def test_cli_reports_a_bad_scenario_folder(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{}")
    result = CliRunner().invoke(app, ["bench", "decisions", "--scenarios", str(tmp_path)])
    assert result.exit_code == 1
    assert "format" in result.output
