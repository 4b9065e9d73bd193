"""The paired probe's pure part: its inputs, and how it judges two arms' answers."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from gelu_rollout.analysis.divergence import kl_divergence
from gelu_rollout.analysis.probe import (
    EXTREME_MAGNITUDES,
    KL_SMOOTHING,
    ArmAnswers,
    compare_outputs,
    output_histogram,
    probe_inputs,
)
from gelu_rollout.analysis.verdict import Verdict
from gelu_rollout.variants import INPUTS, OUTPUT_BUCKETS, reference_outputs

F32 = npt.NDArray[np.float32]


def answers_for(rows: int = 32) -> ArmAnswers:
    """The exact block's answers to the probe inputs, as a healthy arm would give them."""
    inputs = probe_inputs(rows)
    return ArmAnswers(
        typical=reference_outputs(inputs.typical).astype(np.float32),
        extreme=reference_outputs(inputs.extreme).astype(np.float32),
    )


def with_values(
    answers: ArmAnswers, *, typical: F32 | None = None, extreme: F32 | None = None
) -> ArmAnswers:
    return ArmAnswers(
        typical=answers.typical if typical is None else typical,
        extreme=answers.extreme if extreme is None else extreme,
    )


# --- inputs ---------------------------------------------------------------------------------


def test_probe_inputs_are_deterministic_for_a_seed() -> None:
    first, again = probe_inputs(20, seed=5), probe_inputs(20, seed=5)
    np.testing.assert_array_equal(first.typical, again.typical)
    np.testing.assert_array_equal(first.extreme, again.extreme)
    other = probe_inputs(20, seed=6)
    assert not np.array_equal(first.typical, other.typical)


def test_probe_inputs_shapes() -> None:
    inputs = probe_inputs(20)
    assert inputs.typical.shape == (20, INPUTS)
    assert inputs.extreme.shape == (4 * len(EXTREME_MAGNITUDES), INPUTS)
    assert inputs.typical.dtype == np.float32
    assert inputs.extreme.dtype == np.float32
    # Typical rows are N(0, 3²).
    assert 2.0 < float(probe_inputs(2000).typical.std()) < 4.0


def test_probe_inputs_extreme_rows_reach_100_both_ways() -> None:
    extreme = probe_inputs(1).extreme
    rows = [tuple(row) for row in extreme.tolist()]
    assert tuple([100.0] * INPUTS) in rows
    assert tuple([-100.0] * INPUTS) in rows
    for magnitude in EXTREME_MAGNITUDES:
        assert tuple([magnitude] * INPUTS) in rows
        assert tuple([-magnitude] * INPUTS) in rows


def test_probe_inputs_need_a_row() -> None:
    with pytest.raises(ValueError, match="rows must be at least 1"):
        probe_inputs(0)


# --- judging --------------------------------------------------------------------------------


def test_identical_answers_pass() -> None:
    answers = answers_for()
    report = compare_outputs(answers, answers, max_abs_error=1e-3)
    assert report.result.verdict is Verdict.PASS
    assert not report.result.critical
    assert report.max_abs_error == 0.0
    assert report.kl == pytest.approx(0.0, abs=1e-12)
    assert (report.baseline_nonfinite, report.candidate_nonfinite) == (0, 0)
    assert report.rows == 32 + 4 * len(EXTREME_MAGNITUDES)
    assert report.result.gate == "probe"
    assert report.result.value == 0.0
    assert report.result.threshold == 1e-3


def test_extra_nonfinite_output_fails_critically() -> None:
    baseline = answers_for()
    extreme = baseline.extreme.copy()
    extreme[3, 7] = np.nan
    candidate = with_values(baseline, extreme=extreme)
    report = compare_outputs(baseline, candidate, max_abs_error=1e-3)
    assert report.result.verdict is Verdict.FAIL
    assert report.result.critical
    assert report.result.value == 1.0
    assert (report.baseline_nonfinite, report.candidate_nonfinite) == (0, 1)
    assert "non-finite" in report.result.message


def test_infinite_typical_output_fails_too() -> None:
    baseline = answers_for()
    typical = baseline.typical.copy()
    typical[0, 0] = np.inf
    report = compare_outputs(baseline, with_values(baseline, typical=typical), max_abs_error=1.0)
    assert report.result.verdict is Verdict.FAIL
    assert report.result.critical


