"""The paired probe's timing on real Triton servers: a slow candidate fails before any traffic.

Three servers start side by side once for the module, each serving the same model names, as a
baseline and its candidates do: the baseline (``exact``), a healthy candidate (``tanh``), and a
slow one: ``exact`` with latency injected into every batch it executes (``Faults.latency_ms``,
rendered as the model's ``inject_latency_ms`` parameter), the way a kernel fallback slows every
request. Its outputs are the baseline's, so only the timing can fail it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gelu_lab.sandbox.triton import TritonServer
from gelu_rollout.adapters.triton import run_probe
from gelu_rollout.analysis.probe import (
    DEFAULT_MAX_LATENCY_RATIO,
    TIMED_ROUNDS,
    ProbeReport,
    probe_inputs,
)
from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.variants import CATALOG, Faults
from tests.triton.helpers import build_repository, serving

pytestmark = pytest.mark.triton

MODEL = "gelu"
CRAWLING = "gelu-crawling"
"""A second model name, for the candidate too slow to finish the probe within its timeout."""
SLOW_MS = 20.0
CRAWL_MS = 100.0
ROWS = 256
BATCHES = 2  # 256 typical rows, then the 24 extreme ones


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TritonServer]]:
    root = tmp_path_factory.mktemp("repositories")
    arms = {
        "baseline": {MODEL: ("exact", Faults()), CRAWLING: ("exact", Faults())},
        "tanh": {MODEL: ("tanh", Faults())},
        "slow": {
            MODEL: ("exact", Faults(latency_ms=SLOW_MS)),
            CRAWLING: ("exact", Faults(latency_ms=CRAWL_MS)),
        },
    }
    repositories = {arm: build_repository(root / arm, models) for arm, models in arms.items()}
    with serving(repositories) as started:
        yield started


async def probe(
    servers: dict[str, TritonServer],
    candidate: str,
    *,
    model: str = MODEL,
    max_latency_ratio: float = DEFAULT_MAX_LATENCY_RATIO,
    timeout_s: float = 10.0,
) -> ProbeReport | GateResult:
    """The probe as the controller runs it (the spec's default limit, a 10 s timeout)."""
    return await run_probe(
        servers["baseline"].http_url,
        servers[candidate].http_url,
        model,
        rows=ROWS,
        max_abs_error=CATALOG["tanh"].tolerance,
        max_latency_ratio=max_latency_ratio,
        timeout_s=timeout_s,
    )


@pytest.mark.asyncio
async def test_a_slow_candidate_fails_the_probe_with_its_ratio(
    servers: dict[str, TritonServer],
) -> None:
    report = await probe(servers, "slow")
    assert isinstance(report, ProbeReport)
    # Same model, same outputs: the timing alone fails it.
    assert report.max_abs_error == 0.0
    assert report.candidate_nonfinite == report.baseline_nonfinite == 0
    latency = report.latency
    assert latency is not None
    assert (latency.batches, latency.timed_rounds) == (BATCHES, TIMED_ROUNDS)
    assert latency.candidate_ms >= SLOW_MS
    assert latency.baseline_ms < SLOW_MS / 2
    assert latency.ratio > DEFAULT_MAX_LATENCY_RATIO
    assert all(ratio > DEFAULT_MAX_LATENCY_RATIO for ratio in latency.batch_ratios)
    result = report.result
    assert result.verdict is Verdict.FAIL
    assert not result.critical
    # What the ledger shows: the ratio against the limit.
    assert result.value == latency.ratio
    assert result.threshold == DEFAULT_MAX_LATENCY_RATIO
    assert result.samples == ROWS + probe_inputs(1).extreme.shape[0]
    assert "times slower than the baseline" in result.message
    assert f"latency ratio {latency.ratio:.3g} (limit 3;" in result.message


@pytest.mark.asyncio
async def test_a_healthy_variant_passes_the_timed_probe(
    servers: dict[str, TritonServer],
) -> None:
    report = await probe(servers, "tanh")
    assert isinstance(report, ProbeReport)
    assert report.result.verdict is Verdict.PASS, report.result.message
    assert 0 < report.max_abs_error <= CATALOG["tanh"].tolerance
    latency = report.latency
    assert latency is not None
    assert (latency.batches, latency.timed_rounds) == (BATCHES, TIMED_ROUNDS)
    assert latency.ratio <= DEFAULT_MAX_LATENCY_RATIO
    assert f"latency ratio {latency.ratio:.3g}" in report.result.message
    # The accuracy figures stay the result's value and threshold on a pass.
    assert report.result.value == report.max_abs_error


@pytest.mark.asyncio
async def test_the_limit_is_the_spec_s(servers: dict[str, TritonServer]) -> None:
    # A limit above the slow candidate's ratio lets it through: the limit decides, not a
    # constant in the adapter.
    report = await probe(servers, "slow", max_latency_ratio=1000.0)
    assert isinstance(report, ProbeReport)
    assert report.result.verdict is Verdict.PASS, report.result.message
    assert report.latency is not None
    assert report.latency.ratio > DEFAULT_MAX_LATENCY_RATIO


@pytest.mark.asyncio
async def test_a_candidate_too_slow_to_finish_is_judged_on_the_rounds_it_completed(
    servers: dict[str, TritonServer],
) -> None:
    # Each round costs the crawling candidate at least 2 x 100 ms: the ten rounds would take
    # 2 s, and the timeout stops them after 1 s. It fails as slow; it is not left unprobed.
    report = await probe(servers, "slow", model=CRAWLING, timeout_s=1.0)
    assert isinstance(report, ProbeReport), report
    latency = report.latency
    assert latency is not None
    assert 1 <= latency.timed_rounds < TIMED_ROUNDS
    assert latency.candidate_ms >= CRAWL_MS
    assert report.result.verdict is Verdict.FAIL
    assert report.result.value == latency.ratio
