"""The probe phase of the state machine: no traffic moves before the probe passes."""

from __future__ import annotations

from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.rollout.requests import ManualRequest, RequestKind
from gelu_rollout.spec.status import Stage
from tests.rollout_helpers import Driver, candidate_replicas, make_spec, traffic_weight


def probe(verdict: Verdict, value: float = 0.001) -> GateResult:
    return GateResult(
        "probe",
        verdict,
        value,
        0.05,
        280,
        0.0,
        f"probe said {verdict.value}",
        critical=verdict is Verdict.FAIL,
    )


def reasons(driver: Driver) -> list[str]:
    return [e.reason for d in driver.decisions for e in d.events]


def probing_driver() -> Driver:
    return Driver(make_spec(probe={"enabled": True}))


def test_first_tick_runs_the_candidate_without_traffic() -> None:
    driver = probing_driver()
    decision = driver.tick(missing=True)
    assert driver.status.stage is Stage.PENDING
    assert driver.status.candidate_weight == 0
    assert candidate_replicas(driver.spec, decision) > 0  # the candidate's pods run
    assert traffic_weight(decision) == 0
    assert driver.status.started_at is not None
    assert reasons(driver) == ["RolloutStarted"]


def test_no_probe_result_keeps_waiting_without_traffic() -> None:
    driver = probing_driver()
    driver.tick(missing=True)
    for _ in range(3):
        decision = driver.tick()
        assert traffic_weight(decision) == 0
    assert driver.status.stage is Stage.PENDING
    assert driver.status.ledger == []


def test_failed_probe_rolls_back_before_any_traffic() -> None:
    driver = probing_driver()
    driver.tick(missing=True)
    decision = driver.tick(probe=probe(Verdict.FAIL, 4432.0))
    assert driver.status.stage is Stage.ROLLED_BACK
    assert (traffic_weight(decision), candidate_replicas(driver.spec, decision)) == (0, 0)
    rolled = driver.status.condition("RolledBack")
    assert rolled is not None
    assert (rolled.status, rolled.reason) == ("True", "ProbeFailed")
    [entry] = driver.status.ledger
    assert (entry.gate, entry.verdict, entry.weight, entry.value) == ("probe", "Fail", 0, 4432.0)
    assert reasons(driver)[-1] == "ProbeFailed"


def test_passed_probe_starts_the_first_step_and_is_recorded() -> None:
    driver = probing_driver()
    driver.tick(missing=True)
    decision = driver.tick(probe=probe(Verdict.PASS))
    assert driver.status.stage is Stage.PROGRESSING
    assert traffic_weight(decision) == 10
    assert [(e.gate, e.verdict) for e in driver.status.ledger] == [("probe", "Pass")]


def test_inconclusive_probe_waits_then_reports_stalled_once() -> None:
    driver = Driver(
        make_spec(probe={"enabled": True}, insufficientData={"maxExtensionSeconds": 60})
    )
    driver.tick(missing=True)
    for _ in range(6):
        driver.tick(probe=probe(Verdict.INCONCLUSIVE))
    assert driver.status.stage is Stage.PENDING
    stalled = driver.status.condition("Stalled")
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "ProbeInconclusive")
    assert reasons(driver).count("ProbeInconclusive") == 1
    # Only the first inconclusive verdict is a ledger entry: later ones did not change.
    assert [e.verdict for e in driver.status.ledger] == ["Inconclusive"]
    driver.tick(probe=probe(Verdict.PASS))
    assert driver.status.stage is Stage.PROGRESSING


def test_abort_while_probing_rolls_back() -> None:
    driver = probing_driver()
    driver.tick(missing=True)
    driver.tick(request=ManualRequest(RequestKind.ABORT, "a1"))
    assert driver.status.stage is Stage.ROLLED_BACK


def test_retry_and_spec_change_probe_again() -> None:
    driver = probing_driver()
    driver.tick(missing=True, generation=1)
    driver.tick(probe=probe(Verdict.FAIL))
    driver.tick(request=ManualRequest(RequestKind.RETRY, "r1"))
    assert driver.status.stage is Stage.PENDING
    assert driver.status.candidate_weight == 0
    driver.tick(probe=probe(Verdict.PASS))
    assert driver.status.stage is Stage.PROGRESSING
    driver.tick(generation=2)
    assert driver.status.stage is Stage.PENDING
