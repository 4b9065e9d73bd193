"""Multiwindow, multi-burn-rate check (SRE workbook style), scaled to a canary step.

For each configured pair, the long window is ``long_window_factor`` x the
step's analysis time and the short window a twelfth of it (never shorter than
one interval). The check fires when the candidate burns its error budget at
or above the pair's rate over both windows, as the workbook's alerts do, and
the long window's failures are also significant against the tolerated rate
at this look's share of alpha, so a few failures among few requests do not
page.
It is critical: a firing check rolls back at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gelu_rollout.analysis.error_rate import worse_than_baseline
from gelu_rollout.analysis.observations import ArmObservation, WindowCounts
from gelu_rollout.analysis.sequential import binomial_upper_tail
from gelu_rollout.analysis.verdict import GateResult, Verdict

GATE = "burnRate"
SHORT_WINDOW_DIVISOR = 12.0
# A window can judge a burn at rate r once r x budget x requests reaches this
# many expected failures; with fewer, silence proves nothing.
EXPECTED_FAILURES_TO_JUDGE = 3.0


@dataclass(frozen=True)
class BurnWindow:
    burn_rate: float
    long_seconds: float
    short_seconds: float


def burn_windows(
    pairs: Sequence[tuple[float, float]], step_seconds: float, interval_seconds: float
) -> tuple[BurnWindow, ...]:
    """Windows for (burn rate, long-window factor) pairs, scaled to a step."""
    windows = []
    for rate, factor in pairs:
        long_seconds = max(factor * step_seconds, interval_seconds)
        short_seconds = max(long_seconds / SHORT_WINDOW_DIVISOR, interval_seconds)
        windows.append(BurnWindow(rate, long_seconds, short_seconds))
    return tuple(windows)


def required_window_seconds(windows: Sequence[BurnWindow]) -> tuple[float, ...]:
    """Every window length an observer must report, shortest first."""
    return tuple(sorted({w.long_seconds for w in windows} | {w.short_seconds for w in windows}))


def _window(arm: ArmObservation, seconds: float) -> WindowCounts | None:
    return _lookup(arm.windows, seconds)


def _lookup(windows: Mapping[float, WindowCounts], seconds: float) -> WindowCounts | None:
    for length, counts in windows.items():
        if abs(length - seconds) < 1e-6:
            return counts
    return None


def _burn(counts: WindowCounts, budget: float) -> float:
    return counts.failures / counts.requests / budget if counts.requests > 0 else 0.0


def burn_rate_gate(
    baseline: ArmObservation,
    candidate: ArmObservation,
    windows: Sequence[BurnWindow],
    *,
    error_budget: float,
    max_burn_rate: float,
    max_ratio_to_baseline: float,
    alpha_this_look: float,
) -> GateResult:
    tolerated = max_burn_rate * error_budget
    worst: tuple[float, BurnWindow, WindowCounts] | None = None
    judged = False
    for window in windows:
        long_c = _window(candidate, window.long_seconds)
        short_c = _window(candidate, window.short_seconds)
        if long_c is None or short_c is None or long_c.requests <= 0:
            continue
        if window.burn_rate * error_budget * long_c.requests >= EXPECTED_FAILURES_TO_JUDGE:
            judged = True
        long_burn, short_burn = _burn(long_c, error_budget), _burn(short_c, error_budget)
        if worst is None or long_burn > worst[0]:
            worst = (long_burn, window, long_c)
        if long_burn < window.burn_rate or short_burn < window.burn_rate:
            continue
        tail = binomial_upper_tail(long_c.failures, long_c.requests, min(tolerated, 1.0))
        if tail > alpha_this_look:
            continue
        long_b = _window(baseline, window.long_seconds) or WindowCounts(0.0, 0.0)
        if not worse_than_baseline(
            long_c.failures,
            long_c.requests,
            long_b.failures,
            long_b.requests,
            max_ratio_to_baseline,
        ):
            continue
        return GateResult(
            GATE,
            Verdict.FAIL,
            long_burn,
            window.burn_rate,
            long_c.requests,
            window.long_seconds,
            f"fast burn: candidate burns {long_burn:.1f}x over {window.long_seconds:.0f}s and "
            f"{short_burn:.1f}x over {window.short_seconds:.0f}s (limit {window.burn_rate:g}x; "
            f"{long_c.failures:.0f} failures in {long_c.requests:.0f} requests, "
            f"p={tail:.2g} <= {alpha_this_look:.2g}; "
            f"baseline burn {_burn(long_b, error_budget):.1f}x)",
            critical=True,
        )
    if worst is None:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            None,
            None,
            0.0,
            0.0,
            "no candidate requests in the burn-rate windows",
            critical=True,
        )
    burn, window, counts = worst
    if not judged:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            burn,
            window.burn_rate,
            counts.requests,
            window.long_seconds,
            f"{counts.requests:.0f} requests in {window.long_seconds:.0f}s: too few to see a "
            f"{window.burn_rate:g}x burn",
            critical=True,
        )
    return GateResult(
        GATE,
        Verdict.PASS,
        burn,
        window.burn_rate,
        counts.requests,
        window.long_seconds,
        f"candidate burns {burn:.2f}x over {window.long_seconds:.0f}s "
        f"(limit {window.burn_rate:g}x)",
        critical=True,
    )
