"""Triton Python-backend model: one MLP block whose activation is a GELU variant.

This file is shipped as ``<model>/1/model.py`` of a Triton model repository and runs inside
``tritonserver`` on the server's own Python with numpy only, so it imports nothing from the
gelu_rollout package. Everything it needs (variant, weight seed, histogram buckets, injected
faults) comes from the ``parameters`` of ``config.pbtxt``.

Computation: ``OUTPUT0 = gelu(INPUT0 @ W1 + b1) @ W2 + b2`` in float32, except that the
activation is evaluated the way the variant says (float16, a lookup table, ...).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

Array = Any  # numpy arrays; kept loose so the file needs no stubs where it runs

SQRT_HALF = 0.7071067811865476
TANH_SCALE = 0.7978845608028654  # sqrt(2 / pi)
LUT_LIMIT = 6.0
LUT_LEVELS = 127


def block_weights(seed: int, inputs: int, hidden: int) -> tuple[Array, Array, Array, Array]:
    """The block's fixed weights: the same seed gives the same weights on every server."""
    rng = np.random.RandomState(seed)
    w1 = rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)
    b1 = 0.1 * rng.standard_normal(hidden)
    w2 = rng.standard_normal((hidden, inputs)) / np.sqrt(hidden)
    b2 = 0.1 * rng.standard_normal(inputs)
    return w1, b1, w2, b2


def _erfc(x: Array) -> Array:
    """Complementary error function in the dtype of ``x`` (fractional error < 1.2e-7).

    numpy has no erf and the server's Python may lack scipy; this is the Chebyshev fit of
    Numerical Recipes' ``erfcc``.
    """
    z = np.abs(x)
    t = 1 / (1 + x.dtype.type(0.5) * z)
    poly = t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t
                    * (
                        0.27886807
                        + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                    )
                )
            )
        )
    )
    ans = (t * np.exp(-z * z - 1.26551223 + poly)).astype(x.dtype)
    return np.where(x >= 0, ans, 2 - ans).astype(x.dtype)


def gelu_exact(x: Array) -> Array:
    return (0.5 * x * _erfc(-x * x.dtype.type(SQRT_HALF))).astype(x.dtype)


def gelu_tanh(x: Array) -> Array:
    return 0.5 * x * (1 + np.tanh(TANH_SCALE * (x + 0.044715 * x * x * x)))


def gelu_sigmoid(x: Array) -> Array:
    return x / (1 + np.exp(-1.702 * x))


def gelu_fp16(x: Array) -> Array:
    return gelu_exact(x.astype(np.float16)).astype(np.float32)


_LUT_STEP = LUT_LIMIT / LUT_LEVELS
_LUT = gelu_exact(np.arange(-LUT_LEVELS, LUT_LEVELS + 1, dtype=np.float64) * _LUT_STEP)


def gelu_int8_lut(x: Array) -> Array:
    """Quantise to int8 over [-6, 6] and look the activation up: cheap, coarse, clipped."""
    q = np.clip(np.rint(x / _LUT_STEP), -LUT_LEVELS, LUT_LEVELS).astype(np.int8)
    return _LUT[q.astype(np.int32) + LUT_LEVELS].astype(np.float32)


def gelu_tanh_fp16_naive(x: Array) -> Array:
    """The tanh form in float16 with tanh written through exp: e^2z overflows to inf for
    inputs above about 4, and inf / inf is NaN."""
    h = x.astype(np.float16)
    z = np.float16(TANH_SCALE) * (h + np.float16(0.044715) * h * h * h)
    e = np.exp(np.float16(2) * z)
    return (np.float16(0.5) * h * (1 + (e - 1) / (e + 1))).astype(np.float32)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "exact": gelu_exact,
    "tanh": gelu_tanh,
    "sigmoid": gelu_sigmoid,
    "fp16": gelu_fp16,
    "int8-lut": gelu_int8_lut,
    "tanh-fp16-naive": gelu_tanh_fp16_naive,
}


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return str(value) if value not in (None, "") else default


class TritonPythonModel:
    """The Python backend's entry point."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.variant = _parameter(config, "variant", "exact")
        if self.variant not in ACTIVATIONS:
            raise pb_utils.TritonModelException(
                f"parameter 'variant' is {self.variant!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        self.activation = ACTIVATIONS[self.variant]
        seed = int(_parameter(config, "weight_seed", "0"))
        inputs = int(_parameter(config, "inputs", "16"))
        hidden = int(_parameter(config, "hidden", "64"))
        w1, b1, w2, b2 = block_weights(seed, inputs, hidden)
        self.w1, self.b1 = w1.astype(np.float32), b1.astype(np.float32)
        self.w2, self.b2 = w2.astype(np.float32), b2.astype(np.float32)
        buckets = [float(b) for b in _parameter(config, "output_buckets", "0").split(",")]
        # Each observe() is a round trip to the server process (tens of microseconds), so a
        # batch contributes a uniform sample of its finite outputs, not all of them.
        self.observed_per_batch = int(_parameter(config, "observed_outputs_per_batch", "16"))
        self.error_rate = float(_parameter(config, "inject_error_rate", "0"))
        self.latency_s = float(_parameter(config, "inject_latency_ms", "0")) / 1000.0
        self.rng = np.random.default_rng()
        labels = {"model": args["model_name"], "variant": self.variant}
        # The families must outlive initialize(): a collected family makes every observe fail.
        self.value_family = pb_utils.MetricFamily(
            name="gelu_output_value",
            description="Output values of the GELU block, one observation per output element",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.value_histogram = self.value_family.Metric(labels=labels, buckets=buckets)
        self.nonfinite_family = pb_utils.MetricFamily(
            name="gelu_nonfinite_outputs_total",
            description="Non-finite (NaN or infinite) output elements of the GELU block",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.nonfinite_counter = self.nonfinite_family.Metric(labels=labels)

    def _forward(self, x: Array) -> Array:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            hidden = self.activation((x @ self.w1 + self.b1).astype(np.float32))
            return (hidden.astype(np.float32) @ self.w2 + self.b2).astype(np.float32)

    def _record(self, outputs: list[Array]) -> None:
        y = np.concatenate([o.ravel() for o in outputs]) if outputs else np.zeros(0)
        finite = y[np.isfinite(y)]
        bad = int(y.size - finite.size)
        if bad:
            self.nonfinite_counter.increment(bad)
        if finite.size > self.observed_per_batch:
            finite = self.rng.choice(finite, self.observed_per_batch, replace=False)
        for value in finite.tolist():
            self.value_histogram.observe(value)

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        if self.error_rate > 0 and self.rng.random() < self.error_rate:
            # Raised, not returned as an error response: Triton counts a returned error
            # response as a success in nv_inference_request_failure/_success, and only an
            # exception from execute() as a failure (reason="BACKEND"). The draw is per batch,
            # so each request still fails with probability error_rate.
            raise pb_utils.TritonModelException("injected failure")
        responses = []
        outputs = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            y = self._forward(x.astype(np.float32))
            outputs.append(y)
            out = pb_utils.Tensor("OUTPUT0", y)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        self._record(outputs)
        return responses

    def finalize(self) -> None:
        self.value_histogram = None
        self.nonfinite_counter = None
