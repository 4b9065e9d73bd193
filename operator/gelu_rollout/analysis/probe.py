"""The paired probe: the same inputs to baseline and candidate, compared before any traffic.

Pure: :func:`probe_inputs` makes the seeded inputs, :func:`compare_outputs` judges the two
arms' answers and how long they took (:func:`compare_latency`). Sending them and timing the
requests is the Triton adapter's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gelu_rollout.analysis.divergence import kl_divergence
from gelu_rollout.analysis.model_interface import ModelInterface, TensorSpec
from gelu_rollout.analysis.observations import SampledOutputs
from gelu_rollout.analysis.sample_inputs import seeded_inputs
from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.spec.model import ProbeSpec
from gelu_rollout.variants.catalog import INPUTS, OUTPUT_BUCKETS
from gelu_rollout.variants.repository import MAX_BATCH_SIZE

GATE: Final = "probe"
PROBE_SEED: Final = 7
KL_SMOOTHING: Final = 0.5
WARMUP_ROUNDS: Final = 1
"""Rounds of requests that are sent and answered but not timed: the first request of a batch
pays for the connection, the server's first allocation of that shape and cold caches."""
TIMED_ROUNDS: Final = 9
"""Rounds of requests that are timed after the warm-up."""
DEFAULT_MAX_LATENCY_RATIO: Final = ProbeSpec().max_latency_ratio
"""The spec's default ``analysis.probe.maxLatencyRatio`` (docs/spec.md says why)."""
GELU_INTERFACE: Final = ModelInterface(
    (TensorSpec("INPUT0", "FP32", (INPUTS,)),),
    (TensorSpec("OUTPUT0", "FP32", (INPUTS,)),),
    MAX_BATCH_SIZE,
)
"""The interface of the built-in GELU variants."""

FloatArray = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class ProbeInputs:
    """Typical rows, N(0, 3²), judged on accuracy; extreme rows, judged on finiteness."""

    typical: FloatArray
    extreme: FloatArray


def probe_inputs(rows: int, seed: int = PROBE_SEED) -> ProbeInputs:
    """Seeded probe inputs of the GELU variants: ``rows`` typical rows and a fixed set of
    extreme rows (:func:`gelu_rollout.analysis.sample_inputs.seeded_inputs`)."""
    seeded = seeded_inputs(GELU_INTERFACE, rows, seed)
    return ProbeInputs(seeded.typical["INPUT0"], seeded.extreme["INPUT0"])


