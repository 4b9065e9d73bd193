"""The demo's scenarios, and the rollout each one applies (pure).

Every scenario applies ``examples/rollout.yaml`` with the candidate it is about and timings
short enough for a laptop (10 s analysis ticks, two 20 s steps); everything else is the
example's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from gelu_rollout.variants.repository import Faults, render_repository

ROLLOUT_NAME: Final = "gelu-demo"
USER_REPOSITORY: Final = "gelu-demo-candidate"
"""The ConfigMap holding a candidate repository the demo (or its user) provides."""

SANDBOX_TIMINGS: Final[Mapping[str, Any]] = {
    "traffic": {
        "steps": [{"weight": 25, "analysisSeconds": 20}, {"weight": 50, "analysisSeconds": 20}]
    },
    "analysis": {
        "intervalSeconds": 10,
        "warmupSeconds": 0,
        "slo": {"availability": 0.99},
        "gates": {
            "errorRate": {"minRequests": 100},
            "latency": {"maxRegression": 0.5, "minTicks": 2},
            "divergence": {"minOutputs": 500},
        },
    },
}
"""What the demo changes in the example so that a rollout ends within a couple of minutes.
The latency tolerance is 50%: P99 on a busy 2-core machine moves more than the default 10%."""


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    expected: str
    """The outcome the scenario shows: ``Promoted`` or ``RolledBack``."""
    variant: str = "tanh"
    faults: Faults | None = None
    """Faults rendered into the candidate, which then ships as a user repository ConfigMap."""
    faulty: bool = False
    """Whether the candidate is faulty from its first request (for the fault-to-zero timing)."""


SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario("healthy", "the tanh approximation of GELU: promoted", "Promoted"),
        Scenario(
            "nan",
            "tanh in float16 through exp, NaN above about 4: the probe rolls it back",
            "RolledBack",
            variant="tanh-fp16-naive",
            faulty=True,
        ),
        Scenario(
            "latency",
            "exact GELU with 25 ms added to every batch: rolled back on P99",
            "RolledBack",
            variant="exact",
            faults=Faults(latency_ms=25.0),
            faulty=True,
        ),
        Scenario(
            "errors",
            "exact GELU failing 20% of requests: rolled back on the error-budget burn rate",
            "RolledBack",
            variant="exact",
            faults=Faults(error_rate=0.2),
            faulty=True,
        ),
        Scenario(
            "drift",
            "x·sigmoid(1.702x): judged on the KL of its outputs against the maxKL gate",
            "Promoted",
            variant="sigmoid",
        ),
    )
}


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def demo_manifest(example: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, Any]:
    """The example rollout with the demo's name, candidate, one baseline replica, timings."""
    manifest = copy.deepcopy(dict(example))
    manifest["metadata"] = {"name": ROLLOUT_NAME, "namespace": "default"}
    spec = _merge(manifest["spec"], SANDBOX_TIMINGS)
    spec["baseline"] = {"variant": "exact", "replicas": 1}
    spec["candidate"] = dict(candidate)
    return manifest


def load_example(path: Path) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ValueError(f"{path} must hold exactly one GeluModelRollout")
    return documents[0]


def repository_config_map(files: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": USER_REPOSITORY, "namespace": "default"},
        "data": dict(files),
    }


def candidate_objects(
    scenario: Scenario, model: str, repository: Mapping[str, str] | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The candidate arm of the spec, and the objects to create before the rollout."""
    if repository is not None:
        return {"repository": {"configMapName": USER_REPOSITORY}}, [
            repository_config_map(repository)
        ]
    if scenario.faults is not None:
        files = render_repository(model, scenario.variant, faults=scenario.faults)
        return {"repository": {"configMapName": USER_REPOSITORY}}, [repository_config_map(files)]
    return {"variant": scenario.variant}, []


def read_repository(directory: Path) -> tuple[str, dict[str, str]]:
    """A Triton model repository folder holding one model: its name and its files as
    ConfigMap data (``config.pbtxt``, and the files of version ``1/`` by name)."""
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a folder")
    models = [d for d in directory.iterdir() if d.is_dir() and (d / "config.pbtxt").is_file()]
    if (directory / "config.pbtxt").is_file():
        models = [directory]
    if len(models) != 1:
        raise ValueError(
            f"{directory} must hold exactly one model (a folder with config.pbtxt), "
            f"found {len(models)}"
        )
    model = models[0]
    files = {"config.pbtxt": (model / "config.pbtxt").read_text()}
    version = model / "1"
    if not version.is_dir():
        raise ValueError(f"{model} has no version folder 1/")
    for path in sorted(version.iterdir()):
        if path.is_file():
            files[path.name] = path.read_text()
    return model.name, files
