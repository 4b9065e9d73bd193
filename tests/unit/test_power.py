"""The power plan: the counts it asks for give the power it promises, and the rollout says
what each gate needs and warns when a step cannot get it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from gelu_rollout.analysis.observations import StepEvidence
from gelu_rollout.analysis.power import (
    Plan,
    binomial_plan_trials,
    binomial_power,
    format_duration,
    t_test_ticks_for_power,
    trials_for_power,
    zero_failure_proof_requests,
)
from gelu_rollout.analysis.sequential import RATE_MULTIPLIERS, binomial_log_evalue
from gelu_rollout.analysis.tail_latency import LatencyHistogram, TailEvidence
from gelu_rollout.rollout.power_plan import infeasible, plan_gates, plan_to_status
from tests.rollout_helpers import Driver, arm, make_spec

ALPHA = 0.01 / 15
BUDGET = 0.001


def test_a_zero_failure_proof_of_a_999_slo_needs_about_4600_requests() -> None:
    assert zero_failure_proof_requests(BUDGET, 0.01) == pytest.approx(4603, abs=2)


@pytest.mark.parametrize("burn", [3.0, 6.0, 10.0])
def test_the_planned_requests_catch_the_stated_burn_with_the_stated_power(burn: float) -> None:
    """Simulated: at the planned count, the e-value reaches 1/alpha in at least the stated
    share of streams at the stated burn; at a third of it, clearly less often."""
    needed = trials_for_power(
        BUDGET, [m * BUDGET for m in RATE_MULTIPLIERS], burn * BUDGET, ALPHA, 0.8
    )
    assert needed is not None
    rng = np.random.default_rng(int(burn))
    failures = rng.binomial(int(needed), burn * BUDGET, 4000)
    caught = np.mean(
        [binomial_log_evalue(float(f), needed, BUDGET) >= math.log(1 / ALPHA) for f in failures]
    )
    assert caught >= 0.8 - 0.02
    few = rng.binomial(int(needed / 3), burn * BUDGET, 4000)
    early = np.mean(
        [binomial_log_evalue(float(f), needed / 3, BUDGET) >= math.log(1 / ALPHA) for f in few]
    )
    assert early < 0.6
    assert (
        binomial_power(needed, BUDGET, [m * BUDGET for m in RATE_MULTIPLIERS], burn * BUDGET, ALPHA)
        >= 0.8
    )


def test_plans_grow_as_the_stated_regression_shrinks_and_none_below_the_tolerance() -> None:
    plans = [
        binomial_plan_trials(BUDGET, b * BUDGET, RATE_MULTIPLIERS, ALPHA, 0.8) for b in (20, 6, 2)
    ]
    assert all(p is not None for p in plans)
    assert plans[0] < plans[1] < plans[2]  # type: ignore[operator]
    assert binomial_plan_trials(BUDGET, BUDGET, RATE_MULTIPLIERS, ALPHA, 0.8) is None
    few = t_test_ticks_for_power(0.3, 0.1, ALPHA, 0.8)
    many = t_test_ticks_for_power(0.1, 0.1, ALPHA, 0.8)
    assert few is not None
    assert many is not None
    assert few < many


def test_a_plan_says_how_long_the_rest_takes() -> None:
    plan = Plan("errorRate", "a burn rate of 6", 4600.0, 600.0, "candidate requests", 0.6)
    assert not plan.met
    assert plan.eta_seconds == pytest.approx(4000 / 0.6)
    assert format_duration(plan.eta_seconds or 0.0) == "1.9 h"
    assert Plan("errorRate", "x", 10.0, 12.0, "requests", None).met
    assert Plan("errorRate", "x", 10.0, 2.0, "requests", None).eta_seconds is None


def test_the_status_carries_the_plan_and_an_infeasible_step_warns_once() -> None:
    """At 5 requests a tick a 6x burn cannot be caught in a 180 s step: the rollout says
    so in an Event, once, and keeps the plan in its status."""
    driver = Driver(make_spec(insufficientData={"maxExtensionSeconds": 60}))
    driver.tick(missing=True)
    for _ in range(3):
        slow = arm(requests=5.0, windows=driver.windows())
        driver.tick(baseline=arm(requests=50.0, windows=driver.windows()), candidate=slow)
    warnings = [e for d in driver.decisions for e in d.events if e.reason == "PowerPlanInfeasible"]
    assert len(warnings) == 1
    assert warnings[0].type == "Warning"
    assert "errorRate needs about" in warnings[0].message
    plan = {p["gate"]: p for p in driver.status.power_plan}
    assert plan["errorRate"]["met"] is False
    assert plan["errorRate"]["needed"] > plan["errorRate"]["have"]
    assert plan["errorRate"]["proofNeeded"] > plan["errorRate"]["needed"]


def test_plenty_of_traffic_meets_the_plan_and_passes_on_power() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    for _ in range(3):  # 3,000 candidate requests: past the plan, short of a proof
        driver.tick(candidate=arm(requests=1000.0, windows=driver.windows()))
    plan = {p["gate"]: p for p in driver.status.power_plan}
    assert plan["errorRate"]["met"] is True
    passed = [e for e in driver.status.ledger if e.gate == "errorRate" and e.verdict == "Pass"]
    assert passed
    assert passed[-1].basis == "power"
    assert not any(e.reason == "PowerPlanInfeasible" for d in driver.decisions for e in d.events)


def test_a_plan_that_needs_the_extension_says_so_once_without_a_warning() -> None:
    """At 40 candidate requests a minute at 10% (200 at 50%) the planned 6 minutes bring
    about 1,400 requests, short of the error-rate plan; the 10-minute extension at 50% brings
    enough. The rollout says so in one Normal Event, and warns of nothing."""
    driver = Driver(make_spec())
    driver.tick(missing=True)
    for _ in range(3):
        driver.tick(candidate=arm(requests=40.0, windows=driver.windows()))
    events = [e for d in driver.decisions for e in d.events]
    noted = [e for e in events if e.reason == "PowerPlanNeedsExtension"]
    assert len(noted) == 1
    assert noted[0].type == "Normal"
    assert "errorRate needs about" in noted[0].message
    assert "extension" in noted[0].message
    assert not any(e.reason == "PowerPlanInfeasible" for e in events)


def test_one_quiet_tick_does_not_make_the_plan_warn() -> None:
    """A first tick with a single candidate request (a lull, or the route still settling)
    would make any plan look hopeless; the plan is judged on the step's rate over at least
    two ticks, and the traffic that follows meets it."""
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick(candidate=arm(requests=1.0, windows=driver.windows()))
    for _ in range(2):
        driver.tick(candidate=arm(requests=1000.0, windows=driver.windows()))
    reasons = {e.reason for d in driver.decisions for e in d.events}
    assert "PowerPlanInfeasible" not in reasons
    assert "PowerPlanNeedsExtension" not in reasons
    assert driver.status.power_plan  # the plan is in the status from the first tick


def test_the_tail_plan_waits_for_the_baseline_and_says_so() -> None:
    """Until the baseline has shown 1,000 requests the latency tail has no plan yet: the
    status says so (``planned: false``) and no Event calls it infeasible."""
    edges = (10.0, 20.0, 40.0, 80.0)
    thin = LatencyHistogram(edges, (60.0, 30.0, 8.0, 2.0, 0.0))
    segment = StepEvidence(ticks=3, seconds=180.0, tail=TailEvidence(ticks=3))
    segment = replace(segment, baseline_latency=thin)
    latest = (arm(requests=100.0), arm(requests=10.0))
    plans = plan_gates(make_spec(), (segment,), latest, 60.0)
    tail = next(p for p in plans if p.gate == "latencyRegression")
    assert not tail.planned
    assert tail.needed is None
    assert not any("latency" in problem for problem in infeasible(plans, [(600.0, 50)], 10))
    entry = next(e for e in plan_to_status(plans) if e["gate"] == "latencyRegression")
    assert entry["planned"] is False
