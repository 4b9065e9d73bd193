"""Talk to Triton over HTTP with tritonclient's asyncio client: a model's interface, inference,
the paired probe and the sampled comparison."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import aiohttp
import numpy as np
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from gelu_rollout.analysis.model_interface import (
    NUMPY_TYPES,
    InterfaceError,
    ModelInterface,
    answers_matrix,
    interface_difference,
    interface_from_metadata,
)
from gelu_rollout.analysis.observations import SampledOutputs
from gelu_rollout.analysis.probe import (
    DEFAULT_MAX_LATENCY_RATIO,
    GATE,
    GELU_INTERFACE,
    PROBE_SEED,
    TIMED_ROUNDS,
    WARMUP_ROUNDS,
    ArmAnswers,
    FloatArray,
    ProbeReport,
    compare_outputs,
    sampled_outputs,
)
from gelu_rollout.analysis.sample_inputs import (
    Rows,
    SampleSource,
    SeededInputs,
    row_count,
    seeded_inputs,
    tick_rows,
)
from gelu_rollout.analysis.verdict import GateResult, Verdict, inconclusive
from gelu_rollout.resources.model_versions import version_policy_config

ARMS: Final = ("baseline", "candidate")
TransportErrors = (InferenceServerException, aiohttp.ClientError, OSError)
"""What a request to Triton may raise: tritonclient's asyncio client lets its transport errors
through, and some of them (a server that disconnects mid-request) are not OSErrors."""


async def model_interface(client: triton_http.InferenceServerClient, model: str) -> ModelInterface:
    """The model's declared inputs and outputs, from its metadata and config."""
    metadata = await client.get_model_metadata(model)
    config = await client.get_model_config(model)
    if not isinstance(metadata, dict) or not isinstance(config, dict):
        raise InterfaceError("the server's model metadata is not a JSON object")
    return interface_from_metadata(metadata, config)


def _request_inputs(batch: Rows, interface: ModelInterface) -> list[triton_http.InferInput]:
    """The batch's tensors; a model that does not batch takes one row without the batch
    dimension."""
    tensors = []
    for spec in interface.inputs:
        values = batch[spec.name]
        if interface.max_batch_size == 0:
            values = values[0]
        dtype = NUMPY_TYPES.get(spec.datatype, np.object_)
        tensor = triton_http.InferInput(spec.name, list(values.shape), spec.datatype)
        tensor.set_data_from_numpy(np.ascontiguousarray(values, dtype=dtype))
        tensors.append(tensor)
    return tensors


def _answers(
    result: triton_http.InferResult, interface: ModelInterface, rows: int, model: str
) -> FloatArray:
    outputs = {}
    for spec in interface.outputs:
        if not spec.numeric:
            continue
        value = result.as_numpy(spec.name)
        if value is None:
            raise InferenceServerException(f"model {model!r} returned no {spec.name}")
        outputs[spec.name] = value
    return answers_matrix(outputs, interface, rows)


def _batches(rows: Rows, interface: ModelInterface) -> list[Rows]:
    total, size = row_count(rows), interface.batch_rows
    return [
        {name: values[start : start + size] for name, values in rows.items()}
        for start in range(0, total, size)
    ]


async def infer(
    client: triton_http.InferenceServerClient, model: str, rows: FloatArray
) -> FloatArray:
    """A GELU variant's outputs for ``rows``, sent in batches the model accepts."""
    parts = []
    for batch in _batches({"INPUT0": rows}, GELU_INTERFACE):
        result = await client.infer(model, _request_inputs(batch, GELU_INTERFACE))
        parts.append(_answers(result, GELU_INTERFACE, row_count(batch), model))
    return np.concatenate(parts).astype(np.float32)


class _ArmError(Exception):
    """An arm's request failed: carries which arm and the original error."""

    def __init__(self, arm: str, error: Exception) -> None:
        super().__init__(arm, error)
        self.arm = arm
        self.error = error


@dataclass
class _Measurement:
    """What the probe has collected so far; complete rounds only, so a timeout can judge it."""

    interface: ModelInterface
    batches: list[Rows]
    outputs: dict[str, list[FloatArray]] = field(default_factory=dict)
    rounds: list[dict[str, list[float]]] = field(default_factory=list)

    def seconds(self, arm: str) -> tuple[tuple[float, ...], ...]:
        return tuple(
            tuple(done[arm][batch] for done in self.rounds) for batch in range(len(self.batches))
        )


