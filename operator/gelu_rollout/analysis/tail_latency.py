"""Tail latency from histogram buckets: a count test of the requests above bucket edges.

Where a latency histogram exists (a Gateway's or mesh's request-duration ``_bucket`` series,
per arm), the tail is judged from counts, not from a per-tick P99 estimate:

* For a baseline edge ``e_b`` near the baseline's P99 (and one near its P95), take the
  candidate edge ``e_c``, the smallest bucket edge at or above ``(1 + maxRegression) e_b``.
  If the candidate is no slower than ``(1 + maxRegression)`` x the baseline (in the tail's
  stochastic order), a candidate request exceeds ``e_c`` no more often than a baseline
  request exceeds ``e_b``: ``q_c(e_c) <= q_b(e_b)``. No shape is assumed: it holds for any
  latency distribution, and coarse buckets only make it more conservative.
* Requests above their edge arrive in both arms as Poisson processes whose rates are the
  arm's request count times its exceedance probability. Given the tick's total exceedances,
  the candidate's share is binomial with success probability
  ``theta n_c / (theta n_c + n_b)``, ``theta = q_c / q_b``: load shared by both arms cancels
  (Lindon and Malek, "Anytime-valid inference for multinomial count data", NeurIPS 2022).
* The null is ``theta <= 1``. Each tick multiplies, for each alternative ``theta`` in
  :data:`RATIO_ALTERNATIVES`, the likelihood ratio against ``theta = 1``; the binomial family
  has a monotone likelihood ratio, so each product is a test supermartingale under every
  ``theta <= 1``, and so is their average (a mixture e-value), for any sequence of request
  counts and traffic shares. The edges are chosen from the baseline's counts *before* the
  tick, so the choice is predictable and the product stays valid as the edges move.

The per-quantile processes are averaged (an average of e-values is an e-value). A tail-only
regression shows at the P99 edge while the median stays put.

Two changes make the test a detector of regressions that begin mid-rollout, at a bounded cost:

* **A cap per tick.** Each tick's log likelihood ratio is capped at :func:`tick_cap`; a factor
  capped from above still has expectation at most one under the null. One bad tick (a GC
  pause, a restart) cannot reject alone from a neutral start; two ticks of a gross regression
  (5x) can.
* **A floor.** Healthy ticks drive the ratios of large alternatives far below one, and a
  regression that starts later would first have to climb back. Each alternative's product is
  therefore floored at ``eps_t = c / ((t + 2) (t + 3))`` at its ``t``-th tick (``c`` is
  :data:`FLOOR_MASS`; the shift keeps the floor below one from the first tick, so it gives no
  head start). Then ``E[W_t | past] <= W_{t-1} + eps_t`` under the null, so
  ``W_t + c / (t + 3)`` is a non-negative supermartingale starting at ``1 + c / 3``, and by
  Ville's inequality the floored product reaches ``(1 + c / 3) / alpha`` with probability at
  most ``alpha``: the floor costs that factor in the threshold (:data:`FLOOR_COST`), and keeps
  a regression that starts a dozen ticks into a step to two ticks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

TAIL_QUANTILES: tuple[float, ...] = (0.9, 0.95, 0.99)
"""Baseline quantiles whose nearest bucket edges anchor the tests."""

RATIO_ALTERNATIVES: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
"""Exceedance-rate ratios (candidate over baseline) the e-value mixes over, equal weights."""

FLOOR_MASS = 3.0
"""The floor's total mass ``c`` (see the module's docstring)."""
FLOOR_COST = 1.0 + FLOOR_MASS / 3.0
"""The floored test rejects at ``FLOOR_COST / alpha``."""

MIN_BASELINE_REQUESTS = 50.0
"""Baseline requests seen before the edges are chosen: below, a P99 edge is a guess."""


@dataclass(frozen=True)
class LatencyHistogram:
    """Per-bucket request counts of one arm over one tick.

    ``edges`` are the buckets' upper bounds in milliseconds, increasing and finite (the
    Prometheus ``le`` labels without ``+Inf``); ``counts`` has one more entry than ``edges``:
    the requests in each bucket (not le-cumulative), the last above the last edge.
    """

    edges: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.edges)} edges")

    @property
    def requests(self) -> float:
        return float(sum(self.counts))

    def above(self, edge_index: int) -> float:
        """Requests slower than ``edges[edge_index]``."""
        return float(sum(self.counts[edge_index + 1 :]))

    def add(self, other: LatencyHistogram) -> LatencyHistogram:
        if other.edges != self.edges:
            raise ValueError("latency histograms with different bucket edges cannot be added")
        return LatencyHistogram(
            self.edges, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        )

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated log-linearly within its bucket (None when empty,
        or when it lies above the last edge)."""
        total = self.requests
        if total <= 0:
            return None
        target = q * total
        seen = 0.0
        for index, count in enumerate(self.counts[:-1]):
            if seen + count >= target and count > 0:
                upper = self.edges[index]
                lower = self.edges[index - 1] if index > 0 else upper / 2.0
                share = (target - seen) / count
                return float(math.exp(math.log(lower) + share * math.log(upper / lower)))
            seen += count
        return None

    def fraction_above(self, value: float) -> float:
        """Share of requests slower than ``value``, interpolated log-linearly within its
        bucket (the bucket above the last edge counts as wholly above)."""
        total = self.requests
        if total <= 0:
            return 0.0
        above = 0.0
        for index, count in enumerate(self.counts):
            upper = self.edges[index] if index < len(self.edges) else math.inf
            lower = self.edges[index - 1] if index > 0 else upper / 2.0
            if value < lower:
                above += count
            elif value < upper and math.isfinite(upper):
                above += count * math.log(upper / value) / math.log(upper / lower)
            elif not math.isfinite(upper):
                above += count
        return above / total

    def to_list(self) -> list[float]:
        return [float(c) for c in self.counts]


