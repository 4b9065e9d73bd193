"""Properties of ``decide`` over random tick sequences."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gelu_rollout.analysis.verdict import Verdict
from gelu_rollout.resources.desired import candidate_traffic_weight
from gelu_rollout.rollout.requests import ManualRequest, RequestKind
from gelu_rollout.spec.status import Stage
from tests.rollout_helpers import BUCKETS, Driver, arm, make_spec

counts = st.floats(min_value=0, max_value=20_000, allow_nan=False)


@st.composite
def tick_inputs(draw: st.DrawFn) -> dict[str, object]:
    """One tick: metrics (or none), maybe a manual request."""
    missing = draw(st.booleans().map(lambda b: b and draw(st.integers(0, 4)) == 0))
    request = None
    if draw(st.integers(0, 9)) == 0:
        request = ManualRequest(
            draw(st.sampled_from(list(RequestKind))), draw(st.sampled_from(["a", "b", "c"]))
        )

    def one_arm() -> dict[str, object]:
        requests = draw(counts)
        return {
            "requests": requests,
            "failures": draw(st.floats(0, 1)) * requests,
            "nonfinite": draw(st.sampled_from([0.0, 0.0, 0.0, 1.0, 5.0])),
            "p99_ms": draw(st.one_of(st.none(), st.floats(1, 2_000))),
            "histogram": [draw(st.floats(0, 5)) * b * 100 for b in BUCKETS],
        }

    return {"missing": missing, "request": request, "baseline": one_arm(), "candidate": one_arm()}


def run(ticks: list[dict[str, object]]) -> Driver:
    driver = Driver(make_spec(insufficientData={"maxExtensionSeconds": 120}))
    driver.tick(missing=True)
    for tick in ticks:
        windows = driver.windows()
        driver.tick(
            baseline=arm(windows=windows, **tick["baseline"]),  # type: ignore[arg-type]
            candidate=arm(windows=windows, **tick["candidate"]),  # type: ignore[arg-type]
            missing=bool(tick["missing"]),
            request=tick["request"],  # type: ignore[arg-type]
        )
    return driver


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(tick_inputs(), max_size=15))
def test_decide_never_promotes_on_a_failing_tick_without_a_request(
    ticks: list[dict[str, object]],
) -> None:
    driver = run(ticks)
    previous = Stage.PENDING
    for decision in driver.decisions:
        failed = any(r.verdict is Verdict.FAIL for r in decision.results)
        stage = decision.status.stage
        promoted = stage is Stage.PROMOTED and previous is not Stage.PROMOTED
        previous = stage
        if failed:
            critical = any(r.failed and r.critical for r in decision.results)
            assert not (promoted and critical), "promoted over a critical failure"
            manual = decision.status.condition("Promoted")
            if promoted:
                assert manual is not None
                assert manual.reason == "ManualPromotion"
            else:
                assert stage is Stage.ROLLED_BACK


@SETTINGS
@given(st.lists(tick_inputs(), max_size=15))
def test_no_gate_passes_without_data(ticks: list[dict[str, object]]) -> None:
    driver = run(ticks)
    for decision in driver.decisions:
        for result in decision.results:
            if result.verdict is Verdict.PASS:
                assert result.samples > 0, f"{result.gate} passed on no samples"


@SETTINGS
@given(st.lists(tick_inputs(), max_size=15))
def test_weights_come_from_the_spec_and_finished_rollouts_stay_finished(
    ticks: list[dict[str, object]],
) -> None:
    driver = run(ticks)
    allowed = {0, 10, 50}
    finished_at: int | None = None
    for index, decision in enumerate(driver.decisions):
        assert candidate_traffic_weight(decision.status) in allowed
        stage = decision.status.stage
        assert 0 <= decision.status.candidate_weight <= 100
        if finished_at is not None and not stage.terminal:
            # Only a retry of a rolled-back rollout starts it again.
            assert any(a.reason == "Retried" for a in decision.events), (
                "left a finished stage without a retry"
            )
        finished_at = index if stage.terminal else None
        if stage is Stage.PROMOTED:
            assert decision.status.candidate_weight == 100


@SETTINGS
@given(st.lists(tick_inputs(), max_size=10))
def test_decide_is_deterministic(ticks: list[dict[str, object]]) -> None:
    first, second = run(ticks), run(ticks)
    assert [d.status for d in first.decisions] == [d.status for d in second.decisions]
    assert [d.events for d in first.decisions] == [d.events for d in second.decisions]
