"""Each gate judges what exists: a missing series blinds only the gates that need it, the
sampled comparison feeds the output gates, and optional gates without data are left out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gelu_rollout.analysis.model_interface import (
    InterfaceError,
    ModelInterface,
    TensorSpec,
    answers_matrix,
    interface_difference,
    interface_from_metadata,
)
from gelu_rollout.analysis.observations import (
    NONFINITE_SIGNAL,
    OUTPUTS_SIGNAL,
    SAMPLED_COMPARISON,
    ArmObservation,
    SampledOutputs,
    StepEvidence,
)
from gelu_rollout.analysis.probe import GELU_INTERFACE, probe_inputs, sampled_outputs
from gelu_rollout.analysis.sample_inputs import (
    samples_from_config_map,
    seeded_inputs,
    tick_rows,
)
from gelu_rollout.analysis.verdict import Verdict
from gelu_rollout.spec.status import Stage
from tests.rollout_helpers import Driver, arm, make_spec

GAPS = {
    NONFINITE_SIGNAL: "the candidate exports no gelu_nonfinite_outputs_total (q1 is empty)",
    OUTPUTS_SIGNAL: "the candidate exports no gelu_output_value_bucket (q2 is empty)",
}


def uninstrumented(
    driver: Driver, signals: tuple[str, ...] = (NONFINITE_SIGNAL, OUTPUTS_SIGNAL)
) -> ArmObservation:
    observation = arm(windows=driver.windows())
    return dataclasses.replace(
        observation,
        nonfinite=None if NONFINITE_SIGNAL in signals else observation.nonfinite,
        histogram=() if OUTPUTS_SIGNAL in signals else observation.histogram,
        gaps={s: GAPS[s] for s in signals},
    )


def verdicts(driver: Driver) -> dict[str, Verdict]:
    return {r.gate: r.verdict for r in driver.decisions[-1].results}


def clean_sample(rows: int = 64) -> SampledOutputs:
    answers = np.random.default_rng(1).normal(0, 1, (rows, 16))
    return sampled_outputs(answers, answers.copy())


@pytest.mark.parametrize(
    "signals", [(NONFINITE_SIGNAL,), (OUTPUTS_SIGNAL,), (NONFINITE_SIGNAL, OUTPUTS_SIGNAL)]
)
def test_a_missing_output_series_leaves_the_other_gates_judging(signals: tuple[str, ...]) -> None:
    driver = Driver(make_spec(outputSample={"enabled": False}))
    for _ in range(4):
        driver.tick(candidate=uninstrumented(driver, signals))
    results = {r.gate: r for r in driver.decisions[-1].results}
    # The traffic gates judge as usual.
    for gate in ("burnRate", "errorRate", "latencyRegression", "latencyCeiling"):
        assert results[gate].verdict is Verdict.PASS, results[gate]
    blinded = {"nonFinite"} | ({"divergence"} if OUTPUTS_SIGNAL in signals else set())
    for gate in blinded:
        result = results[gate]
        assert result.verdict is Verdict.INCONCLUSIVE, result
        assert result.no_data
        # It says which series it lacks and what to do.
        assert any(GAPS[s] in result.message for s in signals), result.message
        assert "enable analysis.outputSample" in result.message
    for gate in {"nonFinite", "divergence"} - blinded:
        assert results[gate].verdict is Verdict.PASS, results[gate]


def test_a_required_gate_without_data_holds_its_step_and_is_named() -> None:
    driver = Driver(make_spec(outputSample={"enabled": False}))
    while driver.status.stage is not Stage.PAUSED and len(driver.decisions) < 40:
        driver.tick(candidate=uninstrumented(driver))
    assert driver.status.stage is Stage.PAUSED
    stalled = driver.status.condition("Stalled")
    assert stalled is not None
    assert stalled.reason == "GateWithoutData"
    assert "nonFinite" in stalled.message
    assert "gelu_nonfinite_outputs_total" in stalled.message
    events = [e for d in driver.decisions for e in d.events]
    assert any(e.reason == "GateWithoutData" and e.type == "Warning" for e in events)


def test_optional_gates_without_data_are_left_out_and_the_status_says_so() -> None:
    spec = make_spec(
        outputSample={"enabled": False},
        gates={"nonFinite": {"required": False}, "divergence": {"required": False}},
    )
    driver = Driver(spec)
    while not driver.status.stage.terminal and len(driver.decisions) < 40:
        driver.tick(candidate=uninstrumented(driver))
    assert driver.status.stage is Stage.PROMOTED
    assert "judged without nonFinite, divergence" in (driver.status.message or "")
    skipped = [e for e in driver.status.ledger if e.basis == "skipped"]
    assert {e.gate for e in skipped} == {"nonFinite", "divergence"}
    events = [e for d in driver.decisions for e in d.events]
    assert sum(e.reason == "GateSkipped" for e in events) == len(spec.traffic.steps)


def test_an_optional_gate_with_data_is_still_waited_for_and_can_fail() -> None:
    # Optional means "may go without when there is nothing", not "may be ignored".
    spec = make_spec(gates={"nonFinite": {"required": False}})
    driver = Driver(spec)
    driver.tick()
    driver.tick(candidate=arm(nonfinite=3.0, windows=driver.windows()))
    assert driver.status.stage is Stage.ROLLED_BACK


def test_the_sampled_comparison_feeds_the_output_gates_of_an_uninstrumented_model() -> None:
    driver = Driver(make_spec(gates={"divergence": {"minOutputs": 500}}))
    for _ in range(3):
        driver.tick(candidate=uninstrumented(driver), sample=clean_sample())
    results = {r.gate: r for r in driver.decisions[-1].results}
    for gate in ("nonFinite", "divergence"):
        assert results[gate].verdict is Verdict.PASS, results[gate]
        assert SAMPLED_COMPARISON in results[gate].message
    # The power plan counts the sample's own rate, not the model's (absent) histogram.
    warnings = [e.message for d in driver.decisions for e in d.events]
    assert not any("divergence" in m and "no traffic" in m for m in warnings), warnings


def test_a_nan_in_the_sample_rolls_back_even_without_metrics() -> None:
    driver = Driver(make_spec())
    driver.tick(candidate=uninstrumented(driver), sample=clean_sample())
    answers = np.ones((8, 16))
    broken = answers.copy()
    broken[3, 5] = np.nan
    driver.tick(missing=True, sample=sampled_outputs(answers, broken))
    assert driver.status.stage is Stage.ROLLED_BACK
    assert driver.status.condition("RolledBack").reason == "NonFiniteOutputs"  # type: ignore[union-attr]


def test_a_drifting_sample_fails_divergence_at_the_probes_limit() -> None:
    driver = Driver(make_spec(probe={"enabled": True, "maxAbsError": 0.05}))
    driver.status = driver.status.model_copy(update={"stage": Stage.PROGRESSING})
    answers = np.ones((8, 16))
    driver.tick(candidate=uninstrumented(driver), sample=sampled_outputs(answers, answers * 1.1))
    failure = next(r for r in driver.decisions[-1].results if r.failed)
    assert failure.gate == "divergence"
    assert failure.value == pytest.approx(0.1)


def test_the_metrics_win_where_both_arms_export_them() -> None:
    evidence = StepEvidence()
    evidence = dataclasses.replace(
        evidence,
        baseline=evidence.baseline.add(arm()),
        candidate=evidence.candidate.add(arm()),
    ).add_sample(clean_sample())
    assert evidence.outputs_for_divergence().source != SAMPLED_COMPARISON  # type: ignore[union-attr]
    assert evidence.outputs_for_nonfinite().source != SAMPLED_COMPARISON  # type: ignore[union-attr]
    # Kept through the status.
    again = StepEvidence.from_dict(evidence.to_dict())
    assert again == evidence


def test_sampled_nonfinite_counts_only_the_candidates_own() -> None:
    base = np.ones((2, 4))
    base[0, 0] = np.nan
    cand = base.copy()
    cand[1, 1] = np.inf
    sample = sampled_outputs(base, cand)
    assert (sample.baseline_nonfinite, sample.candidate_nonfinite) == (1.0, 1.0)
    assert sample.max_abs_error == 0.0


def test_the_interface_comes_from_triton_metadata() -> None:
    metadata = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "INPUT1", "datatype": "INT64", "shape": [-1, -1]},
        ],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}],
    }
    interface = interface_from_metadata(metadata, {"max_batch_size": 8})
    assert interface.inputs[0] == TensorSpec("INPUT0", "FP32", (4,))
    assert interface.inputs[1].row_shape == (1,)
    unbatched = interface_from_metadata(metadata, {"max_batch_size": 0})
    assert unbatched.inputs[0].shape == (-1, 4)
    assert unbatched.batch_rows == 1
    with pytest.raises(InterfaceError, match="no inputs"):
        interface_from_metadata({"inputs": [], "outputs": []}, {})


def test_an_interface_difference_is_spelled_out() -> None:
    other = ModelInterface(
        (TensorSpec("INPUT0", "FP16", (16,)),),
        (TensorSpec("OUTPUT0", "FP32", (16,)), TensorSpec("EXTRA", "FP32", (1,))),
        256,
    )
    difference = interface_difference(GELU_INTERFACE, other)
    assert difference is not None
    assert "INPUT0 FP32[16] is INPUT0 FP16[16]" in difference
    assert "extra output EXTRA" in difference
    assert interface_difference(GELU_INTERFACE, GELU_INTERFACE) is None


def test_seeded_inputs_fit_any_numeric_interface() -> None:
    interface = ModelInterface(
        (
            TensorSpec("x", "FP16", (3, 2)),
            TensorSpec("ids", "INT32", (5,)),
            TensorSpec("mask", "BOOL", (5,)),
        ),
        (TensorSpec("y", "FP32", (2,)),),
        4,
    )
    seeded = seeded_inputs(interface, 6, seed=3)
    assert seeded.typical["x"].shape == (6, 3, 2)
    assert seeded.typical["x"].dtype == np.float16
    assert seeded.typical["ids"].dtype == np.int32
    assert seeded.typical["ids"].max() < 8
    assert seeded.extreme["x"].shape[0] == seeded.extreme["ids"].shape[0] > 0
    # A tick draws at most one batch, and other ticks other rows.
    first, second = tick_rows(interface, 8, 0), tick_rows(interface, 8, 1)
    assert first["x"].shape[0] == 4
    assert not np.array_equal(first["x"], second["x"])
    strings = ModelInterface((TensorSpec("text", "BYTES", (1,)),), interface.outputs, 4)
    with pytest.raises(InterfaceError, match="configMapName"):
        seeded_inputs(strings, 2, seed=1)


def test_the_gelu_probe_inputs_are_the_seeded_mix_of_its_interface() -> None:
    seeded = seeded_inputs(GELU_INTERFACE, 32, seed=7)
    probe = probe_inputs(32, seed=7)
    np.testing.assert_array_equal(probe.typical, seeded.typical["INPUT0"])
    np.testing.assert_array_equal(probe.extreme, seeded.extreme["INPUT0"])


def test_user_samples_are_checked_against_the_interface() -> None:
    import base64
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 16), dtype=np.float32))
    encoded = base64.b64encode(buffer.getvalue()).decode()
    rows = samples_from_config_map({}, {"INPUT0.npy": encoded}, GELU_INTERFACE)
    assert rows["INPUT0"].shape == (3, 16)
    rows = samples_from_config_map({"s.json": '{"INPUT0": [[0.5]]}'}, {}, _one_wide())
    assert rows["INPUT0"].dtype == np.float32
    with pytest.raises(InterfaceError, match=r"declares \[16\]"):
        samples_from_config_map({"s.json": '{"INPUT0": [[1, 2]]}'}, {}, GELU_INTERFACE)
    with pytest.raises(InterfaceError, match="no rows for input INPUT0"):
        samples_from_config_map({"s.json": '{"OTHER": [[1]]}'}, {}, GELU_INTERFACE)
    with pytest.raises(InterfaceError, match="not JSON"):
        samples_from_config_map({"s.json": "{"}, {}, GELU_INTERFACE)
    with pytest.raises(InterfaceError, match=r"\.npy"):
        samples_from_config_map({}, {"INPUT0.npy": "bm90IG5weQ=="}, GELU_INTERFACE)


def _one_wide() -> ModelInterface:
    return ModelInterface((TensorSpec("INPUT0", "FP32", (1,)),), GELU_INTERFACE.outputs, 4)


def test_answers_of_several_outputs_sit_side_by_side() -> None:
    interface = ModelInterface(
        GELU_INTERFACE.inputs,
        (
            TensorSpec("a", "FP32", (2,)),
            TensorSpec("s", "BYTES", (1,)),
            TensorSpec("b", "INT8", (3,)),
        ),
        4,
    )
    matrix = answers_matrix(
        {"a": np.ones((2, 2)), "b": np.zeros((2, 3), dtype=np.int8)}, interface, 2
    )
    assert matrix.shape == (2, 5)
