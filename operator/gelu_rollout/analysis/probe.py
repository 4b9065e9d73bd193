"""The paired probe: the same inputs to baseline and candidate, compared before any traffic.

Pure: :func:`probe_inputs` makes the seeded inputs, :func:`compare_outputs` judges the two
arms' answers. Sending them is the Triton adapter's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from gelu_rollout.analysis.divergence import kl_divergence
from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.variants.catalog import INPUTS, OUTPUT_BUCKETS

GATE: Final = "probe"
PROBE_SEED: Final = 7
TYPICAL_SCALE: Final = 3.0
EXTREME_MAGNITUDES: Final = (5.0, 8.0, 10.0, 20.0, 50.0, 100.0)
KL_SMOOTHING: Final = 0.5

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ProbeInputs:
    """Typical rows, N(0, 3²), judged on accuracy; extreme rows, judged on finiteness."""

    typical: FloatArray
    extreme: FloatArray


def probe_inputs(rows: int, seed: int = PROBE_SEED) -> ProbeInputs:
    """Seeded probe inputs: ``rows`` typical rows and a fixed set of extreme rows.

    Each extreme magnitude m gives four rows: all +m, all -m, and two rows of N(0, 1)·m.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = np.random.default_rng(seed)
    typical = rng.normal(0.0, TYPICAL_SCALE, (rows, INPUTS))
    extreme = []
    for magnitude in EXTREME_MAGNITUDES:
        extreme.append(np.full(INPUTS, magnitude))
        extreme.append(np.full(INPUTS, -magnitude))
        extreme.extend(rng.normal(0.0, 1.0, (2, INPUTS)) * magnitude)
    return ProbeInputs(typical.astype(np.float32), np.asarray(extreme, dtype=np.float32))


def output_histogram(values: npt.ArrayLike) -> tuple[float, ...]:
    """Per-bucket counts of the finite values over OUTPUT_BUCKETS, with a last +Inf bucket."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    finite = flat[np.isfinite(flat)]
    # Prometheus buckets are upper-inclusive (value <= le): bucket i holds
    # OUTPUT_BUCKETS[i-1] < value <= OUTPUT_BUCKETS[i], the last one everything above.
    index = np.searchsorted(np.asarray(OUTPUT_BUCKETS), finite, side="left")
    counts = np.bincount(index, minlength=len(OUTPUT_BUCKETS) + 1)
    return tuple(float(c) for c in counts)


@dataclass(frozen=True)
class ArmAnswers:
    """What one arm answered to the probe inputs."""

    typical: FloatArray
    extreme: FloatArray


@dataclass(frozen=True)
class ProbeReport:
    max_abs_error: float
    kl: float
    baseline_nonfinite: int
    candidate_nonfinite: int
    rows: int
    result: GateResult


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
    baseline: ArmAnswers, candidate: ArmAnswers, *, max_abs_error: float
) -> ProbeReport:
    """Judge the candidate's answers against the baseline's.

    Fails (critically) on any non-finite output the baseline does not also produce, and on a
    max absolute error above ``max_abs_error`` over the typical rows where both are finite.
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
    summary = (
        f"max abs error {error:.3g} (limit {max_abs_error:g}), KL {kl:.2g}, "
        f"non-finite outputs {cand_bad} (baseline {base_bad}) over {rows} rows"
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
    else:
        result = GateResult(GATE, Verdict.PASS, error, max_abs_error, rows, 0.0, summary)
    return ProbeReport(error, kl, base_bad, cand_bad, rows, result)
