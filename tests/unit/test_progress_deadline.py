"""The progress deadline, pure: ``spec.progressDeadlineSeconds``, the ``status.notReadySince``
record (rollout/progress.py) and the rollback ``decide`` makes of it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from gelu_rollout.rollout.conditions import Reason, Resources, summarize
from gelu_rollout.rollout.progress import deadline_exceeded, not_ready_since
from gelu_rollout.rollout.requests import ManualRequest, RequestKind
from gelu_rollout.spec import RolloutSpec, SpecError, parse_spec
from gelu_rollout.spec.status import RolloutStatus, Stage
from tests.rollout_helpers import T0, Driver, candidate_replicas, make_spec, traffic_weight

CRASHING = "candidate pod r-candidate-1: CrashLoopBackOff after 3 restart(s): E1201 no bucket"
FAILING = Resources(False, Reason.PODS_FAILING, CRASHING)
WAITING = Resources(False, Reason.WAITING_FOR_PODS, "waiting for r-candidate")
READY = Resources(True, Reason.RESOURCES_APPLIED, "every owned resource is applied and ready")


def spec_with(deadline: int | None, **analysis: Any) -> RolloutSpec:
    data = make_spec(**analysis).to_dict()
    if deadline is None:
        del data["progressDeadlineSeconds"]
    else:
        data["progressDeadlineSeconds"] = deadline
    return parse_spec(data)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the spec field ---------------------------------------------------------------------------


def test_the_deadline_defaults_to_ten_minutes() -> None:
    assert spec_with(None).progress_deadline_seconds == 600


@pytest.mark.parametrize("seconds", [1, 30, 600, 86_400])
def test_a_deadline_from_a_second_to_a_day_is_accepted(seconds: int) -> None:
    assert spec_with(seconds).progress_deadline_seconds == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be at least 1, got 0"),
        (86_401, "must be at most 86400, got 86401"),
        (60.0, "must be an integer, got 60.0"),
        ("600", "must be an integer, got '600'"),
    ],
)
def test_a_deadline_out_of_range_or_not_an_integer_is_refused(value: object, message: str) -> None:
    data = make_spec().to_dict()
    data["progressDeadlineSeconds"] = value
    with pytest.raises(SpecError) as raised:
        parse_spec(data)
    assert [str(p) for p in raised.value.problems] == [f"spec.progressDeadlineSeconds: {message}"]


# -- the record: since when the pods are not ready -------------------------------------------------


def test_the_first_tick_that_finds_pods_not_ready_starts_the_clock_and_later_ones_keep_it() -> None:
    status = RolloutStatus(stage=Stage.PENDING)
    assert not_ready_since(status, WAITING, at(0)) == at(0)
    started = status.model_copy(update={"not_ready_since": at(0)})
    assert not_ready_since(started, FAILING, at(40)) == at(0)
    assert not_ready_since(started, WAITING, at(80)) == at(0)


def test_ready_pods_or_a_finished_rollout_clear_the_clock() -> None:
    started = RolloutStatus(stage=Stage.PROGRESSING, not_ready_since=at(0))
    assert not_ready_since(started, READY, at(10)) is None
    for stage in (Stage.PROMOTED, Stage.ROLLED_BACK):
        finished = started.model_copy(update={"stage": stage})
        assert not_ready_since(finished, FAILING, at(10)) is None


def test_what_says_nothing_of_the_pods_leaves_the_clock_as_it_was() -> None:
    route_gone = Resources(False, Reason.ROUTE_MISSING, "HTTPRoute prod/gelu not found")
    assert not_ready_since(RolloutStatus(), route_gone, at(5)) is None
    started = RolloutStatus(not_ready_since=at(0))
    assert not_ready_since(started, route_gone, at(5)) == at(0)


def test_the_record_survives_the_status_round_trip() -> None:
    status = RolloutStatus(stage=Stage.PENDING, not_ready_since=at(12.5))
    written = status.to_dict()
    assert written["notReadySince"] == "2026-03-01T12:00:12.500000Z"
    assert RolloutStatus.model_validate(written).not_ready_since == at(12.5)
    assert "notReadySince" not in RolloutStatus().to_dict()


# -- the deadline ---------------------------------------------------------------------------


def pending_not_ready(since: float, resources: Resources = FAILING) -> RolloutStatus:
    """A Pending rollout whose last apply found ``resources``, not ready since ``since``."""
    status = RolloutStatus(stage=Stage.PENDING, started_at=T0, not_ready_since=at(since))
    return summarize(status, at(since), 1, resources=resources)


def test_the_deadline_is_not_exceeded_until_the_pods_were_not_ready_for_longer() -> None:
    spec = spec_with(30)
    status = pending_not_ready(0)
    assert deadline_exceeded(spec, status, at(29)) is None
    assert deadline_exceeded(spec, status, at(30)) is None
    expected = f"not ready for 31s, past spec.progressDeadlineSeconds (30s): {CRASHING}"
    assert deadline_exceeded(spec, status, at(31)) == expected
    # Rounded up: the time it says is always past the deadline.
    assert deadline_exceeded(spec, status, at(30.2)) == expected


def test_the_deadline_names_the_deployments_still_waiting() -> None:
    message = deadline_exceeded(spec_with(30), pending_not_ready(0, WAITING), at(45))
    assert message == (
        "not ready for 45s, past spec.progressDeadlineSeconds (30s): waiting for r-candidate"
    )


def test_no_deadline_while_ready_or_once_finished() -> None:
    spec = spec_with(30)
    assert deadline_exceeded(spec, RolloutStatus(stage=Stage.PENDING), at(3600)) is None
    finished = pending_not_ready(0).model_copy(update={"stage": Stage.ROLLED_BACK})
    assert deadline_exceeded(spec, finished, at(3600)) is None


# -- decide --------------------------------------------------------------------------------------


def applied(driver: Driver, resources: Resources) -> None:
    """What the controller does after its apply: record the pods' readiness in the status."""
    status = driver.status.model_copy(
        update={"not_ready_since": not_ready_since(driver.status, resources, driver.now)}
    )
    driver.status = summarize(status, driver.now, None, resources=resources)


