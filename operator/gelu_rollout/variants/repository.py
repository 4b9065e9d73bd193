"""Render a GELU variant into a Triton model repository.

The repository is returned as a flat mapping (file key -> text) so that it can be the ``data`` of
a ConfigMap unchanged; :data:`REPOSITORY_PATHS` says where each key lives inside the model's
directory. The same files run in the stock ``tritonserver`` container and in the local sandbox.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from gelu_rollout.variants.catalog import CATALOG, HIDDEN, INPUTS, OUTPUT_BUCKETS, WEIGHT_SEED

CONFIG_KEY: Final = "config.pbtxt"
MODEL_KEY: Final = "model.py"
REPOSITORY_PATHS: Final[Mapping[str, str]] = {CONFIG_KEY: "config.pbtxt", MODEL_KEY: "1/model.py"}
"""Per ConfigMap key, its path inside the model's directory. Other keys go under ``1/``."""
MAX_BATCH_SIZE: Final = 256


@dataclass(frozen=True)
class Faults:
    """Faults injected into a rendered model, for tests and the sandbox's scenarios.

    ``error_rate`` is the chance that a request fails (drawn once per batch the model
    executes, so that Triton counts the failure: see ``triton_model.py``); ``latency_ms`` is
    added to every batch the model executes.
    """

    error_rate: float = 0.0
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {self.error_rate}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(
                f"latency_ms must be a finite number at least 0, got {self.latency_ms}"
            )


@functools.cache
def model_source() -> str:
    """The text of the Python-backend model shared by every variant (read once: every arm of
    every rollout renders it at every tick)."""
    return resources.files("gelu_rollout.variants").joinpath("triton_model.py").read_text()


def _parameters(values: Mapping[str, str]) -> str:
    return "\n".join(
        f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
        for key, value in values.items()
    )


def render_config(model_name: str, variant: str, faults: Faults = Faults()) -> str:
    """The ``config.pbtxt`` of a variant: Python backend, FP32 [16] in and out, batching on."""
    if variant not in CATALOG:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(CATALOG)}")
    parameters = {
        "variant": variant,
        "weight_seed": str(WEIGHT_SEED),
        "inputs": str(INPUTS),
        "hidden": str(HIDDEN),
        "output_buckets": ",".join(f"{b:g}" for b in OUTPUT_BUCKETS),
    }
    if faults.error_rate:
        parameters["inject_error_rate"] = f"{faults.error_rate:g}"
    if faults.latency_ms:
        parameters["inject_latency_ms"] = f"{faults.latency_ms:g}"
    return f"""\
name: "{model_name}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {INPUTS} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {INPUTS} ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{_parameters(parameters)}
"""


def render_repository(
    model_name: str, variant: str, *, faults: Faults = Faults()
) -> dict[str, str]:
    """The model repository of a variant, as ConfigMap data."""
    return {CONFIG_KEY: render_config(model_name, variant, faults), MODEL_KEY: model_source()}


def repository_path(key: str) -> str:
    """Where a ConfigMap key lives inside the model's directory."""
    return REPOSITORY_PATHS.get(key, f"1/{key}")


def write_repository(root: Path, model_name: str, files: Mapping[str, str]) -> Path:
    """Lay ``files`` out as ``root/<model_name>/...``; returns the model's directory."""
    model_dir = root / model_name
    for key, text in files.items():
        path = model_dir / repository_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return model_dir


def repository_revision(files: Mapping[str, str]) -> str:
    """A short content hash: any change to any file is a new revision."""
    # Each tick renders the same repositories again, and hashing a model's files (a user's
    # repository may be near a ConfigMap's 1 MiB) is the larger part of rendering: the digest
    # is kept per content, keyed by each file's length and (keyed, per-process) string hash so
    # that the cache holds no file's text.
    fingerprint = tuple((key, len(files[key]), hash(files[key])) for key in sorted(files))
    cached = _REVISIONS.get(fingerprint)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for key in sorted(files):
        digest.update(key.encode())
        digest.update(b"\0")
        digest.update(files[key].encode())
        digest.update(b"\0")
    revision = digest.hexdigest()[:10]
    if len(_REVISIONS) >= _REVISIONS_KEPT:
        _REVISIONS.clear()
    _REVISIONS[fingerprint] = revision
    return revision


_REVISIONS: dict[tuple[tuple[str, int, int], ...], str] = {}
_REVISIONS_KEPT = 4096