def histogram_problem(histogram: LatencyHistogram) -> str | None:
    """Why a latency histogram cannot be used, or None."""
    if not histogram.edges:
        return "the latency histogram has no finite bucket edge"
    if any(not math.isfinite(e) or e <= 0 for e in histogram.edges):
        return "a latency bucket edge is not a positive number"
    if any(b <= a for a, b in zip(histogram.edges, histogram.edges[1:], strict=False)):
        return "latency bucket edges are not increasing"
    if any(not math.isfinite(c) or c < 0 for c in histogram.counts):
        return "a latency bucket count is negative or not finite"
    return None


def edge_pairs(
    baseline: LatencyHistogram, max_regression: float, quantiles: Sequence[float] = TAIL_QUANTILES
) -> tuple[tuple[int, int], ...]:
    """(baseline edge, candidate edge) indices for each quantile, from the baseline's counts.

    The baseline edge is the edge nearest (in log scale) to the baseline's quantile; the
    candidate edge the first at or above ``(1 + max_regression)`` times it. A quantile whose
    candidate edge would lie above the last edge has no pair.
    """
    if baseline.requests < MIN_BASELINE_REQUESTS:
        return ()
    edges = np.asarray(baseline.edges)
    pairs: list[tuple[int, int]] = []
    for q in quantiles:
        value = baseline.quantile(q)
        if value is None:
            continue
        low = int(np.argmin(np.abs(np.log(edges / value))))
        wanted = (1.0 + max_regression) * edges[low] * (1.0 - 1e-12)
        high = int(np.searchsorted(edges, wanted, side="left"))
        if high < len(edges) and (low, high) not in pairs:
            pairs.append((low, high))
    return tuple(pairs)


def tick_log_ratios(
    candidate_above: float,
    candidate_requests: float,
    baseline_above: float,
    baseline_requests: float,
) -> NDArray[np.float64]:
    """Per alternative, the log likelihood ratio of one tick's exceedance counts against
    ``theta = 1`` (zero when the tick holds no exceedance or an arm no requests)."""
    ratios = np.asarray(RATIO_ALTERNATIVES)
    if candidate_requests <= 0 or baseline_requests <= 0:
        return np.zeros(len(ratios))
    p0 = candidate_requests / (candidate_requests + baseline_requests)
    p = ratios * candidate_requests / (ratios * candidate_requests + baseline_requests)
    return np.asarray(
        candidate_above * np.log(p / p0) + baseline_above * (np.log1p(-p) - math.log1p(-p0))
    )


def mixture_log_evalue(log_ratios: Sequence[float]) -> float:
    """The equal-weight mixture of the alternatives' accumulated log likelihood ratios."""
    if not log_ratios:
        return 0.0
    return float(special.logsumexp(np.asarray(log_ratios)) - math.log(len(log_ratios)))


