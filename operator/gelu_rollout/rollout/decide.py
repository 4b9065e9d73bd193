r"""The rollout state machine: ``decide(spec, status, observations, now)``.

Pure and deterministic: the next status and the Events that explain it follow
from the arguments alone. The status is the one output that acts: the controller
renders the owned resources (replicas, traffic weights) from it. Stages::

    Pending (probe) -> Progressing -> Promoted
                   |  ^   \-> RolledBack
                   v  |
                  Paused  -> RolledBack / Promoted

* Pending runs the candidate without traffic until the paired probe answers: a failed
  probe rolls back before any traffic moves, a passed one starts the first step. A spec
  change or a retry probes again.
* Any failing gate rolls back at once; critical ones (non-finite outputs, a
  fast burn) also override a manual promote.
* A step advances when its analysis time has passed and no gate shows harm (each
  passes, or its estimate is within tolerance); the last step promotes when every
  gate passes, on proof or on power. Nothing is promoted on Inconclusive evidence.
* Without enough data a step waits up to ``maxExtensionSeconds``, then follows
  ``insufficientData.action``: Pause (gates keep judging; the rollout resumes
  by itself once they pass, or rolls back if one fails) or Rollback.
* Manual promote / abort / retry arrive in the observations, each acted on once.
* A new ``metadata.generation`` (the spec changed) restarts the analysis.
* An unfinished rollout whose pods have not been ready for longer than
  ``progressDeadlineSeconds`` (``status.notReadySince``, rollout/progress.py) rolls back;
  only an abort in the same tick comes first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from gelu_rollout.analysis.observations import (
    ArmObservation,
    StepEvidence,
    accumulate,
    observation_problem,
    sample_problem,
)
from gelu_rollout.analysis.power import format_duration
from gelu_rollout.analysis.tail_latency import tick_cap
from gelu_rollout.analysis.verdict import GateResult, Verdict, inconclusive
from gelu_rollout.rollout.conditions import (
    FAILURE_REASONS,
    ConditionType,
    Reason,
    set_condition,
    summarize,
)
from gelu_rollout.rollout.evaluate import (
    alpha_per_test,
    evaluate_gates,
    gate_names,
    gate_required,
)
from gelu_rollout.rollout.events import EmitEvent
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.rollout.power_plan import infeasible, plan_gates, plan_to_status
from gelu_rollout.rollout.progress import deadline_exceeded
from gelu_rollout.rollout.requests import RequestKind
from gelu_rollout.spec.model import RolloutSpec
from gelu_rollout.spec.status import (
    GATE_HISTORY_LIMIT,
    HISTORY_VERDICTS,
    GateHistoryTick,
    LedgerEntry,
    RolloutStatus,
    Stage,
    significant,
)


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    events: tuple[EmitEvent, ...] = ()
    results: tuple[GateResult, ...] = ()


@dataclass(frozen=True)
class AnalysisState:
    """The rollout layer's working memory, kept in ``status.analysis``."""

    # Evidence since the start of each step reached; the current step's is last.
    segments: tuple[StepEvidence, ...] = (StepEvidence(),)
    look: int = 0
    verdicts: Mapping[str, str] = field(default_factory=dict)
    observed_at: datetime | None = None
    # Whether this step's infeasible power plan was already reported in an Event, and
    # whether its plan that needs the extension was.
    plan_warned: bool = False
    plan_noted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments": [segment.to_dict() for segment in self.segments],
            "look": self.look,
            "verdicts": dict(self.verdicts),
            "observedAt": self.observed_at.isoformat() if self.observed_at else None,
            "planWarned": self.plan_warned,
            "planNoted": self.plan_noted,
        }

    @staticmethod
    def observed_at_in(data: Mapping[str, Any]) -> datetime | None:
        """When the tick behind ``to_dict``'s ``data`` was observed, without reading the rest
        (the segments are the bulk of it)."""
        return _parse_time(data.get("observedAt"))

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> AnalysisState:
        verdicts = data.get("verdicts")
        look = data.get("look")
        raw_segments = data.get("segments")
        segments = (
            tuple(StepEvidence.from_dict(s) for s in raw_segments if isinstance(s, Mapping))
            if isinstance(raw_segments, list)
            else ()
        )
        return AnalysisState(
            segments=segments or (StepEvidence(),),
            look=look if isinstance(look, int) else 0,
            verdicts={str(k): str(v) for k, v in verdicts.items()}
            if isinstance(verdicts, Mapping)
            else {},
            observed_at=AnalysisState.observed_at_in(data),
            plan_warned=data.get("planWarned") is True,
            plan_noted=data.get("planNoted") is True,
        )


