"""Which gates a served model's metrics can feed (pure): the series each gate reads, and a
report from one scrape of a Triton metrics endpoint.

The operator's queries (:mod:`.queries`) read these series:

* ``burnRate``, ``errorRate``: Triton's success counter for the model, and its failure
  counter where exported (a model that never failed counts 0 failures until then);
* ``latencyRegression``: a request-duration histogram where the spec names one
  (``analysis.latencyHistogram``: a Gateway's or mesh's, never on Triton's endpoint), else
  Triton's cumulative request-duration counter over its success counter (the exact mean of
  each tick, with the queue and compute counters saying where the time went), else the
  summary's 0.99 quantile;
* ``latencyCeiling``: the histogram, else the summary's 0.99 quantile (a mean bounds no P99);
* ``nonFinite``: the model's own non-finite counter and output histogram, else the sampled
  comparison (``analysis.outputSample``: the operator sends a few inputs to both arms each
  tick and counts NaN and Inf in the answers itself);
* ``divergence``: the output histogram of both arms, else the sampled comparison.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client.parser import text_string_to_metric_families

from gelu_rollout.adapters.prometheus.queries import (
    COMPUTE_INFER,
    LATENCY_SUMMARY,
    NONFINITE,
    OUTPUT_BUCKETS,
    P99_QUANTILE_RE,
    QUEUE_DURATION,
    REQUEST_DURATION,
    REQUEST_FAILURE,
    REQUEST_SUCCESS,
)
from gelu_rollout.analysis.burn_rate import GATE as BURN_RATE_GATE
from gelu_rollout.analysis.divergence import GATE as DIVERGENCE_GATE
from gelu_rollout.analysis.error_rate import GATE as ERROR_RATE_GATE
from gelu_rollout.analysis.latency import CEILING_GATE, REGRESSION_GATE
from gelu_rollout.analysis.nonfinite import GATE as NONFINITE_GATE
from gelu_rollout.analysis.observations import OUTPUT_METRICS, SAMPLED_COMPARISON

Status = Literal["ready", "sampled comparison", "missing"]
READY: Final = "ready"
SAMPLED: Final = "sampled comparison"
MISSING: Final = "missing"

P99_SUMMARY: Final = f'{LATENCY_SUMMARY}{{quantile="0.99"}}'
"""How the summary's 0.99 quantile is named in reports (the series the operator selects)."""
DOCS: Final = "docs/models.md"
SUMMARY_FLAG: Final = "--metrics-config summary_latencies=true"
ARM_LABELS: Final[tuple[str, ...]] = (
    "destination_service_name",
    "destination_service",
    "service",
    "backend_ref",
    "envoy_cluster_name",
    "cluster_name",
    "upstream_cluster",
)
"""Labels that tell a Gateway's or mesh's arms apart, most likely first (a guess to check)."""
MAX_SECONDS_EDGE: Final = 600.0
"""Above this top edge, a histogram whose name gives no unit is taken to be in milliseconds."""


class ExpositionError(ValueError):
    """The text is not in Prometheus' text exposition format."""


@dataclass(frozen=True)
class Series:
    """One sample of a scrape, named as the endpoint exposed it."""

    name: str
    labels: Mapping[str, str]
    value: float


def parse_exposition(text: str) -> tuple[Series, ...]:
    """The samples of a scrape in Prometheus' text format; raises ExpositionError.

    prometheus_client appends ``_total`` to the samples of a counter whose TYPE line lacks
    it (the OpenMetrics form); Prometheus stores the name as exposed, and the operator's
    queries use that, so the suffix is taken off again.
    """
    typed = {
        parts[2]
        for line in text.splitlines()
        if len(parts := line.split()) >= 4 and parts[:2] == ["#", "TYPE"] and parts[3] == "counter"
    }
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise ExpositionError(str(error) or "unparsable line") from None
    samples = []
    for family in families:
        renamed = family.type == "counter" and family.name in typed
        for sample in family.samples:
            name = sample.name
            if renamed and name == family.name + "_total":
                name = family.name
            samples.append(Series(name, dict(sample.labels), float(sample.value)))
    return tuple(samples)


Where = Literal["model", "gateway", "sample"]


@dataclass(frozen=True)
class Source:
    """One way a gate can be fed: from series on the model's endpoint (``needs`` all, and
    ``uses`` where present), a Gateway's histogram, or the sampled comparison."""

    name: str
    where: Where = "model"
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()


