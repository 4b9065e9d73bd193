"""The demo's scenarios and manifests, without a sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from gelu_lab.demo.run import fault_to_zero_weight
from gelu_lab.demo.scenarios import (
    ROLLOUT_NAME,
    SCENARIOS,
    USER_REPOSITORY,
    candidate_objects,
    demo_manifest,
    load_example,
    read_repository,
)
from gelu_rollout.spec import parse_spec
from gelu_rollout.variants import render_repository, write_repository

EXAMPLE = Path(__file__).parents[2] / "examples" / "rollout.yaml"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_applies_a_valid_rollout(name: str) -> None:
    scenario = SCENARIOS[name]
    example = load_example(EXAMPLE)
    candidate, objects = candidate_objects(scenario, "gelu_mlp", None)
    manifest = demo_manifest(example, candidate)
    spec = parse_spec(manifest)
    assert manifest["metadata"]["name"] == ROLLOUT_NAME
    assert spec.analysis.interval_seconds == 10
    assert [s.weight for s in spec.traffic.steps] == [25, 50]
    assert spec.baseline.variant == "exact"
    if scenario.faults is not None:
        assert spec.candidate.repository is not None
        [config_map] = objects
        assert config_map["metadata"]["name"] == USER_REPOSITORY
        assert "inject_" in config_map["data"]["config.pbtxt"]
    else:
        assert spec.candidate.variant == scenario.variant
        assert objects == []
    # The example itself is left as it was.
    assert load_example(EXAMPLE) == example


def test_a_user_repository_becomes_the_candidate(tmp_path: Path) -> None:
    write_repository(tmp_path, "my_model", render_repository("my_model", "tanh"))
    model, files = read_repository(tmp_path)
    assert model == "my_model"
    assert set(files) == {"config.pbtxt", "model.py"}
    candidate, [config_map] = candidate_objects(SCENARIOS["healthy"], model, files)
    assert candidate == {"repository": {"configMapName": USER_REPOSITORY}}
    assert config_map["data"] == files


def test_a_folder_that_is_not_one_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one model"):
        read_repository(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        read_repository(tmp_path / "missing")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("name: 'm'")
    with pytest.raises(ValueError, match="no version folder"):
        read_repository(tmp_path)


def test_fault_to_zero_weight_counts_from_the_candidates_exposure() -> None:
    status = {
        "stage": "RolledBack",
        "startedAt": "2026-11-25T10:00:00Z",
        "finishedAt": "2026-11-25T10:00:12.5Z",
    }
    assert fault_to_zero_weight(status, SCENARIOS["errors"]) == 12.5
    assert fault_to_zero_weight(status, SCENARIOS["healthy"]) is None
    assert fault_to_zero_weight({**status, "stage": "Promoted"}, SCENARIOS["nan"]) is None
