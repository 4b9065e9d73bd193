"""Every GELU variant served by a real Triton: loading, numbers, metrics, and the paired probe.

One server serves all six variants (``gelu-<variant>``) and two faulty models; three small
servers each serve one variant under the same model name, as a baseline and candidates do.
All four start side by side once for the module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gelu_lab.bench.variants import grid_inputs
from gelu_lab.sandbox.processes import free_port
from gelu_lab.sandbox.triton import TritonServer
from gelu_rollout.adapters.triton import run_probe
from gelu_rollout.analysis.probe import ProbeReport, probe_inputs
from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.spec.model import VARIANTS
from gelu_rollout.variants import CATALOG, INPUTS, OUTPUT_BUCKETS, Faults, reference_outputs
from tests.triton.helpers import ModelSpec, build_repository, samples, serving, value

pytestmark = pytest.mark.triton

F32 = npt.NDArray[np.float32]

MAIN_MODELS: dict[str, ModelSpec] = {
    **{f"gelu-{variant}": (variant, Faults()) for variant in VARIANTS},
    "gelu-failing": ("exact", Faults(error_rate=1.0)),
    "gelu-slow": ("exact", Faults(latency_ms=30)),
}
PROBE_ARMS = ("exact", "tanh", "tanh-fp16-naive")
PROBE_MODEL = "gelu"
NAIVE = "tanh-fp16-naive"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TritonServer]]:
    root = tmp_path_factory.mktemp("repositories")
    repositories = {"main": build_repository(root / "main", MAIN_MODELS)}
    for variant in PROBE_ARMS:
        repositories[variant] = build_repository(root / variant, {PROBE_MODEL: (variant, Faults())})
    with serving(repositories) as started:
        yield started


@pytest.fixture(scope="module")
def main(servers: dict[str, TritonServer]) -> TritonServer:
    return servers["main"]


@pytest.fixture
def client(main: TritonServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(main.http_url)
    yield client
    client.close()


def infer(client: httpclient.InferenceServerClient, model: str, rows: npt.ArrayLike) -> F32:
    """The model's outputs, sent in requests the model accepts (at most 256 rows each)."""
    x = np.ascontiguousarray(rows, dtype=np.float32)
    parts = []
    for start in range(0, x.shape[0], 256):
        chunk = x[start : start + 256]
        tensor = httpclient.InferInput("INPUT0", list(chunk.shape), "FP32")
        tensor.set_data_from_numpy(chunk)
        output = client.infer(model, [tensor]).as_numpy("OUTPUT0")
        assert output is not None
        parts.append(output)
    result: F32 = np.concatenate(parts)
    return result


def normal_rows(rows: int = 512, seed: int = 21) -> F32:
    result: F32 = np.random.default_rng(seed).normal(0.0, 3.0, (rows, INPUTS)).astype(np.float32)
    return result


# --- loading --------------------------------------------------------------------------------


def test_every_model_is_loaded_and_ready(
    main: TritonServer, client: httpclient.InferenceServerClient
) -> None:
    assert client.is_server_ready()
    index = {entry["name"]: entry.get("state") for entry in client.get_model_repository_index()}
    assert index == dict.fromkeys(MAIN_MODELS, "READY")
    for model in MAIN_MODELS:
        assert client.is_model_ready(model)
        config = client.get_model_config(model)
        assert config["max_batch_size"] == 256
        assert [i["name"] for i in config["input"]] == ["INPUT0"]
        assert [o["name"] for o in config["output"]] == ["OUTPUT0"]


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_match_the_float64_reference(
    client: httpclient.InferenceServerClient, variant: str
) -> None:
    model = f"gelu-{variant}"
    info = CATALOG[variant]
    for rows in (normal_rows(), grid_inputs()):
        served = infer(client, model, rows)
        assert served.shape == rows.shape
        assert served.dtype == np.float32
        error = np.abs(served.astype(np.float64) - reference_outputs(rows))
        if info.finite_on_extremes:
            assert np.isfinite(served).all()
            assert error.max() <= info.tolerance, f"{variant}: {error.max():.3g}"
        else:
            # A row is NaN as soon as one hidden unit exceeds about 4, which on N(0, 3²) is
            # most rows; where it answers, it is as close as the other float16 variant.
            finite = np.isfinite(served)
            assert finite.any()
            assert not finite.all()
            assert error[finite].max() <= CATALOG["fp16"].tolerance
    extreme = infer(client, model, probe_inputs(1).extreme)
    if info.finite_on_extremes:
        assert np.isfinite(extreme).all(), variant
    else:
        assert np.isnan(extreme).any()
        # The all-(+100) row: every hidden unit with a positive weight sum overflows.
        assert np.isnan(extreme[np.all(probe_inputs(1).extreme == 100.0, axis=1)]).all()


# --- metrics --------------------------------------------------------------------------------


