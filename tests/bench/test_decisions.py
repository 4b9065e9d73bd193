"""The decision benchmark end to end on a small generated suite, and its figures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gelu_lab.bench.decisions import Run, benchmark, goals, silent_fault, summarize_policy
from gelu_lab.bench.generate import CLASSIC, FAMILIES, FAULTS, SHORT, SHORT_FAULTS, generate_suite
from gelu_lab.bench.policies.base import Outcome
from gelu_lab.bench.policies.gelu import GeluRolloutPolicy
from gelu_lab.bench.scenario import Scenario, save_scenarios
from gelu_rollout.cli.main import app

POLICY_KEYS = {
    "false_rollback_rate",
    "healthy_promoted_within_plan_rate",
    "healthy_promoted_rate",
    "median_promote_time_ratio",
    "p90_promote_time_ratio",
    "severe_detection_rate",
    "moderate_detection_rate",
    "median_delay_ticks_severe",
    "p90_delay_ticks_severe",
    "detection_rate_by_fault",
    "healthy_by_traffic",
    "latency_detection_by_buckets",
    "by_family",
    "seconds",
}


@pytest.fixture(scope="module")
def small_suite() -> list[Scenario]:
    return generate_suite(seed=11, healthy=8, per_fault=1)


def test_generator_is_seeded_and_covers_every_fault_of_every_family(
    small_suite: list[Scenario],
) -> None:
    again = generate_suite(seed=11, healthy=8, per_fault=1)
    assert again == small_suite
    assert generate_suite(seed=12, healthy=8, per_fault=1) != small_suite
    for family, faults in ((CLASSIC, FAULTS), (SHORT, SHORT_FAULTS)):
        mine = [s for s in small_suite if s.labels["family"] == family.name]
        assert {s.kind for s in mine} == {"healthy"} | {f.kind for f in faults}
        for scenario in mine:
            assert scenario.adaptive
            assert (scenario.expected == "rollback") == (scenario.fault_onset_tick is not None)
            assert scenario.steps == family.steps
            assert scenario.tick_seconds == family.tick_seconds
    # One family alone is the same as within the suite: the seeding is per family.
    short = generate_suite(seed=11, healthy=8, per_fault=1, families=("short",))
    assert short == [s for s in small_suite if s.labels["family"] == "short"]
    with pytest.raises(ValueError, match="unknown family"):
        generate_suite(families=("nope",))
    assert set(FAMILIES) == {"classic", "short"}


def _shortened(scenario: Scenario, ticks: int) -> Scenario:
    """The scenario with its stream cut after ``ticks``: enough for the report's shape, and
    the test stays quick whatever the decision core costs per tick."""
    assert scenario.model is not None
    return replace(scenario, model=replace(scenario.model, ticks=scenario.model.ticks[:ticks]))


def test_report_has_the_documented_shape(small_suite: list[Scenario]) -> None:
    report = benchmark([_shortened(s, 24) for s in small_suite], workers=1)
    assert report["scenarios"] == len(small_suite)
    assert report["families"] == {"classic": 19, "short": 19}
    assert set(report["policies"]) == {"gelu-rollout", "flagger-style", "kayenta-style"}
    for summary in report["policies"].values():
        assert set(summary) >= POLICY_KEYS
        kinds = {f.kind for f in FAULTS} | {f.kind for f in SHORT_FAULTS}
        assert set(summary["detection_rate_by_fault"]) == kinds
        assert set(summary["by_family"]) == {"classic", "short"}
        assert set(summary["by_family"]["short"]["detection_rate_by_fault"]) == {
            f.kind for f in SHORT_FAULTS
        }
        levels = summary["healthy_by_traffic"]
        assert {"short 20 req/s", "short 50 req/s", "short 100 req/s", "short 150 req/s"} <= set(
            levels
        )
        assert sum(g["scenarios"] for g in levels.values()) == report["healthy"]
        assert summary["parameters"]
        assert summary["seconds"] >= 0
    assert set(report["goals"]) >= {
        "healthy_within_plan_where_feasible_at_least_95pct",
        "false_rollbacks_at_most_1pct",
        "severe_detection_at_least_99pct",
        "severe_median_delay_at_most_1_tick",
        "severe_p90_delay_at_most_3_ticks",
        "moderate_detection_at_least_90pct",
        "no_fault_kind_where_a_reference_detects_more",
    }
    json.dumps(report)  # the CLI writes it as JSON


def _healthy(
    suite: list[Scenario], family: str = "short", traffic: str | None = None
) -> list[Scenario]:
    return [
        s
        for s in suite
        if s.kind == "healthy"
        and s.labels["family"] == family
        and (traffic is None or s.labels["traffic"] == traffic)
    ]


def test_summary_counts_detection_only_after_onset(small_suite: list[Scenario]) -> None:
    faulty = next(s for s in small_suite if s.kind == "errors-10x")
    healthy = _healthy(small_suite)[0]
    onset = faulty.fault_onset_tick or 0
    runs = [
        Run(faulty, {"p": Outcome("rollback", onset + 3, "")}),
        Run(healthy, {"p": Outcome("rollback", 2, "")}),
    ]
    summary = summarize_policy("p", runs)
    assert summary["false_rollback_rate"] == 1.0
    assert summary["severe_detection_rate"] == 1.0
    assert summary["median_delay_ticks_severe"] == 3
    early = replace(faulty, fault_onset_tick=onset + 5)
    assert summarize_policy("p", [Run(early, {"p": Outcome("rollback", onset + 3, "")})])[
        "severe_detection_rate"
    ] == pytest.approx(0.0)


def test_within_plan_time_ratio_and_traffic_levels(small_suite: list[Scenario]) -> None:
    first, second = _healthy(small_suite, traffic="20 req/s")[:2]
    third = _healthy(small_suite, traffic="150 req/s")[0]
    planned = first.planned_ticks  # 36 ticks of 10 s
    runs = [
        Run(first, {"p": Outcome("promote", planned - 1, "")}),  # at the plan's end: ratio 1
        Run(second, {"p": Outcome("promote", 2 * planned - 1, "")}),  # twice the plan
        Run(third, {"p": Outcome("stalled", None, "")}),
    ]
    summary = summarize_policy("p", runs)
    assert summary["healthy_promoted_within_plan_rate"] == pytest.approx(1 / 3)
    assert summary["healthy_promoted_rate"] == pytest.approx(2 / 3)
    assert summary["healthy_stalled_rate"] == pytest.approx(1 / 3)
    assert summary["median_promote_time_ratio"] == pytest.approx(1.5)
    assert summary["p90_promote_time_ratio"] == pytest.approx(1.9)
    low = summary["healthy_by_traffic"]["short 20 req/s"]
    assert low["scenarios"] == 2
    assert low["promoted_within_plan"] == pytest.approx(0.5)
    assert low["promoted"] == pytest.approx(1.0)
    assert summary["healthy_by_traffic"]["short 150 req/s"]["still_waiting"] == pytest.approx(1)
    # Nobody said anything about the power plan: the figures that need it are absent.
    assert summary["plan_feasible_rate"] is None
    assert summary["healthy_promoted_within_plan_where_feasible_rate"] is None


def test_within_plan_where_the_plan_is_feasible(small_suite: list[Scenario]) -> None:
    a, b, c = _healthy(small_suite)[:3]
    planned = a.planned_ticks
    runs = [
        Run(a, {"p": Outcome("promote", planned - 1, "", plan_feasible=True)}),
        Run(b, {"p": Outcome("promote", planned + 5, "", plan_feasible=True)}),
        Run(c, {"p": Outcome("rollback", 3, "", plan_feasible=False)}),
    ]
    summary = summarize_policy("p", runs)
    assert summary["plan_feasible_rate"] == pytest.approx(2 / 3)
    assert summary["healthy_promoted_within_plan_where_feasible_rate"] == pytest.approx(0.5)
    assert summary["healthy_rolled_back_where_infeasible"] == 1
    result = goals(summary, {})
    assert result["healthy_within_plan_where_feasible_at_least_95pct"] is False
    assert result["no_rollback_where_plan_infeasible"] is False


def _figures(**changes: object) -> dict[str, object]:
    ours: dict[str, object] = {
        "false_rollback_rate": 0.005,
        "healthy_promoted_rate": 0.9,
        "healthy_promoted_within_plan_rate": 0.9,
        "severe_detection_rate": 1.0,
        "moderate_detection_rate": 0.95,
        "median_delay_ticks_severe": 1.0,
        "p90_delay_ticks_severe": 3.0,
        "faulty_promoted_rate": 0.05,
        "plan_feasible_rate": None,
        "detection_rate_by_fault": {"a": 1.0, "b": 0.5},
        "by_family": {"f": {"detection_rate_by_fault": {"a": 1.0, "b": 0.5}}},
    }
    ours.update(changes)
    return ours


def test_goals_compare_with_the_references() -> None:
    ours = _figures()
    weaker = _figures(
        false_rollback_rate=0.2,
        detection_rate_by_fault={"a": 0.9, "b": 0.5},
        by_family={"f": {"detection_rate_by_fault": {"a": 0.9, "b": 0.5}}},
    )
    result = goals(ours, {"ref": weaker})  # type: ignore[arg-type]
    assert result["healthy_within_plan_where_feasible_at_least_95pct"] is None  # not said
    checks = {
        k: v
        for k, v in result.items()
        if k not in ("worse_than_a_reference_on", "fault_kinds_behind_a_reference")
        and v is not None
    }
    assert all(checks.values()), checks
    assert result["worse_than_a_reference_on"] == []
    better = _figures(
        moderate_detection_rate=0.97,
        detection_rate_by_fault={"a": 1.0, "b": 0.6},
        by_family={"f": {"detection_rate_by_fault": {"a": 1.0, "b": 0.7}}},
    )
    result = goals(ours, {"ref": better})  # type: ignore[arg-type]
    assert not result["no_fault_kind_where_a_reference_detects_more"]
    assert result["fault_kinds_behind_a_reference"] == ["b: 0.5 vs ref 0.6", "f/b: 0.5 vs ref 0.7"]
    assert "moderate_detection_rate: 0.95 vs ref 0.97" in result["worse_than_a_reference_on"]
    slow = goals(_figures(median_delay_ticks_severe=2.0, p90_delay_ticks_severe=4.0), {})  # type: ignore[arg-type]
    assert not slow["severe_median_delay_at_most_1_tick"]
    assert not slow["severe_p90_delay_at_most_3_ticks"]
    assert not goals(_figures(false_rollback_rate=0.02), {})["false_rollbacks_at_most_1pct"]  # type: ignore[arg-type]


def test_our_policy_promotes_healthy_and_catches_nan(small_suite: list[Scenario]) -> None:
    policy = GeluRolloutPolicy()
    nan = [s for s in small_suite if s.kind == "nan-burst"]
    for scenario in nan:
        outcome = policy.run(scenario)
        assert outcome.decision == "rollback"
        assert outcome.tick == scenario.fault_onset_tick
        assert "non-finite" in outcome.reason
    healthy = [  # the classic family at moderate traffic: promoted within its streams
        policy.run(s)
        for s in _healthy(small_suite, family="classic")
        if s.labels["traffic"] != "1-8 req/s"
    ]
    assert not any(o.decision == "rollback" for o in healthy)
    assert sum(o.decision == "promote" for o in healthy) >= len(healthy) // 2


def test_cli_runs_scenario_files_and_writes_json(
    tmp_path: Path, small_suite: list[Scenario]
) -> None:
    chosen = [_shortened(s, 20) for s in small_suite[:6] + small_suite[19:25]]
    save_scenarios(chosen, tmp_path / "scenarios")
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
    assert report["scenarios"] == len(chosen)
    assert "flagger-style" in result.output
    assert "kayenta-style" in result.output
    assert "threshold=5" in result.output  # the references' parameters are printed
    assert "promoted within plan" in result.output


def test_cli_generates_one_family(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "decisions",
            "--family",
            "classic",
            "--healthy",
            "2",
            "--per-fault",
            "0",
            "--workers",
            "1",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["families"] == {"classic": 2}
    bad = CliRunner().invoke(app, ["bench", "decisions", "--family", "nope"])
    assert bad.exit_code == 1
    assert "unknown family" in bad.output


def test_cli_reports_a_bad_scenario_folder(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{}")
    result = CliRunner().invoke(app, ["bench", "decisions", "--scenarios", str(tmp_path)])
    assert result.exit_code == 1
    assert "format" in result.output


def test_a_non_finite_fault_that_never_reaches_an_output_is_silent(
    small_suite: list[Scenario],
) -> None:
    """A NaN fault is silent when no candidate output in the planned ticks was non-finite;
    healthy scenarios and other faults never are."""
    burst = next(s for s in small_suite if s.kind == "nan-burst")
    assert not silent_fault(burst)  # 1% of the onset tick's outputs
    assert not silent_fault(next(s for s in small_suite if s.kind == "healthy"))
    assert not silent_fault(next(s for s in small_suite if s.kind == "errors-10x"))
    model = burst.model
    assert model is not None
    rare = tuple(
        replace(t, candidate=replace(t.candidate, nonfinite_rate=1e-15))
        if t.candidate.nonfinite_rate > 0
        else t
        for t in model.ticks
    )
    assert silent_fault(replace(burst, model=replace(model, ticks=rare)))
