"""The scale benchmark end to end at a small N: a real Prometheus, the emulator, the operator.

It starts Prometheus and the operator's process: run it under ``flock /tmp/gelu-heavy.lock``.
No timed assertion: the figures depend on the machine; their shape and sanity do not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gelu_lab.bench.scale import growth, percentile, rollout_manifest
from gelu_lab.bench.scale_api import LightAPI, matches, merge_patch, serve_light_api
from gelu_lab.sandbox.emulator_server import write_kubeconfig
from gelu_lab.sandbox.processes import running_processes
from gelu_rollout.adapters.kube import KubeClient, login_for
from gelu_rollout.adapters.kube.kinds import DEPLOYMENT
from gelu_rollout.cli.main import app
from gelu_rollout.spec.parse import parse_spec

REQUIRED = (
    "rollouts",
    "reconcile_p50_s",
    "reconcile_p99_s",
    "prom_queries_per_rollout_tick",
    "api_requests_per_rollout_tick",
    "cpu_s_per_tick",
    "peak_rss_mb",
)


@pytest.mark.asyncio
async def test_the_light_api_serves_the_operators_verbs(tmp_path: Path) -> None:
    api = LightAPI()
    api.create(api.resource("v1", "namespaces"), {"metadata": {"name": "a"}})
    async with serve_light_api(api) as url:
        kube = KubeClient(login_for(str(write_kubeconfig(tmp_path / "kubeconfig", url, "a"))))
        try:
            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "a", "labels": {"x": "1", "y": "2"}},
                "spec": {"replicas": 2},
            }
            created = await kube.apply(deployment)
            assert created["metadata"]["generation"] == 1
            # Its kubelet: ready as soon as written.
            assert created["status"]["readyReplicas"] == 2
            # An unchanged apply is no write; a changed spec is a new generation.
            again = await kube.apply(deployment)
            assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
            scaled = await kube.apply({**deployment, "spec": {"replicas": 3}})
            assert scaled["metadata"]["generation"] == 2
            assert scaled["status"]["readyReplicas"] == 3
            assert [d["metadata"]["name"] for d in await kube.list(DEPLOYMENT, "a", "x=1,y=2")] == [
                "d"
            ]
            assert await kube.list(DEPLOYMENT, "a", "x=2") == []
            assert await kube.get(DEPLOYMENT, "a", "gone") is None
            # A merge patch of the object leaves its status alone.
            patched = await kube.merge_patch(
                DEPLOYMENT, "a", "d", {"metadata": {"labels": {"y": None}}, "status": {"x": 1}}
            )
            assert patched["metadata"]["labels"] == {"x": "1"}
            assert "x" not in patched["status"]
            await kube.delete(DEPLOYMENT, "a", "d")
            assert await kube.get(DEPLOYMENT, "a", "d") is None
        finally:
            await kube.close()
    assert api.served["apply deployments"] == 3
    assert api.served["list deployments"] == 2


def test_merge_patch_and_selectors() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {
        "a": {"c": 2, "d": 3}
    }
    assert matches({"metadata": {"labels": {"a": "1"}}}, "a=1")
    assert matches({"metadata": {"labels": {"a": "1"}}}, "a==1")
    assert not matches({"metadata": {}}, "a=1")


def test_the_benchmarks_rollout_is_valid_and_needs_no_triton() -> None:
    spec = parse_spec(rollout_manifest(7, 30))
    assert spec.analysis.interval_seconds == 30
    assert not spec.analysis.probe.enabled
    assert not spec.analysis.output_sample.enabled


def test_percentile_is_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert math.isnan(percentile([], 0.5))


def test_scale_benchmark_reports_sane_counts(tmp_path: Path) -> None:
    report_path = tmp_path / "scale.json"
    # Wide enough for the table's headings on one line each.
    result = CliRunner(env={"COLUMNS": "240"}).invoke(
        app,
        [
            "bench",
            "scale",
            "--rollouts",
            "5",
            "--rollouts",
            "20",
            "--ticks",
            "2",
            "--interval-seconds",
            "10",
            "--scrape-interval-seconds",
            "1",
            "--json",
            str(report_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "queries/rollout/tick" in result.output
    report = json.loads(report_path.read_text())
    runs = report["runs"]
    assert [run["rollouts"] for run in runs] == [5, 20]
    for run in runs:
        for key in REQUIRED:
            assert isinstance(run[key], int | float), (key, run)
        assert run["complete"], run
        # Every rollout was analysed at least twice in the window.
        assert run["analyses"] >= 2 * run["rollouts"]
        assert run["reconciles"] >= run["analyses"]
        assert 0 < run["reconcile_p50_s"] <= run["reconcile_p99_s"]
        assert 0 < run["analysis_reconcile_p50_s"] <= run["analysis_reconcile_p99_s"]
        # Both arms' batch: at least requests, failures and the P99 per arm.
        assert run["prom_queries_per_rollout_tick"] >= 6
        # Every analysis writes the status; the owned objects are read from the watch cache
        # (its lists come once, before the window) and, unchanged, not applied again.
        assert 1 <= run["api_requests_per_rollout_tick"] < 2
        assert run["api_requests_by_kind"].get("patch gelumodelrollouts/status", 0) >= 1
        assert run["api_requests_by_kind"].get("apply deployments", 0) == 0
        for plural in ("configmaps", "deployments", "pods", "services"):
            assert run["api_requests_by_kind"].get(f"list {plural}", 0) == 0, run
        assert run["cpu_s_per_tick"] > 0
        assert 20 < run["peak_rss_mb"] < 4000
    rows = report["growth"]
    assert rows[0]["rollouts_ratio"] == 1.0
    assert rows[1]["rollouts_ratio"] == 4.0
    assert all(rows[0][f"{key}_ratio"] == 1.0 for key in REQUIRED[1:])
    # Nothing the benchmark started is left running.
    assert not running_processes()


def test_growth_of_no_runs_is_empty() -> None:
    assert growth([]) == []
