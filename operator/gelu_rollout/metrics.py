"""The operator's own metrics, served on an HTTP port for Prometheus to scrape.

Each tick hands :meth:`OperatorMetrics.record` a :class:`RolloutSample`: what the status the
tick read and the status it wrote say, in the terms of the series. This module decides
nothing about a rollout; it maps statuses to series and keeps their number bounded:

- a rollout's gate series, candidate weight and step go at its outcome (Promoted or
  RolledBack); its stage, decision and outcome counters stay while the object exists;
- every series of a rollout goes when it is deleted (:meth:`OperatorMetrics.forget`);
- counters' per-rollout series start at 0 while a rollout is not finished, so ``increase()``
  sees its first start, promotion or rollback.

A tick that fails reaches :meth:`OperatorMetrics.reconcile_failed` instead, from the error
policy. docs/metrics.md is the reference: every metric, its labels, and when its series go.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.rollout.conditions import FAILURE_REASONS, ConditionType, Reason
from gelu_rollout.spec.status import RolloutStatus, Stage

ROLLOUT_LABELS: Final = ("namespace", "rollout", "model")

PROMOTION_REASONS: Final[tuple[str, ...]] = (
    Reason.ALL_STEPS_PASSED.value,
    Reason.MANUAL_PROMOTION.value,
)
"""The reasons a promotion reports, each counter series created at 0 up front."""

ROLLBACK_REASONS: Final[tuple[str, ...]] = (
    *dict.fromkeys(r.value for r in FAILURE_REASONS.values()),
    Reason.INSUFFICIENT_DATA.value,
    Reason.GATE_WITHOUT_DATA.value,
    Reason.PROGRESS_DEADLINE_EXCEEDED.value,
    Reason.ABORTED.value,
)
"""The reasons a rollback reports: one per failing gate, too little data past the extension
(``insufficientData.action: Rollback``), the progress deadline, and an abort."""

ERROR_KINDS: Final = ("transient", "permanent")
"""How a failed reconcile is retried: soon (transient) or not until something changes."""

OUTCOME_BUCKETS: Final = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
"""A rollout takes minutes to days: one minute to one week."""

RECONCILE_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _running(status: RolloutStatus) -> bool:
    """Whether a run of the rollout is under way: started (or past Pending), not finished."""
    if status.stage.terminal:
        return False
    return status.started_at is not None or status.stage is not Stage.PENDING


@dataclass(frozen=True)
class RolloutSample:
    """One tick of one rollout, as its series see it."""

    namespace: str
    rollout: str
    model: str
    """spec.model.name: the Triton model the rollout serves."""
    previous_stage: Stage
    """The stage of the status the tick read."""
    stage: Stage
    """The stage of the status the tick wrote."""
    step: int
    candidate_weight_ratio: float
    """The candidate's share of traffic, 0 to 1."""
    was_running: bool
    running: bool
    new_evidence: bool
    """The status starts the rollout's evidence afresh (a start, a restart, the probe's pass):
    gate verdicts from before it no longer speak of this run."""
    outcome_reason: str | None = None
    """The Promoted or RolledBack condition's reason, once the rollout is finished."""
    outcome_seconds: float | None = None
    """From startedAt to finishedAt, once the rollout is finished."""
    stalled_reason: str | None = None
    """The Stalled condition's reason while it is True."""
    results: tuple[GateResult, ...] = ()
    """The gate verdicts this tick reached (none when it did not analyse)."""

    @classmethod
    def of(
        cls,
        namespace: str,
        rollout: str,
        model: str,
        *,
        before: RolloutStatus,
        after: RolloutStatus,
        results: Iterable[GateResult] = (),
    ) -> RolloutSample:
        """The sample from the status a tick read (``before``) and the one it wrote."""
        outcome_reason: str | None = None
        outcome_seconds: float | None = None
        if after.stage.terminal:
            # The same fallbacks the kstatus summary reads when the condition is missing.
            type_, fallback = (
                (ConditionType.PROMOTED, Reason.ALL_STEPS_PASSED)
                if after.stage is Stage.PROMOTED
                else (ConditionType.ROLLED_BACK, Reason.ABORTED)
            )
            condition = after.condition(type_.value)
            outcome_reason = (
                condition.reason
                if condition is not None and condition.status == "True"
                else fallback.value
            )
            if after.started_at is not None and after.finished_at is not None:
                outcome_seconds = max(0.0, (after.finished_at - after.started_at).total_seconds())
        stalled = after.condition(ConditionType.STALLED.value)
        return cls(
            namespace=namespace,
            rollout=rollout,
            model=model,
            previous_stage=before.stage,
            stage=after.stage,
            step=after.step_index,
            candidate_weight_ratio=after.candidate_weight / 100,
            was_running=_running(before),
            running=_running(after),
            new_evidence=after.started_at is not None and after.started_at != before.started_at,
            outcome_reason=outcome_reason,
            outcome_seconds=outcome_seconds,
            stalled_reason=stalled.reason
            if stalled is not None and stalled.status == "True"
            else None,
            results=tuple(results),
        )


