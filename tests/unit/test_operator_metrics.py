"""The operator's own metrics, read back from their registry."""

from __future__ import annotations

from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.metrics import OperatorMetrics
from gelu_rollout.spec.status import Stage


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def weight(metrics: OperatorMetrics, rollout: str) -> float | None:
    return value(metrics, "gelu_rollout_candidate_weight_percent", namespace="ns", rollout=rollout)


def result(gate: str, verdict: Verdict) -> GateResult:
    return GateResult(gate, verdict, 1.0, 2.0, 10, 60, "m")


def test_stages_weights_decisions_and_latency_are_counted() -> None:
    metrics = OperatorMetrics()
    metrics.record("ns", "a", Stage.PROGRESSING, 25, [result("errorRate", Verdict.PASS)], 0.2)
    metrics.record("ns", "b", Stage.PROGRESSING, 10, [result("errorRate", Verdict.FAIL)], 0.1)
    metrics.record("ns", "b", Stage.ROLLED_BACK, 0, [], 0.1)
    assert value(metrics, "gelu_rollout_rollouts", stage="Progressing") == 1
    assert value(metrics, "gelu_rollout_rollouts", stage="RolledBack") == 1
    assert value(metrics, "gelu_rollout_rollouts", stage="Promoted") == 0
    assert weight(metrics, "a") == 25
    assert (
        value(metrics, "gelu_rollout_gate_decisions_total", gate="errorRate", verdict="Fail") == 1
    )
    assert value(metrics, "gelu_rollout_reconcile_seconds_count") == 3


def test_a_deleted_rollout_no_longer_counts() -> None:
    metrics = OperatorMetrics()
    metrics.record("ns", "a", Stage.PROGRESSING, 25, [], 0.1)
    metrics.forget("ns", "a")
    metrics.forget("ns", "never-seen")
    assert value(metrics, "gelu_rollout_rollouts", stage="Progressing") == 0
    assert weight(metrics, "a") is None
