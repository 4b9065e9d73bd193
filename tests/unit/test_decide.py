"""The rollout state machine, tick by tick."""

from __future__ import annotations

import pytest

from gelu_rollout.rollout.requests import ManualRequest, RequestKind, parse_request
from gelu_rollout.spec.status import Stage
from tests.rollout_helpers import Driver, arm, candidate_replicas, make_spec, traffic_weight


def reasons(driver: Driver) -> list[str]:
    return [e.reason for d in driver.decisions for e in d.events]


def condition(driver: Driver, type_: str) -> tuple[str, str]:
    found = driver.status.condition(type_)
    assert found is not None, f"no {type_} condition"
    return found.status, found.reason


def test_first_tick_starts_the_rollout_at_the_first_weight() -> None:
    driver = Driver(make_spec())
    decision = driver.tick(missing=True)
    assert driver.status.stage is Stage.PROGRESSING
    assert driver.status.candidate_weight == 10
    assert candidate_replicas(driver.spec, decision) > 0  # the candidate's pods run
    assert traffic_weight(decision) == 10
    assert reasons(driver) == ["RolloutStarted"]
    assert condition(driver, "Progressing") == ("True", "RolloutStarted")
    assert condition(driver, "Promoted")[0] == "False"


def test_healthy_candidate_advances_each_step_then_promotes() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    weights = []
    for _ in range(20):
        decision = driver.tick()
        weights.append(decision.status.candidate_weight)
        if driver.status.stage is Stage.PROMOTED:
            break
    assert driver.status.stage is Stage.PROMOTED
    assert [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]] == [10, 50, 100]
    # Promoted: the baseline's pods serve the candidate's model; the candidate's go.
    assert (traffic_weight(decision), candidate_replicas(driver.spec, decision)) == (0, 0)
    assert reasons(driver) == ["RolloutStarted", "StepAdvanced", "AllStepsPassed"]
    assert condition(driver, "Promoted") == ("True", "AllStepsPassed")
    assert condition(driver, "Progressing")[0] == "False"
    # Each step lasted its analysis time (180 s = 3 ticks) and no less.
    assert len(driver.decisions) == 1 + 3 + 3
    # The promotion decision recorded every gate's verdict in the ledger.
    final = [e for e in driver.status.ledger if e.time == driver.now]
    assert {e.gate for e in final} == {
        "nonFinite",
        "burnRate",
        "errorRate",
        "latencyRegression",
        "latencyCeiling",
        "divergence",
    }
    assert all(e.verdict == "Pass" for e in final)


def test_nan_rolls_back_at_once_with_its_own_reason() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick()
    decision = driver.tick(candidate=arm(nonfinite=1, windows=driver.windows()))
    assert driver.status.stage is Stage.ROLLED_BACK
    assert driver.status.candidate_weight == 0
    assert (traffic_weight(decision), candidate_replicas(driver.spec, decision)) == (0, 0)
    assert condition(driver, "RolledBack") == ("True", "NonFiniteOutputs")
    failing = [e for e in driver.status.ledger if e.verdict == "Fail"]
    assert [e.gate for e in failing] == ["nonFinite"]
    assert failing[0].value == 1
    # The ledger records where the evidence was gathered, not where the rollback left it.
    assert (failing[0].step, failing[0].weight) == (0, 10)


def test_clear_error_rate_rise_rolls_back_on_error_rate_or_burn() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    for _ in range(3):
        driver.tick(
            candidate=arm(failures=100, windows=driver.windows()),
            baseline=arm(failures=1, windows=driver.windows()),
        )
        if driver.status.stage is Stage.ROLLED_BACK:
            break
    assert driver.status.stage is Stage.ROLLED_BACK
    assert condition(driver, "RolledBack")[1] in {"FastBurn", "ErrorRateAboveTolerance"}


def test_failures_shared_by_both_arms_are_not_blamed_on_the_candidate() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    for _ in range(3):
        both = arm(failures=100, windows=driver.windows())
        driver.tick(candidate=both, baseline=both)
    assert driver.status.stage is not Stage.ROLLED_BACK


def test_missing_metrics_never_promote_and_pause_at_the_deadline() -> None:
    spec = make_spec(insufficientData={"maxExtensionSeconds": 120})
    driver = Driver(spec)
    driver.tick(missing=True)
    for _ in range(10):
        decision = driver.tick(missing=True)
        assert decision.status.candidate_weight == 10
        assert decision.status.stage is not Stage.PROMOTED
        assert all(r.verdict.value == "Inconclusive" for r in decision.results)
    assert driver.status.stage is Stage.PAUSED
    assert condition(driver, "Stalled") == ("True", "InsufficientData")
    assert condition(driver, "Reconciling")[0] == "False"
    assert reasons(driver).count("InsufficientData") == 1


