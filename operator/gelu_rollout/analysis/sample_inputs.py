"""Inputs for the probe and the sampled comparison, for any model's declared inputs (pure).

Two sources: a seeded mix made from the model's interface (floats from N(0, 3²) and, for the
probe, rows of extreme values up to ±100; integers from 0 to 7; booleans at random), or
samples the user provides in a ConfigMap (JSON, or ``.npy`` per input). A model whose inputs
have meaning the seeded mix cannot guess (token ids, images, strings) needs samples.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gelu_rollout.analysis.model_interface import (
    FLOAT_TYPES,
    NUMPY_TYPES,
    InterfaceError,
    ModelInterface,
    TensorSpec,
)

TYPICAL_SCALE: Final = 3.0
EXTREME_MAGNITUDES: Final = (5.0, 8.0, 10.0, 20.0, 50.0, 100.0)
INTEGER_HIGH: Final = 8
"""Seeded integer inputs are drawn from 0 to INTEGER_HIGH - 1: small enough to be a valid
index or category for most models."""
SAMPLE_SEED: Final = 11
"""Seed of the sampled comparison's inputs; each tick draws its own rows from it."""

Rows = dict[str, npt.NDArray[Any]]
"""Input name to its rows: an array of shape ``(rows, *row_shape)``."""


@dataclass(frozen=True)
class SampleSource:
    """The user's sample inputs as their ConfigMap holds them (read with the model's
    interface by :func:`samples_from_config_map`); ``name`` is the ConfigMap's."""

    name: str
    data: Mapping[str, str]
    binary_data: Mapping[str, str]

    def rows(self, interface: ModelInterface) -> Rows:
        try:
            return samples_from_config_map(self.data, self.binary_data, interface)
        except InterfaceError as error:
            raise InterfaceError(
                f"analysis.outputSample.configMapName: ConfigMap {self.name}: {error}"
            ) from error


@dataclass(frozen=True)
class SeededInputs:
    """Typical rows, judged on accuracy; extreme rows, judged on finiteness."""

    typical: Rows
    extreme: Rows


def row_count(rows: Rows) -> int:
    return next(iter(rows.values())).shape[0] if rows else 0


def _seedable(spec: TensorSpec, samples: str) -> None:
    if spec.datatype not in NUMPY_TYPES:
        raise InterfaceError(
            f"input {spec.describe()}: no seeded values can be made for {spec.datatype}; "
            f"give sample inputs in {samples}"
        )


def _typical(spec: TensorSpec, rows: int, rng: np.random.Generator) -> npt.NDArray[Any]:
    shape = (rows, *spec.row_shape)
    dtype = NUMPY_TYPES[spec.datatype]
    if spec.datatype in FLOAT_TYPES:
        return rng.normal(0.0, TYPICAL_SCALE, shape).astype(dtype)
    if spec.datatype == "BOOL":
        return rng.random(shape) < 0.5
    return rng.integers(0, INTEGER_HIGH, shape).astype(dtype)


def seeded_inputs(
    interface: ModelInterface,
    rows: int,
    seed: int,
    *,
    extremes: bool = True,
    samples: str = "analysis.outputSample.configMapName",
) -> SeededInputs:
    """``rows`` typical rows per input and, with ``extremes``, four rows per extreme
    magnitude m (all +m, all -m, two of N(0, 1)·m) for float inputs; other inputs take
    typical values in the extreme rows. Raises InterfaceError for an input no value can be
    made for, naming where samples go (``samples``)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    for spec in interface.inputs:
        _seedable(spec, samples)
    rng = np.random.default_rng(seed)
    typical = {spec.name: _typical(spec, rows, rng) for spec in interface.inputs}
    extreme: dict[str, list[npt.NDArray[Any]]] = {spec.name: [] for spec in interface.inputs}
    if extremes:
        for magnitude in EXTREME_MAGNITUDES:
            for spec in interface.inputs:
                dtype = NUMPY_TYPES[spec.datatype]
                if spec.datatype in FLOAT_TYPES:
                    block = [
                        np.full((1, *spec.row_shape), magnitude),
                        np.full((1, *spec.row_shape), -magnitude),
                        rng.normal(0.0, 1.0, (2, *spec.row_shape)) * magnitude,
                    ]
                    extreme[spec.name].append(np.concatenate(block).astype(dtype))
                else:
                    extreme[spec.name].append(_typical(spec, 4, rng))
    return SeededInputs(
        typical,
        {
            name: np.concatenate(parts) if parts else typical[name][:0]
            for name, parts in extreme.items()
        },
    )


def tick_rows(interface: ModelInterface, rows: int, tick: int, samples: Rows | None = None) -> Rows:
    """The sampled comparison's inputs for one tick: ``rows`` rows (at most a batch), drawn
    afresh each tick from the seeded mix, or the next ``rows`` of the user's samples,
    cycling."""
    rows = min(rows, interface.batch_rows)
    if samples is None:
        return seeded_inputs(interface, rows, SAMPLE_SEED + tick, extremes=False).typical
    total = row_count(samples)
    indices = [(tick * rows + i) % total for i in range(min(rows, total))]
    return {name: values[indices] for name, values in samples.items()}


def _decode_npy(encoded: str, key: str) -> npt.NDArray[Any]:
    try:
        raw = base64.b64decode(encoded, validate=True)
        array: npt.NDArray[Any] = np.load(io.BytesIO(raw), allow_pickle=False)
    except (binascii.Error, ValueError, OSError, EOFError) as error:
        raise InterfaceError(f"binaryData {key}: not a .npy array ({error})") from error
    return array


def _arrays_from(data: Mapping[str, str], binary: Mapping[str, str]) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for key, text in data.items():
        if not key.endswith(".json"):
            continue
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise InterfaceError(f"data {key}: not JSON ({error.msg})") from error
        if not isinstance(document, Mapping):
            raise InterfaceError(f"data {key}: must be an object of input name to rows")
        arrays.update(document)
    for key, encoded in binary.items():
        if key.endswith(".npy"):
            arrays[key.removesuffix(".npy")] = _decode_npy(encoded, key)
    return arrays


def samples_from_config_map(
    data: Mapping[str, str], binary: Mapping[str, str], interface: ModelInterface
) -> Rows:
    """The user's sample inputs, checked against the model's interface: every input given,
    each with the same number of rows, each row of the declared shape (a variable
    dimension takes any size) and convertible to the declared datatype."""
    arrays = _arrays_from(data, binary)
    if not arrays:
        raise InterfaceError("no key ending in .json in data and no NAME.npy in binaryData")
    rows: Rows = {}
    for spec in interface.inputs:
        if spec.name not in arrays:
            raise InterfaceError(f"no rows for input {spec.name}")
        dtype = NUMPY_TYPES.get(spec.datatype, np.object_)
        try:
            values = np.asarray(arrays[spec.name], dtype=dtype)
        except (TypeError, ValueError) as error:
            raise InterfaceError(
                f"input {spec.name}: not convertible to {spec.datatype} ({error})"
            ) from error
        shape = values.shape[1:]
        fits = len(shape) == len(spec.shape) and all(
            d < 0 or d == s for d, s in zip(spec.shape, shape, strict=True)
        )
        if values.ndim < 1 or values.shape[0] < 1 or not fits:
            raise InterfaceError(
                f"input {spec.name}: rows of shape {list(shape)} given, the model declares "
                f"{list(spec.shape)} (one row per first index)"
            )
        rows[spec.name] = values
    counts = {name: values.shape[0] for name, values in rows.items()}
    if len(set(counts.values())) > 1:
        raise InterfaceError(f"the inputs have different numbers of rows: {counts}")
    return rows