TRAFFIC: Final = Source(
    "Triton's request counters", needs=(REQUEST_SUCCESS,), uses=(REQUEST_FAILURE,)
)
LATENCY_HISTOGRAM: Final = Source("the request-duration histogram", where="gateway")
LATENCY_MEAN: Final = Source(
    "Triton's mean per tick",
    needs=(REQUEST_DURATION, REQUEST_SUCCESS),
    uses=(QUEUE_DURATION, COMPUTE_INFER),
)
LATENCY_P99: Final = Source("Triton's summary P99", needs=(P99_SUMMARY,))
OUTPUT_COUNTS: Final = Source(OUTPUT_METRICS, needs=(NONFINITE, OUTPUT_BUCKETS))
OUTPUT_HISTOGRAM: Final = Source(OUTPUT_METRICS, needs=(OUTPUT_BUCKETS,))
SAMPLE: Final = Source(SAMPLED_COMPARISON, where="sample")

GATE_SOURCES: Final[Mapping[str, tuple[Source, ...]]] = {
    NONFINITE_GATE: (OUTPUT_COUNTS, SAMPLE),
    BURN_RATE_GATE: (TRAFFIC,),
    ERROR_RATE_GATE: (TRAFFIC,),
    REGRESSION_GATE: (LATENCY_HISTOGRAM, LATENCY_MEAN, LATENCY_P99),
    CEILING_GATE: (LATENCY_HISTOGRAM, LATENCY_P99),
    DIVERGENCE_GATE: (OUTPUT_HISTOGRAM, SAMPLE),
}
"""Each gate's sources, best first, in the order the operator reports its gates."""


@dataclass(frozen=True)
class HistogramCheck:
    """A request-duration histogram on a Gateway's or mesh's metrics endpoint."""

    metric: str
    """Its ``_bucket`` series, as ``analysis.latencyHistogram.metric`` names it."""
    found: bool
    labels: tuple[str, ...] = ()
    """The labels its bucket series carry, ``le`` aside: one of them tells the arms apart."""
    top_edge: float = 0.0
    """Its largest finite ``le``."""

    @property
    def unit(self) -> Literal["seconds", "milliseconds"]:
        """The unit of its ``le`` edges, a guess: from the name where it says, else from the
        edges (a request histogram in seconds rarely has an edge above a few minutes; Envoy's
        ``upstream_rq_time``, in milliseconds, says so in no name)."""
        if re.search(r"millis|_ms(_|$)", self.metric):
            return "milliseconds"
        if "seconds" in self.metric:
            return "seconds"
        return "milliseconds" if self.top_edge > MAX_SECONDS_EDGE else "seconds"

    @property
    def arm_label(self) -> str | None:
        """The likeliest label to tell the arms apart, if any."""
        candidates = [*(label for label in ARM_LABELS if label in self.labels), *self.labels]
        return candidates[0] if candidates else None


def _edge(value: str) -> float:
    try:
        edge = float(value)
    except ValueError:
        return 0.0
    return edge if math.isfinite(edge) else 0.0


def check_histogram(samples: Iterable[Series], metric: str) -> HistogramCheck:
    """Whether ``metric`` (its ``_bucket`` series, or the histogram's own name) is among
    ``samples`` as bucket series with an ``le`` label."""
    bucket = metric if metric.endswith("_bucket") else metric + "_bucket"
    buckets = [s for s in samples if s.name == bucket and "le" in s.labels]
    labels = sorted({label for s in buckets for label in s.labels if label != "le"})
    top = max((_edge(s.labels["le"]) for s in buckets), default=0.0)
    return HistogramCheck(bucket, bool(buckets), tuple(labels), top)


@dataclass(frozen=True)
class GateReport:
    """One gate: whether it can be fed, by what, from which series, and what to do."""

    gate: str
    status: Status
    source: str | None
    found: tuple[str, ...]
    missing: tuple[str, ...]
    action: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "status": self.status,
            "source": self.source,
            "found": list(self.found),
            "missing": list(self.missing),
            "action": self.action,
        }