class _Phase(Enum):
    """Where this process last saw a rollout: so a tick whose status write was lost (and
    that is decided again) does not count its start or outcome twice."""

    IDLE = "idle"
    RUNNING = "running"
    FINISHED = "finished"


Series = tuple[MetricWrapperBase, tuple[str, ...]]


@dataclass
class _Tracked:
    """The series one rollout has, so they can be removed without scanning every metric."""

    model: str
    phase: _Phase = _Phase.IDLE
    series: set[Series] = field(default_factory=set)


class OperatorMetrics:
    """Per rollout: stage, traffic, step, gate verdicts, starts and outcomes; per operator:
    reconcile latency and failures."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stage = Gauge(
            "gelu_rollout_stage",
            "The rollout's stage: 1 for the current one, 0 for the others",
            [*ROLLOUT_LABELS, "stage"],
            registry=r,
        )
        self.candidate_weight_ratio = Gauge(
            "gelu_rollout_candidate_weight_ratio",
            "Share of traffic (0 to 1) the candidate gets; absent once the rollout is finished",
            ROLLOUT_LABELS,
            registry=r,
        )
        self.step = Gauge(
            "gelu_rollout_step",
            "The current step, 0-based; absent once the rollout is finished",
            ROLLOUT_LABELS,
            registry=r,
        )
        self.gate_verdict = Gauge(
            "gelu_rollout_gate_verdict",
            "The gate's latest verdict: 1 for it, 0 for the others",
            [*ROLLOUT_LABELS, "gate", "verdict"],
            registry=r,
        )
        self.gate_value = Gauge(
            "gelu_rollout_gate_value",
            "The gate's latest value, in its own unit; absent when it had none",
            [*ROLLOUT_LABELS, "gate"],
            registry=r,
        )
        self.gate_threshold = Gauge(
            "gelu_rollout_gate_threshold",
            "The threshold the gate's value is judged against",
            [*ROLLOUT_LABELS, "gate"],
            registry=r,
        )
        self.gate_decisions = Counter(
            "gelu_rollout_gate_decisions",
            "Gate verdicts reached, by gate and verdict",
            [*ROLLOUT_LABELS, "gate", "verdict"],
            registry=r,
        )
        self.started = Counter(
            "gelu_rollout_started",
            "Rollouts started (or started again) as this operator process saw them",
            ROLLOUT_LABELS,
            registry=r,
        )
        self.promoted = Counter(
            "gelu_rollout_promoted",
            "Promotions, by reason",
            [*ROLLOUT_LABELS, "reason"],
            registry=r,
        )
        self.rolled_back = Counter(
            "gelu_rollout_rolled_back",
            "Rollbacks, by reason",
            [*ROLLOUT_LABELS, "reason"],
            registry=r,
        )
        self.stalled = Gauge(
            "gelu_rollout_stalled",
            "1 while an unfinished rollout is Stalled, by the condition's reason",
            [*ROLLOUT_LABELS, "reason"],
            registry=r,
        )
        self.outcome_duration = Histogram(
            "gelu_rollout_outcome_duration_seconds",
            "From a rollout's start to its outcome",
            ["namespace", "model", "outcome"],
            buckets=OUTCOME_BUCKETS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "gelu_rollout_reconcile_duration_seconds",
            "Time one reconcile tick takes, observing, deciding and acting",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_error_count = Counter(
            "gelu_rollout_reconcile_errors",
            "Reconcile ticks that failed, by how they are retried",
            ["namespace", "rollout", "kind"],
            registry=r,
        )
        self._rollouts: dict[tuple[str, str], _Tracked] = {}
        # Kopf runs synchronous handlers (forget) in worker threads, the tick on the loop.
        self._lock = threading.Lock()

    # -- recording -----------------------------------------------------------------------

    def record(self, sample: RolloutSample, seconds: float | None = None) -> None:
        """One tick of one rollout; ``seconds`` is how long the tick took."""
        with self._lock:
            self._record(sample)
        if seconds is not None:
            self.reconcile_duration.observe(seconds)

    def reconcile_failed(self, namespace: str, rollout: str, kind: str) -> None:
        """A tick of the rollout failed; ``kind`` is transient or permanent."""
        if kind not in ERROR_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ERROR_KINDS)}, got {kind!r}")
        self.reconcile_error_count.labels(namespace, rollout, kind).inc()

    def forget(self, namespace: str, name: str) -> None:
        """A rollout was deleted: every series of it goes."""
        with self._lock:
            tracked = self._rollouts.pop((namespace, name), None)
            if tracked is not None:
                self._remove(tracked, lambda _: True)
            # Not tracked with the rest: they carry no model, and fail before any tick records.
            for kind in ERROR_KINDS:
                with contextlib.suppress(KeyError):
                    self.reconcile_error_count.remove(namespace, name, kind)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)

    # -- the mapping ---------------------------------------------------------------------

    def _record(self, s: RolloutSample) -> None:
        key = (s.namespace, s.rollout)
        tracked = self._rollouts.get(key)
        if tracked is not None and tracked.model != s.model:
            # Another model is another set of series: the old ones would never change again.
            self._remove(tracked, lambda _: True)
            tracked = _Tracked(s.model, tracked.phase)
        first_seen = tracked is None
        if tracked is None:
            tracked = _Tracked(s.model)
        self._rollouts[key] = tracked
        labels = (s.namespace, s.rollout, s.model)
        finished = s.stage.terminal

        for stage in Stage:
            self._set(tracked, self.stage, (*labels, stage.value), float(stage is s.stage))
        if not finished:
            self._counters(labels, tracked)
            for kind in ERROR_KINDS:
                self.reconcile_error_count.labels(s.namespace, s.rollout, kind).inc(0)
        if s.new_evidence:
            self._remove(tracked, self._is_gate_gauge)
        for result in s.results:
            self._gate(tracked, labels, result, latest=not finished)

        # A transition counts once: when the status the tick read was not there yet, and this
        # process has not already counted it (a status write lost, decided again). A rollout
        # first seen finished (the operator restarted) is not counted.
        seen = None if first_seen else tracked.phase
        if s.running and not s.was_running and seen is not _Phase.RUNNING:
            self.started.labels(*labels).inc()
        if finished and not s.previous_stage.terminal and seen is not _Phase.FINISHED:
            reason = s.outcome_reason or ""
            counter = self.promoted if s.stage is Stage.PROMOTED else self.rolled_back
            self._inc(tracked, counter, (*labels, reason))
            if s.outcome_seconds is not None:
                self.outcome_duration.labels(s.namespace, s.model, s.stage.value).observe(
                    s.outcome_seconds
                )
        tracked.phase = (
            _Phase.FINISHED if finished else _Phase.RUNNING if s.running else _Phase.IDLE
        )

        if finished:
            self._remove(tracked, self._gone_at_outcome)
        else:
            self._set(tracked, self.candidate_weight_ratio, labels, s.candidate_weight_ratio)
            self._set(tracked, self.step, labels, float(s.step))
        stalled = s.stalled_reason if not finished else None
        self._remove(tracked, lambda x: x[0] is self.stalled and x[1][-1] != stalled)
        if stalled is not None:
            self._set(tracked, self.stalled, (*labels, stalled), 1.0)

    def _counters(self, labels: tuple[str, str, str], tracked: _Tracked) -> None:
        """Every counter series of an unfinished rollout, at 0 until something happens."""
        self._inc(tracked, self.started, labels, 0)
        for reason in PROMOTION_REASONS:
            self._inc(tracked, self.promoted, (*labels, reason), 0)
        for reason in ROLLBACK_REASONS:
            self._inc(tracked, self.rolled_back, (*labels, reason), 0)

    def _gate(
        self, tracked: _Tracked, labels: tuple[str, str, str], result: GateResult, *, latest: bool
    ) -> None:
        gate = (*labels, result.gate)
        for verdict in Verdict:
            self._inc(tracked, self.gate_decisions, (*gate, verdict.value), 0)
        self.gate_decisions.labels(*gate, result.verdict.value).inc()
        if not latest:
            return
        for verdict in Verdict:
            current = float(verdict is result.verdict)
            self._set(tracked, self.gate_verdict, (*gate, verdict.value), current)
        for gauge, value in (
            (self.gate_value, result.value),
            (self.gate_threshold, result.threshold),
        ):
            if value is not None:
                self._set(tracked, gauge, gate, value)
            elif (gauge, gate) in tracked.series:
                gauge.remove(*gate)
                tracked.series.discard((gauge, gate))

    def _is_gate_gauge(self, series: Series) -> bool:
        return series[0] in (self.gate_verdict, self.gate_value, self.gate_threshold)

    def _gone_at_outcome(self, series: Series) -> bool:
        return self._is_gate_gauge(series) or series[0] in (
            self.candidate_weight_ratio,
            self.step,
            self.stalled,
        )

    # -- series bookkeeping --------------------------------------------------------------

    @staticmethod
    def _set(tracked: _Tracked, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        gauge.labels(*labels).set(value)
        tracked.series.add((gauge, labels))

    @staticmethod
    def _inc(
        tracked: _Tracked, counter: Counter, labels: tuple[str, ...], amount: float = 1
    ) -> None:
        # inc(0) creates the series at 0 and leaves an existing one as it is.
        counter.labels(*labels).inc(amount)
        tracked.series.add((counter, labels))

    @staticmethod
    def _remove(tracked: _Tracked, which: Callable[[Series], bool]) -> None:
        for series in [x for x in tracked.series if which(x)]:
            metric, labels = series
            # Older prometheus_client versions raise KeyError for a series already gone.
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
            tracked.series.discard(series)
