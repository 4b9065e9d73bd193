"""The Prometheus launcher: start, file-based discovery, clean stop whatever happens."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gelu_lab.sandbox.prometheus import (
    PrometheusNotInstalledError,
    PrometheusServer,
    PrometheusStartError,
    ScrapeTarget,
    group_targets_path,
    render_config,
)
from tests.metrics_targets import MetricsTarget


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def query(url: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=5
    ) as response:
        result: list[dict[str, Any]] = json.load(response)["data"]["result"]
        return result


def test_config_scrapes_the_discovery_file_at_the_given_intervals(tmp_path: Path) -> None:
    config = render_config(
        tmp_path / "t.json", scrape_interval_seconds=0.5, evaluation_interval_seconds=2
    )
    assert config["global"] == {
        "scrape_interval": "500ms",
        "scrape_timeout": "500ms",
        "evaluation_interval": "2s",
    }
    (job,) = config["scrape_configs"]
    # The default file and every group's beside it.
    assert job["file_sd_configs"][0]["files"] == [
        str(tmp_path / "t.json"),
        str(tmp_path / "t-*.json"),
    ]


def test_group_files_sit_beside_the_default_one(tmp_path: Path) -> None:
    assert group_targets_path(tmp_path / "targets.json", "gateway") == (
        tmp_path / "targets-gateway.json"
    )
    for bad in ("", "Gateway", "../x", "a/b", "*", "-x"):
        with pytest.raises(ValueError, match="target group"):
            group_targets_path(tmp_path / "targets.json", bad)


def test_target_labels_are_checked() -> None:
    with pytest.raises(ValueError, match="host:port"):
        ScrapeTarget("http://127.0.0.1:80/metrics")
    with pytest.raises(ValueError, match="label name"):
        ScrapeTarget("127.0.0.1:80", {"gelu.dev/arm": "candidate"})
    with pytest.raises(ValueError, match="label name"):
        ScrapeTarget("127.0.0.1:80", {"__address__": "x"})


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(PrometheusNotInstalledError, match="make setup"):
        PrometheusServer(binary=tmp_path / "prometheus").start()


def test_a_server_that_exits_at_start_reports_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server = PrometheusServer(binary="/bin/false")
    with pytest.raises(PrometheusStartError, match="exited with status 1"):
        server.start()
    assert not server.running
    assert list(tmp_path.iterdir()) == []


@pytest.mark.prometheus
def test_starts_ready_on_loopback_and_stops_cleanly() -> None:
    server = PrometheusServer(scrape_interval_seconds=1.0).start()
    proc = server._proc
    assert proc is not None
    workdir = server.workdir
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{server.url}/-/ready", timeout=5) as response:
            assert response.status == 200
        assert os.getsid(proc.pid) == proc.pid  # its own session and process group
        config = yaml.safe_load((workdir / "prometheus.yml").read_text())
        assert config["global"]["scrape_interval"] == "1s"
        assert json.loads(server.targets_path.read_text()) == []
    finally:
        server.stop()
    assert proc.returncode == 0  # SIGTERM: a clean shutdown
    assert not group_alive(proc.pid)
    assert not workdir.exists()
    server.stop()  # twice is fine
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


@pytest.mark.prometheus
def test_cleans_up_when_the_body_raises() -> None:
    seen: list[tuple[subprocess.Popen[bytes] | None, Path]] = []

    def failing_test() -> None:
        with PrometheusServer() as server:
            seen.append((server._proc, server.workdir))
            raise RuntimeError("test failed")

    with pytest.raises(RuntimeError, match="test failed"):
        failing_test()
    ((proc, workdir),) = seen
    assert proc is not None
    assert proc.poll() is not None
    assert not group_alive(proc.pid)
    assert not workdir.exists()


@pytest.mark.prometheus
def test_a_forgotten_server_is_stopped_when_collected() -> None:
    server = PrometheusServer().start()
    proc, workdir = server._proc, server.workdir
    assert proc is not None
    del server
    gc.collect()
    assert proc.poll() is not None
    assert not workdir.exists()


@pytest.mark.prometheus
def test_file_discovery_adds_and_replaces_targets() -> None:
    with (
        MetricsTarget("demo_total 7\n") as first,
        MetricsTarget("demo_total 8\n") as second,
        PrometheusServer(scrape_interval_seconds=1.0) as server,
    ):
        labels = {"namespace": "prod", "rollout": 'odd "name"\\', "arm": "candidate"}
        server.set_targets([ScrapeTarget(first.address, {**labels, "pod": "p-0"})])
        assert [p.name for p in server.targets_path.parent.iterdir()].count("targets.json") == 1
        assert not list(server.targets_path.parent.glob(".targets-*"))
        server.wait_for_targets(1)
        (sample,) = query(server.url, "demo_total")
        assert sample["metric"] == {
            "__name__": "demo_total",
            **labels,
            "pod": "p-0",
            "instance": first.address,
            "job": "sandbox",
        }
        assert sample["value"][1] == "7"

        server.set_targets([ScrapeTarget(second.address, {"pod": "p-1"})])
        deadline = time.monotonic() + 20
        while [t["labels"].get("pod") for t in server.active_targets()] != ["p-1"]:
            assert time.monotonic() < deadline, "the new targets never replaced the old"
            time.sleep(0.1)
        server.wait_for_targets(1)
        assert first.scrapes > 0
        scraped = second.scrapes
        time.sleep(1.5)
        assert second.scrapes > scraped


@pytest.mark.prometheus
def test_a_group_of_targets_is_kept_apart_from_the_others() -> None:
    # The pod runner rewrites the default file as pods come and go; the Gateway's group
    # stays scraped throughout.
    with (
        MetricsTarget("pod_total 1\n") as pod,
        MetricsTarget("gateway_total 2\n") as gateway,
        PrometheusServer(scrape_interval_seconds=1.0) as server,
    ):
        server.set_targets(
            [ScrapeTarget(gateway.address, {"component": "gateway"})], group="gateway"
        )
        server.set_targets([ScrapeTarget(pod.address, {"pod": "p-0"})])
        assert json.loads((server.workdir / "targets-gateway.json").read_text()) == [
            {"targets": [gateway.address], "labels": {"component": "gateway"}}
        ]
        server.wait_for_targets(2)
        server.set_targets([])  # the last pod went
        deadline = time.monotonic() + 20
        while [t["labels"].get("component") for t in server.active_targets()] != ["gateway"]:
            assert time.monotonic() < deadline, "the pod's target was never dropped"
            time.sleep(0.1)
        (sample,) = query(server.url, "gateway_total")
        assert sample["metric"]["component"] == "gateway"
        assert sample["metric"]["job"] == "sandbox"
