"""The replay: fixed streams as recorded, adaptive ones at the weight the policy is at."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gelu_lab.bench.generate import generate_suite
from gelu_lab.bench.policies.gelu import (
    START,
    GeluRolloutPolicy,
    plan_feasibility,
    replay_decisions,
    spec_for,
)
from gelu_lab.bench.replay import Replay
from gelu_lab.bench.scenario import (
    ArmModel,
    ArmTick,
    ModelTick,
    Scenario,
    StepPlan,
    StreamModel,
    Tick,
)
from gelu_rollout.rollout.decide import Decision
from gelu_rollout.rollout.events import EmitEvent
from gelu_rollout.spec.status import RolloutStatus, Stage


def _adaptive(requests: float = 4000.0, ticks: int = 40) -> Scenario:
    arm = ArmModel(
        failure_ratio=0.0005, median_ms=30.0, log_sd=0.4, tail_log_sd=0.4, output_mix=(1.0,)
    )
    return Scenario(
        name="adaptive",
        kind="healthy",
        severity="none",
        expected="promote",
        tick_seconds=10.0,
        fault_onset_tick=None,
        availability_slo=0.999,
        latency_p99_ceiling_ms=250.0,
        histogram_bounds=(0.0, 1.0),
        steps=(StepPlan(5, 12), StepPlan(25, 12), StepPlan(50, 12)),
        ticks=(),
        model=StreamModel(
            seed=1,
            outputs_per_request=16,
            output_components=((0.2, 0.5, 0.3),),
            ticks=tuple(ModelTick(requests, arm, arm) for _ in range(ticks)),
        ),
    )


def _fixed() -> Scenario:
    def arm(n: float) -> ArmTick:
        return ArmTick(n, 0.0, 0.0, (n, 0.0, 0.0), 50.0)

    return Scenario(
        name="fixed",
        kind="healthy",
        severity="none",
        expected="promote",
        tick_seconds=10.0,
        fault_onset_tick=None,
        availability_slo=0.999,
        latency_p99_ceiling_ms=250.0,
        histogram_bounds=(0.0, 1.0),
        steps=(StepPlan(5, 2), StepPlan(50, 2)),
        ticks=tuple(Tick(arm(100.0 * (t + 1)), arm(10.0 * (t + 1))) for t in range(4)),
    )


def test_an_extended_step_keeps_its_weight() -> None:
    """A policy still at 5% after the plan's first step gets 5% of the requests, not 25%."""
    scenario = _adaptive()
    extending, following = Replay(scenario, START), Replay(scenario, START)
    held = []
    planned = []
    for t in range(36):
        _, cand = extending.observe(t, weight=5)
        _, plan = following.observe(t)  # the plan's weight
        held.append(cand.requests)
        planned.append(plan.requests)
    assert extending.weights == [5] * 36
    assert following.weights == [5] * 12 + [25] * 12 + [50] * 12
    assert np.mean(held[12:]) == pytest.approx(0.05 * 4000, rel=0.1)
    assert np.mean(planned[12:24]) == pytest.approx(0.25 * 4000, rel=0.05)
    assert np.mean(planned[24:]) == pytest.approx(0.5 * 4000, rel=0.05)
    # The baseline is a same-size arm beside the candidate: it follows the weight too.
    base, _ = Replay(scenario, START).observe(0, weight=5)
    assert base.requests == pytest.approx(200, rel=0.25)


def test_same_weight_same_data_other_weight_other_data() -> None:
    scenario = _adaptive()
    first, second, third = (Replay(scenario, START) for _ in range(3))
    for t in range(5):
        a = first.observe(t, weight=25)
        b = second.observe(t, weight=25)
        c = third.observe(t, weight=50)
        assert a == b
        assert a != c
    # Realisations do not depend on what was cached before (a fresh scenario object).
    fresh = Replay(replace(scenario, name="again"), START)
    assert [fresh.observe(t, weight=25) for t in range(5)][4] == first.deltas[4]


def test_a_fixed_stream_is_replayed_as_recorded_whatever_the_weight() -> None:
    scenario = _fixed()
    replay = Replay(scenario, START)
    observed = [replay.observe(t, weight=77)[1].requests for t in range(4)]
    assert observed == [10.0, 10.0, 10.0, 10.0]
    assert replay.weights == [77] * 4
    assert replay.deltas[0][0].p99_window_seconds == 10.0  # a recorded P99 covers its tick