def test_nonfinite_outputs_the_baseline_shares_do_not_fail() -> None:
    baseline = answers_for()
    extreme = baseline.extreme.copy()
    extreme[-1, :] = np.nan
    both = with_values(baseline, extreme=extreme)
    report = compare_outputs(both, both, max_abs_error=1e-3)
    assert report.result.verdict is Verdict.PASS
    assert (report.baseline_nonfinite, report.candidate_nonfinite) == (INPUTS, INPUTS)


def test_nonfinite_outputs_elsewhere_than_the_baseline_fail() -> None:
    # Same count, different places: the candidate still broke outputs the baseline did not.
    baseline = answers_for()
    base_extreme, cand_extreme = baseline.extreme.copy(), baseline.extreme.copy()
    base_extreme[0, :] = np.nan
    cand_extreme[1, :] = np.nan
    report = compare_outputs(
        with_values(baseline, extreme=base_extreme),
        with_values(baseline, extreme=cand_extreme),
        max_abs_error=1e-3,
    )
    assert report.result.verdict is Verdict.FAIL
    assert report.result.critical
    assert report.result.value == INPUTS


def test_error_above_the_limit_fails_critically() -> None:
    baseline = answers_for()
    typical = baseline.typical.copy()
    typical[5, 2] += 0.25
    candidate = with_values(baseline, typical=typical)
    failed = compare_outputs(baseline, candidate, max_abs_error=0.1)
    assert failed.result.verdict is Verdict.FAIL
    assert failed.result.critical
    assert failed.max_abs_error == pytest.approx(0.25, abs=1e-6)
    assert failed.result.value == failed.max_abs_error
    assert failed.result.threshold == 0.1
    passed = compare_outputs(baseline, candidate, max_abs_error=0.3)
    assert passed.result.verdict is Verdict.PASS


def test_error_only_counts_the_typical_rows() -> None:
    # Extreme rows are judged on finiteness only: a clipped (but finite) answer there passes.
    baseline = answers_for()
    candidate = with_values(baseline, extreme=np.clip(baseline.extreme, -6.0, 6.0))
    report = compare_outputs(baseline, candidate, max_abs_error=1e-3)
    assert report.result.verdict is Verdict.PASS


def test_kl_is_reported() -> None:
    baseline = answers_for(rows=500)
    shifted = (baseline.typical + 0.5).astype(np.float32)
    report = compare_outputs(baseline, with_values(baseline, typical=shifted), max_abs_error=1.0)
    expected = kl_divergence(
        output_histogram(baseline.typical), output_histogram(shifted), KL_SMOOTHING
    )
    assert report.kl == pytest.approx(expected)
    assert report.kl > 0.01  # about 0.5² / (2·2²) for a shift of 0.5 on outputs of sd ~2
    assert f"KL {report.kl:.2g}" in report.result.message
    # The KL is reported, not judged: the error is within the limit, so it passes.
    assert report.result.verdict is Verdict.PASS


@pytest.mark.parametrize("part", ["typical", "extreme"])
def test_shape_mismatch_is_an_error(part: str) -> None:
    baseline = answers_for()
    shorter = getattr(baseline, part)[:-1]
    candidate = with_values(baseline, **{part: shorter})
    with pytest.raises(ValueError, match="different shapes"):
        compare_outputs(baseline, candidate, max_abs_error=1.0)


# --- histogram ------------------------------------------------------------------------------


def test_output_histogram_has_a_bucket_per_bound_and_one_for_inf() -> None:
    counts = output_histogram(np.zeros(3))
    assert len(counts) == len(OUTPUT_BUCKETS) + 1
    assert sum(counts) == 3


def test_output_histogram_ignores_nonfinite_values() -> None:
    counts = output_histogram([0.05, math.nan, math.inf, -math.inf, 100.0, -100.0])
    assert sum(counts) == 3
    assert counts[0] == 1  # -100 <= -4, the first bound
    assert counts[-1] == 1  # 100 > 4, the +Inf bucket


def test_output_histogram_buckets_are_upper_inclusive_like_prometheus() -> None:
    # Prometheus counts v in the bucket le=b when v <= b.
    index = OUTPUT_BUCKETS.index(0.0)
    counts = output_histogram([0.0, 0.05, 0.1])
    assert counts[index] == 1  # 0.0 <= 0
    assert counts[index + 1] == 2  # 0 < 0.05, 0.1 <= 0.1
    # Cumulated, they are Prometheus' _bucket series.
    values = np.random.default_rng(0).normal(0.0, 2.0, 5000)
    cumulative = np.cumsum(output_histogram(values))
    for i, bound in enumerate(OUTPUT_BUCKETS):
        assert cumulative[i] == np.count_nonzero(values <= bound)
    assert cumulative[-1] == values.size