def _parse_time(value: Any) -> datetime | None:
    """A stored timestamp, or None when it is missing or unreadable (hand-edited)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class _Next:
    """The status being built for this tick, with the Events that go with it."""

    def __init__(
        self, spec: RolloutSpec, status: RolloutStatus, now: datetime, generation: int | None
    ):
        self.spec = spec
        self.status = status
        self.now = now
        self.generation = generation if generation is not None else status.observed_generation
        # The conditions as last written: the summary's transition times are measured on them.
        self.written = status.conditions
        self.events: list[EmitEvent] = []
        # Gate results of this tick, and the verdicts of the tick before: the
        # ledger records every gate at a decision, otherwise only changes.
        self.results: tuple[GateResult, ...] = ()
        self.previous_verdicts: Mapping[str, str] = {}
        self.decided = False
        # Where the evidence was gathered, before a decision moves the rollout on.
        self.judged_at = (status.step_index, status.candidate_weight)

    def update(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def event(self, reason: Reason, message: str, *, warning: bool = False) -> None:
        self.events.append(EmitEvent("Warning" if warning else "Normal", reason.value, message))

    def condition(self, type_: ConditionType, status: bool, reason: Reason, message: str) -> None:
        self.update(
            conditions=set_condition(
                self.status.conditions, type_, status, reason, message, self.now, self.generation
            )
        )

    def _record(self) -> None:
        only_changed = None if self.decided else self.previous_verdicts
        entries = [
            LedgerEntry(
                time=self.now,
                step=self.judged_at[0],
                weight=self.judged_at[1],
                gate=r.gate,
                verdict=r.verdict.value,
                value=r.value,
                threshold=r.threshold,
                samples=r.samples,
                window_seconds=r.window_seconds,
                message=r.message,
                basis=r.basis or None,
            )
            for r in self.results
            if only_changed is None or only_changed.get(r.gate) != r.verdict.value
        ]
        if entries:
            limit = self.spec.analysis.ledger_limit
            self.update(ledger=[*self.status.ledger, *entries][-limit:])

    def _remember(self) -> None:
        """Every judged tick goes into the bounded gate history, for the decision report."""
        if not self.results:
            return
        tick = GateHistoryTick(
            time=self.now,
            step=self.judged_at[0],
            weight=self.judged_at[1],
            gates={
                r.gate: (
                    significant(r.value),
                    significant(r.bound),
                    significant(r.threshold),
                    HISTORY_VERDICTS[r.verdict.value],
                )
                for r in self.results
            },
            decided=True if self.decided else None,
        )
        self.update(gate_history=[*self.status.gate_history, tick][-GATE_HISTORY_LIMIT:])

    def analysis(self, state: AnalysisState) -> None:
        self.update(analysis=state.to_dict())

    def decision(self) -> Decision:
        self._record()
        self._remember()
        self.status = summarize(self.status, self.now, self.generation, previous=self.written)
        return Decision(self.status, tuple(self.events), self.results)


def _overall(results: Sequence[GateResult]) -> Verdict:
    if any(r.failed for r in results):
        return Verdict.FAIL
    if results and all(r.verdict is Verdict.PASS for r in results):
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def _probe_first(n: _Next, reason: Reason, message: str) -> None:
    """(Re)start in Pending: the candidate runs without traffic until the probe answers."""
    n.update(
        stage=Stage.PENDING,
        step_index=0,
        candidate_weight=0,
        started_at=n.now,
        step_started_at=None,
        finished_at=None,
        last_verdict=None,
        started_generation=n.generation,
        message="probing the candidate before any traffic moves",
    )
    n.analysis(AnalysisState())
    n.condition(ConditionType.PROGRESSING, True, reason, message)
    n.condition(ConditionType.PROMOTED, False, Reason.NOT_PROMOTED, "not promoted yet")
    n.condition(ConditionType.ROLLED_BACK, False, Reason.NOT_ROLLED_BACK, "not rolled back")
    n.event(reason, message)


def _begin(n: _Next, reason: Reason, message: str) -> None:
    """Start a rollout from scratch: through the probe when it is enabled."""
    # A new spec, or a retry, is given the whole progress deadline afresh.
    n.update(not_ready_since=None)
    if n.spec.analysis.probe.enabled:
        _probe_first(n, reason, f"{message}: probing the candidate before any traffic moves")
    else:
        _start(n, reason, message)


def _pending(n: _Next, observations: Observations) -> None:
    """Wait for the probe; roll back on a failure, start the first step on a pass."""
    if n.status.started_at is None or not n.spec.analysis.probe.enabled:
        _begin(n, Reason.ROLLOUT_STARTED, "rollout started")
        return
    result = observations.probe
    if result is None:
        return
    state = _analysis(n.status)
    n.results, n.previous_verdicts = (result,), state.verdicts
    n.judged_at = (0, 0)
    if result.failed:
        _roll_back(n, Reason.PROBE_FAILED, _failure_message(result))
        return
    if result.verdict is Verdict.PASS:
        n.decided = True
        _start(n, Reason.ROLLOUT_STARTED, f"probe passed ({result.message}): rollout started")
        return
    n.analysis(AnalysisState(verdicts={result.gate: result.verdict.value}))
    waited = (n.now - n.status.started_at).total_seconds()
    limit = n.spec.analysis.insufficient_data.max_extension_seconds
    progressing = n.status.condition(ConditionType.PROGRESSING.value)
    if waited >= limit and (
        progressing is None or progressing.reason != Reason.PROBE_INCONCLUSIVE.value
    ):
        # The summary reads this reason as Stalled: the probe keeps trying, but past its
        # deadline a person should look.
        message = f"probe still inconclusive after {waited:.0f}s: {result.message}"
        n.condition(ConditionType.PROGRESSING, True, Reason.PROBE_INCONCLUSIVE, message)
        n.event(Reason.PROBE_INCONCLUSIVE, message, warning=True)


def _start(n: _Next, reason: Reason, message: str) -> None:
    """Begin (or begin again) at the first step with fresh evidence."""
    spec = n.spec
    weight = spec.traffic.steps[0].weight
    n.update(
        stage=Stage.PROGRESSING,
        step_index=0,
        candidate_weight=weight,
        started_at=n.now,
        step_started_at=n.now,
        finished_at=None,
        last_verdict=None,
        started_generation=n.generation,
        message=f"step 1/{len(spec.traffic.steps)}: {weight}% of traffic to the candidate",
    )
    n.analysis(AnalysisState())
    n.condition(ConditionType.PROGRESSING, True, reason, message)
    n.condition(ConditionType.PROMOTED, False, Reason.NOT_PROMOTED, "not promoted yet")
    n.condition(ConditionType.ROLLED_BACK, False, Reason.NOT_ROLLED_BACK, "not rolled back")
    n.event(reason, message)


def _roll_back(n: _Next, reason: Reason, message: str) -> None:
    n.decided = True
    n.update(
        stage=Stage.ROLLED_BACK,
        candidate_weight=0,
        finished_at=n.now,
        message=message,
    )
    n.condition(ConditionType.ROLLED_BACK, True, reason, message)
    n.condition(ConditionType.PROGRESSING, False, Reason.FINISHED, "rolled back")
    n.event(reason, message, warning=True)


def _promote(n: _Next, reason: Reason, message: str) -> None:
    n.decided = True
    n.update(stage=Stage.PROMOTED, candidate_weight=100, finished_at=n.now, message=message)
    n.condition(ConditionType.PROMOTED, True, reason, message)
    n.condition(ConditionType.PROGRESSING, False, Reason.FINISHED, "promoted")
    n.event(reason, message)


def _advance(n: _Next, note: str = "") -> None:
    steps = n.spec.traffic.steps
    index = n.status.step_index + 1
    weight = steps[index].weight
    message = f"step {index + 1}/{len(steps)}: {weight}% of traffic to the candidate{note}"
    n.decided = True
    n.update(
        stage=Stage.PROGRESSING,
        step_index=index,
        candidate_weight=weight,
        step_started_at=n.now,
        message=message,
    )
    previous = _analysis(n.status)
    n.analysis(
        AnalysisState(
            segments=(*previous.segments, StepEvidence()), observed_at=previous.observed_at
        )
    )
    n.condition(ConditionType.PROGRESSING, True, Reason.STEP_ADVANCED, message)
    n.event(Reason.STEP_ADVANCED, message)


def _analysis(status: RolloutStatus) -> AnalysisState:
    return AnalysisState.from_dict(status.analysis)


def _failure_message(failure: GateResult) -> str:
    return f"{failure.gate} failed: {failure.message}"


def _observe(n: _Next, observations: Observations) -> tuple[GateResult, ...] | None:
    """Fold this tick into the step's evidence and judge it; None if the tick is stale."""
    state = _analysis(n.status)
    if state.observed_at is not None and state.observed_at >= observations.at:
        return None
    look = state.look + 1
    spec = n.spec
    segments = state.segments
    missing = observations.missing_reason or "metrics unavailable"
    plan_warned, plan_noted = state.plan_warned, state.plan_noted
    arms: tuple[ArmObservation, ArmObservation] | None = None
    if observations.baseline is not None and observations.candidate is not None:
        # The longest segment has seen every tick: check against its totals.
        problems = [
            f"{name}: {problem}"
            for name, arm, totals in (
                ("baseline", observations.baseline, segments[0].baseline),
                ("candidate", observations.candidate, segments[0].candidate),
            )
            if (problem := observation_problem(arm, totals)) is not None
        ]
        if problems:
            missing = "observation rejected: " + "; ".join(problems)
        else:
            arms = (observations.baseline, observations.candidate)
    sample, sample_missing = observations.sample, observations.sample_missing
    if sample is not None and (problem := sample_problem(sample, segments[0].sampled_candidate)):
        sample, sample_missing = None, f"sample rejected: {problem}"
    if sample is not None:
        segments = tuple(segment.add_sample(sample) for segment in segments)
    if arms is not None:
        started = n.status.step_started_at or n.now
        window_start = observations.at - timedelta(seconds=observations.interval_seconds)
        warm = window_start >= started + timedelta(seconds=spec.analysis.warmup_seconds)
        # The tail test's edges come from the baseline's latency over the whole rollout so
        # far, the same for every segment, and never from the tick being judged.
        history = segments[0].baseline_latency
        cap = tick_cap(alpha_per_test(spec))
        segments = tuple(
            accumulate(
                segment,
                *arms,
                interval_seconds=observations.interval_seconds,
                latency_ceiling_ms=spec.analysis.slo.latency_p99_ms,
                max_regression=spec.analysis.gates.latency.max_regression,
                warm=warm,
                baseline_history=history,
                tail_tick_cap=cap,
            )
            for segment in segments
        )
        results = tuple(
            evaluate_gates(
                spec, n.status.step_index, segments, arms, look, sample_missing=sample_missing
            )
        )
        plan_warned, plan_noted = _plan(
            n, segments, arms, observations.interval_seconds, (plan_warned, plan_noted)
        )
    elif sample is not None:
        results = tuple(
            evaluate_gates(
                spec,
                n.status.step_index,
                segments,
                None,
                look,
                missing=missing,
                sample_missing=sample_missing,
            )
        )
    else:
        results = tuple(
            inconclusive(
                name, f"no observation: {missing}", critical=name in ("nonFinite", "burnRate")
            )
            for name in gate_names(spec)
        )
    results = tuple(_optional_without_data(spec, r) for r in results)
    n.results, n.previous_verdicts = results, state.verdicts
    n.analysis(
        AnalysisState(
            segments=segments,
            look=look,
            verdicts={r.gate: r.verdict.value for r in results},
            observed_at=observations.at,
            plan_warned=plan_warned,
            plan_noted=plan_noted,
        )
    )
    n.update(last_verdict=_overall(results).value)
    return results


