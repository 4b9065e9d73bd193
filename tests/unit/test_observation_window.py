"""The window each analysis observes reaches back to the last observation: ticks missed while
the operator was down, or late, lose no requests; bounded by the step's start, one interval
below and ten above."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gelu_rollout.rollout.decide import AnalysisState
from gelu_rollout.rollout.window import MAX_WINDOW_INTERVALS, observation_window_seconds
from gelu_rollout.spec.status import RolloutStatus, Stage
from tests.fakes.world import RolloutWorld, fake_triton
from tests.rollout_helpers import INTERVAL, T0, make_spec

SPEC = make_spec()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def progressing(observed: float | None, step_started: float = 0.0) -> RolloutStatus:
    analysis = AnalysisState(observed_at=None if observed is None else at(observed)).to_dict()
    return RolloutStatus(
        stage=Stage.PROGRESSING, step_started_at=at(step_started), analysis=analysis
    )


def test_the_first_observation_is_one_interval() -> None:
    assert observation_window_seconds(SPEC, progressing(None), at(100)) == INTERVAL


def test_a_late_tick_observes_everything_since_the_last_one() -> None:
    assert observation_window_seconds(SPEC, progressing(30), at(30 + 3.5 * INTERVAL)) == (
        3.5 * INTERVAL
    )


def test_a_tick_late_by_less_than_half_an_interval_observes_the_interval() -> None:
    for late in (0.7, INTERVAL * 0.49):
        assert observation_window_seconds(SPEC, progressing(30), at(30 + INTERVAL + late)) == (
            INTERVAL
        )
    assert observation_window_seconds(SPEC, progressing(30), at(30 + 1.5 * INTERVAL + 0.7)) == (
        1.5 * INTERVAL
    )


def test_never_less_than_one_interval_nor_before_the_step_started() -> None:
    assert observation_window_seconds(SPEC, progressing(30), at(30 + INTERVAL / 2)) == INTERVAL
    # The last observation was in the step before: only this step's part counts.
    status = progressing(10, step_started=10 + 2 * INTERVAL)
    assert observation_window_seconds(SPEC, status, at(10 + 5 * INTERVAL)) == 3 * INTERVAL


def test_a_long_outage_is_made_up_for_ten_intervals_at_most() -> None:
    window = observation_window_seconds(SPEC, progressing(0), at(1000 * INTERVAL))
    assert window == MAX_WINDOW_INTERVALS * INTERVAL


def test_the_operator_down_for_three_intervals_observes_them_on_its_first_tick_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld()
    interval = 60.0  # the world's analysis.intervalSeconds
    world.run_until("Progressing", seconds=interval)
    world.tick(seconds=interval)
    world.tick(seconds=interval)
    assert world.observer.calls[-1].interval_seconds == interval
    world.restart()  # down, and back three intervals after its last analysis
    world.tick(seconds=3 * interval)
    assert world.observer.calls[-1].interval_seconds == 3 * interval
    world.tick(seconds=interval)
    assert world.observer.calls[-1].interval_seconds == interval
