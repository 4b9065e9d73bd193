"""The operator's own metrics, read back from their registry: statuses from real ``decide``
ticks go in, series come out."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.metrics import OperatorMetrics, RolloutSample
from gelu_rollout.rollout.conditions import ConditionType
from gelu_rollout.rollout.requests import ManualRequest, RequestKind
from gelu_rollout.spec.status import Condition, RolloutStatus, Stage
from tests.rollout_helpers import T0, Driver, arm, make_spec

# The kstatus tests' cluster: a real Controller over a fake API server and Prometheus.
from tests.unit.test_conditions_kstatus import Cluster

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gelu-mlp"  # make_spec's model
ROLLOUT = {"namespace": "prod", "rollout": "r1", "model": MODEL}


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def rollout_value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return value(metrics, name, **ROLLOUT, **labels)


def series_of(metrics: OperatorMetrics, rollout: str) -> list[tuple[str, dict[str, str]]]:
    """Every exposed sample that names ``rollout``: its name and labels."""
    return [
        (sample.name, sample.labels)
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
        if sample.labels.get("rollout") == rollout
    ]


def stages(metrics: OperatorMetrics) -> dict[str, float | None]:
    return {s.value: rollout_value(metrics, "gelu_rollout_stage", stage=s.value) for s in Stage}


def gate_verdicts(metrics: OperatorMetrics, gate: str) -> dict[str, float | None]:
    return {
        v.value: rollout_value(metrics, "gelu_rollout_gate_verdict", gate=gate, verdict=v.value)
        for v in Verdict
    }


class Recorder:
    """Ticks a Driver and records each tick as the controller does: the status the tick read,
    the one it wrote, and the verdicts it reached."""

    def __init__(self, driver: Driver, metrics: OperatorMetrics | None = None) -> None:
        self.driver = driver
        self.metrics = metrics or OperatorMetrics()

    def tick(self, **kwargs: Any) -> RolloutStatus:
        before = self.driver.status
        decision = self.driver.tick(generation=1, **kwargs)
        self.metrics.record(self.sample(before, decision.results), seconds=0.25)
        return self.driver.status

    def sample(self, before: RolloutStatus, results: tuple[GateResult, ...]) -> RolloutSample:
        return RolloutSample.of(
            "prod", "r1", MODEL, before=before, after=self.driver.status, results=results
        )


def probe(verdict: Verdict) -> GateResult:
    return GateResult("probe", verdict, 0.001, 0.05, 280, 0.0, f"probe said {verdict.value}")


def test_a_rollout_from_pending_through_its_steps_to_promoted() -> None:
    rec = Recorder(Driver(make_spec(probe={"enabled": True})))
    rec.tick(missing=True)
    m = rec.metrics
    assert stages(m) == {
        "Pending": 1,
        "Progressing": 0,
        "Paused": 0,
        "Promoted": 0,
        "RolledBack": 0,
    }
    assert rollout_value(m, "gelu_rollout_started_total") == 1
    # Every outcome's series is there at 0 before the first one, so increase() sees it.
    assert rollout_value(m, "gelu_rollout_promoted_total", reason="AllStepsPassed") == 0
    assert rollout_value(m, "gelu_rollout_promoted_total", reason="ManualPromotion") == 0
    for reason in ("ProbeFailed", "FastBurn", "NonFiniteOutputs", "LatencyRegression", "Aborted"):
        assert rollout_value(m, "gelu_rollout_rolled_back_total", reason=reason) == 0
    for kind in ("transient", "permanent"):
        labels = {"namespace": "prod", "rollout": "r1", "kind": kind}
        assert value(m, "gelu_rollout_reconcile_errors_total", **labels) == 0
    assert rollout_value(m, "gelu_rollout_candidate_weight_ratio") == 0
    assert rollout_value(m, "gelu_rollout_step") == 0

    rec.tick(probe=probe(Verdict.PASS))
    assert stages(m)["Progressing"] == 1
    assert stages(m)["Pending"] == 0
    assert rollout_value(m, "gelu_rollout_started_total") == 1, "the probe's pass is no new start"
    assert gate_verdicts(m, "probe") == {"Pass": 1, "Fail": 0, "Inconclusive": 0}
    assert rollout_value(m, "gelu_rollout_gate_value", gate="probe") == 0.001
    assert rollout_value(m, "gelu_rollout_gate_threshold", gate="probe") == 0.05
    assert rollout_value(m, "gelu_rollout_candidate_weight_ratio") == pytest.approx(0.1)

    decided: dict[tuple[str, str], int] = {("probe", "Pass"): 1}
    while rec.driver.status.stage is Stage.PROGRESSING:
        status = rec.tick()
        for result in rec.driver.decisions[-1].results:
            key = (result.gate, result.verdict.value)
            decided[key] = decided.get(key, 0) + 1
        if status.stage is Stage.PROGRESSING:
            assert rollout_value(m, "gelu_rollout_step") == status.step_index
            assert rollout_value(m, "gelu_rollout_candidate_weight_ratio") == pytest.approx(
                status.candidate_weight / 100
            )
            latest = rec.driver.decisions[-1].results[0]
            assert gate_verdicts(m, latest.gate)[latest.verdict.value] == 1
    status = rec.driver.status
    assert status.stage is Stage.PROMOTED
    assert stages(m) == {
        "Pending": 0,
        "Progressing": 0,
        "Paused": 0,
        "Promoted": 1,
        "RolledBack": 0,
    }
    assert rollout_value(m, "gelu_rollout_promoted_total", reason="AllStepsPassed") == 1
    assert rollout_value(m, "gelu_rollout_promoted_total", reason="ManualPromotion") == 0
    assert rollout_value(m, "gelu_rollout_rolled_back_total", reason="Aborted") == 0
    # The rollout's gates, weight and step go at its outcome; its counters stay.
    names = {name for name, _ in series_of(m, "r1")}
    assert not names & {
        "gelu_rollout_gate_verdict",
        "gelu_rollout_gate_value",
        "gelu_rollout_gate_threshold",
        "gelu_rollout_candidate_weight_ratio",
        "gelu_rollout_step",
        "gelu_rollout_stalled",
    }
    for (gate, verdict), count in decided.items():
        got = rollout_value(m, "gelu_rollout_gate_decisions_total", gate=gate, verdict=verdict)
        assert got == count, (gate, verdict)
    assert status.started_at is not None
    assert status.finished_at is not None
    took = (status.finished_at - status.started_at).total_seconds()
    outcome = {"namespace": "prod", "model": MODEL, "outcome": "Promoted"}
    assert value(m, "gelu_rollout_outcome_duration_seconds_count", **outcome) == 1
    assert value(m, "gelu_rollout_outcome_duration_seconds_sum", **outcome) == took
    ticks = len(rec.driver.decisions)
    assert value(m, "gelu_rollout_reconcile_duration_seconds_count") == ticks
    assert value(m, "gelu_rollout_reconcile_duration_seconds_sum") == 0.25 * ticks
    # Ticks after the outcome change nothing.
    rec.tick()
    assert rollout_value(m, "gelu_rollout_promoted_total", reason="AllStepsPassed") == 1
    assert value(m, "gelu_rollout_outcome_duration_seconds_count", **outcome) == 1


def test_a_failing_gate_rolls_back_and_a_retry_is_a_new_start() -> None:
    rec = Recorder(Driver(make_spec()))
    m = rec.metrics
    rec.tick(missing=True)
    assert stages(m)["Progressing"] == 1
    status = rec.tick(candidate=arm(nonfinite=1, windows=rec.driver.windows()))
    assert status.stage is Stage.ROLLED_BACK
    assert stages(m)["RolledBack"] == 1
    assert stages(m)["Progressing"] == 0
    assert rollout_value(m, "gelu_rollout_rolled_back_total", reason="NonFiniteOutputs") == 1
    assert rollout_value(m, "gelu_rollout_rolled_back_total", reason="FastBurn") == 0
    assert rollout_value(m, "gelu_rollout_promoted_total", reason="AllStepsPassed") == 0
    # The failing verdict is counted though its gauge went with the outcome.
    assert (
        rollout_value(m, "gelu_rollout_gate_decisions_total", gate="nonFinite", verdict="Fail") == 1
    )
    assert gate_verdicts(m, "nonFinite") == {"Pass": None, "Fail": None, "Inconclusive": None}
    assert rollout_value(m, "gelu_rollout_candidate_weight_ratio") is None
    # kstatus reads a rolled-back rollout as Stalled; the gauge is for unfinished ones only.
    assert status.condition(ConditionType.STALLED.value).status == "True"  # type: ignore[union-attr]
    assert not [n for n, _ in series_of(m, "r1") if n == "gelu_rollout_stalled"]
    outcome = {"namespace": "prod", "model": MODEL, "outcome": "RolledBack"}
    assert value(m, "gelu_rollout_outcome_duration_seconds_count", **outcome) == 1

    rec.tick(request=ManualRequest(RequestKind.RETRY, "again"))
    assert stages(m)["Progressing"] == 1
    assert stages(m)["RolledBack"] == 0
    assert rollout_value(m, "gelu_rollout_started_total") == 2
    assert rollout_value(m, "gelu_rollout_candidate_weight_ratio") == pytest.approx(0.1)
    rec.tick(request=ManualRequest(RequestKind.ABORT, "stop"))
    assert rollout_value(m, "gelu_rollout_rolled_back_total", reason="Aborted") == 1
    assert rollout_value(m, "gelu_rollout_rolled_back_total", reason="NonFiniteOutputs") == 1


def test_a_rollout_found_finished_after_a_restart_is_not_counted() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    driver.tick(request=ManualRequest(RequestKind.PROMOTE, "p1"), generation=1)
    promoted = driver.status
    assert promoted.stage is Stage.PROMOTED
    metrics = OperatorMetrics()  # a fresh process
    for _ in range(2):
        sample = RolloutSample.of("prod", "r1", MODEL, before=promoted, after=promoted)
        metrics.record(sample, seconds=0.1)
    assert stages(metrics)["Promoted"] == 1
    assert rollout_value(metrics, "gelu_rollout_promoted_total", reason="ManualPromotion") is None
    assert rollout_value(metrics, "gelu_rollout_started_total") is None
    assert value(metrics, "gelu_rollout_outcome_duration_seconds_count", **_outcome()) is None


def _outcome() -> dict[str, str]:
    return {"namespace": "prod", "model": MODEL, "outcome": "Promoted"}


def test_a_rollout_found_mid_run_after_a_restart_counts_its_outcome_not_its_start() -> None:
    rec = Recorder(Driver(make_spec()), OperatorMetrics())
    rec.driver.tick(missing=True, generation=1)  # before the restart: not recorded
    rec.tick()
    assert rollout_value(rec.metrics, "gelu_rollout_started_total") == 0
    rec.tick(request=ManualRequest(RequestKind.PROMOTE, "p1"))
    assert rollout_value(rec.metrics, "gelu_rollout_promoted_total", reason="ManualPromotion") == 1


def test_a_tick_decided_again_after_a_lost_status_write_counts_once() -> None:
    driver = Driver(make_spec())
    driver.tick(missing=True, generation=1)
    progressing = driver.status
    driver.tick(request=ManualRequest(RequestKind.ABORT, "a1"), generation=1)
    aborted = driver.status
    metrics = OperatorMetrics()
    fresh = RolloutStatus()
    for _ in range(2):  # the write of the start was lost: the next tick starts it again
        metrics.record(RolloutSample.of("prod", "r1", MODEL, before=fresh, after=progressing))
    assert rollout_value(metrics, "gelu_rollout_started_total") == 1
    for _ in range(2):
        metrics.record(RolloutSample.of("prod", "r1", MODEL, before=progressing, after=aborted))
    assert rollout_value(metrics, "gelu_rollout_rolled_back_total", reason="Aborted") == 1


def test_stalled_is_set_while_paused_and_goes_when_the_rollout_resumes() -> None:
    rec = Recorder(Driver(make_spec(insufficientData={"maxExtensionSeconds": 120})))
    m = rec.metrics
    rec.tick(missing=True)
    while rec.driver.status.stage is not Stage.PAUSED:
        rec.tick(missing=True)
    assert stages(m)["Paused"] == 1
    assert rollout_value(m, "gelu_rollout_stalled", reason="InsufficientData") == 1
    stalled = [n for n, _ in series_of(m, "r1") if n == "gelu_rollout_stalled"]
    assert len(stalled) == 1
    rec.tick(request=ManualRequest(RequestKind.RETRY, "r1"))
    assert stages(m)["Progressing"] == 1
    assert rollout_value(m, "gelu_rollout_stalled", reason="InsufficientData") is None
    # Resuming a paused step is not a new start.
    assert rollout_value(m, "gelu_rollout_started_total") == 1


def test_a_stalled_reason_that_changes_leaves_one_series() -> None:
    metrics = OperatorMetrics()
    base = RolloutStatus(stage=Stage.PROGRESSING, started_at=T0, candidate_weight=10)
    for reason in ("InsufficientData", "PodsFailing"):
        stalled = Condition(type="Stalled", status="True", reason=reason, last_transition_time=T0)
        after = base.model_copy(update={"conditions": [stalled]})
        metrics.record(RolloutSample.of("prod", "r1", MODEL, before=base, after=after))
    assert rollout_value(metrics, "gelu_rollout_stalled", reason="PodsFailing") == 1
    assert rollout_value(metrics, "gelu_rollout_stalled", reason="InsufficientData") is None


def test_a_gate_without_a_value_has_no_value_series() -> None:
    metrics = OperatorMetrics()
    status = RolloutStatus(stage=Stage.PROGRESSING, started_at=T0, candidate_weight=10)
    with_value = GateResult("latencyRegression", Verdict.PASS, 1.02, 1.2, 900, 60, "ok")
    without = GateResult("latencyRegression", Verdict.INCONCLUSIVE, None, 1.2, 0, 0, "no data")
    for result in (with_value, without):
        sample = RolloutSample.of(
            "prod", "r1", MODEL, before=status, after=status, results=(result,)
        )
        metrics.record(sample)
    gate = "latencyRegression"
    assert rollout_value(metrics, "gelu_rollout_gate_value", gate=gate) is None
    assert rollout_value(metrics, "gelu_rollout_gate_threshold", gate=gate) == 1.2
    assert gate_verdicts(metrics, gate) == {"Pass": 0, "Fail": 0, "Inconclusive": 1}


def test_a_restarted_run_drops_the_verdicts_of_the_one_before() -> None:
    metrics = OperatorMetrics()
    running = RolloutStatus(stage=Stage.PROGRESSING, started_at=T0, candidate_weight=10)
    result = GateResult("errorRate", Verdict.PASS, 0.001, 0.01, 900, 60, "ok")
    sample = RolloutSample.of("prod", "r1", MODEL, before=running, after=running, results=(result,))
    metrics.record(sample)
    assert gate_verdicts(metrics, "errorRate")["Pass"] == 1
    restarted = running.model_copy(
        update={"stage": Stage.PENDING, "started_at": T0 + timedelta(minutes=5)}
    )
    metrics.record(RolloutSample.of("prod", "r1", MODEL, before=running, after=restarted))
    assert gate_verdicts(metrics, "errorRate")["Pass"] is None
    assert (
        rollout_value(
            metrics, "gelu_rollout_gate_decisions_total", gate="errorRate", verdict="Pass"
        )
        == 1
    )
    assert rollout_value(metrics, "gelu_rollout_started_total") == 0, "a restart is not a start"


def test_forget_removes_every_series_of_the_rollout_and_no_other() -> None:
    rec = Recorder(Driver(make_spec()))
    m = rec.metrics
    rec.tick(missing=True)
    rec.tick()
    other = RolloutStatus(stage=Stage.PROGRESSING, started_at=T0, candidate_weight=50)
    m.record(RolloutSample.of("prod", "r2", MODEL, before=RolloutStatus(), after=other))
    m.reconcile_failed("prod", "r1", "transient")
    m.reconcile_failed("prod", "gone-before-its-first-tick", "permanent")
    assert len(series_of(m, "r1")) > 30
    before = series_of(m, "r2")
    m.forget("prod", "r1")
    m.forget("prod", "gone-before-its-first-tick")
    m.forget("prod", "never-seen")
    assert series_of(m, "r1") == []
    assert series_of(m, "gone-before-its-first-tick") == []
    assert series_of(m, "r2") == before
    # Operator-wide series stay.
    assert value(m, "gelu_rollout_reconcile_duration_seconds_count") == 2
    # The same name created again starts from nothing.
    m.record(RolloutSample.of("prod", "r1", MODEL, before=RolloutStatus(), after=other))
    assert rollout_value(m, "gelu_rollout_started_total") == 1


def test_a_new_model_replaces_the_series_of_the_old_one() -> None:
    metrics = OperatorMetrics()
    status = RolloutStatus(stage=Stage.PROGRESSING, started_at=T0, candidate_weight=10)
    metrics.record(RolloutSample.of("prod", "r1", "old-model", before=status, after=status))
    metrics.record(RolloutSample.of("prod", "r1", MODEL, before=status, after=status))
    models = {labels.get("model") for _, labels in series_of(metrics, "r1")}
    assert models == {MODEL, None}  # None: the reconcile errors, which name no model


def test_reconcile_failures_by_rollout_and_kind() -> None:
    metrics = OperatorMetrics()
    metrics.reconcile_failed("prod", "r1", "transient")
    metrics.reconcile_failed("prod", "r1", "transient")
    metrics.reconcile_failed("prod", "r1", "permanent")
    labels = {"namespace": "prod", "rollout": "r1"}
    assert value(metrics, "gelu_rollout_reconcile_errors_total", **labels, kind="transient") == 2
    assert value(metrics, "gelu_rollout_reconcile_errors_total", **labels, kind="permanent") == 1
    with pytest.raises(ValueError, match="transient, permanent"):
        metrics.reconcile_failed("prod", "r1", "flaky")


@pytest.mark.parametrize(
    "model",
    [
        "gelu.v2_final-1",  # every character class a model name (spec.model.name) allows
        'not "a" model\\name\nat all',  # never a valid name; its escaping is still safe
    ],
)
def test_label_values_survive_the_exposition_format(model: str) -> None:
    metrics = OperatorMetrics()
    status = RolloutStatus(stage=Stage.PROGRESSING, started_at=T0, candidate_weight=25)
    metrics.record(RolloutSample.of("prod", "r1", model, before=RolloutStatus(), after=status))
    text = generate_latest(metrics.registry).decode()
    parsed = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    labels = tuple(sorted({"namespace": "prod", "rollout": "r1", "model": model}.items()))
    assert ("gelu_rollout_candidate_weight_ratio", labels) in parsed
    assert ("gelu_rollout_started_total", labels) in parsed


def test_the_controller_feeds_the_metrics_every_tick() -> None:
    cluster = Cluster()
    metrics = cluster.controller.metrics
    labels = {"namespace": "prod", "rollout": "gelu-mlp", "model": "gelu-mlp"}
    cluster.tick()
    cluster.kube.pods_ready()
    weights = []
    while cluster.status.get("stage") != "Promoted":
        cluster.tick(seconds=60)
        weights.append(value(metrics, "gelu_rollout_candidate_weight_ratio", **labels))
    assert weights[0] == pytest.approx(0.1)
    assert pytest.approx(0.5) in weights
    assert weights[-1] is None, "gone with the outcome"
    assert value(metrics, "gelu_rollout_stage", **labels, stage="Promoted") == 1
    assert value(metrics, "gelu_rollout_started_total", **labels) == 1
    assert value(metrics, "gelu_rollout_promoted_total", **labels, reason="AllStepsPassed") == 1
    passes = value(
        metrics, "gelu_rollout_gate_decisions_total", **labels, gate="errorRate", verdict="Pass"
    )
    assert passes is not None
    assert passes > 0
    ticks = value(metrics, "gelu_rollout_reconcile_duration_seconds_count")
    assert ticks == 1 + len(weights)


def every_series(metrics: OperatorMetrics) -> None:
    """Records enough that every metric has a series: a stalled rollout with a gate verdict,
    a rolled-back one, a failed reconcile."""
    stalled = Condition(
        type="Stalled", status="True", reason="InsufficientData", last_transition_time=T0
    )
    paused = RolloutStatus(
        stage=Stage.PAUSED, started_at=T0, candidate_weight=10, conditions=[stalled]
    )
    result = GateResult("errorRate", Verdict.INCONCLUSIVE, 0.001, 0.01, 90, 60, "not yet")
    metrics.record(
        RolloutSample.of("prod", "r1", MODEL, before=paused, after=paused, results=(result,)),
        seconds=0.1,
    )
    finished = paused.model_copy(
        update={"stage": Stage.ROLLED_BACK, "finished_at": T0 + timedelta(hours=1)}
    )
    metrics.record(RolloutSample.of("prod", "r2", MODEL, before=paused, after=finished))
    metrics.reconcile_failed("prod", "r1", "transient")


def test_the_reference_lists_every_metric_with_its_type_and_labels() -> None:
    rows = re.findall(
        r"^\| `(gelu_rollout_\w+)` \| (\w+)[^|]* \| ([^|]*) \|",
        (ROOT / "docs" / "metrics.md").read_text(),
        flags=re.MULTILINE,
    )
    documented = {
        name: (kind, set() if labels.strip() == "none" else set(labels.replace(" ", "").split(",")))
        for name, kind, labels in rows
    }
    metrics = OperatorMetrics()
    every_series(metrics)
    exported: dict[str, tuple[str, set[str]]] = {}
    for family in metrics.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {k for sample in family.samples for k in sample.labels if k != "le"}
        exported[name] = (family.type, labels)
    assert documented == exported


def test_a_spec_the_operator_cannot_act_on_is_a_stalled_series() -> None:
    # The tick stops before any decision; the metrics still say why the rollout is stuck.
    cluster = Cluster()
    cluster.body["spec"]["traffic"] = {"steps": [{"weight": 250}]}
    cluster.tick()
    labels = {"namespace": "prod", "rollout": "gelu-mlp", "model": "gelu-mlp"}
    metrics = cluster.controller.metrics
    assert value(metrics, "gelu_rollout_stalled", **labels, reason="InvalidSpec") == 1
    cluster.body["spec"] = "not a mapping"
    cluster.tick()
    unnamed = {**labels, "model": ""}
    assert value(metrics, "gelu_rollout_stalled", **unnamed, reason="InvalidSpec") == 1