SKIPPED = "skipped"
"""The basis of an optional gate's result when the gate has no data: the rollout goes on
without it."""


def _optional_without_data(spec: RolloutSpec, result: GateResult) -> GateResult:
    if not result.no_data or gate_required(spec, result.gate):
        return result
    return replace(result, basis=SKIPPED, message=f"{result.message} (optional: judged without it)")


def _without(skipped: Sequence[GateResult]) -> str:
    if not skipped:
        return ""
    return "; judged without " + ", ".join(r.gate for r in skipped) + " (optional, no data)"


PLAN_TICKS = 2
"""Ticks of a step before its power plan may be reported as not met in time."""


def _plan(
    n: _Next,
    segments: Sequence[StepEvidence],
    arms: tuple[ArmObservation, ArmObservation],
    interval_seconds: float,
    said: tuple[bool, bool],
) -> tuple[bool, bool]:
    """Put the power plan in the status, and say once per step what it cannot meet: a
    Warning when a gate cannot be ready even with the last step's extension, else a Normal
    Event when a gate needs that extension (its pass will come after the planned time).
    ``said`` and the result: whether this step has had (the Warning, the Event)."""
    warned, noted = said
    plans = plan_gates(n.spec, segments, arms, interval_seconds)
    n.update(power_plan=plan_to_status(plans))
    # A step's rates come from its ticks so far; one tick can be a burst or a lull.
    if n.status.stage is not Stage.PROGRESSING or warned or segments[-1].ticks < PLAN_TICKS:
        return warned, noted
    steps = n.spec.traffic.steps
    index = n.status.step_index
    started = n.status.step_started_at or n.now
    elapsed = (n.now - started).total_seconds()
    planned = [(max(steps[index].analysis_seconds - elapsed, 0.0), steps[index].weight)]
    planned += [(float(s.analysis_seconds), s.weight) for s in steps[index + 1 :]]
    extension = float(n.spec.analysis.insufficient_data.max_extension_seconds)
    weight = n.status.candidate_weight
    problems = infeasible(plans, [*planned, (extension, steps[-1].weight)], weight)
    if problems:
        n.event(
            Reason.POWER_PLAN_INFEASIBLE,
            "the plan cannot give every gate the data to pass on power: " + "; ".join(problems),
            warning=True,
        )
        return True, noted
    if noted:
        return warned, noted
    short = infeasible(plans, planned, weight)
    if short:
        n.event(
            Reason.POWER_PLAN_NEEDS_EXTENSION,
            "the plan's steps do not give every gate the data to pass on power, so the last "
            f"step will run into its extension (up to {format_duration(extension)}): "
            + "; ".join(short),
        )
        return warned, True
    return warned, noted


