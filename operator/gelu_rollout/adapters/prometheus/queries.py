"""PromQL for one tick of a rollout's analysis (pure).

Every query selects one arm of one rollout by the labels its scrape targets carry
(``namespace``, ``rollout``, ``arm``) and the Triton model by the ``model`` label its
metrics carry, and adds the arm's pods up:

* ``requests``: ``increase`` of Triton's success and failure counters (every
  ``reason``) over the range;
* ``failures``: the failure counters alone. Where a pod has exported no failure
  series yet, its success series counts 0 failures (``or 0 * ...``): without that, a
  pod that never failed would make the whole arm look empty;
* ``nonfinite``: ``increase`` of ``gelu_nonfinite_outputs_total``;
* ``histogram``: ``increase`` of ``gelu_output_value_bucket`` by ``le`` (cumulative:
  ``parse`` turns it into per-bucket counts);
* ``p99_ms``: the worst pod's ``nv_inference_request_summary_us`` 0.99 quantile, in
  milliseconds. Quantiles of different pods cannot be combined into the arm's quantile
  (neither averaged nor summed); the maximum is an upper bound of it, the conservative
  side for a latency gate, and exactly it when the arm has a single pod. The quantile
  covers the summary's own sliding window in Triton, not exactly the tick's interval;
* per burn-rate window: ``requests`` and ``failures`` over that window.

Ranges are whole seconds, ``[Ns]``: the requested length rounded up, and at least
``MIN_SCRAPES_PER_RANGE`` scrape intervals, because ``increase`` needs two samples in
its range and returns nothing with fewer. When the range is longer than the length a
count is reported for (a window shorter than two scrapes), the count is scaled by
length / range, which keeps the rate and does not count the same requests twice over
consecutive ticks.

``increase`` extrapolates to the edges of its range: over consecutive ticks at a steady
rate it adds up to the true total, and a series that starts at zero inside the range is
not extrapolated backwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ARMS = ("baseline", "candidate")
MIN_SCRAPES_PER_RANGE = 2
DEFAULT_SCRAPE_INTERVAL_SECONDS = 15.0

REQUEST_SUCCESS = "nv_inference_request_success"
REQUEST_FAILURE = "nv_inference_request_failure"
LATENCY_SUMMARY = "nv_inference_request_summary_us"
OUTPUT_BUCKETS = "gelu_output_value_bucket"
NONFINITE = "gelu_nonfinite_outputs_total"
# Exporters print the quantile label as "0.99"; allow trailing zeros ("0.990000").
P99_QUANTILE_RE = "0\\.990*"

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_label_value(value: str) -> str:
    """``value`` as the inside of a double-quoted PromQL string literal.

    Backslash, double quote and newline (and carriage return, tab and every other
    control character) are escaped, so no name can end the literal or change the query.
    """
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def selector(matchers: Iterable[tuple[str, str]], *, regex: Iterable[tuple[str, str]] = ()) -> str:
    """A label selector ``{a="x",b=~"y"}`` with every value escaped."""
    parts = [f'{name}="{escape_label_value(value)}"' for name, value in matchers]
    parts += [f'{name}=~"{escape_label_value(value)}"' for name, value in regex]
    return "{" + ",".join(parts) + "}"


def range_seconds(seconds: float, scrape_interval_seconds: float) -> int:
    """The whole-second PromQL range that covers ``seconds``: rounded up, and at least
    ``MIN_SCRAPES_PER_RANGE`` scrape intervals."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"a query range must be positive, got {seconds}")
    if not (math.isfinite(scrape_interval_seconds) and scrape_interval_seconds > 0):
        raise ValueError(f"the scrape interval must be positive, got {scrape_interval_seconds}")
    floor = math.ceil(MIN_SCRAPES_PER_RANGE * scrape_interval_seconds - 1e-6)
    return max(math.ceil(seconds - 1e-6), floor)


@dataclass(frozen=True)
class CountQuery:
    """A query for a count over ``seconds``, evaluated over ``range_s`` whole seconds."""

    name: str
    expr: str
    seconds: float
    range_s: int

    @property
    def scale(self) -> float:
        """Multiply the answer by this to get the count over ``seconds``."""
        return self.seconds / self.range_s


