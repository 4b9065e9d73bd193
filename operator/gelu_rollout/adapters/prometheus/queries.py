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
* ``latency_mean_ms``, ``queue_ms``, ``compute_ms``: the arm's mean request, queue and
  compute time per successful request over the interval, in milliseconds: the ``increase``
  of Triton's cumulative microsecond counters (``nv_inference_request_duration_us``,
  ``nv_inference_queue_duration_us``, and for compute the whole of it: input, infer and
  output, ``nv_inference_compute_{input,infer,output}_duration_us``, where a pod exports
  no input or output counter the infer one alone), summed over the arm's pods, divided by
  the summed ``increase`` of ``nv_inference_request_success``. (The compute parts are
  summed one by one: ``increase`` drops the metric name, and the three parts of one pod
  would otherwise be series with the same labels.) Triton adds to these counters for
  successful requests only, so the ratio is the exact mean of the tick's successful
  requests, across pods; it needs no scaling;
* ``latency_histogram`` (only where the spec names one, ``analysis.latencyHistogram``):
  ``increase`` of that request-duration histogram's ``_bucket`` series by ``le``, for the
  series whose arm label has the arm's value (default: the arm's Service name) and that
  carry the spec's other matchers; as a Gateway or mesh exports it, so it is not selected
  by the pods' target labels;
* ``p99_ms``: the worst pod's ``nv_inference_request_summary_us`` 0.99 quantile, in
  milliseconds. Quantiles of different pods cannot be combined into the arm's quantile
  (neither averaged nor summed); the maximum is an upper bound of it, the conservative
  side for a latency gate, and exactly it when the arm has a single pod. The quantile
  covers the summary's own sliding window in Triton, not exactly the tick's interval;
* per burn-rate window: ``requests`` and ``failures`` over that window.

The output metrics (``nonfinite``, ``histogram``: this project's instrumentation, which a
model nobody instrumented for it does not export), the latency means and the latency
histogram are optional: an empty, unanswered or malformed answer to one of them leaves that
field empty and the rest of the arm's observation stands
(``QueryPlan.optional_expressions``); for the output metrics the arm's ``gaps`` say which
series is missing.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gelu_rollout.resources.names import Arm, service_name
from gelu_rollout.spec.model import LatencyHistogramSource

ARMS: tuple[Arm, Arm] = ("baseline", "candidate")
MIN_SCRAPES_PER_RANGE = 2
DEFAULT_SCRAPE_INTERVAL_SECONDS = 15.0

REQUEST_SUCCESS = "nv_inference_request_success"
REQUEST_FAILURE = "nv_inference_request_failure"
LATENCY_SUMMARY = "nv_inference_request_summary_us"
OUTPUT_BUCKETS = "gelu_output_value_bucket"
NONFINITE = "gelu_nonfinite_outputs_total"
REQUEST_DURATION = "nv_inference_request_duration_us"
QUEUE_DURATION = "nv_inference_queue_duration_us"
COMPUTE_INFER = "nv_inference_compute_infer_duration_us"
COMPUTE_INPUT_OUTPUT = (
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_output_duration_us",
)
MS_PER_UNIT = {"seconds": 1000.0, "milliseconds": 1.0}
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
class LatencySource:
    """A request-duration histogram as one arm's query needs it: the spec's
    ``analysis.latencyHistogram`` with the arm's label value resolved."""

    metric: str
    arm_label: str
    value: str
    ms_per_unit: float
    matchers: tuple[tuple[str, str], ...] = ()


def latency_sources(source: LatencyHistogramSource, rollout_name: str) -> dict[Arm, LatencySource]:
    """Both arms' histogram selectors; an arm without its own label value gets its
    Service's name (``<rollout>-baseline``, ``<rollout>-candidate``)."""
    values: dict[Arm, str | None] = {
        "baseline": source.baseline_value,
        "candidate": source.candidate_value,
    }
    return {
        arm: LatencySource(
            source.metric,
            source.arm_label,
            value or service_name(rollout_name, arm),
            MS_PER_UNIT[source.unit],
            tuple((m.label, m.value) for m in source.matchers),
        )
        for arm, value in values.items()
    }