@dataclass(frozen=True)
class Setting:
    """A spec setting that fits the model: ``path`` under ``spec``, and why."""

    path: tuple[str, ...]
    value: str | bool | int
    note: str = ""

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class ModelReport:
    """Every gate of one model on one endpoint, and the settings that fit."""

    model: str
    gates: tuple[GateReport, ...]
    settings: tuple[Setting, ...]
    models: tuple[str, ...] = ()
    """The models the endpoint exports Triton's series for."""
    histogram: HistogramCheck | None = None

    @property
    def ok(self) -> bool:
        """Whether every gate can be fed, directly or by the sampled comparison."""
        return all(g.status != MISSING for g in self.gates)

    def gate(self, name: str) -> GateReport:
        return next(g for g in self.gates if g.gate == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ok": self.ok,
            "gates": [g.to_dict() for g in self.gates],
            "settings": [
                {"path": s.dotted, "value": s.value, "note": s.note} for s in self.settings
            ],
            "spec": spec_snippet(self.settings),
            "models": list(self.models),
        }


def settings_tree(settings: Iterable[Setting]) -> dict[str, Any]:
    """The settings nested by their paths under ``spec``, in their order: a mapping whose
    leaves are the settings."""
    tree: dict[str, Any] = {}
    for setting in settings:
        node = tree
        for key in setting.path[:-1]:
            node = node.setdefault(key, {})
        node[setting.path[-1]] = setting
    return tree


def spec_snippet(settings: Iterable[Setting]) -> dict[str, Any]:
    """The settings as the mapping under ``spec`` they would be in a manifest."""

    def values(node: Mapping[str, Any]) -> dict[str, Any]:
        return {k: values(v) if isinstance(v, Mapping) else v.value for k, v in node.items()}

    return values(settings_tree(settings))


def served_models(samples: Iterable[Series]) -> tuple[str, ...]:
    """The ``model`` label values of Triton's own series."""
    return tuple(
        sorted({s.labels["model"] for s in samples if _triton(s.name) and "model" in s.labels})
    )


def _triton(name: str) -> bool:
    return name.startswith("nv_inference_")


def _exported(samples: Sequence[Series], model: str) -> dict[str, bool]:
    """The series a source can need that are exported for ``model``, each with whether it
    has a value: the P99 summary has none before traffic (Triton reports NaN)."""
    have: dict[str, bool] = {}
    for s in samples:
        if s.labels.get("model") != model:
            continue
        if s.name == LATENCY_SUMMARY:
            if re.fullmatch(P99_QUANTILE_RE, s.labels.get("quantile", "")):
                have[P99_SUMMARY] = have.get(P99_SUMMARY, False) or math.isfinite(s.value)
        else:
            have[s.name] = True
    return have


def _listed(sources: Iterable[Source], histogram: HistogramCheck | None) -> tuple[str, ...]:
    """The series the sources read, each once: the Gateway's only where it was checked."""
    names: list[str] = []
    for source in sources:
        if source.where == "gateway":
            names += [] if histogram is None else [histogram.metric]
        else:
            names += [*source.needs, *source.uses]
    return tuple(dict.fromkeys(names))


def _feeds(source: Source, have: Mapping[str, bool], histogram: HistogramCheck | None) -> bool:
    if source.where == "gateway":
        return histogram is not None and histogram.found
    if source.where == "sample":
        return False  # the spec decides, not the scrape: see _gate
    return all(name in have for name in source.needs)


def _gate(
    gate: str, have: Mapping[str, bool], histogram: HistogramCheck | None, output_sample: bool
) -> GateReport:
    sources = GATE_SOURCES[gate]
    listed = _listed(sources, histogram)
    gateway = () if histogram is None or not histogram.found else (histogram.metric,)
    found = tuple(n for n in listed if n in have or n in gateway)
    missing = tuple(n for n in listed if n not in found)
    feeding = next((s for s in sources if _feeds(s, have, histogram)), None)
    if feeding is None and output_sample and SAMPLE in sources:
        feeding = SAMPLE
    status: Status = MISSING if feeding is None else SAMPLED if feeding is SAMPLE else READY
    return GateReport(
        gate,
        status,
        None if feeding is None else feeding.name,
        found,
        missing,
        _action(gate, feeding, have),
    )


HISTOGRAM_HINT: Final = "set analysis.latencyHistogram if a Gateway exports a request histogram"
OUTPUT_SERIES: Final = "gelu_output_value and gelu_nonfinite_outputs_total"


