"""A GELU MLP block served as any Python-backend model is: no metrics of its own.

``OUTPUT0 = gelu_tanh(INPUT0 @ W1 + b1) @ W2 + b2`` in float32, with the weights drawn from
the seed the built-in variants use, so that its answers match theirs. Optional parameters in
``config.pbtxt`` inject a fault after a number of requests (the probe's included):
``nan_after_requests`` (NaN answers) and ``drift_after_requests`` with ``drift_scale``; and
``nan_in_versions`` (comma-separated version numbers) makes those versions of the model, when
its folder holds this file under several version folders, answer NaN from the first request.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

WEIGHT_SEED = 20261125
INPUTS = 16
HIDDEN = 64


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {
            key: value["string_value"] for key, value in config.get("parameters", {}).items()
        }
        self.nan_after = int(parameters.get("nan_after_requests", "-1"))
        nan_versions = parameters.get("nan_in_versions", "").split(",")
        if str(args["model_version"]) in {v.strip() for v in nan_versions if v.strip()}:
            self.nan_after = 0
        self.drift_after = int(parameters.get("drift_after_requests", "-1"))
        self.drift_scale = float(parameters.get("drift_scale", "1.5"))
        self.requests = 0
        rng = np.random.RandomState(WEIGHT_SEED)
        self.w1 = (rng.standard_normal((INPUTS, HIDDEN)) / np.sqrt(INPUTS)).astype(np.float32)
        self.b1 = (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
        self.w2 = (rng.standard_normal((HIDDEN, INPUTS)) / np.sqrt(HIDDEN)).astype(np.float32)
        self.b2 = (0.1 * rng.standard_normal(INPUTS)).astype(np.float32)

    def _forward(self, x: Any) -> Any:
        h = x @ self.w1 + self.b1
        h = 0.5 * h * (1.0 + np.tanh(np.float32(0.7978845608028654) * (h + 0.044715 * h**3)))
        out = h @ self.w2 + self.b2
        self.requests += 1
        if 0 <= self.nan_after <= self.requests:
            out = np.full_like(out, np.nan)
        elif 0 <= self.drift_after <= self.requests:
            out = out * np.float32(self.drift_scale)
        return out.astype(np.float32)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            output = pb_utils.Tensor("OUTPUT0", self._forward(x.astype(np.float32)))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
