"""Each arm's pod settings: ``spec.pod`` for both arms, ``spec.<arm>.pod`` over it (pure).

The comparison stays fair by default: the candidate runs where and with what its baseline runs
(resources, nodeSelector, tolerations, affinity), unless ``spec.candidate.pod`` sets its own.
Environment variables merge by name and Triton arguments add up (both arms' own last); every
other field is replaced by the more specific setting.
"""

from __future__ import annotations

from typing import Final

from gelu_rollout.resources.names import Arm
from gelu_rollout.spec.model import EnvVar, PodSpec, RolloutSpec

PLACEMENT: Final = ("resources", "node_selector", "tolerations", "affinity")
"""The fields the candidate takes from its baseline's own pod settings when it sets none."""


def _merged_env(*layers: tuple[EnvVar, ...] | None) -> tuple[EnvVar, ...] | None:
    if all(layer is None for layer in layers):
        return None
    by_name: dict[str, EnvVar] = {}
    for layer in layers:
        for var in layer or ():
            by_name.pop(var.name, None)  # the more specific one, in its own place
            by_name[var.name] = var
    return tuple(by_name.values())


def _merged_args(*layers: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if all(layer is None for layer in layers):
        return None
    return tuple(arg for layer in layers for arg in layer or ())


def arm_pod(spec: RolloutSpec, arm: Arm) -> PodSpec:
    """The settings ``arm``'s pods run with."""
    shared = spec.pod
    baseline = spec.baseline.pod or PodSpec()
    own = (spec.baseline if arm == "baseline" else spec.candidate).pod or PodSpec()
    layers = [shared, baseline, own] if arm == "candidate" else [shared, own]
    values = {}
    for name in PodSpec.model_fields:
        if name in ("env", "triton_args"):
            continue
        chosen = None
        for layer in layers:
            if layer is baseline and arm == "candidate" and name not in PLACEMENT:
                continue  # only the placement is inherited from the baseline's own settings
            value = getattr(layer, name)
            if value is not None:
                chosen = value
        values[name] = chosen
    values["env"] = _merged_env(shared.env, own.env)
    values["triton_args"] = _merged_args(shared.triton_args, own.triton_args)
    return PodSpec.model_validate(values)