def decide(
    spec: RolloutSpec,
    status: RolloutStatus,
    observations: Observations,
    now: datetime,
    *,
    generation: int | None = None,
) -> Decision:
    """The next status and the Events that explain it. Never raises on any valid input."""
    n = _Next(spec, status, now, generation)
    request = observations.request
    if request is not None and request.id == status.handled_request:
        request = None
    if request is not None:
        n.update(handled_request=request.id)

    started = status.rollout_generation()
    spec_changed = generation is not None and started is not None and generation != started
    if spec_changed:
        _begin(n, Reason.SPEC_CHANGED, f"spec changed (generation {generation}): analysis restarts")
        return n.decision()

    aborted = request is not None and request.kind is RequestKind.ABORT
    overdue = None if aborted else deadline_exceeded(spec, status, now)
    if overdue is not None:
        _roll_back(n, Reason.PROGRESS_DEADLINE_EXCEEDED, overdue)
        if request is not None:
            n.event(
                Reason.REQUEST_IGNORED,
                f"{request.kind.value} ignored: the rollout is rolled back (progress deadline)",
            )
        return n.decision()

    if status.stage is Stage.PENDING:
        if request is not None and request.kind is RequestKind.ABORT:
            _roll_back(n, Reason.ABORTED, "aborted on request")
        else:
            _pending(n, observations)
        return n.decision()

    if status.stage.terminal:
        if (
            request is not None
            and request.kind is RequestKind.RETRY
            and status.stage is Stage.ROLLED_BACK
        ):
            _begin(n, Reason.RETRIED, "retry requested: the rollout starts again at step 1")
        elif request is not None:
            n.event(
                Reason.REQUEST_IGNORED,
                f"{request.kind.value} ignored: the rollout is already {status.stage.value}",
            )
        return n.decision()

    if request is not None and request.kind is RequestKind.ABORT:
        _roll_back(n, Reason.ABORTED, "aborted on request")
        return n.decision()

    results = _observe(n, observations)
    if results is None:
        return n.decision()
    failures = [r for r in results if r.failed]
    critical = [r for r in failures if r.critical]

    if request is not None and request.kind is RequestKind.PROMOTE:
        if critical:
            n.event(
                Reason.PROMOTION_REFUSED,
                f"promotion refused: {_failure_message(critical[0])}",
                warning=True,
            )
        else:
            _promote(n, Reason.MANUAL_PROMOTION, "promoted on request")
            return n.decision()

    if failures:
        first = (critical or failures)[0]
        _roll_back(n, FAILURE_REASONS.get(first.gate, Reason.ABORTED), _failure_message(first))
        return n.decision()

    if request is not None and request.kind is RequestKind.RETRY:
        if n.status.stage is Stage.PAUSED:
            message = "retry requested: the step's analysis starts again"
            n.update(stage=Stage.PROGRESSING, step_started_at=now, message=message)
            n.analysis(AnalysisState(observed_at=observations.at))
            n.condition(ConditionType.PROGRESSING, True, Reason.RETRIED, message)
            n.event(Reason.RETRIED, message)
            return n.decision()
        n.event(Reason.REQUEST_IGNORED, "retry ignored: the rollout is progressing")

    _progress(n, results)
    return n.decision()