def output_histogram(values: npt.ArrayLike) -> tuple[float, ...]:
    """Per-bucket counts of the finite values over OUTPUT_BUCKETS, with a last +Inf bucket."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    finite = flat[np.isfinite(flat)]
    # Prometheus buckets are upper-inclusive (value <= le): bucket i holds
    # OUTPUT_BUCKETS[i-1] < value <= OUTPUT_BUCKETS[i], the last one everything above.
    index = np.searchsorted(np.asarray(OUTPUT_BUCKETS), finite, side="left")
    counts = np.bincount(index, minlength=len(OUTPUT_BUCKETS) + 1)
    return tuple(float(c) for c in counts)


Timings = tuple[tuple[float, ...], ...]
"""One arm's request times in seconds: one tuple per batch, one entry per round, in the order
the rounds were sent (the warm-up rounds first)."""


@dataclass(frozen=True)
class ArmAnswers:
    """What one arm answered to the probe inputs, and how long each request took.

    ``seconds`` is empty when the requests were not timed; the latency is then not judged.
    """

    typical: FloatArray
    extreme: FloatArray
    seconds: Timings = ()


@dataclass(frozen=True)
class LatencyComparison:
    """The candidate's request times against the baseline's on the same batches.

    ``ratio`` is the median over batches of ``batch_ratios``; each batch's ratio is the
    candidate's median time over the timed rounds divided by the baseline's.
    ``baseline_ms`` and ``candidate_ms`` are the medians of all timed requests of each arm.
    """

    ratio: float
    batch_ratios: tuple[float, ...]
    baseline_ms: float
    candidate_ms: float
    batches: int
    timed_rounds: int


def _check_timings(arm: str, timings: Timings) -> None:
    if len({len(batch) for batch in timings}) > 1:
        raise ValueError(f"{arm} timings have a different number of rounds per batch")
    for batch in timings:
        for seconds in batch:
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{arm} timings must be finite and positive, got {seconds!r}")


def compare_latency(
    baseline: Timings, candidate: Timings, *, warmup_rounds: int = WARMUP_ROUNDS
) -> LatencyComparison | None:
    """The candidate's latency relative to the baseline's, robust to a noisy machine.

    The adapter sends every batch to both arms in every round, alternating which arm goes
    first, so that the two requests of a pair run milliseconds apart and see the same load on
    the machine. This function then:

    * drops the first ``warmup_rounds`` of every batch (connection set-up, first allocation);
    * takes, per batch and per arm, the **median** over the timed rounds: one request that
      waited behind another process (a scheduler hiccup, a garbage collection, on two shared
      cores most of the noise is such one-sided spikes) moves a mean by its full size and a
      median not at all, as long as fewer than half the rounds are hit;
    * divides the candidate's median by the baseline's, per batch: the **paired** ratio
      cancels what both arms share (the batch's size, the HTTP round trip, the machine's load
      at that moment), which a ratio of the two arms' overall means would mix in;
    * returns the **median of the per-batch ratios**, so that one batch hit by a burst of
      load through all its rounds does not decide either. A ratio (not a difference) keeps
      the limit meaningful for any batch size or machine speed.

    A kernel fallback slows every batch alike, so it moves every per-batch ratio and the
    median with them; noise moves a few and the median ignores them. (With the default 256
    typical rows there are two batches, whose median is their mean: there the per-arm medians
    over the rounds carry the robustness.)

    Returns None when either arm has no timed request left after the warm-up.
    Raises ValueError when the arms' timings do not cover the same batches and rounds, or a
    time is not finite and positive.
    """
    if warmup_rounds < 0:
        raise ValueError(f"warmup_rounds must be at least 0, got {warmup_rounds}")
    _check_timings("baseline", baseline)
    _check_timings("candidate", candidate)
    if [len(b) for b in baseline] != [len(c) for c in candidate]:
        raise ValueError("baseline and candidate timings cover different batches or rounds")
    timed_base = [batch[warmup_rounds:] for batch in baseline]
    timed_cand = [batch[warmup_rounds:] for batch in candidate]
    if not timed_base or not timed_base[0]:
        return None
    ratios = tuple(
        float(np.median(c) / np.median(b)) for b, c in zip(timed_base, timed_cand, strict=True)
    )
    return LatencyComparison(
        ratio=float(np.median(ratios)),
        batch_ratios=ratios,
        baseline_ms=float(np.median(np.concatenate(timed_base))) * 1000.0,
        candidate_ms=float(np.median(np.concatenate(timed_cand))) * 1000.0,
        batches=len(ratios),
        timed_rounds=len(timed_base[0]),
    )


def _latency_summary(latency: LatencyComparison | None, limit: float) -> str:
    if latency is None:
        return "latency not timed"
    return (
        f"latency ratio {latency.ratio:.3g} (limit {limit:g}; median over {latency.batches} "
        f"batch(es) of {latency.timed_rounds} timed round(s), baseline {latency.baseline_ms:.3g}"
        f" ms, candidate {latency.candidate_ms:.3g} ms)"
    )


@dataclass(frozen=True)
class ProbeReport:
    max_abs_error: float
    kl: float
    baseline_nonfinite: int
    candidate_nonfinite: int
    rows: int
    result: GateResult
    latency: LatencyComparison | None = None


def _nonfinite(answers: ArmAnswers) -> int:
    return int(np.size(answers.typical) - np.count_nonzero(np.isfinite(answers.typical))) + int(
        np.size(answers.extreme) - np.count_nonzero(np.isfinite(answers.extreme))
    )


def _extra_nonfinite(baseline: ArmAnswers, candidate: ArmAnswers) -> int:
    """Non-finite candidate outputs where the baseline's output is finite."""
    return sum(
        int(np.count_nonzero(~np.isfinite(c) & np.isfinite(b)))
        for b, c in ((baseline.typical, candidate.typical), (baseline.extreme, candidate.extreme))
    )


