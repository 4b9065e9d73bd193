"""The scenario JSON format: round trips, validation messages, reset-safe increments."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gelu_lab.bench.generate import generate_suite
from gelu_lab.bench.scenario import (
    FORMAT,
    FORMAT_V1,
    ArmTick,
    Scenario,
    ScenarioError,
    StepPlan,
    Tick,
    counter_increase,
    deltas,
    load_scenario,
    load_scenarios,
    save_scenarios,
    scenario_from_json,
    scenario_to_json,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenario-format.md"


def _arm(
    requests: float, failures: float, histogram: tuple[float, ...], p99: float | None
) -> ArmTick:
    return ArmTick(requests, failures, 0.0, histogram, p99)


def _scenario() -> Scenario:
    return Scenario(
        name="round-trip",
        kind="errors-10x",
        severity="severe",
        expected="rollback",
        tick_seconds=30.0,
        fault_onset_tick=1,
        availability_slo=0.995,
        latency_p99_ceiling_ms=180.0,
        histogram_bounds=(-0.1, 0.5, 2.0),
        steps=(StepPlan(10, 1), StepPlan(50, 2)),
        ticks=(
            Tick(_arm(90, 0, (5, 40, 40, 5), 100.0), _arm(10, 0, (1, 4, 4, 1), None)),
            Tick(
                ArmTick(180.5, 1, 0, (10, 80, 80, 10.5), 101.0),
                ArmTick(20, 2, 1, (2, 8, 8, 2), 150.25),
            ),
            Tick(_arm(40, 0, (2, 18, 18, 2), 99.0), _arm(70, 9, (7, 28, 28, 7), 160.0)),
        ),
        notes=("made in a test",),
    )


def _document() -> dict[str, Any]:
    return scenario_to_json(_scenario())


def test_json_round_trip_keeps_every_field() -> None:
    original = _scenario()
    document = json.loads(json.dumps(scenario_to_json(original)))
    assert document["format"] == FORMAT
    assert scenario_from_json(document) == original


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    first = _scenario()
    second = replace(
        first,
        name="healthy-one",
        expected="promote",
        severity="none",
        kind="healthy",
        fault_onset_tick=None,
    )
    save_scenarios([second, first], tmp_path / "nested")
    assert (tmp_path / "nested" / "round-trip.json").is_file()
    loaded = load_scenarios(tmp_path)
    assert loaded == [second, first]  # path order: healthy-one.json < round-trip.json
    assert load_scenario(tmp_path / "nested" / "round-trip.json") == first


def test_defaults_for_optional_fields() -> None:
    document = _document()
    for key in ("name", "kind", "severity", "tickSeconds", "slo", "notes"):
        del document[key]
    for tick in document["ticks"]:
        for arm in tick.values():
            del arm["nonfinite"]
            del arm["p99Ms"]
    scenario = scenario_from_json(document, "dir/some-file.json")
    assert scenario.name == "some-file"
    assert scenario.kind == "unknown"
    assert scenario.severity == "moderate"
    assert scenario.tick_seconds == 60
    assert scenario.availability_slo == 0.999
    assert scenario.latency_p99_ceiling_ms == 250
    assert scenario.notes == ()
    assert all(t.candidate.nonfinite == 0 and t.candidate.p99_ms is None for t in scenario.ticks)


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with value ``...`` delete) a field named like the reader names them."""
    keys: list[str | int] = []
    for part in path.split("."):
        match = re.fullmatch(r"(\w+)((?:\[\d+\])*)", part)
        assert match is not None, part
        keys.append(match.group(1))
        keys.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    target: Any = document
    for key in keys[:-1]:
        target = target[key]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value


