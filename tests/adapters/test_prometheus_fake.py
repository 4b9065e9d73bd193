"""The scripted observer other layers test with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gelu_rollout.adapters.prometheus import FakeObserver, Observer, ObserverCall
from gelu_rollout.adapters.prometheus.fake import EXHAUSTED, observed, unavailable
from gelu_rollout.analysis.observations import ArmObservation
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.spec.model import LatencyHistogramSource

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ARM = ArmObservation(1000, 2, 0, (10, 20, 10), 8.0)


def test_plays_the_script_back_with_the_calls_time() -> None:
    fake = FakeObserver([observed(ARM, ARM), unavailable("prometheus down")])
    observer: Observer = fake
    first = observer.observe("ns", "r", "m", 60, [60, 720], T0)
    second = observer.observe("ns", "r", "m", 60, [60, 720], T0 + timedelta(seconds=60))
    third = observer.observe("ns", "r", "m", 30, [], T0 + timedelta(seconds=120))
    assert first == Observations(T0, 60, ARM, ARM)
    assert second.at == T0 + timedelta(seconds=60)
    assert (second.baseline, second.missing_reason) == (None, "prometheus down")
    assert third == Observations(T0 + timedelta(seconds=120), 30, None, None, EXHAUSTED)
    assert fake.calls[0] == ObserverCall("ns", "r", "m", 60, (60, 720), T0)
    assert len(fake.calls) == 3


def test_script_items_may_be_functions_of_the_call() -> None:
    fake = FakeObserver()
    fake.push(lambda call: Observations(call.at, call.interval_seconds, ARM, ARM, call.rollout))
    assert fake.remaining == 1
    obs = fake.observe("ns", "canary", "m", 60, [], T0)
    assert obs.missing_reason == "canary"
    assert fake.remaining == 0


def test_records_the_latency_histogram_source_and_the_rollouts_name() -> None:
    source = LatencyHistogramSource.model_validate(
        {"metric": "gateway_request_duration_seconds_bucket", "armLabel": "service"}
    )
    fake = FakeObserver([observed(ARM, ARM)])
    observer: Observer = fake
    observer.observe(
        "ns", "r", "m", 60, [], T0, latency_histogram=source, rollout_name="r.with.dots"
    )
    (call,) = fake.calls
    assert call == ObserverCall("ns", "r", "m", 60, (), T0, source, "r.with.dots")
    assert (call.latency_histogram, call.rollout_name) == (source, "r.with.dots")
