"""Observations of a rollout from Prometheus: queries, parsing, the observer and its fake."""

from gelu_rollout.adapters.prometheus.fake import FakeObserver, ObserverCall
from gelu_rollout.adapters.prometheus.observer import Observer, PrometheusObserver
from gelu_rollout.adapters.prometheus.parse import to_observations
from gelu_rollout.adapters.prometheus.queries import QueryPlan, build_plan, escape_label_value

__all__ = [
    "FakeObserver",
    "Observer",
    "ObserverCall",
    "PrometheusObserver",
    "QueryPlan",
    "build_plan",
    "escape_label_value",
    "to_observations",
]