INVALID = [
    ("format", "gelu-rollout/scenario/v0", "format"),
    ("format", ..., "format"),
    ("expected", "maybe", "expected"),
    ("severity", "catastrophic", "severity"),
    ("slo.availability", 1.5, "slo.availability"),
    ("slo.availability", "high", "slo.availability"),
    ("slo.latencyP99Ms", -1, "slo.latencyP99Ms"),
    ("slo.latencyP99Ms", "fast", "slo.latencyP99Ms"),
    ("tickSeconds", 0.5, "tickSeconds"),
    ("histogramBounds", [], "histogramBounds"),
    ("histogramBounds", ..., "histogramBounds"),
    ("histogramBounds", [0.0, 2.0, 1.0], "histogramBounds"),
    ("histogramBounds[1]", "x", "histogramBounds[1]"),
    ("steps", [], "steps"),
    ("steps", ..., "steps"),
    ("steps[0]", 3, "steps[0]"),
    ("steps[1].weight", 0, "steps[1].weight"),
    ("steps[1].ticks", 1.5, "steps[1].ticks"),
    ("ticks", [], "ticks"),
    ("ticks[1]", "tick", "ticks[1]"),
    ("ticks[1].baseline", None, "ticks[1].baseline"),
    ("ticks[2].candidate.histogram", [1, 2, 3], "ticks[2].candidate.histogram"),
    ("ticks[2].candidate.histogram[3]", -1, "ticks[2].candidate.histogram[3]"),
    ("ticks[0].baseline.requests", ..., "ticks[0].baseline.requests"),
    ("ticks[0].baseline.requests", True, "ticks[0].baseline.requests"),
    ("ticks[0].candidate.failures", 11, "ticks[0].candidate.failures"),
    ("ticks[1].candidate.nonfinite", -2, "ticks[1].candidate.nonfinite"),
    ("ticks[1].candidate.p99Ms", float("nan"), "ticks[1].candidate.p99Ms"),
    ("faultOnsetTick", ..., "faultOnsetTick"),
    ("faultOnsetTick", -1, "faultOnsetTick"),
]


@pytest.mark.parametrize(("path", "value", "field"), INVALID)
def test_every_validation_error_names_its_field(path: str, value: Any, field: str) -> None:
    document = _document()
    _set(document, path, value)
    with pytest.raises(ScenarioError) as caught:
        scenario_from_json(document, "bad.json")
    message = str(caught.value)
    assert message.startswith("bad.json: invalid scenario")
    problems = message.splitlines()[1:]
    assert any(line.strip().startswith(f"{field}:") for line in problems), message


def test_all_problems_are_reported_together() -> None:
    document = _document()
    _set(document, "expected", "nope")
    _set(document, "steps[0].weight", -3)
    _set(document, "ticks[2].baseline.histogram", [0])
    with pytest.raises(ScenarioError) as caught:
        scenario_from_json(document, "many.json")
    lines = [line.strip() for line in str(caught.value).splitlines()[1:]]
    assert {line.split(":")[0] for line in lines} >= {
        "expected",
        "steps[0].weight",
        "ticks[2].baseline.histogram",
    }


def test_non_object_document_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="must be a JSON object"):
        scenario_from_json([1, 2], "list.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ScenarioError, match=r"broken\.json: cannot read scenario"):
        load_scenario(broken)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScenarioError, match="holds no"):
        load_scenarios(empty)
    with pytest.raises(ScenarioError, match="not a directory"):
        load_scenarios(tmp_path / "missing")


def test_counter_increase_reads_a_drop_as_a_reset() -> None:
    assert counter_increase(100, 130) == 30
    assert counter_increase(100, 100) == 0
    assert counter_increase(100, 40) == 40


def test_deltas_are_reset_safe_per_counter() -> None:
    scenario = _scenario()
    increments = list(deltas(scenario))
    assert len(increments) == len(scenario.ticks)
    first_base, first_cand = increments[0]
    # The first tick's increase is its value (counters start at zero).
    assert first_base.requests == 90
    assert first_base.histogram == (5, 40, 40, 5)
    assert first_cand.p99_ms is None
    base, cand = increments[1]
    assert base.requests == pytest.approx(90.5)
    assert base.histogram == (5, 40, 40, 5.5)
    assert cand.failures == 2
    assert cand.nonfinite == 1
    assert cand.p99_ms == 150.25
    # Tick 2: the baseline restarted (every counter dropped), the candidate did not.
    base, cand = increments[2]
    assert base.requests == 40
    assert base.failures == 0
    assert base.histogram == (2, 18, 18, 2)
    assert cand.requests == 50
    assert cand.failures == 7
    assert cand.nonfinite == 0  # 1 -> 0 is a reset to zero: increase 0
    assert cand.histogram == (5, 20, 20, 5)
    assert cand.p99_ms == 160.0


