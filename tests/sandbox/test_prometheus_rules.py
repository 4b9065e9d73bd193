"""The Prometheus launcher's rule files: copied beside the server's configuration, named in
it, and evaluated."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gelu_lab.sandbox.prometheus import (
    PrometheusServer,
    PrometheusStartError,
    ScrapeTarget,
    copy_rule_files,
    render_config,
)
from tests.metrics_targets import MetricsTarget

RULES = {
    "groups": [
        {
            "name": "doubled",
            "rules": [{"record": "job:pod_total:doubled", "expr": "sum by (job) (pod_total) * 2"}],
        }
    ]
}


def query(url: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=5
    ) as response:
        result: list[dict[str, Any]] = json.load(response)["data"]["result"]
        return result


def test_no_rule_files_no_rule_files_key(tmp_path: Path) -> None:
    config = render_config(
        tmp_path / "t.json", scrape_interval_seconds=1, evaluation_interval_seconds=1
    )
    assert "rule_files" not in config


def test_rule_files_are_named_in_the_config(tmp_path: Path) -> None:
    rules = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    config = render_config(
        tmp_path / "t.json",
        scrape_interval_seconds=1,
        evaluation_interval_seconds=1,
        rule_files=rules,
    )
    assert config["rule_files"] == [str(path) for path in rules]


def test_copies_of_one_name_from_two_folders_both_survive(tmp_path: Path) -> None:
    for folder, text in (("one", "groups: []\n"), ("two", "groups: [] # two\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rules.yaml").write_text(text)
    copies = copy_rule_files(
        [tmp_path / "one" / "rules.yaml", tmp_path / "two" / "rules.yaml"], tmp_path / "copies"
    )
    assert [c.name for c in copies] == ["00-rules.yaml", "01-rules.yaml"]
    assert [c.read_text() for c in copies] == ["groups: []\n", "groups: [] # two\n"]


@pytest.mark.prometheus
def test_recording_rules_are_loaded_and_evaluated(tmp_path: Path) -> None:
    rule_file = tmp_path / "recording.yaml"
    rule_file.write_text(yaml.safe_dump(RULES))
    with (
        MetricsTarget("pod_total 21\n") as pod,
        PrometheusServer(rule_files=[rule_file]) as server,
    ):
        # The server reads its own copy: the original may go.
        rule_file.unlink()
        (group,) = server.rule_groups()
        assert group["name"] == "doubled"
        assert Path(group["file"]).parent == server.workdir / "rules"
        server.set_targets([ScrapeTarget(pod.address)])
        server.wait_for_targets(1)
        deadline = time.monotonic() + 20
        while not (samples := query(server.url, "job:pod_total:doubled")):
            assert time.monotonic() < deadline, "the recording rule never produced a sample"
            time.sleep(0.2)
        (sample,) = samples
        assert sample["metric"] == {"__name__": "job:pod_total:doubled", "job": "sandbox"}
        assert float(sample["value"][1]) == 42.0


@pytest.mark.prometheus
def test_an_invalid_rule_file_fails_the_start_with_the_reason(tmp_path: Path) -> None:
    rule_file = tmp_path / "broken.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"expr": "up"}]}]}))
    with pytest.raises(PrometheusStartError, match=r"broken\.yaml"):
        PrometheusServer(rule_files=[rule_file]).start()