def probing(deadline: int) -> Driver:
    return Driver(spec_with(deadline, probe={"enabled": True}))


def test_a_never_ready_candidate_is_rolled_back_after_the_deadline_and_not_before() -> None:
    driver = probing(150)  # ticks are a minute apart: the rollback comes at the third
    driver.tick(missing=True)
    applied(driver, WAITING)
    assert driver.status.not_ready_since == T0
    for _ in range(2):
        decision = driver.tick(missing=True)
        assert driver.status.stage is Stage.PENDING
        assert decision.events == ()
        applied(driver, FAILING)
    decision = driver.tick(missing=True)
    assert driver.status.stage is Stage.ROLLED_BACK
    assert (traffic_weight(decision), candidate_replicas(driver.spec, decision)) == (0, 0)
    rolled = driver.status.condition("RolledBack")
    assert rolled is not None
    assert (rolled.status, rolled.reason) == ("True", "ProgressDeadlineExceeded")
    expected = f"not ready for 180s, past spec.progressDeadlineSeconds (150s): {CRASHING}"
    assert rolled.message == expected
    assert [(e.type, e.reason, e.message) for e in decision.events] == [
        ("Warning", "ProgressDeadlineExceeded", expected)
    ]
    assert driver.status.finished_at == driver.now
    # Finished: the clock is cleared, and nothing more is decided.
    applied(driver, READY)
    assert driver.status.not_ready_since is None
    assert driver.tick().events == ()
    assert driver.status.stage is Stage.ROLLED_BACK


def test_a_candidate_that_stops_being_ready_mid_step_is_measured_from_then() -> None:
    driver = Driver(spec_with(90))
    driver.tick()
    applied(driver, READY)
    assert driver.status.stage is Stage.PROGRESSING
    assert driver.status.candidate_weight == 10
    driver.tick()
    applied(driver, READY)
    stopped = driver.now + timedelta(seconds=60)
    driver.tick()
    applied(driver, FAILING)
    assert driver.status.not_ready_since == stopped
    driver.tick()  # 60 s after it stopped: within the deadline
    assert driver.status.stage is Stage.PROGRESSING
    applied(driver, FAILING)
    decision = driver.tick()  # 120 s
    assert driver.status.stage is Stage.ROLLED_BACK
    assert traffic_weight(decision) == 0
    assert driver.status.message.startswith("not ready for 120s")


def test_ready_again_in_time_the_clock_starts_over() -> None:
    driver = probing(150)
    driver.tick(missing=True)
    applied(driver, FAILING)
    driver.tick(missing=True)
    applied(driver, READY)
    assert driver.status.not_ready_since is None
    driver.tick(missing=True)
    applied(driver, FAILING)
    assert driver.status.not_ready_since == driver.now
    driver.tick(missing=True)
    driver.tick(missing=True)
    assert driver.status.stage is Stage.PENDING  # 120 s since it stopped again, not 240 s


def test_an_abort_in_the_same_tick_is_the_reason() -> None:
    driver = probing(30)
    driver.tick(missing=True)
    applied(driver, FAILING)
    driver.tick(missing=True, request=ManualRequest(RequestKind.ABORT, "a1"))
    rolled = driver.status.condition("RolledBack")
    assert rolled is not None
    assert rolled.reason == "Aborted"


def test_a_promote_in_the_same_tick_is_ignored_and_said_so() -> None:
    driver = probing(30)
    driver.tick(missing=True)
    applied(driver, FAILING)
    decision = driver.tick(missing=True, request=ManualRequest(RequestKind.PROMOTE, "p1"))
    assert driver.status.stage is Stage.ROLLED_BACK
    assert driver.status.handled_request == "p1"
    assert [e.reason for e in decision.events] == ["ProgressDeadlineExceeded", "RequestIgnored"]


def test_a_new_spec_gets_the_whole_deadline_afresh() -> None:
    driver = probing(90)
    driver.tick(missing=True, generation=1)
    applied(driver, FAILING)
    driver.tick(missing=True, generation=1)
    applied(driver, FAILING)
    # The spec edited 120 s in, past the deadline: the analysis restarts, and so does the clock.
    decision = driver.tick(missing=True, generation=2)
    assert driver.status.stage is Stage.PENDING
    assert driver.status.not_ready_since is None
    assert [e.reason for e in decision.events] == ["SpecChanged"]
    applied(driver, FAILING)
    assert driver.status.not_ready_since == driver.now


def test_a_retry_after_the_rollback_starts_again_with_the_whole_deadline() -> None:
    driver = probing(30)
    driver.tick(missing=True)
    applied(driver, FAILING)
    driver.tick(missing=True)
    assert driver.status.stage is Stage.ROLLED_BACK
    applied(driver, READY)
    driver.tick(missing=True, request=ManualRequest(RequestKind.RETRY, "r1"))
    assert driver.status.stage is Stage.PENDING
    assert driver.status.not_ready_since is None