@dataclass(frozen=True)
class WindowQueries:
    """The queries of one burn-rate window."""

    seconds: float
    requests: CountQuery
    failures: CountQuery


@dataclass(frozen=True)
class ArmQueries:
    """Every query of one arm for one tick."""

    arm: str
    requests: CountQuery
    failures: CountQuery
    nonfinite: CountQuery
    histogram: CountQuery
    p99_ms: str
    windows: tuple[WindowQueries, ...]

    def counts(self) -> tuple[CountQuery, ...]:
        """The count queries, the windows' last."""
        windows = [q for w in self.windows for q in (w.requests, w.failures)]
        return (self.requests, self.failures, self.nonfinite, self.histogram, *windows)

    def expressions(self) -> tuple[str, ...]:
        return (*(q.expr for q in self.counts()), self.p99_ms)


@dataclass(frozen=True)
class QueryPlan:
    """One tick's queries for both arms; ``expressions`` is the batch to send."""

    interval_seconds: float
    scrape_interval_seconds: float
    baseline: ArmQueries
    candidate: ArmQueries

    @property
    def arms(self) -> tuple[ArmQueries, ArmQueries]:
        return (self.baseline, self.candidate)

    def expressions(self) -> tuple[str, ...]:
        """Every distinct expression, each once, in a stable order."""
        return tuple(dict.fromkeys(e for arm in self.arms for e in arm.expressions()))


def _increase(metric_selector: str, range_s: int) -> str:
    return f"increase({metric_selector}[{range_s}s])"


def arm_queries(
    namespace: str,
    rollout: str,
    model: str,
    arm: str,
    interval_seconds: float,
    burn_windows_seconds: Sequence[float] = (),
    *,
    scrape_interval_seconds: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
) -> ArmQueries:
    """The queries of one arm (``arm`` is ``baseline`` or ``candidate``)."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    labels = [("namespace", namespace), ("rollout", rollout), ("arm", arm), ("model", model)]
    sel = selector(labels)
    served = selector(labels, regex=[("__name__", f"{REQUEST_SUCCESS}|{REQUEST_FAILURE}")])

    def counts(seconds: float) -> tuple[CountQuery, CountQuery]:
        r = range_seconds(seconds, scrape_interval_seconds)
        requests = f"sum({_increase(served, r)})"
        failures = (
            f"sum({_increase(REQUEST_FAILURE + sel, r)}"
            f" or 0 * {_increase(REQUEST_SUCCESS + sel, r)})"
        )
        return (
            CountQuery(f"requests over {seconds:g}s", requests, seconds, r),
            CountQuery(f"failures over {seconds:g}s", failures, seconds, r),
        )

    requests, failures = counts(interval_seconds)
    r = requests.range_s
    nonfinite = CountQuery(
        f"nonfinite over {interval_seconds:g}s",
        f"sum({_increase(NONFINITE + sel, r)})",
        interval_seconds,
        r,
    )
    histogram = CountQuery(
        f"histogram over {interval_seconds:g}s",
        f"sum by (le) ({_increase(OUTPUT_BUCKETS + sel, r)})",
        interval_seconds,
        r,
    )
    quantile = selector(labels, regex=[("quantile", P99_QUANTILE_RE)])
    p99_ms = f"max({LATENCY_SUMMARY}{quantile}) / 1000"
    windows = tuple(
        WindowQueries(seconds, *counts(seconds)) for seconds in dict.fromkeys(burn_windows_seconds)
    )
    return ArmQueries(arm, requests, failures, nonfinite, histogram, p99_ms, windows)


def build_plan(
    namespace: str,
    rollout: str,
    model: str,
    interval_seconds: float,
    burn_windows_seconds: Sequence[float] = (),
    *,
    scrape_interval_seconds: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
) -> QueryPlan:
    """The queries of one tick: both arms, the interval's counts and every burn window."""
    baseline, candidate = (
        arm_queries(
            namespace,
            rollout,
            model,
            arm,
            interval_seconds,
            burn_windows_seconds,
            scrape_interval_seconds=scrape_interval_seconds,
        )
        for arm in ARMS
    )
    return QueryPlan(interval_seconds, scrape_interval_seconds, baseline, candidate)
