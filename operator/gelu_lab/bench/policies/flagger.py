"""Reference policy: Flagger's canary analysis, replayed tick by tick.

What it imitates, and from which sources (fluxcd/flagger):

* ``pkg/controller/scheduler.go`` (``advanceCanary``): at every ``interval`` Flagger runs
  the analysis; if any check fails it increments ``status.failedChecks`` by one and
  halts advancement for that interval; once ``failedChecks >= analysis.threshold`` the
  canary is rolled back. ``failedChecks`` is never reset during an analysis (only a new
  revision resets it), so failures need not be consecutive. When the canary weight has
  reached ``maxWeight`` and an interval's analysis passes, the canary is promoted.
* ``pkg/controller/scheduler_metrics.go`` (``runBuiltinMetricChecks``,
  ``runMetricChecks``): each metric is queried over its ``interval`` and compared with a
  fixed ``thresholdRange`` (``val < min`` or ``val > max`` fails); a query error or
  ``ErrNoValuesFound`` (a NaN result such as 0/0 when the target gets no traffic) fails
  the check too ("Halt advancement no values found ..."). Builtin metrics are checked
  before metric templates, and the first failing metric ends the interval's analysis,
  so an interval adds at most one to ``failedChecks``.

Configuration, as Flagger's documentation and examples set it up, with the SLO of the
scenario as the thresholds (``interval`` and every metric's ``interval`` = one tick, so a
check only sees the increments of that tick):

* ``request-success-rate`` (builtin, candidate only): ``thresholdRange.min`` =
  ``availability x 100`` percent; no values when the candidate had no requests;
* ``request-duration`` (builtin, candidate P99 in ms): ``thresholdRange.max`` = the P99
  ceiling. Flagger's builtin is ``histogram_quantile(0.99, sum(rate(<mesh>_bucket
  [interval])) by (le))``: where the scenario has a request-duration histogram it is
  computed so over the interval's buckets (Prometheus' interpolation, the highest finite
  edge when the quantile falls in ``+Inf``); without one, the scenario's P99 is used. No
  values when the interval has no candidate request in the histogram, or no P99;
* ``nonfinite-outputs`` (metric template, ``sum(increase(...[interval]))`` for the
  candidate): ``thresholdRange.max`` = 0;
* ``output-kl-divergence`` (metric template): KL(baseline || candidate) of the two arms'
  output-histogram increments over the interval, each bucket smoothed with a
  pseudo-count of 0.5 (``(n_i + 0.5) / (N + 0.5 K)``, natural log),
  ``thresholdRange.max`` = 0.01. The query is guarded the way a careful user writes it
  (``... and on() sum(increase(<count>[interval])) > 0`` for both arms), so an arm with no
  requests or no histogram observations in the interval gives "no values found"
  rather than a divergence against a flat, made-up distribution;
* ``threshold`` = 5 (the value in Flagger's examples).

Replay differences, kept so that the policy stays as documented:

* In Flagger a failed interval holds the weight, stretching the rollout; here the plan's
  schedule goes on regardless and the failed interval is only counted (the replay would
  allow holding the weight on an adaptive stream; the policy follows the plan's weights,
  as it did on fixed streams).
* Flagger notices ``failedChecks >= threshold`` at the start of its next run, one
  interval later; this policy decides at the end of the tick in which the threshold is
  reached (the earliest tick at which Flagger is committed to the rollback).
* The promotion happens at the last planned tick when its interval passes. If that
  interval fails, the policy keeps analysing any further ticks in the scenario (held at
  the final weight, as Flagger would be) and promotes at the first passing one, rolls
  back at ``threshold``, or ends ``stalled`` if the scenario runs out first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from gelu_lab.bench.policies.base import Outcome
from gelu_lab.bench.policies.promql import request_duration_p99
from gelu_lab.bench.replay import Replay
from gelu_lab.bench.scenario import Scenario
from gelu_rollout.analysis.observations import ArmObservation

START = datetime(2026, 1, 1, tzinfo=UTC)


def kl_divergence(
    baseline: Sequence[float], candidate: Sequence[float], pseudo_count: float = 0.5
) -> float:
    """KL(baseline || candidate) of two bucket-count vectors, each smoothed by ``pseudo_count``."""
    if len(baseline) != len(candidate):
        raise ValueError("histograms must have the same buckets")
    buckets = len(baseline)
    p_total = float(sum(baseline)) + pseudo_count * buckets
    q_total = float(sum(candidate)) + pseudo_count * buckets
    divergence = 0.0
    for p_count, q_count in zip(baseline, candidate, strict=True):
        p = (p_count + pseudo_count) / p_total
        q = (q_count + pseudo_count) / q_total
        if p > 0:
            divergence += p * math.log(p / q)
    return max(divergence, 0.0)


class FlaggerStylePolicy:
    """Flagger's per-interval threshold checks with a cumulative ``failedChecks`` counter."""

    name = "flagger-style"

    def __init__(
        self,
        threshold: int = 5,
        nonfinite_max: float = 0.0,
        kl_max: float = 0.01,
        kl_pseudo_count: float = 0.5,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if nonfinite_max < 0 or kl_max < 0:
            raise ValueError("nonfinite_max and kl_max must be >= 0")
        if not kl_pseudo_count > 0:
            raise ValueError(f"kl_pseudo_count must be > 0, got {kl_pseudo_count}")
        self.threshold = threshold
        self.nonfinite_max = nonfinite_max
        self.kl_max = kl_max
        self.kl_pseudo_count = kl_pseudo_count

    def parameters(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "interval": "1 tick (every metric's interval too)",
            "request-success-rate": "min = scenario availability SLO x 100 (percent)",
            "request-duration": (
                "max = scenario P99 ceiling (ms); histogram_quantile(0.99) over the interval's "
                "latency buckets where a histogram exists, else the scenario's P99"
            ),
            "nonfinite_max": self.nonfinite_max,
            "kl_max": self.kl_max,
            "kl_pseudo_count": self.kl_pseudo_count,
        }

    def thresholds(self, scenario: Scenario) -> dict[str, dict[str, float]]:
        """The ``thresholdRange`` of every metric for this scenario's SLO."""
        return {
            "request-success-rate": {"min": scenario.availability_slo * 100.0},
            "request-duration": {"max": scenario.latency_p99_ceiling_ms},
            "nonfinite-outputs": {"max": self.nonfinite_max},
            "output-kl-divergence": {"max": self.kl_max},
        }

    def check_interval(
        self, scenario: Scenario, baseline: ArmObservation, candidate: ArmObservation
    ) -> str | None:
        """Run the interval's checks in Flagger's order; the first failure's message, or None."""
        if not candidate.requests > 0:
            return "no values found for request-success-rate (candidate received no traffic)"
        success_rate = (candidate.requests - candidate.failures) / candidate.requests * 100.0
        minimum = scenario.availability_slo * 100.0
        if success_rate < minimum:
            return f"success rate {success_rate:.4f}% < {minimum:g}%"

        duration = request_duration_p99(candidate)
        if duration is None:
            return "no values found for request-duration (no candidate P99 in the interval)"
        ceiling = scenario.latency_p99_ceiling_ms
        if duration > ceiling:
            return f"request duration {duration:g}ms > {ceiling:g}ms"

        if (candidate.nonfinite or 0.0) > self.nonfinite_max:
            return f"nonfinite-outputs {candidate.nonfinite:g} > {self.nonfinite_max:g}"

        if not (
            baseline.requests > 0 and sum(baseline.histogram) > 0 and sum(candidate.histogram) > 0
        ):
            return "no values found for output-kl-divergence (an arm has no observations)"
        divergence = kl_divergence(baseline.histogram, candidate.histogram, self.kl_pseudo_count)
        if divergence > self.kl_max:
            return f"output-kl-divergence {divergence:.4f} > {self.kl_max:g}"
        return None

    def run(self, scenario: Scenario) -> Outcome:
        last_planned = scenario.planned_ticks - 1
        failed_checks = 0
        replay = Replay(scenario, START)
        for tick in range(len(replay)):
            baseline, candidate = replay.observe(tick)  # at the plan's weight
            problem = self.check_interval(scenario, baseline, candidate)
            if problem is not None:
                failed_checks += 1
                if failed_checks >= self.threshold:
                    return Outcome(
                        "rollback",
                        tick,
                        f"failedChecks {failed_checks} reached threshold {self.threshold}: "
                        f"{problem}",
                    )
                continue
            if tick >= last_planned:
                return Outcome(
                    "promote",
                    tick,
                    f"analysis passed at the final weight ({failed_checks} failed checks "
                    f"< threshold {self.threshold})",
                )
        return Outcome(
            "stalled",
            None,
            f"scenario ended with {failed_checks} failed checks and no passing final interval",
        )
