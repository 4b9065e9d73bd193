"""The variant benchmark: every GELU variant on one real Triton server, side by side.

Per variant: accuracy against the float64 exact block (a fixed grid and N(0, 3²) rows), KL of
its output histogram against the served ``exact`` variant, non-finite outputs on extreme rows,
server-side P50/P99 at batch 1 (Triton's latency summaries) and throughput at batch 64, with
latency and throughput also given as ratios to ``exact`` measured in the same run.

The variants are timed interleaved (batch-1 requests round-robin over the models, batch-64
throughput in rounds that visit every model), so that a change in the machine's load during the
run affects every variant alike rather than whichever was being measured at the time.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import tritonclient.http.aio as triton_http
from prometheus_client.parser import text_string_to_metric_families

from gelu_lab.sandbox.triton import TritonServer
from gelu_rollout.adapters.triton import infer
from gelu_rollout.analysis.divergence import kl_divergence
from gelu_rollout.analysis.probe import KL_SMOOTHING, output_histogram, probe_inputs
from gelu_rollout.variants.catalog import CATALOG, INPUTS, reference_outputs
from gelu_rollout.variants.repository import render_repository, write_repository

BASE: Final = "exact"
GRID_LIMIT: Final = 8.0
GRID_ROWS: Final = 64
NORMAL_ROWS: Final = 4096
NORMAL_SEED: Final = 11
WARMUP_REQUESTS: Final = 20
THROUGHPUT_ROUNDS: Final = 5


def model_name(variant: str) -> str:
    return f"gelu-{variant}"


@dataclass(frozen=True)
class VariantFigures:
    max_abs_error_grid: float
    max_abs_error: float
    nonfinite_normal: int
    kl_vs_exact: float
    nonfinite_extreme: int
    p50_ms_batch1: float
    p99_ms_batch1: float
    p99_ratio_batch1: float
    throughput_rows_per_s_batch64: float
    throughput_ratio_batch64: float


def grid_inputs() -> np.ndarray[Any, np.dtype[np.float32]]:
    """A fixed grid over [-8, 8], GRID_ROWS rows of INPUTS values."""
    return np.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_ROWS * INPUTS, dtype=np.float32).reshape(
        GRID_ROWS, INPUTS
    )


def normal_inputs() -> np.ndarray[Any, np.dtype[np.float32]]:
    """NORMAL_ROWS seeded rows of N(0, 3²) values."""
    rng = np.random.default_rng(NORMAL_SEED)
    return rng.normal(0.0, 3.0, (NORMAL_ROWS, INPUTS)).astype(np.float32)


def _max_error(served: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> float:
    finite = np.isfinite(served)
    return float(np.abs(served[finite] - reference[finite]).max()) if finite.any() else 0.0


def _nonfinite(values: np.ndarray[Any, Any]) -> int:
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def summary_quantiles(metrics_text: str, model: str) -> dict[str, float]:
    """``{quantile: milliseconds}`` of Triton's request-latency summary for ``model``."""
    return {
        sample.labels["quantile"]: sample.value / 1000.0
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "nv_inference_request_summary_us"
        and sample.labels.get("model") == model
        and "quantile" in sample.labels
    }


def _rotated(items: list[str], shift: int) -> list[str]:
    k = shift % len(items)
    return items[k:] + items[:k]


async def _latency_batch1(
    client: triton_http.InferenceServerClient, models: list[str], requests: int
) -> None:
    """``requests`` batch-1 requests to every model, interleaved: request i goes to each model
    (in a rotated order) before request i + 1 goes to any, so that a change in the machine's
    load during the run touches every model's latency alike."""
    rows = np.random.default_rng(3).normal(0.0, 1.0, (requests, INPUTS)).astype(np.float32)
    for i, row in enumerate(rows):
        for model in _rotated(models, i):
            await infer(client, model, row[None, :])


async def _rows_per_second(
    client: triton_http.InferenceServerClient, model: str, requests: int, concurrency: int
) -> float:
    batch = np.random.default_rng(4).normal(0.0, 1.0, (64, INPUTS)).astype(np.float32)
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await infer(client, model, batch)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests * 64 / (time.perf_counter() - started)