def test_insufficient_data_can_roll_back_instead() -> None:
    spec = make_spec(insufficientData={"maxExtensionSeconds": 0, "action": "Rollback"})
    driver = Driver(spec)
    driver.tick(missing=True)
    for _ in range(3):
        driver.tick(missing=True)
    assert driver.status.stage is Stage.ROLLED_BACK
    assert condition(driver, "RolledBack") == ("True", "InsufficientData")


def test_paused_rollout_resumes_when_evidence_arrives() -> None:
    spec = make_spec(insufficientData={"maxExtensionSeconds": 0})
    driver = Driver(spec)
    driver.tick(missing=True)
    for _ in range(3):
        driver.tick(missing=True)
    assert driver.status.stage is Stage.PAUSED
    for _ in range(3):
        driver.tick()
    assert driver.status.step_index == 1
    assert "AnalysisResumed" in reasons(driver)


def test_abort_request_rolls_back_once() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    abort = ManualRequest(RequestKind.ABORT, "abort-1")
    driver.tick(request=abort)
    assert driver.status.stage is Stage.ROLLED_BACK
    assert condition(driver, "RolledBack") == ("True", "Aborted")
    assert driver.status.handled_request == "abort-1"
    # The annotation stays on the object: reading it again changes nothing.
    before = driver.status
    decision = driver.tick(request=abort)
    assert decision.events == ()
    assert driver.status.stage is before.stage


def test_manual_promote_skips_remaining_steps() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick(request=ManualRequest(RequestKind.PROMOTE, "p1"))
    assert driver.status.stage is Stage.PROMOTED
    assert condition(driver, "Promoted") == ("True", "ManualPromotion")


def test_manual_promote_is_refused_when_a_critical_gate_fails() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick(
        candidate=arm(nonfinite=3, windows=driver.windows()),
        request=ManualRequest(RequestKind.PROMOTE, "p1"),
    )
    assert driver.status.stage is Stage.ROLLED_BACK
    assert "PromotionRefused" in reasons(driver)


def test_retry_after_rollback_starts_again_with_fresh_evidence() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick(candidate=arm(nonfinite=1, windows=driver.windows()))
    assert driver.status.stage is Stage.ROLLED_BACK
    decision = driver.tick(request=ManualRequest(RequestKind.RETRY, "r1"))
    assert driver.status.stage is Stage.PROGRESSING
    assert driver.status.step_index == 0
    assert traffic_weight(decision) == 10
    assert condition(driver, "RolledBack")[0] == "False"
    # The NaN seen before the retry no longer counts.
    driver.tick()
    assert driver.status.stage is Stage.PROGRESSING


def test_requests_on_a_finished_rollout_are_ignored_with_an_event() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick(request=ManualRequest(RequestKind.PROMOTE, "p1"))
    driver.tick(request=ManualRequest(RequestKind.ABORT, "a1"))
    assert driver.status.stage is Stage.PROMOTED
    assert reasons(driver)[-1] == "RequestIgnored"


def test_spec_change_restarts_the_analysis() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    for _ in range(4):
        driver.tick(generation=1)
    assert driver.status.step_index == 1
    decision = driver.tick(generation=2)
    assert driver.status.step_index == 0
    assert driver.status.observed_generation == 2
    assert traffic_weight(decision) == 10
    assert reasons(driver)[-1] == "SpecChanged"


def test_a_replayed_tick_changes_nothing() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick()
    before = driver.status
    decision = driver.tick(advance=False)
    assert decision.events == ()
    assert driver.status == before


def test_ledger_is_bounded() -> None:
    driver = Driver(make_spec(ledgerLimit=10))
    driver.tick(missing=True)
    for index in range(30):
        # Alternate data and no data so verdicts keep changing and get recorded.
        driver.tick(missing=index % 2 == 0)
    assert 0 < len(driver.status.ledger) <= 10


def test_status_survives_the_round_trip_through_the_api_server() -> None:
    kept, stored = Driver(make_spec(), through_dict=False), Driver(make_spec())
    for driver in (kept, stored):
        driver.tick(missing=True)
        for index in range(8):
            driver.tick(candidate=arm(failures=index % 3, windows=driver.windows()))
    assert kept.status.to_dict() == stored.status.to_dict()


def test_parse_request_reads_kind_and_id() -> None:
    assert parse_request("promote/2026-11-25T20:00:00Z") == ManualRequest(
        RequestKind.PROMOTE, "2026-11-25T20:00:00Z"
    )
    assert parse_request(" Abort ").kind is RequestKind.ABORT