async def _measure(
    clients: dict[str, triton_http.InferenceServerClient],
    model: str,
    measurement: _Measurement,
    rounds: int,
) -> None:
    """Send every batch to both arms, ``rounds`` times, timing each request on the client.

    The arms are interleaved, one request at a time: batch after batch, the two arms take
    turns going first (alternating by round and by batch), so both see the same load on the
    machine and neither always inherits the other's leftovers. The first round's answers are
    the ones compared; later rounds only time (the model is deterministic).
    """
    interface = measurement.interface
    requests = [_request_inputs(batch, interface) for batch in measurement.batches]
    sizes = [row_count(batch) for batch in measurement.batches]
    for round_index in range(rounds):
        done: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for batch_index, tensors in enumerate(requests):
            order = ARMS if (round_index + batch_index) % 2 == 0 else ARMS[::-1]
            for arm in order:
                started = time.perf_counter()
                try:
                    result = await clients[arm].infer(model, tensors)
                    elapsed = time.perf_counter() - started
                    output = _answers(result, interface, sizes[batch_index], model)
                except TransportErrors as error:
                    raise _ArmError(arm, error) from error
                done[arm].append(elapsed)
                if round_index == 0:
                    measurement.outputs.setdefault(arm, []).append(output)
        measurement.rounds.append(done)


def _arm_answers(measurement: _Measurement, arm: str, typical_rows: int) -> ArmAnswers:
    outputs = np.concatenate(measurement.outputs[arm])
    return ArmAnswers(
        typical=outputs[:typical_rows],
        extreme=outputs[typical_rows:],
        seconds=measurement.seconds(arm),
    )


def _message(error: Exception) -> str:
    return str(error) or type(error).__name__


async def _interfaces(
    clients: Mapping[str, triton_http.InferenceServerClient], model: str
) -> ModelInterface | str:
    """The arms' common interface, or why there is none: a sentence starting with the arm
    that failed, or saying how the interfaces differ (prefixed ``differ:``)."""
    found = {}
    for arm, client in clients.items():
        try:
            found[arm] = await model_interface(client, model)
        except (*TransportErrors, InterfaceError) as error:
            return f"{arm}: model {model!r} metadata: {_message(error)}"
    difference = interface_difference(found["baseline"], found["candidate"])
    if difference is not None:
        return f"differ: {difference}"
    baseline, candidate = found["baseline"], found["candidate"]
    # Requests are sized for the arm that takes the smaller batch.
    return replace(baseline, max_batch_size=min(baseline.max_batch_size, candidate.max_batch_size))


def _probe_rows(interface: ModelInterface, rows: int, samples: SampleSource | None) -> SeededInputs:
    """The seeded mix with extremes, or the user's first ``rows`` samples (no extremes)."""
    if samples is None:
        return seeded_inputs(interface, rows, PROBE_SEED)
    typical = {name: values[:rows] for name, values in samples.rows(interface).items()}
    return SeededInputs(typical, {name: values[:0] for name, values in typical.items()})


def _clients(
    urls: Mapping[str, str], timeout_s: float
) -> dict[str, triton_http.InferenceServerClient]:
    return {
        arm: triton_http.InferenceServerClient(url, conn_timeout=timeout_s)
        for arm, url in urls.items()
    }


