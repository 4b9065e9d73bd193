"""Talk to Triton over HTTP with tritonclient's asyncio client: inference and the paired probe."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import numpy as np
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from gelu_rollout.analysis.probe import (
    DEFAULT_MAX_LATENCY_RATIO,
    GATE,
    TIMED_ROUNDS,
    WARMUP_ROUNDS,
    ArmAnswers,
    FloatArray,
    ProbeReport,
    compare_outputs,
    probe_inputs,
)
from gelu_rollout.analysis.verdict import GateResult, inconclusive
from gelu_rollout.variants.repository import MAX_BATCH_SIZE

INPUT_NAME: Final = "INPUT0"
OUTPUT_NAME: Final = "OUTPUT0"
ARMS: Final = ("baseline", "candidate")


def _input(chunk: FloatArray) -> triton_http.InferInput:
    tensor = triton_http.InferInput(INPUT_NAME, list(chunk.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
    return tensor


def _output(result: triton_http.InferResult, model: str) -> FloatArray:
    output = result.as_numpy(OUTPUT_NAME)
    if output is None:
        raise InferenceServerException(f"model {model!r} returned no {OUTPUT_NAME}")
    answer: FloatArray = output.astype(np.float32)
    return answer


def _batches(rows: FloatArray) -> list[FloatArray]:
    return [
        rows[start : start + MAX_BATCH_SIZE] for start in range(0, rows.shape[0], MAX_BATCH_SIZE)
    ]


async def infer(
    client: triton_http.InferenceServerClient, model: str, rows: FloatArray
) -> FloatArray:
    """The model's outputs for ``rows``, sent in batches the model accepts."""
    parts = []
    for chunk in _batches(rows):
        parts.append(_output(await client.infer(model, [_input(chunk)]), model))
    return np.concatenate(parts)


class _ArmError(Exception):
    """An arm's request failed: carries which arm and the original error."""

    def __init__(self, arm: str, error: Exception) -> None:
        super().__init__(arm, error)
        self.arm = arm
        self.error = error


@dataclass
class _Measurement:
    """What the probe has collected so far; complete rounds only, so a timeout can judge it."""

    batches: list[FloatArray]
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
    tensors = [_input(chunk) for chunk in measurement.batches]
    for round_index in range(rounds):
        done: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for batch_index, tensor in enumerate(tensors):
            order = ARMS if (round_index + batch_index) % 2 == 0 else ARMS[::-1]
            for arm in order:
                started = time.perf_counter()
                try:
                    result = await clients[arm].infer(model, [tensor])
                    elapsed = time.perf_counter() - started
                    output = _output(result, model)
                # aiohttp.ClientError: tritonclient's asyncio client lets its transport
                # errors through, and some of them (a server that disconnects mid-request)
                # are not OSErrors.
                except (InferenceServerException, aiohttp.ClientError, OSError) as error:
                    raise _ArmError(arm, error) from error
                done[arm].append(elapsed)
                if round_index == 0:
                    measurement.outputs.setdefault(arm, []).append(output)
        measurement.rounds.append(done)


def _answers(measurement: _Measurement, arm: str, typical_rows: int) -> ArmAnswers:
    outputs = np.concatenate(measurement.outputs[arm])
    return ArmAnswers(
        typical=outputs[:typical_rows],
        extreme=outputs[typical_rows:],
        seconds=measurement.seconds(arm),
    )


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
) -> ProbeReport | GateResult:
    """Send the same seeded inputs to both arms, time every request, and compare.

    The inputs go in batches of at most ``MAX_BATCH_SIZE`` rows (the typical rows, then the
    extreme ones), every batch to both arms in one warm-up round and ``timed_rounds`` timed
    rounds (see :func:`_measure` for the order, and
    :func:`gelu_rollout.analysis.probe.compare_latency` for the statistic). This adapter only
    measures; :func:`gelu_rollout.analysis.probe.compare_outputs` judges.

    Returns the report, or an Inconclusive result saying why the probe could not run
    (an arm unreachable, an error, a timeout): an unprobed candidate gets no traffic. When the
    timeout cuts the timed rounds short, the rounds both arms completed are judged, as long
    as there is at least one after the warm-up: a candidate too slow to finish the probe in
    time is a slow candidate, not an unprobed one. A request that fails after the warm-up
    round likewise ends the timing with the rounds completed so far.
    """
    if timed_rounds < 1:
        raise ValueError(f"timed_rounds must be at least 1, got {timed_rounds}")
    inputs = probe_inputs(rows)
    urls = {"baseline": baseline_url, "candidate": candidate_url}
    measurement = _Measurement(_batches(np.concatenate([inputs.typical, inputs.extreme])))
    clients = {
        arm: triton_http.InferenceServerClient(url, conn_timeout=timeout_s)
        for arm, url in urls.items()
    }
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
            message = str(failed.error) or type(failed.error).__name__
            return inconclusive(
                GATE, f"probe could not run: {failed.arm} {urls[failed.arm]}: {message}"
            )
    finally:
        await asyncio.gather(*(client.close() for client in clients.values()))
    typical_rows = inputs.typical.shape[0]
    return compare_outputs(
        _answers(measurement, "baseline", typical_rows),
        _answers(measurement, "candidate", typical_rows),
        max_abs_error=max_abs_error,
        max_latency_ratio=max_latency_ratio,
    )
