"""The built-in GELU variants: what each one is, and how close to exact it is expected to be.

The variants are implemented once, in ``triton_model.py``, which runs inside Triton. This
module holds what the rest of the package needs to know about them, and an independent float64
reference of the block (scipy's erf) that tests and the variant benchmark compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from gelu_rollout.spec.model import VARIANTS

INPUTS: Final = 16
"""Width of the block's input and output vectors."""
HIDDEN: Final = 64
"""Width of the block's hidden layer (where the activation runs)."""
WEIGHT_SEED: Final = 20261125
"""Seed of the block's weights; baseline and candidate must share it to be comparable."""

OUTPUT_BUCKETS: Final[tuple[float, ...]] = tuple(round(-4.0 + 0.1 * i, 1) for i in range(81))
"""Upper bounds of the output-value histogram (Prometheus adds +Inf).

The block's outputs have a standard deviation of about 0.7 on unit-scale inputs and about 2 on
N(0, 3²) inputs; 0.1-wide buckets over [-4, 4] resolve both. Measured KL against exact on
100,000 unit-scale rows: tanh 4e-7, fp16 5e-7, sigmoid 3e-5, int8-lut 2e-5; on N(0, 3²) rows
int8-lut's clipping lifts it to 2e-3. None of the approximations comes near the default 0.01
gate: that gate is for a broken model, and a tighter ``maxKL`` judges the approximations.
"""


@dataclass(frozen=True)
class VariantInfo:
    """What a variant is and how far from exact its block outputs may be.

    ``tolerance`` bounds the max absolute error of the block's outputs against the float64
    exact reference on typical inputs (N(0, 3²)); ``finite_on_extremes`` says whether
    inputs up to ±100 must give finite outputs.
    """

    name: str
    summary: str
    tolerance: float
    finite_on_extremes: bool = True


CATALOG: Final[dict[str, VariantInfo]] = {
    info.name: info
    for info in (
        VariantInfo("exact", "x·Φ(x) with the erf form, float32", 1e-4),
        VariantInfo("tanh", "the 0.044715 tanh approximation, float32", 2e-3),
        VariantInfo("sigmoid", "x·sigmoid(1.702x), float32", 0.15),
        VariantInfo("fp16", "the exact form computed in float16", 0.05),
        VariantInfo("int8-lut", "int8 lookup table over [-6, 6], clipped outside", 10.0),
        VariantInfo(
            "tanh-fp16-naive",
            "the tanh form in float16 with tanh through exp: NaN above about 4",
            float("inf"),
            finite_on_extremes=False,
        ),
    )
}
assert tuple(CATALOG) == VARIANTS, "the catalog and the spec's Variant type must agree"

FloatArray = npt.NDArray[np.float64]


def block_weights(
    seed: int = WEIGHT_SEED, inputs: int = INPUTS, hidden: int = HIDDEN
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The block's weights, drawn exactly as ``triton_model.block_weights`` draws them."""
    rng = np.random.RandomState(seed)
    w1 = rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)
    b1 = 0.1 * rng.standard_normal(hidden)
    w2 = rng.standard_normal((hidden, inputs)) / np.sqrt(hidden)
    b2 = 0.1 * rng.standard_normal(inputs)
    return w1, b1, w2, b2


def gelu(x: FloatArray) -> FloatArray:
    """Exact GELU in float64."""
    result: FloatArray = 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    return result


def reference_outputs(x: npt.ArrayLike, seed: int = WEIGHT_SEED) -> FloatArray:
    """The block's exact outputs in float64, for inputs of shape (rows, INPUTS)."""
    w1, b1, w2, b2 = block_weights(seed)
    rows = np.asarray(x, dtype=np.float64)
    result: FloatArray = gelu(rows @ w1 + b1) @ w2 + b2
    return result