def test_output_histogram_on_the_metrics_port(
    main: TritonServer, client: httpclient.InferenceServerClient
) -> None:
    before = main.metrics_text()
    # Small inputs, so that even tanh-fp16-naive answers every output.
    small = normal_rows(4, seed=1) / 10
    for variant in VARIANTS:
        assert np.isfinite(infer(client, f"gelu-{variant}", small)).all()
    text = main.metrics_text()
    expected_bounds = [*OUTPUT_BUCKETS, float("inf")]
    for variant in VARIANTS:
        labels = {"model": f"gelu-{variant}", "variant": variant}
        buckets = [
            (have, v)
            for have, v in samples(text, "gelu_output_value_bucket")
            if labels.items() <= have.items()
        ]
        assert [float(have["le"]) for have, _ in buckets] == expected_bounds
        assert set(buckets[0][0]) == {"model", "variant", "le"}
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), "buckets are cumulative"
        assert counts[-1] == value(text, "gelu_output_value_count", **labels)
        # One request of 4 rows is one batch of 64 outputs: a sample of 16 is observed.
        # The series exist from the model's start (at 0), traffic or not.
        previous = value(before, "gelu_output_value_count", **labels)
        assert value(text, "gelu_output_value_count", **labels) - previous == 16


def test_nonfinite_counter(main: TritonServer, client: httpclient.InferenceServerClient) -> None:
    extreme = probe_inputs(1).extreme
    naive_before = value(main.metrics_text(), "gelu_nonfinite_outputs_total", model=f"gelu-{NAIVE}")
    naive = infer(client, f"gelu-{NAIVE}", extreme)
    infer(client, "gelu-tanh", extreme)
    text = main.metrics_text()
    naive_after = value(text, "gelu_nonfinite_outputs_total", model=f"gelu-{NAIVE}", variant=NAIVE)
    assert naive_after - naive_before == np.count_nonzero(~np.isfinite(naive)) > 0
    assert value(text, "gelu_nonfinite_outputs_total", model="gelu-tanh", variant="tanh") == 0


def test_latency_summary_has_p99(
    main: TritonServer, client: httpclient.InferenceServerClient
) -> None:
    for row in normal_rows(10, seed=2):
        infer(client, "gelu-exact", row[None, :])
    text = main.metrics_text()
    for quantile in ("0.5", "0.9", "0.99"):
        latency = value(
            text, "nv_inference_request_summary_us", model="gelu-exact", quantile=quantile
        )
        assert 0 < latency < 1e6
    assert value(text, "nv_inference_request_summary_us_count", model="gelu-exact") >= 10


def test_injected_failures_are_counted(
    main: TritonServer, client: httpclient.InferenceServerClient
) -> None:
    before = main.metrics_text()
    for _ in range(3):
        with pytest.raises(InferenceServerException, match="injected failure"):
            infer(client, "gelu-failing", normal_rows(2))
    after = main.metrics_text()

    def failures(text: str, **labels: str) -> float:
        return value(text, "nv_inference_request_failure", model="gelu-failing", **labels)

    assert failures(after) - failures(before) == 3
    assert failures(after, reason="BACKEND") - failures(before, reason="BACKEND") == 3
    assert value(after, "nv_inference_request_success", model="gelu-failing") == 0


def test_injected_latency(main: TritonServer, client: httpclient.InferenceServerClient) -> None:
    started = time.perf_counter()
    for row in normal_rows(5, seed=3):
        infer(client, "gelu-slow", row[None, :])
    assert time.perf_counter() - started >= 5 * 0.030
    p50_us = value(
        main.metrics_text(), "nv_inference_request_summary_us", model="gelu-slow", quantile="0.5"
    )
    assert p50_us >= 30_000


# --- the paired probe -----------------------------------------------------------------------


async def probe(
    servers: dict[str, TritonServer], candidate_url: str, candidate: str
) -> ProbeReport | GateResult:
    return await run_probe(
        servers["exact"].http_url,
        candidate_url,
        PROBE_MODEL,
        rows=256,
        max_abs_error=CATALOG[candidate].tolerance,
    )


@pytest.mark.asyncio
async def test_probe_passes_tanh(servers: dict[str, TritonServer]) -> None:
    report = await probe(servers, servers["tanh"].http_url, "tanh")
    assert isinstance(report, ProbeReport)
    assert report.result.verdict is Verdict.PASS, report.result.message
    assert 0 < report.max_abs_error <= CATALOG["tanh"].tolerance
    assert report.candidate_nonfinite == report.baseline_nonfinite == 0
    assert report.kl < 0.01
    assert report.rows == 256 + probe_inputs(1).extreme.shape[0]


@pytest.mark.asyncio
async def test_probe_fails_tanh_fp16_naive_critically(servers: dict[str, TritonServer]) -> None:
    report = await probe(servers, servers[NAIVE].http_url, NAIVE)
    assert isinstance(report, ProbeReport)
    assert report.result.verdict is Verdict.FAIL
    assert report.result.critical
    assert report.baseline_nonfinite == 0
    assert report.candidate_nonfinite > 0
    assert "non-finite" in report.result.message


@pytest.mark.asyncio
async def test_probe_of_an_unreachable_candidate_is_inconclusive(
    servers: dict[str, TritonServer],
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = await probe(servers, closed, "tanh")
    assert isinstance(result, GateResult)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert not result.failed
    assert "candidate" in result.message
    assert closed in result.message
    assert time.monotonic() - started < 10
