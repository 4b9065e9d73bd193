"""A served model's declared inputs and outputs, read from Triton's model metadata (pure).

The probe and the sampled comparison work for any model: they build their requests from
the declared inputs and compare every numeric output, instead of assuming this project's
``INPUT0``/``OUTPUT0`` FP32[16]. Both arms must declare the same interface, or their
answers cannot be compared; :func:`interface_difference` says how they differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

NUMPY_TYPES: Final[Mapping[str, type[np.generic]]] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
"""Triton's datatypes that numpy holds as they are. BYTES (strings) and BF16 are not here:
no seeded input can be made for them, and their answers are not compared."""
FLOAT_TYPES: Final = frozenset({"FP16", "FP32", "FP64"})
VARIABLE_DIMENSION: Final = 1
"""The size given to a dimension the model declares variable (-1) other than the batch."""


class InterfaceError(ValueError):
    """The model's metadata cannot be used; the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    """One declared input or output: ``shape`` is one row's, without the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def numeric(self) -> bool:
        return self.datatype in NUMPY_TYPES

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row, variable dimensions given their fixed size."""
        return tuple(VARIABLE_DIMENSION if d < 0 else d for d in self.shape)

    def describe(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{self.name} {self.datatype}[{dims}]"


@dataclass(frozen=True)
class ModelInterface:
    """What a model takes and gives. ``max_batch_size`` 0: the model does not batch, and every
    request carries exactly one row (its tensors have no batch dimension)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int

    @property
    def batch_rows(self) -> int:
        """The most rows one request may carry."""
        return max(self.max_batch_size, 1)

    def describe(self) -> str:
        inputs = ", ".join(t.describe() for t in self.inputs)
        outputs = ", ".join(t.describe() for t in self.outputs)
        return f"inputs {inputs}; outputs {outputs}; max_batch_size {self.max_batch_size}"


def _tensor(raw: Any, batching: bool, where: str) -> TensorSpec:
    if not isinstance(raw, Mapping):
        raise InterfaceError(f"{where} is not an object")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise InterfaceError(f"{where} has no name")
    if not isinstance(datatype, str):
        raise InterfaceError(f"{where} ({name}) has no datatype")
    if not isinstance(shape, Sequence) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InterfaceError(f"{where} ({name}) has no shape of integers")
    dims = tuple(int(d) for d in shape)
    # With batching, Triton's metadata puts the batch dimension first, as -1.
    return TensorSpec(name, datatype, dims[1:] if batching and dims else dims)


def interface_from_metadata(
    metadata: Mapping[str, Any], config: Mapping[str, Any]
) -> ModelInterface:
    """The interface from Triton's ``GET v2/models/NAME`` answer and the model's config
    (``GET v2/models/NAME/config``, for ``max_batch_size``)."""
    max_batch_size = config.get("max_batch_size", 0)
    if not isinstance(max_batch_size, int) or max_batch_size < 0:
        raise InterfaceError(f"max_batch_size is {max_batch_size!r}")
    batching = max_batch_size > 0
    inputs, outputs = metadata.get("inputs"), metadata.get("outputs")
    if not isinstance(inputs, Sequence) or not inputs:
        raise InterfaceError("the model declares no inputs")
    if not isinstance(outputs, Sequence) or not outputs:
        raise InterfaceError("the model declares no outputs")
    return ModelInterface(
        tuple(_tensor(t, batching, f"inputs[{i}]") for i, t in enumerate(inputs)),
        tuple(_tensor(t, batching, f"outputs[{i}]") for i, t in enumerate(outputs)),
        max_batch_size,
    )


def interface_difference(baseline: ModelInterface, candidate: ModelInterface) -> str | None:
    """How the candidate's interface differs from the baseline's, or None if it does not.

    Inputs and outputs are compared by name, datatype and shape (order does not matter);
    the batch size may differ: requests are sized for the smaller.
    """
    problems = []
    for kind, base, cand in (
        ("input", baseline.inputs, candidate.inputs),
        ("output", baseline.outputs, candidate.outputs),
    ):
        b = {t.name: t for t in base}
        c = {t.name: t for t in cand}
        for name in sorted(b.keys() - c.keys()):
            problems.append(f"the candidate has no {kind} {name}")
        for name in sorted(c.keys() - b.keys()):
            problems.append(f"the candidate has an extra {kind} {name}")
        for name in sorted(b.keys() & c.keys()):
            if (b[name].datatype, b[name].shape) != (c[name].datatype, c[name].shape):
                problems.append(
                    f"{kind} {b[name].describe()} is {c[name].describe()} in the candidate"
                )
    if (baseline.max_batch_size == 0) != (candidate.max_batch_size == 0):
        problems.append(
            f"max_batch_size {baseline.max_batch_size} is {candidate.max_batch_size} in the "
            "candidate (one batches, the other does not)"
        )
    return "; ".join(problems) or None


FloatArray = npt.NDArray[np.float64]


def answers_matrix(
    outputs: Mapping[str, npt.NDArray[Any]], interface: ModelInterface, rows: int
) -> FloatArray:
    """Every numeric output of ``rows`` rows side by side, one row per input row, in float64
    (outputs in the interface's order, each flattened per row)."""
    parts = []
    for spec in interface.outputs:
        if not spec.numeric:
            continue
        if spec.name not in outputs:
            raise InterfaceError(f"the answer has no output {spec.name}")
        parts.append(np.asarray(outputs[spec.name], dtype=np.float64).reshape(rows, -1))
    if not parts:
        raise InterfaceError("the model has no numeric output to compare")
    return np.concatenate(parts, axis=1)
