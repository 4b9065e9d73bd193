"""The variant benchmark, run once through the command line with small request counts."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from typer.testing import CliRunner

from gelu_rollout.cli.main import app
from gelu_rollout.spec.model import VARIANTS
from gelu_rollout.variants import CATALOG

pytestmark = [pytest.mark.triton, pytest.mark.slow]

REQUIRED = (
    "max_abs_error",
    "kl_vs_exact",
    "nonfinite_extreme",
    "p50_ms_batch1",
    "p99_ms_batch1",
    "throughput_ratio_batch64",
)
NAIVE = "tanh-fp16-naive"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    path = tmp_path_factory.mktemp("bench") / "variants.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "variants",
            "--json",
            str(path),
            "--requests-batch1",
            "60",
            "--requests-batch64",
            "20",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    # Strict JSON: no NaN or Infinity anywhere.
    report = json.loads(path.read_text(), parse_constant=pytest.fail)
    return result.stdout, report


@pytest.fixture(scope="module")
def variants(run: tuple[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = run[1]["variants"]
    return figures


def test_report_shape(run: tuple[str, dict[str, Any]], variants: dict[str, Any]) -> None:
    _, report = run
    assert report["baseline"] == "exact"
    assert report["settings"]["requests_batch1"] == 60
    assert report["settings"]["requests_batch64"] == 20
    assert tuple(variants) == VARIANTS
    for name, figures in variants.items():
        for key in REQUIRED:
            assert key in figures, f"{name}: {key}"
            assert isinstance(figures[key], int | float)
            assert math.isfinite(figures[key]), f"{name}: {key}"
        assert isinstance(figures["nonfinite_extreme"], int)


def test_table_lists_every_variant(run: tuple[str, dict[str, Any]]) -> None:
    stdout, _ = run
    for name in VARIANTS:
        assert name in stdout
    assert "report written to" in stdout


def test_exact_is_its_own_baseline(variants: dict[str, Any]) -> None:
    exact = variants["exact"]
    assert exact["throughput_ratio_batch64"] == 1.0
    assert exact["p99_ratio_batch1"] == 1.0
    assert exact["kl_vs_exact"] == 0.0


def test_latency_and_throughput_figures(variants: dict[str, Any]) -> None:
    for name, figures in variants.items():
        assert 0 < figures["p50_ms_batch1"] <= figures["p99_ms_batch1"] < 1000, name
        assert figures["throughput_rows_per_s_batch64"] > 0
        assert figures["throughput_ratio_batch64"] > 0


def test_nonfinite_outputs_only_from_the_naive_variant(variants: dict[str, Any]) -> None:
    assert variants[NAIVE]["nonfinite_extreme"] > 0
    assert variants[NAIVE]["nonfinite_normal"] > 0
    for name in VARIANTS:
        if name != NAIVE:
            assert variants[name]["nonfinite_extreme"] == 0, name
            assert variants[name]["nonfinite_normal"] == 0, name


def test_accuracy_within_the_catalog_tolerances(variants: dict[str, Any]) -> None:
    for name, figures in variants.items():
        info = CATALOG[name]
        if info.finite_on_extremes:
            assert figures["max_abs_error"] <= info.tolerance, name
            assert figures["max_abs_error_grid"] <= info.tolerance, name
    assert variants["exact"]["max_abs_error"] < 1e-4


def test_kl_orders_the_variants(variants: dict[str, Any]) -> None:
    # Inputs are seeded and the models deterministic, so these are fixed numbers.
    kl = {name: figures["kl_vs_exact"] for name, figures in variants.items()}
    assert kl["tanh"] < kl["sigmoid"] < kl["int8-lut"] < 0.01 < kl[NAIVE]
