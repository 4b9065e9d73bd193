"""The operator's own metrics, served on an HTTP port for Prometheus to scrape."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gelu_rollout.analysis.verdict import GateResult
from gelu_rollout.spec.status import Stage


class OperatorMetrics:
    """Rollouts by stage, candidate weights, gate decisions and reconcile latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rollouts = Gauge(
            "gelu_rollout_rollouts", "GeluModelRollouts by stage", ["stage"], registry=self.registry
        )
        self.candidate_weight = Gauge(
            "gelu_rollout_candidate_weight_percent",
            "Share of traffic the candidate gets",
            ["namespace", "rollout"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "gelu_rollout_gate_decisions",
            "Gate verdicts, by gate and verdict",
            ["gate", "verdict"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "gelu_rollout_reconcile_seconds",
            "Time one reconcile tick takes, observing, deciding and acting",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "gelu_rollout_reconcile_errors",
            "Reconcile ticks that failed and will be retried",
            registry=self.registry,
        )
        self._stages: dict[tuple[str, str], Stage] = {}
        for stage in Stage:
            self.rollouts.labels(stage.value).set(0)

    def record(
        self,
        namespace: str,
        name: str,
        stage: Stage,
        weight: int,
        results: Iterable[GateResult],
        seconds: float,
    ) -> None:
        self._stages[(namespace, name)] = stage
        self._count_stages()
        self.candidate_weight.labels(namespace, name).set(weight)
        for result in results:
            self.decisions.labels(result.gate, result.verdict.value).inc()
        self.reconcile_seconds.observe(seconds)

    def forget(self, namespace: str, name: str) -> None:
        """A rollout was deleted: it no longer counts."""
        self._stages.pop((namespace, name), None)
        self._count_stages()
        with contextlib.suppress(KeyError):
            self.candidate_weight.remove(namespace, name)

    def _count_stages(self) -> None:
        for stage in Stage:
            count = sum(1 for s in self._stages.values() if s is stage)
            self.rollouts.labels(stage.value).set(count)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)