def test_parse_request_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="promote, abort, retry"):
        parse_request("resume/1")


def test_a_bad_scrape_is_set_aside_as_missing_data() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick()
    before = driver.status.analysis
    decision = driver.tick(candidate=arm(requests=float("nan"), windows=driver.windows()))
    assert driver.status.stage is Stage.PROGRESSING
    assert all(r.verdict.value == "Inconclusive" for r in decision.results)
    assert "observation rejected: candidate: requests is nan" in decision.results[0].message
    # The evidence gathered so far is untouched.
    assert driver.status.analysis["segments"] == before["segments"]


def test_a_histogram_that_changes_its_buckets_does_not_crash_the_rollout() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick()
    decision = driver.tick(candidate=arm(histogram=[1.0, 2.0], windows=driver.windows()))
    assert "histogram has 2 buckets, earlier ticks had 5" in decision.results[0].message
    driver.tick()
    assert driver.status.stage is Stage.PROGRESSING


def test_condition_transition_time_moves_only_when_its_status_changes() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    started = driver.status.condition("Progressing")
    assert started is not None
    for _ in range(4):
        driver.tick()  # advances a step: Progressing stays True
    advanced = driver.status.condition("Progressing")
    assert advanced is not None
    assert advanced.reason == "StepAdvanced"
    assert advanced.last_transition_time == started.last_transition_time
    driver.tick(candidate=arm(nonfinite=1, windows=driver.windows()))
    finished = driver.status.condition("Progressing")
    assert finished is not None
    assert finished.status == "False"
    assert finished.last_transition_time == driver.now
    assert [c.type for c in driver.status.conditions] == [
        "Progressing",
        "Promoted",
        "RolledBack",
        "Reconciling",
        "Stalled",
        "Ready",
    ]


def test_a_hand_edited_analysis_state_starts_afresh_instead_of_crashing() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    driver.tick()
    driver.status = driver.status.model_copy(
        update={"analysis": {"segments": "x", "look": "y", "observedAt": "not a time"}}
    )
    decision = driver.tick()
    assert driver.status.stage is Stage.PROGRESSING
    assert decision.results  # judged on fresh evidence
    assert driver.status.analysis["look"] == 1


def test_evidence_of_health_carries_into_the_next_step() -> None:
    """errorRate passed at 10% stays passed at the first tick of 50%: the whole rollout's
    requests count, not only the new step's."""
    driver = Driver(make_spec())
    driver.tick(missing=True)
    while driver.status.step_index == 0:
        driver.tick()
    assert driver.status.step_index == 1
    decision = driver.tick()
    verdicts = {r.gate: r.verdict.value for r in decision.results}
    assert verdicts["errorRate"] == "Pass"


def test_harm_at_a_step_fails_it_however_clean_the_steps_before() -> None:
    """A million clean requests at 10%, then 1% errors at 50%: over the whole rollout the
    rate is within tolerance, but the step's own segment shows the harm."""
    driver = Driver(make_spec())
    driver.tick(missing=True)
    while driver.status.step_index == 0:
        clean = arm(requests=400_000.0, windows=driver.windows())
        driver.tick(baseline=clean, candidate=clean)
    for _ in range(3):
        if driver.status.stage is Stage.ROLLED_BACK:
            break
        windows = driver.windows()
        driver.tick(
            baseline=arm(requests=10_000.0, windows=windows),
            candidate=arm(requests=10_000.0, failures=100.0, windows=windows),
        )
    assert driver.status.stage is Stage.ROLLED_BACK
    failing = [e for e in driver.status.ledger if e.verdict == "Fail"]
    assert {e.step for e in failing} == {1}


@pytest.mark.parametrize(
    ("failures_per_tick", "moves_on"),
    [
        # One failure in 900 requests: a burn of 1.1, above the tolerated 1, but the
        # failure test's evidence favours the tolerance (an e-value below one).
        ((1.0, 0.0, 0.0), True),
        # Six in 900, a burn of 6.7: not yet significant, but the evidence favours harm.
        ((2.0, 2.0, 2.0), False),
    ],
)
def test_a_step_moves_on_unless_its_evidence_favours_harm(
    failures_per_tick: tuple[float, ...], moves_on: bool
) -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True)
    for failures in failures_per_tick:
        windows = driver.windows()
        driver.tick(candidate=arm(requests=300.0, failures=failures, windows=windows))
    assert driver.status.stage is Stage.PROGRESSING
    assert (driver.status.step_index == 1) is moves_on
    error_rate = next(r for r in driver.decisions[-1].results if r.gate == "errorRate")
    assert error_rate.value is not None
    assert error_rate.value > 1.0  # above the tolerance
    assert error_rate.verdict.value == "Inconclusive"