def _progress(n: _Next, results: Sequence[GateResult]) -> None:
    """Advance, promote, wait or give up on the current step."""
    spec, status = n.spec, n.status
    steps = spec.traffic.steps
    step = steps[status.step_index]
    started = status.step_started_at or n.now
    elapsed = (n.now - started).total_seconds()
    last = status.step_index == len(steps) - 1
    # Optional gates without data are left out; a step needs at least one judging gate.
    skipped = [r for r in results if r.basis == SKIPPED]
    judged = [r for r in results if r.basis != SKIPPED]
    # A promotion needs every judging gate's Pass (on proof or on power); moving on to a
    # higher weight needs only that the evidence so far shows no harm.
    ready = (
        _overall(judged) is Verdict.PASS
        if last
        else bool(judged) and all(r.shows_no_harm for r in judged)
    )
    if ready and elapsed >= step.analysis_seconds:
        if skipped:
            n.event(
                Reason.GATE_SKIPPED,
                f"step {status.step_index + 1} "
                + _without(skipped)[2:]
                + ": "
                + "; ".join(f"{r.gate}: {r.message}" for r in skipped),
                warning=True,
            )
        if last:
            _promote(
                n, Reason.ALL_STEPS_PASSED, f"all {len(steps)} steps passed{_without(skipped)}"
            )
        else:
            if status.stage is Stage.PAUSED:
                n.event(Reason.ANALYSIS_RESUMED, "enough evidence arrived: the rollout resumes")
            _advance(n, _without(skipped))
        return
    deadline = step.analysis_seconds + spec.analysis.insufficient_data.max_extension_seconds
    # Gates with no data at all first: their message says which series are missing.
    waiting = sorted(
        (r for r in judged if r.verdict is Verdict.INCONCLUSIVE), key=lambda r: not r.no_data
    )
    reason = (
        Reason.GATE_WITHOUT_DATA if waiting and waiting[0].no_data else Reason.INSUFFICIENT_DATA
    )
    summary = "; ".join(f"{r.gate}: {r.message}" for r in waiting[:3])
    if elapsed < deadline or status.stage is Stage.PAUSED:
        if elapsed >= step.analysis_seconds and status.stage is Stage.PROGRESSING:
            n.condition(
                ConditionType.PROGRESSING,
                True,
                reason,
                f"step {status.step_index + 1} waits for data: {summary}",
            )
        return
    n.decided = True
    message = f"step {status.step_index + 1} still inconclusive after {elapsed:.0f}s: {summary}"
    if spec.analysis.insufficient_data.action == "Rollback":
        _roll_back(n, reason, message)
        return
    n.update(stage=Stage.PAUSED, message=message)
    n.condition(ConditionType.PROGRESSING, False, reason, message)
    n.event(reason, message, warning=True)
