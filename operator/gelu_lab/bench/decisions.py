"""Decision-quality benchmark: the same scenarios through several policies, side by side."""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gelu_lab.bench.policies.base import Outcome, Policy
from gelu_lab.bench.policies.flagger import FlaggerStylePolicy
from gelu_lab.bench.policies.gelu import START, GeluRolloutPolicy
from gelu_lab.bench.policies.kayenta import KayentaStylePolicy
from gelu_lab.bench.replay import Replay
from gelu_lab.bench.scenario import Scenario

# The goals for our policy (issue 10, "Done means"), checked and printed with every run.
GOAL_HEALTHY_WITHIN_PLAN_WHERE_FEASIBLE = 0.95
GOAL_FALSE_ROLLBACK_RATE = 0.01
GOAL_SEVERE_DETECTION = 0.99
GOAL_SEVERE_MEDIAN_DELAY = 1.0
GOAL_SEVERE_P90_DELAY = 3.0
GOAL_MODERATE_DETECTION = 0.90
LATENCY_FAULT_PREFIXES = ("latency-", "tail-")


def default_policies() -> list[Policy]:
    return [GeluRolloutPolicy(), FlaggerStylePolicy(), KayentaStylePolicy()]


@dataclass(frozen=True)
class Run:
    """One scenario's outcome under each policy."""

    scenario: Scenario
    outcomes: dict[str, Outcome]
    seconds: dict[str, float] = field(default_factory=dict)  # per policy, wall time
    silent: bool = False
    """The fault left no trace in the plan's data (:func:`silent_fault`)."""


def silent_fault(scenario: Scenario) -> bool:
    """Whether a non-finite fault of an adaptive stream never showed: no candidate output
    was non-finite in the planned ticks at the plan's weights (at 1 in 100,000 outputs and
    light traffic the first NaN may come hours later). No policy can see such a fault in
    the plan's time; the benchmark reports detection without these too."""
    model = scenario.model
    if scenario.expected != "rollback" or model is None:
        return False
    if not any(tick.candidate.nonfinite_rate > 0 for tick in model.ticks):
        return False
    replay = Replay(scenario, START)
    planned = min(scenario.planned_ticks, len(replay))
    return all(not replay.observe(tick)[1].nonfinite for tick in range(planned))


def _run_one(args: tuple[Scenario, Sequence[Policy]]) -> Run:
    scenario, policies = args
    outcomes: dict[str, Outcome] = {}
    seconds: dict[str, float] = {}
    for policy in policies:
        started = time.perf_counter()
        outcomes[policy.name] = policy.run(scenario)
        seconds[policy.name] = time.perf_counter() - started
    return Run(scenario, outcomes, seconds, silent_fault(scenario))