def test_ticks_come_in_order_and_within_the_stream() -> None:
    replay = Replay(_fixed(), START)
    with pytest.raises(ValueError, match="in order"):
        replay.observe(1)
    for t in range(4):
        replay.observe(t)
    with pytest.raises(IndexError):
        replay.observe(4)


def test_windows_sum_what_this_pass_observed() -> None:
    scenario = _adaptive()
    replay = Replay(scenario, START)
    counts = []
    for t in range(6):
        _, cand = replay.observe(t, windows=(30.0,), weight=5 if t < 3 else 50)
        counts.append(cand.requests)
        assert cand.windows[30.0].requests == pytest.approx(sum(counts[-3:]))


def test_our_policy_is_replayed_at_the_weight_its_status_is_at() -> None:
    """On a candidate too light to judge, gelu-rollout moves on while nothing shows harm but
    cannot promote: it waits on its last step, and the replay keeps feeding it that step's
    weight, as the cluster would, instead of the plan's."""
    scenario = _adaptive(requests=20.0, ticks=80)  # 2 req/s: 0.1 req/s to the candidate
    spec = spec_for(scenario)
    replay = Replay(scenario, START)
    steps: list[int] = []
    weights: list[int] = []
    status = None
    for tick, decision in replay_decisions(scenario, spec, replay):
        if tick >= 0:
            assert status is not None
            weights.append(status.candidate_weight)
            steps.append(status.step_index)
        status = decision.status
    assert replay.weights == weights  # every tick realised at the weight the status set
    assert len(steps) == 80  # never decided: the power plan cannot be met at 0.1 req/s
    last = steps.index(len(spec.traffic.steps) - 1)
    assert set(replay.weights[last:]) == {spec.traffic.steps[-1].weight}
    assert len(replay.weights) - last > 12  # held past the last step's planned 12 ticks
    assert status is not None
    assert status.stage is not Stage.PROMOTED
    outcome = GeluRolloutPolicy().run(scenario)
    assert outcome.decision != "rollback"


def test_our_policy_follows_its_own_steps_on_a_generated_stream() -> None:
    scenario = next(
        s
        for s in generate_suite(seed=3, healthy=4, per_fault=0, families=("short",))
        if s.labels["traffic"] == "150 req/s"
    )
    spec = spec_for(scenario)
    replay = Replay(scenario, START)
    statuses = [d.status for _, d in replay_decisions(scenario, spec, replay)]
    assert replay.weights == [s.candidate_weight for s in statuses[: len(replay.weights)]]
    assert statuses[-1].stage in (Stage.PROMOTED, Stage.PAUSED, Stage.PROGRESSING)


def test_plan_feasibility_is_read_from_what_the_rollout_reports() -> None:
    def decision(plan: list[dict[str, object]], *events: EmitEvent) -> Decision:
        return Decision(RolloutStatus(power_plan=plan), tuple(events))

    entry: dict[str, object] = {"gate": "errorRate", "needed": 300, "have": 20, "met": False}
    assert plan_feasibility(decision([])) is None  # no plan reported
    assert plan_feasibility(decision([entry])) is True
    warning = EmitEvent(
        "Warning", "PowerPlanInfeasible", "step 1 cannot decide on power by its deadline: ..."
    )
    assert plan_feasibility(decision([entry], warning)) is False
    other = EmitEvent("Warning", "SomethingElse", "errorRate cannot decide within 6 min")
    assert plan_feasibility(decision([], other)) is False
    normal = EmitEvent("Normal", "StepAdvanced", "step 2")
    assert plan_feasibility(decision([], normal)) is None
    later = EmitEvent("Normal", "PowerPlanNeedsExtension", "errorRate needs about 2,656 ...")
    assert plan_feasibility(decision([entry], later)) is False  # not within the plan


def test_our_policy_reports_what_the_power_plan_said() -> None:
    light = GeluRolloutPolicy().run(_adaptive(requests=20.0, ticks=80))
    heavy = GeluRolloutPolicy().run(_adaptive(requests=40_000.0, ticks=40))
    assert light.plan_feasible is False  # 0.1 req/s to the candidate: it warns
    assert heavy.plan_feasible is True


def test_the_spec_names_a_mesh_histogram_where_the_scenario_has_one() -> None:
    with_buckets = replace(_adaptive(), latency_bounds=(10.0, 100.0))
    source = spec_for(with_buckets).analysis.latency_histogram
    assert source is not None
    assert source.unit == "milliseconds"
    assert spec_for(_adaptive()).analysis.latency_histogram is None
