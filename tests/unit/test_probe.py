"""The paired probe's pure part: its inputs, and how it judges two arms' answers."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from gelu_rollout.analysis.divergence import kl_divergence
from gelu_rollout.analysis.probe import (
    DEFAULT_MAX_LATENCY_RATIO,
    KL_SMOOTHING,
    TIMED_ROUNDS,
    WARMUP_ROUNDS,
    ArmAnswers,
    Timings,
    compare_latency,
    compare_outputs,
    output_histogram,
    probe_inputs,
)
from gelu_rollout.analysis.sample_inputs import EXTREME_MAGNITUDES
from gelu_rollout.analysis.verdict import Verdict
from gelu_rollout.spec import SpecError, parse_spec
from gelu_rollout.spec.model import ProbeSpec
from gelu_rollout.variants import INPUTS, OUTPUT_BUCKETS, reference_outputs

F32 = npt.NDArray[np.float32]
ROUNDS = WARMUP_ROUNDS + TIMED_ROUNDS


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


# --- latency --------------------------------------------------------------------------------


def steady(ms: float, batches: int = 2, rounds: int = ROUNDS) -> Timings:
    """Every request of every batch took ``ms`` milliseconds."""
    return tuple(tuple([ms / 1000.0] * rounds) for _ in range(batches))


def timed(answers: ArmAnswers, seconds: Timings) -> ArmAnswers:
    return ArmAnswers(answers.typical, answers.extreme, seconds)


def noisy(
    ms: float, rng: np.random.Generator, batches: int = 2, rounds: int = ROUNDS
) -> list[list[float]]:
    """Request times as a shared two-core machine gives them: jitter of ±30% on every request
    and, one request in ten, one that waited behind another process for 5 to 20 times longer."""
    times = ms / 1000.0 * rng.uniform(0.7, 1.3, (batches, rounds))
    spikes = rng.random((batches, rounds)) < 0.1
    times[spikes] *= rng.uniform(5.0, 20.0, int(spikes.sum()))
    result: list[list[float]] = times.tolist()
    return result


def frozen(times: list[list[float]]) -> Timings:
    return tuple(tuple(batch) for batch in times)


def test_a_markedly_slower_candidate_fails_with_the_ratio() -> None:
    # A kernel fallback: every request of the candidate takes ten times as long.
    answers = answers_for()
    report = compare_outputs(
        timed(answers, steady(1.5)),
        timed(answers, steady(15.0)),
        max_abs_error=1e-3,
        max_latency_ratio=3.0,
    )
    assert report.result.verdict is Verdict.FAIL
    assert not report.result.critical  # slow, not wrong
    assert report.result.value == pytest.approx(10.0)
    assert report.result.threshold == 3.0
    assert report.latency is not None
    assert report.latency.ratio == pytest.approx(10.0)
    assert report.latency.baseline_ms == pytest.approx(1.5)
    assert report.latency.candidate_ms == pytest.approx(15.0)
    assert (report.latency.batches, report.latency.timed_rounds) == (2, TIMED_ROUNDS)
    assert "10 times slower" in report.result.message
    assert "latency ratio 10 (limit 3;" in report.result.message
    # The outputs were fine: their figures are still in the message.
    assert "max abs error 0 (limit 0.001)" in report.result.message


def test_a_candidate_as_fast_as_the_baseline_passes_and_reports_its_ratio() -> None:
    answers = answers_for()
    report = compare_outputs(
        timed(answers, steady(2.0)), timed(answers, steady(2.2)), max_abs_error=1e-3
    )
    assert report.result.verdict is Verdict.PASS
    # A pass keeps the accuracy figures as value and threshold; the ratio is in the message.
    assert report.result.value == 0.0
    assert report.result.threshold == 1e-3
    assert report.latency is not None
    assert report.latency.ratio == pytest.approx(1.1)
    assert f"latency ratio 1.1 (limit {DEFAULT_MAX_LATENCY_RATIO:g};" in report.result.message


def test_the_limit_is_exclusive() -> None:
    answers = answers_for()
    at_limit = compare_outputs(
        timed(answers, steady(1.0)),
        timed(answers, steady(2.0)),
        max_abs_error=1e-3,
        max_latency_ratio=2.0,
    )
    assert at_limit.result.verdict is Verdict.PASS
    above = compare_outputs(
        timed(answers, steady(1.0)),
        timed(answers, steady(2.0)),
        max_abs_error=1e-3,
        max_latency_ratio=1.99,
    )
    assert above.result.verdict is Verdict.FAIL


def test_noise_does_not_fail_a_healthy_candidate() -> None:
    # 200 simulated probes of the same model on both arms, 3 batches each: every request with
    # jitter and occasional large spikes, and one batch of the candidate caught in a burst of
    # load (four times slower) through all its rounds. None fails; judged on the arms' mean
    # request times instead, many would.
    answers = answers_for()
    ratios, mean_ratios = [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        baseline, candidate = noisy(1.5, rng, batches=3), noisy(1.5, rng, batches=3)
        candidate[1] = [t * 4.0 for t in candidate[1]]
        report = compare_outputs(
            timed(answers, frozen(baseline)), timed(answers, frozen(candidate)), max_abs_error=1e-3
        )
        assert report.result.verdict is Verdict.PASS, (seed, report.result.message)
        assert report.latency is not None
        ratios.append(report.latency.ratio)
        mean_ratios.append(
            float(np.mean(np.concatenate(candidate)) / np.mean(np.concatenate(baseline)))
        )
    assert max(ratios) < 2.0
    assert 0.8 < float(np.median(ratios)) < 1.25
    assert sum(r > DEFAULT_MAX_LATENCY_RATIO for r in mean_ratios) >= 20


def test_one_slow_request_does_not_decide_but_a_slow_arm_does() -> None:
    answers = answers_for()
    base = steady(1.0)
    one_spike = [list(batch) for batch in steady(1.0)]
    one_spike[0][-1] = 1.0  # one request of a second
    passed = compare_outputs(
        timed(answers, base), timed(answers, frozen(one_spike)), max_abs_error=1e-3
    )
    assert passed.latency is not None
    assert passed.latency.ratio == pytest.approx(1.0)
    assert passed.result.verdict is Verdict.PASS
    # The same slowdown on most rounds of every batch is the candidate's, and fails.
    mostly = [[1.0 if r % 3 else 0.001 for r in range(ROUNDS)] for _ in range(2)]
    failed = compare_outputs(
        timed(answers, base), timed(answers, frozen(mostly)), max_abs_error=1e-3
    )
    assert failed.result.verdict is Verdict.FAIL


def test_the_warmup_round_is_excluded() -> None:
    # One warm-up round and one timed round: the candidate's first request of each batch
    # opened a connection and took 100 ms; the timed one took as long as the baseline's.
    answers = answers_for()
    baseline = ((0.002, 0.001), (0.002, 0.001))
    candidate = ((0.1, 0.001), (0.1, 0.001))
    report = compare_outputs(
        timed(answers, baseline), timed(answers, candidate), max_abs_error=1e-3
    )
    assert report.latency is not None
    assert report.latency.ratio == pytest.approx(1.0)
    assert report.latency.timed_rounds == 1
    assert report.result.verdict is Verdict.PASS
    # Counted, the warm-up would have failed it.
    counted = compare_outputs(
        timed(answers, baseline), timed(answers, candidate), max_abs_error=1e-3, warmup_rounds=0
    )
    assert counted.result.verdict is Verdict.FAIL


def test_ratio_is_the_median_of_per_batch_ratios_of_medians() -> None:
    baseline = ((9.0, 1.0, 2.0, 3.0), (9.0, 2.0, 2.0, 2.0), (9.0, 1.0, 1.0, 1.0))
    candidate = ((9.0, 4.0, 60.0, 2.0), (9.0, 1.0, 3.0, 5.0), (9.0, 8.0, 8.0, 1.0))
    latency = compare_latency(baseline, candidate)
    assert latency is not None
    # Medians after the warm-up: baseline 2, 2, 1; candidate 4, 3, 8.
    assert latency.batch_ratios == pytest.approx((2.0, 1.5, 8.0))
    assert latency.ratio == pytest.approx(2.0)
    assert latency.baseline_ms == pytest.approx(2000.0)  # median of the 9 timed requests
    assert latency.candidate_ms == pytest.approx(4000.0)
    assert (latency.batches, latency.timed_rounds) == (3, 3)


def test_untimed_answers_are_not_judged_on_latency() -> None:
    answers = answers_for()
    report = compare_outputs(answers, answers, max_abs_error=1e-3, max_latency_ratio=1.01)
    assert report.latency is None
    assert report.result.verdict is Verdict.PASS
    assert "latency not timed" in report.result.message
    # Nothing left after the warm-up is not timed either.
    only_warmup = steady(1.0, rounds=WARMUP_ROUNDS)
    assert compare_latency(only_warmup, steady(9.0, rounds=WARMUP_ROUNDS)) is None


def test_wrong_outputs_decide_before_latency() -> None:
    baseline = answers_for()
    typical = baseline.typical.copy()
    typical[0, 0] += 1.0
    report = compare_outputs(
        timed(baseline, steady(1.0)),
        timed(with_values(baseline, typical=typical), steady(50.0)),
        max_abs_error=0.1,
    )
    assert report.result.verdict is Verdict.FAIL
    assert report.result.critical
    assert report.result.threshold == 0.1
    assert "latency ratio 50" in report.result.message


@pytest.mark.parametrize(
    ("baseline", "candidate", "match"),
    [
        (steady(1.0, batches=2), steady(1.0, batches=3), "different batches or rounds"),
        (steady(1.0, rounds=4), steady(1.0, rounds=5), "different batches or rounds"),
        (((0.001, 0.001), (0.001,)), ((0.001, 0.001), (0.001,)), "number of rounds"),
        (((0.001, 0.0),), ((0.001, 0.001),), "finite and positive"),
        (((0.001, 0.001),), ((0.001, math.nan),), "finite and positive"),
        (steady(1.0), (), "different batches or rounds"),
    ],
)
def test_timings_that_do_not_pair_are_an_error(
    baseline: Timings, candidate: Timings, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        compare_latency(baseline, candidate)


def test_the_spec_default_and_its_lower_bound() -> None:
    assert ProbeSpec().max_latency_ratio == DEFAULT_MAX_LATENCY_RATIO == 3.0
    spec = {
        "model": {"name": "gelu-mlp"},
        "baseline": {"variant": "exact"},
        "candidate": {"variant": "tanh"},
        "analysis": {"probe": {"maxLatencyRatio": 1.5}},
    }
    assert parse_spec(spec).analysis.probe.max_latency_ratio == 1.5
    # At 1 or below, a candidate identical to its baseline would fail about half the time.
    spec["analysis"] = {"probe": {"maxLatencyRatio": 1}}
    with pytest.raises(SpecError, match=r"spec\.analysis\.probe\.maxLatencyRatio"):
        parse_spec(spec)


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
