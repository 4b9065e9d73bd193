"""The probe and the sampled comparison on models that are not the GELU block, on real
Triton servers: requests are built from each model's declared interface, and a candidate
whose interface differs from its baseline's fails the probe saying how."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gelu_lab.sandbox.triton import TritonServer
from gelu_rollout.adapters.triton import run_probe, run_sample
from gelu_rollout.analysis.observations import SampledOutputs
from gelu_rollout.analysis.probe import ProbeReport
from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.variants import Faults
from tests.triton.helpers import build_repository, serving

pytestmark = pytest.mark.triton

MODELS = Path(__file__).parents[2] / "operator" / "gelu_lab" / "models"


def copy_model(source: str, root: Path, name: str, *, narrower: bool = False) -> None:
    shutil.copytree(MODELS / source, root / name)
    if narrower:  # the same model declaring 8-wide vectors instead of 16
        config = root / name / "config.pbtxt"
        config.write_text(config.read_text().replace("dims: [ 16 ]", "dims: [ 8 ]"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TritonServer]]:
    root = tmp_path_factory.mktemp("interfaces")
    baseline = build_repository(root / "baseline", {"gelu": ("tanh", Faults())})
    copy_model("add_sub", baseline, "add_sub")
    candidate = root / "candidate"
    candidate.mkdir()
    copy_model("plain_gelu", candidate, "gelu", narrower=True)
    copy_model("add_sub", candidate, "add_sub")
    with serving({"baseline": baseline, "candidate": candidate}) as started:
        yield started


@pytest.mark.asyncio
async def test_a_model_with_two_inputs_and_two_outputs_is_probed(
    servers: dict[str, TritonServer],
) -> None:
    report = await run_probe(
        servers["baseline"].http_url,
        servers["candidate"].http_url,
        "add_sub",
        rows=32,
        max_abs_error=1e-6,
    )
    assert isinstance(report, ProbeReport), report
    assert report.result.verdict is Verdict.PASS, report.result.message
    assert report.rows == 32 + 24  # the typical rows and the extreme ones
    assert report.max_abs_error == 0.0


@pytest.mark.asyncio
async def test_the_sampled_comparison_counts_every_numeric_output(
    servers: dict[str, TritonServer],
) -> None:
    sample = await run_sample(
        servers["baseline"].http_url, servers["candidate"].http_url, "add_sub", rows=16, tick=3
    )
    assert isinstance(sample, SampledOutputs), sample
    # At most one batch (max_batch_size 8), two outputs of four values per row.
    assert sample.rows == 8
    assert sum(sample.candidate_histogram) == 8 * 8
    assert sample.candidate_histogram == sample.baseline_histogram
    assert (sample.candidate_nonfinite, sample.max_abs_error) == (0.0, 0.0)


@pytest.mark.asyncio
async def test_a_candidate_with_another_interface_fails_the_probe_saying_how(
    servers: dict[str, TritonServer],
) -> None:
    result = await run_probe(
        servers["baseline"].http_url,
        servers["candidate"].http_url,
        "gelu",
        rows=32,
        max_abs_error=0.05,
    )
    assert isinstance(result, GateResult)
    assert result.verdict is Verdict.FAIL
    assert "INPUT0 FP32[16] is INPUT0 FP32[8] in the candidate" in result.message
    sample = await run_sample(
        servers["baseline"].http_url, servers["candidate"].http_url, "gelu", rows=8, tick=0
    )
    assert isinstance(sample, str)
    assert "interfaces differ" in sample