def compare_outputs(
    baseline: ArmAnswers,
    candidate: ArmAnswers,
    *,
    max_abs_error: float,
    max_latency_ratio: float = DEFAULT_MAX_LATENCY_RATIO,
    warmup_rounds: int = WARMUP_ROUNDS,
) -> ProbeReport:
    """Judge the candidate's answers, and how long it took to give them, against the baseline's.

    Fails (critically) on any non-finite output the baseline does not also produce, and on a
    max absolute error above ``max_abs_error`` over the typical rows where both are finite.
    Fails (not critically: it is slow, not wrong) when both arms were timed and the
    candidate's latency ratio (:func:`compare_latency`) is above ``max_latency_ratio``; the
    result's value and threshold are then the ratio and the limit. The first rule that fails,
    in that order, is the verdict; the message reports every figure.
    """
    if baseline.typical.shape != candidate.typical.shape or (
        baseline.extreme.shape != candidate.extreme.shape
    ):
        raise ValueError("baseline and candidate answers have different shapes")
    rows = int(baseline.typical.shape[0] + baseline.extreme.shape[0])
    both = np.isfinite(baseline.typical) & np.isfinite(candidate.typical)
    diff = np.abs(baseline.typical.astype(np.float64) - candidate.typical.astype(np.float64))
    error = float(diff[both].max()) if both.any() else 0.0
    kl = kl_divergence(
        output_histogram(baseline.typical), output_histogram(candidate.typical), KL_SMOOTHING
    )
    base_bad, cand_bad = _nonfinite(baseline), _nonfinite(candidate)
    extra_bad = _extra_nonfinite(baseline, candidate)
    latency = compare_latency(baseline.seconds, candidate.seconds, warmup_rounds=warmup_rounds)
    summary = (
        f"max abs error {error:.3g} (limit {max_abs_error:g}), KL {kl:.2g}, "
        f"non-finite outputs {cand_bad} (baseline {base_bad}) over {rows} rows, "
        f"{_latency_summary(latency, max_latency_ratio)}"
    )
    if extra_bad:
        result = GateResult(
            GATE,
            Verdict.FAIL,
            float(extra_bad),
            0.0,
            rows,
            0.0,
            f"candidate produced {extra_bad} non-finite output(s) where the baseline's are "
            f"finite: {summary}",
            critical=True,
        )
    elif error > max_abs_error:
        result = GateResult(
            GATE,
            Verdict.FAIL,
            error,
            max_abs_error,
            rows,
            0.0,
            f"candidate outputs differ from the baseline's: {summary}",
            critical=True,
        )
    elif latency is not None and latency.ratio > max_latency_ratio:
        result = GateResult(
            GATE,
            Verdict.FAIL,
            latency.ratio,
            max_latency_ratio,
            rows,
            0.0,
            f"candidate is {latency.ratio:.3g} times slower than the baseline on the same "
            f"inputs: {summary}",
        )
    else:
        result = GateResult(GATE, Verdict.PASS, error, max_abs_error, rows, 0.0, summary)
    return ProbeReport(error, kl, base_bad, cand_bad, rows, result, latency)


def sampled_outputs(baseline: FloatArray, candidate: FloatArray) -> SampledOutputs:
    """One tick of the sampled comparison from both arms' answers to the same rows (one row
    per input row, every numeric output side by side)."""
    if baseline.shape != candidate.shape:
        raise ValueError(
            f"the arms' answers have different shapes: {baseline.shape} and {candidate.shape}"
        )
    b, c = baseline.astype(np.float64), candidate.astype(np.float64)
    finite_b, finite_c = np.isfinite(b), np.isfinite(c)
    both = finite_b & finite_c
    return SampledOutputs(
        rows=int(b.shape[0]),
        baseline_histogram=output_histogram(b),
        candidate_histogram=output_histogram(c),
        baseline_nonfinite=float(np.count_nonzero(~finite_b)),
        candidate_nonfinite=float(np.count_nonzero(~finite_c & finite_b)),
        max_abs_error=float(np.abs(b - c)[both].max()) if both.any() else 0.0,
    )