def test_a_reset_in_one_bucket_only_affects_that_bucket() -> None:
    scenario = _scenario()
    ticks = list(scenario.ticks)
    ticks[1] = Tick(ticks[1].baseline, ArmTick(20, 2, 1, (2, 3, 8, 2), 150.25))
    changed = replace(scenario, ticks=tuple(ticks))
    _, cand = list(deltas(changed))[1]
    assert cand.histogram == (1, 3, 4, 1)


def _doc_block(heading: str) -> dict[str, Any]:
    text = DOC.read_text()
    match = re.search(rf"## {heading}.*?```json\n(.*?)```", text, re.S)
    assert match is not None, f"the {heading!r} block is missing from docs/scenario-format.md"
    document: dict[str, Any] = json.loads(match.group(1))
    return document


def test_documented_example_is_valid_and_behaves_as_described() -> None:
    scenario = scenario_from_json(_doc_block("A complete example"), "doc-example")
    assert not scenario.adaptive
    assert scenario.planned_ticks == 4
    assert len(scenario.histogram_bounds) + 1 == len(scenario.ticks[0].baseline.histogram)
    increments = list(deltas(scenario))
    assert [b.requests for b, _ in increments] == [900, 900, 500, 500]
    assert [c.failures for _, c in increments] == [0, 0, 6, 5]
    for base, cand in increments:
        assert sum(base.histogram) == base.requests
        assert sum(cand.histogram) == cand.requests
        for arm in (base, cand):
            assert arm.latency_histogram is not None
            assert arm.latency_histogram.requests == arm.requests
            assert arm.p99_window_seconds == 60
    candidate = [c for _, c in increments]
    assert candidate[0].latency_mean_ms == pytest.approx(50.0)
    assert candidate[2].latency_mean_ms == pytest.approx(25000 / 494)
    assert candidate[2].queue_ms == pytest.approx(2500 / 494)
    assert candidate[3].latency_histogram is not None
    assert candidate[3].latency_histogram.counts == (490, 9, 1)
    assert increments[2][0].latency_mean_ms is None  # the baseline has no duration counter
    assert scenario_from_json(copy.deepcopy(scenario_to_json(scenario))) == scenario


def test_documented_adaptive_example_is_valid_and_behaves_as_described() -> None:
    scenario = scenario_from_json(_doc_block("An adaptive example"), "doc-adaptive")
    assert scenario.adaptive
    assert scenario.model is not None
    assert scenario.length == 3
    first, second, third = scenario.model.ticks
    assert second.candidate.median_ms == 50  # changed
    assert second.candidate.log_sd == first.candidate.log_sd == 0.45  # carried over
    assert second.candidate.tail_log_sd == 0.45  # defaults to logSd
    assert third.baseline.failure_ratio == 0.0004
    assert third.baseline.output_mix == (1, 0)
    assert scenario.model.cold_start.share == 0.2
    assert scenario.p99_window is not None
    assert scenario.p99_window.seconds == 60
    assert scenario_from_json(copy.deepcopy(scenario_to_json(scenario))) == scenario
    with pytest.raises(ValueError, match="adaptive"):
        list(deltas(scenario))


def test_v1_files_are_still_read() -> None:
    document = _document()
    document["format"] = FORMAT_V1
    for tick in document["ticks"]:
        for arm in tick.values():
            arm.pop("latencyHistogram", None)
    scenario = scenario_from_json(document, "old.json")
    assert scenario == _scenario()
    assert scenario_to_json(scenario)["format"] == FORMAT  # written back as v2
    assert scenario.p99_window_seconds == scenario.tick_seconds
    for key, value in (("labels", {"a": "b"}), ("latencyBounds", [1, 2]), ("model", {})):
        with pytest.raises(ScenarioError, match=key):
            scenario_from_json({**document, key: value}, "old.json")


def test_generated_adaptive_scenarios_round_trip_and_stay_small(tmp_path: Path) -> None:
    suite = generate_suite(seed=4, healthy=2, per_fault=1)
    for scenario in suite:
        text = json.dumps(scenario_to_json(scenario), separators=(",", ":"))
        assert scenario_from_json(json.loads(text)) == scenario
        assert len(text) < 90_000
    save_scenarios(suite[:3], tmp_path)
    assert load_scenarios(tmp_path) == sorted(suite[:3], key=lambda s: s.name)