def _action(gate: str, feeding: Source | None, have: Mapping[str, bool]) -> str:
    """What to do about ``gate``, fed by ``feeding`` (None: by nothing)."""
    if gate in (BURN_RATE_GATE, ERROR_RATE_GATE):
        if feeding is None:
            return f"Triton exports no {REQUEST_SUCCESS} for this model: check --model"
        if REQUEST_FAILURE not in have:
            return f"none: failures count as 0 until Triton exports {REQUEST_FAILURE}"
        return "none"
    if gate in (REGRESSION_GATE, CEILING_GATE):
        if feeding is None:
            return (
                f"start Triton with {SUMMARY_FLAG} (Triton 2.51 exports no quantile "
                f"without it), or {HISTOGRAM_HINT}"
            )
        if feeding is LATENCY_HISTOGRAM:
            return "none"
        if feeding is LATENCY_MEAN:
            return f"none; to judge the P99 itself, {HISTOGRAM_HINT}"
        not_yet = (
            ""
            if have.get(P99_SUMMARY)
            else " (no value now: Triton's quantile is NaN without recent traffic)"
        )
        return f"none{not_yet}; for the P99 of each tick's requests, {HISTOGRAM_HINT}"
    if feeding is SAMPLE:
        return (
            f"none: analysis.outputSample (on by default) feeds it; export {OUTPUT_SERIES} "
            f"to count every request ({DOCS})"
        )
    if feeding is not None:
        if gate == DIVERGENCE_GATE:
            return "none, where the baseline exports it too (else the sampled comparison)"
        return "none"
    return f"set analysis.outputSample.enabled: true, or export {OUTPUT_SERIES} ({DOCS})"


def _settings(
    model: str, gates: Mapping[str, GateReport], histogram: HistogramCheck | None
) -> tuple[Setting, ...]:
    settings = [Setting(("model", "name"), model, "the Triton model these checks are for")]
    unfed = [g.gate for g in (gates[NONFINITE_GATE], gates[DIVERGENCE_GATE]) if g.status != READY]
    if not unfed:
        note = (
            "the default: the model's output metrics feed nonFinite and divergence; the "
            "sample stands in where the baseline exports none"
        )
    else:
        note = (
            "the default: the operator sends a few inputs to both arms each tick and judges "
            f"{' and '.join(unfed)} on the answers, which this model's metrics cannot feed"
        )
    settings.append(Setting(("analysis", "outputSample", "enabled"), True, note))
    if histogram is not None and histogram.found:
        base = ("analysis", "latencyHistogram")
        labels = ", ".join(histogram.labels) or "none"
        return (
            *settings,
            Setting((*base, "metric"), histogram.metric, "found on the Gateway's endpoint"),
            Setting(
                (*base, "armLabel"),
                histogram.arm_label or ARM_LABELS[0],
                f"the label whose values tell the arms apart; its series carry: {labels}",
            ),
            Setting((*base, "unit"), histogram.unit, "the unit of its le edges: check it"),
        )
    latency = ("analysis", "gates", "latency")
    regression, ceiling = gates[REGRESSION_GATE], gates[CEILING_GATE]
    if ceiling.status == READY:
        settings.append(
            Setting(
                (*latency, "enabled"),
                True,
                f"latencyRegression on {regression.source}, latencyCeiling on "
                f"{ceiling.source} (a sliding window of its own); a Gateway's request-duration "
                "histogram (analysis.latencyHistogram) would judge both on each tick's requests",
            )
        )
    else:
        fed = "" if regression.source is None else f"latencyRegression on {regression.source}; "
        settings.append(
            Setting(
                (*latency, "required"),
                False,
                f"{fed}no summary P99 here, so latencyCeiling has no data and is left out; "
                f"start Triton with {SUMMARY_FLAG}, or set analysis.latencyHistogram, "
                "to judge it",
            )
        )
    return tuple(settings)


def model_report(
    samples: Sequence[Series],
    model: str,
    *,
    output_sample: bool = True,
    histogram: HistogramCheck | None = None,
) -> ModelReport:
    """Which gates ``model``'s series in ``samples`` feed; ``output_sample``: whether the
    spec's sampled comparison is on (``analysis.outputSample.enabled``, the default);
    ``histogram``: a Gateway's request-duration histogram, where one was checked."""
    models = served_models(samples)
    if model not in models:
        # Not served here (or not by this name): the sampled comparison has nothing to ask.
        there = ", ".join(models) if models else "none; is this Triton's metrics port?"
        action = f'Triton exports no series for model "{model}" here (models: {there})'
        gates = tuple(
            GateReport(gate, MISSING, None, (), _listed(sources, histogram), action)
            for gate, sources in GATE_SOURCES.items()
        )
        return ModelReport(model, gates, (), models, histogram)
    have = _exported(samples, model)
    reports = {gate: _gate(gate, have, histogram, output_sample) for gate in GATE_SOURCES}
    return ModelReport(
        model, tuple(reports.values()), _settings(model, reports, histogram), models, histogram
    )