async def run_probe(
    baseline_url: str,
    candidate_url: str,
    model: str,
    *,
    rows: int,
    max_abs_error: float,
    max_latency_ratio: float = DEFAULT_MAX_LATENCY_RATIO,
    timed_rounds: int = TIMED_ROUNDS,
    timeout_s: float = 10.0,
    samples: SampleSource | None = None,
) -> ProbeReport | GateResult:
    """Send the same inputs to both arms, time every request, and compare.

    The inputs are made for the model's declared interface, read from both arms first: a
    candidate whose inputs or outputs differ from the baseline's fails the probe, saying
    how. They are the seeded mix (``rows`` typical rows, then the extreme ones) or, given
    ``samples``, the user's first ``rows`` rows; they go in batches the model accepts,
    every batch to both arms in one warm-up round and ``timed_rounds`` timed rounds (see
    :func:`_measure` for the order, and :func:`gelu_rollout.analysis.probe.compare_latency`
    for the statistic). This adapter only measures;
    :func:`gelu_rollout.analysis.probe.compare_outputs` judges.

    Returns the report, or an Inconclusive result saying why the probe could not run
    (an arm unreachable, an error, a timeout, inputs that cannot be made): an unprobed
    candidate gets no traffic. When the timeout cuts the timed rounds short, the rounds both
    arms completed are judged, as long as there is at least one after the warm-up: a
    candidate too slow to finish the probe in time is a slow candidate, not an unprobed one.
    A request that fails after the warm-up round likewise ends the timing with the rounds
    completed so far.
    """
    if timed_rounds < 1:
        raise ValueError(f"timed_rounds must be at least 1, got {timed_rounds}")
    urls = {"baseline": baseline_url, "candidate": candidate_url}
    clients = _clients(urls, timeout_s)
    try:
        interface = await _interfaces(clients, model)
        if isinstance(interface, str):
            if interface.startswith("differ: "):
                return GateResult(
                    GATE,
                    Verdict.FAIL,
                    None,
                    None,
                    0.0,
                    0.0,
                    "the candidate's interface differs from the baseline's: "
                    + interface.removeprefix("differ: "),
                    critical=True,
                )
            return inconclusive(GATE, f"probe could not run: {interface}")
        try:
            inputs = _probe_rows(interface, rows, samples)
        except InterfaceError as error:
            return inconclusive(GATE, f"probe could not run: {error}")
        typical_rows = row_count(inputs.typical)
        everything = {
            name: np.concatenate([inputs.typical[name], inputs.extreme[name]])
            for name in inputs.typical
        }
        measurement = _Measurement(interface, _batches(everything, interface))
        try:
            await asyncio.wait_for(
                _measure(clients, model, measurement, WARMUP_ROUNDS + timed_rounds),
                timeout=timeout_s,
            )
        except TimeoutError:
            if len(measurement.rounds) <= WARMUP_ROUNDS:
                return inconclusive(GATE, f"probe could not run: no answers within {timeout_s:g} s")
        except _ArmError as failed:
            # A failed request during the timed rounds ends the timing, not the probe: the
            # answers are in and error rates are the traffic gates' business.
            if len(measurement.rounds) <= WARMUP_ROUNDS:
                return inconclusive(
                    GATE,
                    f"probe could not run: {failed.arm} {urls[failed.arm]}: "
                    f"{_message(failed.error)}",
                )
    finally:
        await asyncio.gather(*(client.close() for client in clients.values()))
    return compare_outputs(
        _arm_answers(measurement, "baseline", typical_rows),
        _arm_answers(measurement, "candidate", typical_rows),
        max_abs_error=max_abs_error,
        max_latency_ratio=max_latency_ratio,
    )


async def run_sample(
    baseline_url: str,
    candidate_url: str,
    model: str,
    *,
    rows: int,
    tick: int,
    samples: SampleSource | None = None,
    timeout_s: float = 5.0,
) -> SampledOutputs | str:
    """One tick of the sampled comparison: the same ``rows`` inputs (this tick's rows of
    the seeded mix, or of ``samples``) in one request to each arm, both at once, and their
    answers counted (:func:`gelu_rollout.analysis.probe.sampled_outputs`).

    Returns the counts, or why there are none this tick (an arm unreachable or failing, the
    interfaces differing, inputs that cannot be made, the timeout).
    """
    clients = _clients({"baseline": baseline_url, "candidate": candidate_url}, timeout_s)
    try:
        interface = await asyncio.wait_for(_interfaces(clients, model), timeout=timeout_s)
        if isinstance(interface, str):
            return interface.replace("differ: ", "the arms' interfaces differ: ", 1)
        inputs = tick_rows(
            interface, rows, tick, None if samples is None else samples.rows(interface)
        )
        count = row_count(inputs)
        tensors = _request_inputs(inputs, interface)

        async def answer(arm: str) -> FloatArray:
            try:
                result = await clients[arm].infer(model, tensors)
                return _answers(result, interface, count, model)
            except TransportErrors as error:
                raise _ArmError(arm, error) from error

        baseline, candidate = await asyncio.wait_for(
            asyncio.gather(answer("baseline"), answer("candidate")), timeout=timeout_s
        )
    except TimeoutError:
        return f"no answers within {timeout_s:g} s"
    except _ArmError as failed:
        return f"{failed.arm}: {_message(failed.error)}"
    except InterfaceError as error:
        return str(error)
    finally:
        await asyncio.gather(*(client.close() for client in clients.values()))
    return sampled_outputs(baseline, candidate)


async def load_version(address: str, model: str, version: int, *, timeout_s: float = 10.0) -> str:
    """Make the server at ``address`` serve only ``version`` of ``model``: reload the model with
    the configuration the server reports for it and the version policy set to that version
    (:func:`gelu_rollout.resources.model_versions.version_policy_config`).

    Returns "" when the version is ready (already, or after the load), else why not: Triton's
    own answer (a version the store does not hold: "at least one version must be available
    under the version policy"), or the transport's.
    """
    client = triton_http.InferenceServerClient(address, conn_timeout=timeout_s)
    try:

        async def load() -> None:
            if await client.is_model_ready(model, str(version)):
                return
            config = await client.get_model_config(model)
            if not isinstance(config, dict):
                raise InterfaceError("the server's model config is not a JSON object")
            await client.load_model(
                model, config=json.dumps(version_policy_config(config, version))
            )

        await asyncio.wait_for(load(), timeout=timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except (*TransportErrors, InterfaceError) as error:
        return _message(error)
    finally:
        await client.close()
    return ""