def test_the_writer_leaves_out_what_did_not_change() -> None:
    scenario = generate_suite(seed=4, healthy=1, per_fault=0, families=("short",))[0]
    document = scenario_to_json(scenario)
    ticks = document["model"]["ticks"]
    assert set(ticks[0]["baseline"]) == {
        "failureRatio",
        "medianMs",
        "logSd",
        "tailLogSd",
        "outputMix",
        "slowShare",
        "slowFactor",
        "queueShare",
        "nonfiniteRate",
    }
    assert "logSd" not in ticks[1]["baseline"]  # constant over the stream
    assert "nonfiniteRate" not in ticks[5]["candidate"]


ADAPTIVE_INVALID = [
    ("model.seed", -1, "model.seed"),
    ("model.seed", ..., "model.seed"),
    ("model.outputsPerRequest", 0, "model.outputsPerRequest"),
    ("model.outputComponents", [], "model.outputComponents"),
    ("model.outputComponents[0]", [1, 2], "model.outputComponents[0]"),
    ("model.outputComponents[1]", [0, 0, 0, 0], "model.outputComponents[1]"),
    ("model.coldStart.share", 2, "model.coldStart.share"),
    ("model.ticks", [], "model.ticks"),
    ("model.ticks[0].requests", -5, "model.ticks[0].requests"),
    ("model.ticks[0].candidate.medianMs", ..., "model.ticks[0].candidate.medianMs"),
    ("model.ticks[0].candidate.medianMs", 0, "model.ticks[0].candidate.medianMs"),
    ("model.ticks[0].baseline.failureRatio", 1.5, "model.ticks[0].baseline.failureRatio"),
    ("model.ticks[1].candidate.logSd", -0.1, "model.ticks[1].candidate.logSd"),
    ("model.ticks[1].candidate.outputMix", [1], "model.ticks[1].candidate.outputMix"),
    ("model.ticks[1].candidate.outputMix", [0, 0], "model.ticks[1].candidate.outputMix"),
    ("model.ticks[2].baseline.nonfiniteRate", "x", "model.ticks[2].baseline.nonfiniteRate"),
    ("model.ticks[2].baseline.color", 1, "model.ticks[2].baseline.color"),
    ("model.ticks[2].candidate", 3, "model.ticks[2].candidate"),
    ("p99Window.seconds", 5, "p99Window.seconds"),
    ("p99Window.ageBuckets", 0, "p99Window.ageBuckets"),
    ("latencyBounds", [10, 5], "latencyBounds"),
    ("latencyBounds", [0, 5], "latencyBounds"),
    ("labels", {"family": 3}, "labels"),
    ("ticks", [], "model"),
]


@pytest.mark.parametrize(("path", "value", "field"), ADAPTIVE_INVALID)
def test_every_adaptive_validation_error_names_its_field(path: str, value: Any, field: str) -> None:
    document = copy.deepcopy(_doc_block("An adaptive example"))
    _set(document, path, value)
    with pytest.raises(ScenarioError) as caught:
        scenario_from_json(document, "bad.json")
    problems = str(caught.value).splitlines()[1:]
    assert any(line.strip().startswith(f"{field}:") for line in problems), str(caught.value)


def test_fixed_latency_fields_are_validated() -> None:
    document = _doc_block("A complete example")
    _set(document, "ticks[1].candidate.latencyHistogram", [1, 2])
    _set(document, "ticks[2].candidate.durationMs", -1)
    with pytest.raises(ScenarioError) as caught:
        scenario_from_json(document, "bad.json")
    fields = {line.strip().split(":")[0] for line in str(caught.value).splitlines()[1:]}
    assert fields == {"ticks[1].candidate.latencyHistogram", "ticks[2].candidate.durationMs"}
    no_bounds = _doc_block("A complete example")
    del no_bounds["latencyBounds"]
    with pytest.raises(ScenarioError, match="needs latencyBounds"):
        scenario_from_json(no_bounds, "bad.json")