@dataclass(frozen=True)
class TailEvidence:
    """One segment's tail test: per quantile, the accumulated log likelihood ratios, and the
    exceedances and requests behind them."""

    log_ratios: tuple[tuple[float, ...], ...] = ()
    candidate_above: float = 0.0
    baseline_above: float = 0.0
    candidate_requests: float = 0.0
    baseline_requests: float = 0.0
    ticks: int = 0

    def add(
        self,
        baseline_history: LatencyHistogram | None,
        baseline: LatencyHistogram,
        candidate: LatencyHistogram,
        max_regression: float,
        tick_cap: float = math.inf,
    ) -> TailEvidence:
        """Add one tick; ``baseline_history`` is the baseline's histogram before it (the
        edges come from there, never from the tick being judged). Each tick's log likelihood
        ratios are capped at ``tick_cap``: a factor capped from above still has expectation
        at most one under the null, so the test stays valid, and no single tick (a GC pause,
        a restart) can reach the threshold alone when the cap is above half of it."""
        if baseline_history is None or not (
            baseline_history.edges == baseline.edges == candidate.edges
        ):
            return self
        pairs = edge_pairs(baseline_history, max_regression)
        if not pairs:
            return self
        processes = list(self.log_ratios) or [
            (0.0,) * len(RATIO_ALTERNATIVES) for _ in TAIL_QUANTILES
        ]
        above_c = above_b = 0.0
        for slot, (low, high) in enumerate(pairs[: len(processes)]):
            k_c, k_b = candidate.above(high), baseline.above(low)
            step = np.minimum(
                tick_log_ratios(k_c, candidate.requests, k_b, baseline.requests), tick_cap
            )
            t = self.ticks + 1
            floor = math.log(FLOOR_MASS / ((t + 2.0) * (t + 3.0)))
            updated = np.maximum(np.asarray(processes[slot]) + step, floor)
            processes[slot] = tuple(float(x) for x in updated)
            if slot == len(pairs) - 1:  # the highest quantile's counts, for the ledger
                above_c, above_b = k_c, k_b
        return TailEvidence(
            tuple(processes),
            self.candidate_above + above_c,
            self.baseline_above + above_b,
            self.candidate_requests + candidate.requests,
            self.baseline_requests + baseline.requests,
            self.ticks + 1,
        )

    def rejects(self, alpha: float) -> bool:
        """Whether the floored test has reached its threshold at level ``alpha``."""
        return self.log_evalue() >= math.log(FLOOR_COST / alpha)

    def log_evalue(self) -> float:
        """The average over quantiles of each one's mixture e-value, as a log."""
        if not self.log_ratios:
            return 0.0
        values = [mixture_log_evalue(p) for p in self.log_ratios]
        return float(special.logsumexp(values) - math.log(len(values)))

    @property
    def exceedance_ratio(self) -> float | None:
        """Candidate over baseline exceedance rate at the highest quantile's edges."""
        if self.candidate_requests <= 0 or self.baseline_above <= 0:
            return None
        return (self.candidate_above / self.candidate_requests) / (
            self.baseline_above / self.baseline_requests
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "logRatios": [list(p) for p in self.log_ratios],
            "above": [self.candidate_above, self.baseline_above],
            "requests": [self.candidate_requests, self.baseline_requests],
            "ticks": self.ticks,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> TailEvidence:
        """Read back ``to_dict``; raises ValueError (or KeyError, TypeError) on bad data."""
        if not data:
            return TailEvidence()
        processes = tuple(tuple(float(x) for x in p) for p in data["logRatios"])
        if any(len(p) != len(RATIO_ALTERNATIVES) for p in processes) or any(
            not math.isfinite(x) for p in processes for x in p
        ):
            raise ValueError("tail evidence has the wrong shape")
        above_c, above_b = (float(x) for x in data["above"])
        requests_c, requests_b = (float(x) for x in data["requests"])
        counts = (above_c, above_b, requests_c, requests_b)
        if any(not math.isfinite(x) or x < 0 for x in counts):
            raise ValueError("tail evidence counts are not counts")
        return TailEvidence(processes, *counts, ticks=int(data["ticks"]))


def tick_cap(alpha: float) -> float:
    """The per-tick cap: nine tenths of the threshold, so that a single tick from a neutral
    start cannot reject (even with every alternative at the cap) and two strong ticks can,
    from the floor of a dozen healthy ticks."""
    return 0.9 * math.log(FLOOR_COST / alpha)