def run_scenarios(
    scenarios: Sequence[Scenario], policies: Sequence[Policy], workers: int | None = None
) -> list[Run]:
    """Every policy on every scenario; in parallel processes when ``workers`` > 1."""
    workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
    jobs = [(s, policies) for s in scenarios]
    if workers <= 1 or len(jobs) < 20:
        return [_run_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _detected(scenario: Scenario, outcome: Outcome) -> bool:
    """Rolled back at or after the fault's onset (earlier is not a detection of it)."""
    onset = scenario.fault_onset_tick or 0
    return outcome.decision == "rollback" and outcome.tick is not None and outcome.tick >= onset


def _within_plan(scenario: Scenario, outcome: Outcome) -> bool:
    """Promoted at or before the last planned tick."""
    return (
        outcome.decision == "promote"
        and outcome.tick is not None
        and outcome.tick < scenario.planned_ticks
    )


def family_of(scenario: Scenario) -> str:
    return scenario.labels.get("family", "unlabelled")


def traffic_of(scenario: Scenario) -> str:
    return f"{family_of(scenario)} {scenario.labels.get('traffic', 'unlabelled')}"


def _healthy_group(name: str, runs: Sequence[Run]) -> dict[str, Any]:
    outcomes = [r.outcomes[name] for r in runs]
    return {
        "scenarios": len(runs),
        "promoted_within_plan": _rate(
            sum(_within_plan(r.scenario, r.outcomes[name]) for r in runs), len(runs)
        ),
        "promoted": _rate(sum(o.decision == "promote" for o in outcomes), len(runs)),
        "rolled_back": _rate(sum(o.decision == "rollback" for o in outcomes), len(runs)),
        "still_waiting": _rate(sum(o.decision == "stalled" for o in outcomes), len(runs)),
        "plan_feasible": _rate(sum(o.plan_feasible is True for o in outcomes), len(runs))
        if any(o.plan_feasible is not None for o in outcomes)
        else None,
    }


def summarize_policy(name: str, runs: Sequence[Run], *, families: bool = True) -> dict[str, Any]:
    """Every figure of one policy over ``runs`` (and per family, when ``families``)."""
    healthy = [r for r in runs if r.scenario.expected == "promote"]
    faulty = [r for r in runs if r.scenario.expected == "rollback"]
    decisions = {
        kind: sum(1 for r in healthy if r.outcomes[name].decision == kind)
        for kind in ("promote", "rollback", "stalled")
    }
    by_kind: dict[str, list[Run]] = defaultdict(list)
    by_severity: dict[str, list[Run]] = defaultdict(list)
    by_buckets: dict[str, list[Run]] = defaultdict(list)
    for r in faulty:
        by_kind[r.scenario.kind].append(r)
        by_severity[r.scenario.severity].append(r)
        if r.scenario.kind.startswith(LATENCY_FAULT_PREFIXES):
            by_buckets[r.scenario.labels.get("latencyBuckets", "unlabelled")].append(r)
    by_traffic: dict[str, list[Run]] = defaultdict(list)
    for r in healthy:
        by_traffic[traffic_of(r.scenario)].append(r)

    def delays(group: Sequence[Run]) -> list[float]:
        return [
            float((r.outcomes[name].tick or 0) - (r.scenario.fault_onset_tick or 0))
            for r in group
            if _detected(r.scenario, r.outcomes[name])
        ]

    def detection(group: Sequence[Run]) -> float | None:
        return _rate(sum(_detected(r.scenario, r.outcomes[name]) for r in group), len(group))

    promote_ratios = [
        ((r.outcomes[name].tick or 0) + 1) / r.scenario.planned_ticks
        for r in healthy
        if r.outcomes[name].decision == "promote"
    ]
    feasible = [r for r in healthy if r.outcomes[name].plan_feasible is True]
    infeasible = [r for r in healthy if r.outcomes[name].plan_feasible is False]
    said = bool(feasible or infeasible)
    severe_delays = delays(by_severity["severe"])
    moderate_delays = delays(by_severity["moderate"])
    summary: dict[str, Any] = {
        "false_rollback_rate": _rate(decisions["rollback"], len(healthy)),
        "healthy_promoted_within_plan_rate": _rate(
            sum(_within_plan(r.scenario, r.outcomes[name]) for r in healthy), len(healthy)
        ),
        "healthy_promoted_rate": _rate(decisions["promote"], len(healthy)),
        "healthy_stalled_rate": _rate(decisions["stalled"], len(healthy)),
        "median_promote_time_ratio": _median(promote_ratios),
        "p90_promote_time_ratio": _percentile(promote_ratios, 90),
        "plan_feasible_rate": _rate(len(feasible), len(healthy)) if said else None,
        "healthy_promoted_within_plan_where_feasible_rate": (
            _rate(sum(_within_plan(r.scenario, r.outcomes[name]) for r in feasible), len(feasible))
            if said
            else None
        ),
        "healthy_rolled_back_where_infeasible": (
            sum(r.outcomes[name].decision == "rollback" for r in infeasible) if said else None
        ),
        "severe_detection_rate": detection(by_severity["severe"]),
        "severe_detection_rate_where_shown": detection(
            [r for r in by_severity["severe"] if not r.silent]
        ),
        "silent_faults": sum(r.silent for r in faulty),
        "moderate_detection_rate": detection(by_severity["moderate"]),
        "minor_detection_rate": detection(by_severity["minor"]),
        "median_delay_ticks_severe": _median(severe_delays),
        "p90_delay_ticks_severe": _percentile(severe_delays, 90),
        "median_delay_ticks_moderate": _median(moderate_delays),
        "p90_delay_ticks_moderate": _percentile(moderate_delays, 90),
        "faulty_promoted_rate": _rate(
            sum(r.outcomes[name].decision == "promote" for r in faulty), len(faulty)
        ),
        "faulty_stalled_rate": _rate(
            sum(r.outcomes[name].decision == "stalled" for r in faulty), len(faulty)
        ),
        "rollback_before_onset": sum(
            r.outcomes[name].decision == "rollback" and not _detected(r.scenario, r.outcomes[name])
            for r in faulty
        ),
        "detection_rate_by_fault": {
            kind: detection(group) for kind, group in sorted(by_kind.items())
        },
        "median_delay_ticks_by_fault": {
            kind: _median(delays(group)) for kind, group in sorted(by_kind.items())
        },
        "p90_delay_ticks_by_fault": {
            kind: _percentile(delays(group), 90) for kind, group in sorted(by_kind.items())
        },
        "healthy_by_traffic": {
            level: _healthy_group(name, group) for level, group in sorted(by_traffic.items())
        },
        "latency_detection_by_buckets": {
            layout: detection(group) for layout, group in sorted(by_buckets.items())
        },
    }
    if families:
        grouped: dict[str, list[Run]] = defaultdict(list)
        for r in runs:
            grouped[family_of(r.scenario)].append(r)
        summary["by_family"] = {
            family: summarize_policy(name, group, families=False)
            for family, group in sorted(grouped.items())
        }
    return summary


HIGHER_IS_BETTER = (
    "severe_detection_rate",
    "moderate_detection_rate",
    "healthy_promoted_rate",
    "healthy_promoted_within_plan_rate",
)
LOWER_IS_BETTER = (
    "false_rollback_rate",
    "median_delay_ticks_severe",
    "p90_delay_ticks_severe",
    "faulty_promoted_rate",
)


def _fault_rates(summary: dict[str, Any]) -> dict[str, float | None]:
    """Detection per fault kind, overall and per family (``family/kind``)."""
    rates: dict[str, float | None] = dict(summary["detection_rate_by_fault"])
    for family, figures in summary.get("by_family", {}).items():
        for kind, rate in figures["detection_rate_by_fault"].items():
            rates[f"{family}/{kind}"] = rate
    return rates


def worse_figures(ours: dict[str, Any], others: dict[str, dict[str, Any]]) -> list[str]:
    """Every figure, per fault kind too, on which a reference policy beats ours."""
    found: list[str] = []

    def compare(
        label: str, mine: float | None, theirs: float | None, higher: bool, who: str
    ) -> None:
        if theirs is None:
            return
        if mine is None or (mine < theirs if higher else mine > theirs):
            shown = "-" if mine is None else f"{mine:.3g}"
            found.append(f"{label}: {shown} vs {who} {theirs:.3g}")

    for who, theirs in others.items():
        for key in HIGHER_IS_BETTER:
            compare(key, ours.get(key), theirs.get(key), True, who)
        for key in LOWER_IS_BETTER:
            compare(key, ours.get(key), theirs.get(key), False, who)
        mine = _fault_rates(ours)
        for kind, rate in _fault_rates(theirs).items():
            compare(f"detection_rate_by_fault[{kind}]", mine.get(kind), rate, True, who)
    return found


def fault_kinds_behind(ours: dict[str, Any], others: dict[str, dict[str, Any]]) -> list[str]:
    """Fault kinds (overall, and per family) on which a reference policy detects more."""
    mine = _fault_rates(ours)
    behind: list[str] = []
    for who, theirs in others.items():
        for kind, rate in _fault_rates(theirs).items():
            if rate is None:
                continue
            ours_rate = mine.get(kind)
            if ours_rate is None or ours_rate < rate:
                shown = "-" if ours_rate is None else f"{ours_rate:.3g}"
                behind.append(f"{kind}: {shown} vs {who} {rate:.3g}")
    return behind


def goals(ours: dict[str, Any], others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The goals for our policy, each True or False (None: not measurable in this run), and
    where a reference does better."""

    def at_most(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    def at_least(value: float | None, limit: float) -> bool:
        return value is not None and value >= limit

    where_feasible = ours.get("healthy_promoted_within_plan_where_feasible_rate")
    infeasible_rollbacks = ours.get("healthy_rolled_back_where_infeasible")
    behind = fault_kinds_behind(ours, others)
    return {
        "healthy_within_plan_where_feasible_at_least_95pct": (
            None
            if ours.get("plan_feasible_rate") is None
            else at_least(where_feasible, GOAL_HEALTHY_WITHIN_PLAN_WHERE_FEASIBLE)
        ),
        "no_rollback_where_plan_infeasible": (
            None if infeasible_rollbacks is None else infeasible_rollbacks == 0
        ),
        "false_rollbacks_at_most_1pct": at_most(
            ours["false_rollback_rate"], GOAL_FALSE_ROLLBACK_RATE
        ),
        "severe_detection_at_least_99pct": at_least(
            ours["severe_detection_rate"], GOAL_SEVERE_DETECTION
        ),
        "severe_median_delay_at_most_1_tick": at_most(
            ours["median_delay_ticks_severe"], GOAL_SEVERE_MEDIAN_DELAY
        ),
        "severe_p90_delay_at_most_3_ticks": at_most(
            ours["p90_delay_ticks_severe"], GOAL_SEVERE_P90_DELAY
        ),
        "moderate_detection_at_least_90pct": at_least(
            ours["moderate_detection_rate"], GOAL_MODERATE_DETECTION
        ),
        "no_fault_kind_where_a_reference_detects_more": not behind,
        "fault_kinds_behind_a_reference": behind,
        "worse_than_a_reference_on": worse_figures(ours, others),
    }


def benchmark(
    scenarios: Sequence[Scenario],
    policies: Sequence[Policy] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its report (the JSON the CLI writes)."""
    chosen = list(policies) if policies is not None else default_policies()
    workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
    started = time.perf_counter()
    runs = run_scenarios(scenarios, chosen, workers)
    seconds = time.perf_counter() - started
    summaries = {p.name: summarize_policy(p.name, runs) for p in chosen}
    for p in chosen:
        summaries[p.name]["parameters"] = p.parameters()
        # Time in the policy, summed over workers; the first policy run on a scenario also
        # pays for realising the adaptive stream at the weights it visits.
        summaries[p.name]["seconds"] = round(sum(r.seconds.get(p.name, 0.0) for r in runs), 2)
    report: dict[str, Any] = {
        "scenarios": len(scenarios),
        "families": {
            family: sum(family_of(s) == family for s in scenarios)
            for family in sorted({family_of(s) for s in scenarios})
        },
        "healthy": sum(s.expected == "promote" for s in scenarios),
        "faulty": sum(s.expected == "rollback" for s in scenarios),
        "faults": sorted({s.kind for s in scenarios if s.expected == "rollback"}),
        "seconds": round(seconds, 2),
        "workers": workers,
        "policies": summaries,
    }
    ours = GeluRolloutPolicy.name
    if ours in summaries:
        report["goals"] = goals(summaries[ours], {k: v for k, v in summaries.items() if k != ours})
    return report
