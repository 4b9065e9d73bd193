"""Observations of a rollout from Prometheus: queries, parsing, the observer and its fake."""

from gelu_rollout.adapters.prometheus.fake import FakeObserver, ObserverCall
from gelu_rollout.adapters.prometheus.observer import Observer, PrometheusObserver
from gelu_rollout.adapters.prometheus.parse import latency_histogram, to_observations
from gelu_rollout.adapters.prometheus.queries import (
    LatencySource,
    QueryPlan,
    build_plan,
    escape_label_value,
    latency_sources,
)

__all__ = [
    "FakeObserver",
    "LatencySource",
    "Observer",
    "ObserverCall",
    "PrometheusObserver",
    "QueryPlan",
    "build_plan",
    "escape_label_value",
    "latency_histogram",
    "latency_sources",
    "to_observations",
]