async def _throughput_batch64(
    client: triton_http.InferenceServerClient,
    models: list[str],
    requests: int,
    concurrency: int,
    progress: Callable[[str], None],
) -> dict[str, float]:
    """Rows per second at batch 64, per model: the median of THROUGHPUT_ROUNDS rounds, each
    measuring every model in turn (in a rotated order) on its share of ``requests``."""
    per_round = max(requests // THROUGHPUT_ROUNDS, concurrency)
    rates: dict[str, list[float]] = {model: [] for model in models}
    for round_ in range(THROUGHPUT_ROUNDS):
        progress(f"throughput at batch 64, round {round_ + 1} of {THROUGHPUT_ROUNDS}")
        for model in _rotated(models, round_):
            rates[model].append(await _rows_per_second(client, model, per_round, concurrency))
    return {model: float(np.median(r)) for model, r in rates.items()}


async def _measure(
    server: TritonServer,
    *,
    requests_batch1: int,
    requests_batch64: int,
    concurrency: int,
    progress: Callable[[str], None],
) -> dict[str, VariantFigures]:
    grid = grid_inputs()
    normal = normal_inputs()
    extreme = probe_inputs(1).extreme
    grid_ref, normal_ref = reference_outputs(grid), reference_outputs(normal)
    models = [model_name(variant) for variant in CATALOG]
    client = triton_http.InferenceServerClient(server.http_url)
    raw: dict[str, dict[str, Any]] = {}
    try:
        # Warm-up: a model's first requests are slow (about 20 ms for the very first).
        # Triton's summary keeps them, so they are kept few beside the measured requests.
        progress("warming up")
        await _latency_batch1(client, models, WARMUP_REQUESTS)
        progress("latency at batch 1, every variant in turn")
        await _latency_batch1(client, models, requests_batch1)
        metrics = server.metrics_text()
        throughput = await _throughput_batch64(
            client, models, requests_batch64, concurrency, progress
        )
        for variant, model in zip(CATALOG, models, strict=True):
            progress(f"accuracy of {variant}")
            quantiles = summary_quantiles(metrics, model)
            raw[variant] = {
                "grid": await infer(client, model, grid),
                "normal": await infer(client, model, normal),
                "extreme": await infer(client, model, extreme),
                "p50": quantiles.get("0.5", float("nan")),
                "p99": quantiles.get("0.99", float("nan")),
                "throughput": throughput[model],
            }
    finally:
        await client.close()
    base = raw[BASE]
    base_histogram = output_histogram(base["normal"])
    return {
        variant: VariantFigures(
            max_abs_error_grid=_max_error(r["grid"], grid_ref),
            max_abs_error=_max_error(r["normal"], normal_ref),
            nonfinite_normal=_nonfinite(r["normal"]),
            kl_vs_exact=kl_divergence(base_histogram, output_histogram(r["normal"]), KL_SMOOTHING),
            nonfinite_extreme=_nonfinite(r["extreme"]),
            p50_ms_batch1=r["p50"],
            p99_ms_batch1=r["p99"],
            p99_ratio_batch1=r["p99"] / base["p99"],
            throughput_rows_per_s_batch64=r["throughput"],
            throughput_ratio_batch64=r["throughput"] / base["throughput"],
        )
        for variant, r in raw.items()
    }


def benchmark_variants(
    *,
    requests_batch1: int = 500,
    requests_batch64: int = 200,
    concurrency: int = 4,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Start Triton with every variant, measure them, stop it; a JSON-ready report."""
    with tempfile.TemporaryDirectory(prefix="gelu-bench-variants-") as directory:
        root = Path(directory)
        for variant in CATALOG:
            write_repository(
                root, model_name(variant), render_repository(model_name(variant), variant)
            )
        progress("starting Triton with every variant")
        with TritonServer(root) as server:
            figures = asyncio.run(
                _measure(
                    server,
                    requests_batch1=requests_batch1,
                    requests_batch64=requests_batch64,
                    concurrency=concurrency,
                    progress=progress,
                )
            )
    return {
        "baseline": BASE,
        "settings": {
            "requests_batch1": requests_batch1,
            "requests_batch64": requests_batch64,
            "concurrency_batch64": concurrency,
            "rounds_batch64": THROUGHPUT_ROUNDS,
            "normal_rows": NORMAL_ROWS,
            "grid": f"{GRID_ROWS * INPUTS} points over [-{GRID_LIMIT:g}, {GRID_LIMIT:g}]",
        },
        "variants": {variant: asdict(f) for variant, f in figures.items()},
    }