@dataclass(frozen=True)
class LatencyHistogramQuery(CountQuery):
    """A request-duration histogram's bucket increases; ``le`` times ``ms_per_unit`` is the
    bucket's upper bound in milliseconds."""

    ms_per_unit: float = 1000.0


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
    latency_mean_ms: str = ""
    queue_ms: str = ""
    compute_ms: str = ""
    latency_histogram: LatencyHistogramQuery | None = None

    def counts(self) -> tuple[CountQuery, ...]:
        """The traffic's count queries, the windows' last: Triton's own series."""
        windows = [q for w in self.windows for q in (w.requests, w.failures)]
        return (self.requests, self.failures, *windows)

    def optional(self) -> tuple[str, ...]:
        """The queries whose answer may be missing without the arm being missing: the output
        metrics (a model nobody instrumented exports none) and the latency means and
        histogram."""
        means = (self.latency_mean_ms, self.queue_ms, self.compute_ms)
        histogram = () if self.latency_histogram is None else (self.latency_histogram.expr,)
        return (self.nonfinite.expr, self.histogram.expr, *(e for e in means if e), *histogram)

    def expressions(self) -> tuple[str, ...]:
        return (*(q.expr for q in self.counts()), self.p99_ms, *self.optional())


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
        """Every distinct expression, each once, in a stable order: the required ones first,
        then the optional ones of both arms by rank (the output metrics before the latency
        means), so that a slow optional query holds up only those behind it."""
        optional = set(self.optional_expressions())
        required = [e for arm in self.arms for e in arm.expressions() if e not in optional]
        pairs = zip(self.baseline.optional(), self.candidate.optional(), strict=True)
        ranked = [e for pair in pairs for e in pair]
        return tuple(dict.fromkeys([*required, *ranked]))

    def optional_expressions(self) -> frozenset[str]:
        """The expressions an observer may fail to get an answer to and still report the
        arms (see :meth:`ArmQueries.optional`)."""
        return frozenset(e for arm in self.arms for e in arm.optional())


def _increase(metric_selector: str, range_s: int) -> str:
    return f"increase({metric_selector}[{range_s}s])"


def _sum_increase(metric_selector: str, range_s: int) -> str:
    return f"sum({_increase(metric_selector, range_s)})"


def _mean_ms(total_us: str, successes: str) -> str:
    """Summed microseconds (``total_us``) over summed successful requests, in ms."""
    return f"{total_us} / {successes} / 1000"


def latency_histogram_query(
    source: LatencySource, interval_seconds: float, range_s: int
) -> LatencyHistogramQuery:
    """The arm's bucket increases over ``range_s``, added up by ``le``."""
    sel = selector([(source.arm_label, source.value), *source.matchers])
    return LatencyHistogramQuery(
        f"latency histogram over {interval_seconds:g}s",
        f"sum by (le) ({_increase(source.metric + sel, range_s)})",
        interval_seconds,
        range_s,
        source.ms_per_unit,
    )


def arm_queries(
    namespace: str,
    rollout: str,
    model: str,
    arm: str,
    interval_seconds: float,
    burn_windows_seconds: Sequence[float] = (),
    *,
    scrape_interval_seconds: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
    latency: LatencySource | None = None,
) -> ArmQueries:
    """The queries of one arm (``arm`` is ``baseline`` or ``candidate``); ``latency``: the
    arm's request-duration histogram, if the spec names one."""
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
    successes = _sum_increase(REQUEST_SUCCESS + sel, r)
    # infer, plus input and output where they are exported (each summed on its own).
    compute = " + ".join(
        [
            _sum_increase(COMPUTE_INFER + sel, r),
            *(f"({_sum_increase(name + sel, r)} or vector(0))" for name in COMPUTE_INPUT_OUTPUT),
        ]
    )
    return ArmQueries(
        arm,
        requests,
        failures,
        nonfinite,
        histogram,
        p99_ms,
        windows,
        latency_mean_ms=_mean_ms(_sum_increase(REQUEST_DURATION + sel, r), successes),
        queue_ms=_mean_ms(_sum_increase(QUEUE_DURATION + sel, r), successes),
        compute_ms=_mean_ms(f"({compute})", successes),
        latency_histogram=(
            None if latency is None else latency_histogram_query(latency, interval_seconds, r)
        ),
    )


def build_plan(
    namespace: str,
    rollout: str,
    model: str,
    interval_seconds: float,
    burn_windows_seconds: Sequence[float] = (),
    *,
    scrape_interval_seconds: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
    latency_histogram: LatencyHistogramSource | None = None,
    rollout_name: str | None = None,
) -> QueryPlan:
    """The queries of one tick: both arms, the interval's counts and every burn window, and
    the arms' request-duration histogram where ``latency_histogram`` names one.
    ``rollout_name`` (default ``rollout``, the rollout's label value) names the arms'
    Services, the histogram's default arm label values."""
    sources: Mapping[Arm, LatencySource] = (
        {}
        if latency_histogram is None
        else latency_sources(latency_histogram, rollout_name or rollout)
    )
    baseline, candidate = (
        arm_queries(
            namespace,
            rollout,
            model,
            arm,
            interval_seconds,
            burn_windows_seconds,
            scrape_interval_seconds=scrape_interval_seconds,
            latency=sources.get(arm),
        )
        for arm in ARMS
    )
    return QueryPlan(interval_seconds, scrape_interval_seconds, baseline, candidate)
