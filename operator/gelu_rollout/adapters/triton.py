"""Talk to Triton over HTTP with tritonclient's asyncio client: inference and the paired probe."""

from __future__ import annotations

import asyncio
from typing import Final

import aiohttp
import numpy as np
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from gelu_rollout.analysis.probe import (
    GATE,
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


async def infer(
    client: triton_http.InferenceServerClient, model: str, rows: FloatArray
) -> FloatArray:
    """The model's outputs for ``rows``, sent in batches the model accepts."""
    parts = []
    for start in range(0, rows.shape[0], MAX_BATCH_SIZE):
        chunk = np.ascontiguousarray(rows[start : start + MAX_BATCH_SIZE], dtype=np.float32)
        tensor = triton_http.InferInput(INPUT_NAME, list(chunk.shape), "FP32")
        tensor.set_data_from_numpy(chunk)
        result = await client.infer(model, [tensor])
        output = result.as_numpy(OUTPUT_NAME)
        if output is None:
            raise InferenceServerException(f"model {model!r} returned no {OUTPUT_NAME}")
        parts.append(output.astype(np.float32))
    return np.concatenate(parts)


async def _answers(
    url: str, model: str, typical: FloatArray, extreme: FloatArray, timeout_s: float
) -> ArmAnswers:
    client = triton_http.InferenceServerClient(url, conn_timeout=timeout_s)
    try:
        return ArmAnswers(
            typical=await infer(client, model, typical),
            extreme=await infer(client, model, extreme),
        )
    finally:
        await client.close()


async def run_probe(
    baseline_url: str,
    candidate_url: str,
    model: str,
    *,
    rows: int,
    max_abs_error: float,
    timeout_s: float = 10.0,
) -> ProbeReport | GateResult:
    """Send the same seeded inputs to both arms and compare.

    Returns the report, or an Inconclusive result saying why the probe could not run
    (an arm unreachable, an error, a timeout): an unprobed candidate gets no traffic.
    """
    inputs = probe_inputs(rows)
    urls = {"baseline": baseline_url, "candidate": candidate_url}
    tasks = {
        arm: asyncio.ensure_future(_answers(url, model, inputs.typical, inputs.extreme, timeout_s))
        for arm, url in urls.items()
    }
    try:
        baseline, candidate = await asyncio.wait_for(
            asyncio.gather(*tasks.values()), timeout=timeout_s
        )
    except TimeoutError:
        return inconclusive(GATE, f"probe could not run: no answers within {timeout_s:g} s")
    # aiohttp.ClientError: tritonclient's asyncio client lets its transport errors through,
    # and some of them (a server that disconnects mid-request) are not OSErrors.
    except (InferenceServerException, aiohttp.ClientError, OSError) as error:
        failed = [
            arm
            for arm, task in tasks.items()
            if task.done() and not task.cancelled() and task.exception() is not None
        ]
        where = f"{failed[0]} {urls[failed[0]]}: " if failed else ""
        message = str(error) or type(error).__name__
        return inconclusive(GATE, f"probe could not run: {where}{message}")
    finally:
        # gather() leaves the other arm running when one fails: stop it, let it close.
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return compare_outputs(baseline, candidate, max_abs_error=max_abs_error)
