"""Decision-quality benchmark: the same scenarios through several policies, side by side."""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from gelu_lab.bench.policies.base import Outcome, Policy
from gelu_lab.bench.policies.flagger import FlaggerStylePolicy
from gelu_lab.bench.policies.gelu import GeluRolloutPolicy
from gelu_lab.bench.policies.kayenta import KayentaStylePolicy
from gelu_lab.bench.scenario import Scenario

# The goals for our policy, checked and printed with every run.
GOAL_FALSE_ROLLBACK_RATE = 0.01
GOAL_SEVERE_DETECTION = 0.99
GOAL_SEVERE_MEDIAN_DELAY = 2.0
GOAL_MODERATE_DETECTION = 0.90


def default_policies() -> list[Policy]:
    return [GeluRolloutPolicy(), FlaggerStylePolicy(), KayentaStylePolicy()]


@dataclass(frozen=True)
class Run:
    """One scenario's outcome under each policy."""

    scenario: Scenario
    outcomes: dict[str, Outcome]


def _run_one(args: tuple[Scenario, Sequence[Policy]]) -> Run:
    scenario, policies = args
    return Run(scenario, {p.name: p.run(scenario) for p in policies})


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


def _detected(scenario: Scenario, outcome: Outcome) -> bool:
    """Rolled back at or after the fault's onset (earlier is not a detection of it)."""
    onset = scenario.fault_onset_tick or 0
    return outcome.decision == "rollback" and outcome.tick is not None and outcome.tick >= onset


def summarize_policy(name: str, runs: Sequence[Run]) -> dict[str, Any]:
    healthy = [r for r in runs if r.scenario.expected == "promote"]
    faulty = [r for r in runs if r.scenario.expected == "rollback"]
    decisions = {
        kind: sum(1 for r in healthy if r.outcomes[name].decision == kind)
        for kind in ("promote", "rollback", "stalled")
    }
    by_kind: dict[str, list[Run]] = defaultdict(list)
    by_severity: dict[str, list[Run]] = defaultdict(list)
    for r in faulty:
        by_kind[r.scenario.kind].append(r)
        by_severity[r.scenario.severity].append(r)

    def delays(group: Sequence[Run]) -> list[float]:
        return [
            float((r.outcomes[name].tick or 0) - (r.scenario.fault_onset_tick or 0))
            for r in group
            if _detected(r.scenario, r.outcomes[name])
        ]

    def detection(group: Sequence[Run]) -> float | None:
        return _rate(sum(_detected(r.scenario, r.outcomes[name]) for r in group), len(group))

    severe_delays = delays(by_severity["severe"])
    moderate_delays = delays(by_severity["moderate"])
    return {
        "false_rollback_rate": _rate(decisions["rollback"], len(healthy)),
        "healthy_promoted_rate": _rate(decisions["promote"], len(healthy)),
        "healthy_stalled_rate": _rate(decisions["stalled"], len(healthy)),
        "severe_detection_rate": detection(by_severity["severe"]),
        "moderate_detection_rate": detection(by_severity["moderate"]),
        "minor_detection_rate": detection(by_severity["minor"]),
        "median_delay_ticks_severe": statistics.median(severe_delays) if severe_delays else None,
        "p90_delay_ticks_severe": _percentile(severe_delays, 90),
        "median_delay_ticks_moderate": statistics.median(moderate_delays)
        if moderate_delays
        else None,
        "p90_delay_ticks_moderate": _percentile(moderate_delays, 90),
        "faulty_promoted_rate": _rate(
            sum(r.outcomes[name].decision == "promote" for r in faulty), len(faulty)
        ),
        "rollback_before_onset": sum(
            r.outcomes[name].decision == "rollback" and not _detected(r.scenario, r.outcomes[name])
            for r in faulty
        ),
        "detection_rate_by_fault": {
            kind: detection(group) for kind, group in sorted(by_kind.items())
        },
        "median_delay_ticks_by_fault": {
            kind: (statistics.median(d) if (d := delays(group)) else None)
            for kind, group in sorted(by_kind.items())
        },
    }


HIGHER_IS_BETTER = ("severe_detection_rate", "moderate_detection_rate", "healthy_promoted_rate")
LOWER_IS_BETTER = (
    "false_rollback_rate",
    "median_delay_ticks_severe",
    "p90_delay_ticks_severe",
    "faulty_promoted_rate",
)


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
            compare(key, ours[key], theirs[key], True, who)
        for key in LOWER_IS_BETTER:
            compare(key, ours[key], theirs[key], False, who)
        for kind, rate in theirs["detection_rate_by_fault"].items():
            mine = ours["detection_rate_by_fault"].get(kind)
            compare(f"detection_rate_by_fault[{kind}]", mine, rate, True, who)
    return found


def goals(ours: dict[str, Any], others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The goals for our policy, each True or False, and where a reference does better."""

    def at_most(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    def at_least(value: float | None, limit: float) -> bool:
        return value is not None and value >= limit

    worse = worse_figures(ours, others)
    return {
        "false_rollbacks_at_most_1pct": at_most(
            ours["false_rollback_rate"], GOAL_FALSE_ROLLBACK_RATE
        ),
        "severe_detection_at_least_99pct": at_least(
            ours["severe_detection_rate"], GOAL_SEVERE_DETECTION
        ),
        "severe_median_delay_at_most_2_ticks": at_most(
            ours["median_delay_ticks_severe"], GOAL_SEVERE_MEDIAN_DELAY
        ),
        "moderate_detection_at_least_90pct": at_least(
            ours["moderate_detection_rate"], GOAL_MODERATE_DETECTION
        ),
        "no_worse_than_references": not worse,
        "worse_than_a_reference_on": worse,
    }


def benchmark(
    scenarios: Sequence[Scenario],
    policies: Sequence[Policy] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its report (the JSON the CLI writes)."""
    chosen = list(policies) if policies is not None else default_policies()
    started = time.perf_counter()
    runs = run_scenarios(scenarios, chosen, workers)
    seconds = time.perf_counter() - started
    summaries = {p.name: summarize_policy(p.name, runs) for p in chosen}
    for p in chosen:
        summaries[p.name]["parameters"] = p.parameters()
    report: dict[str, Any] = {
        "scenarios": len(scenarios),
        "healthy": sum(s.expected == "promote" for s in scenarios),
        "faulty": sum(s.expected == "rollback" for s in scenarios),
        "faults": sorted({s.kind for s in scenarios if s.expected == "rollback"}),
        "seconds": round(seconds, 2),
        "policies": summaries,
    }
    ours = GeluRolloutPolicy.name
    if ours in summaries:
        report["goals"] = goals(summaries[ours], {k: v for k, v in summaries.items() if k != ours})
    return report
