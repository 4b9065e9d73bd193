"""The Prometheus rules in monitoring/rules: promtool's lint and unit tests pass, every alert is
tested both firing and not firing, every recording rule's value is tested, the chart ships
byte-equal copies, and every alert carries its labels, annotations and a runbook with the
sections on-call needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
RULES: Final = ROOT / "monitoring" / "rules"
RULE_TESTS: Final = RULES / "tests"
CHART_RULES: Final = ROOT / "charts" / "gelu-rollout" / "files" / "rules"
RUNBOOKS: Final = ROOT / "docs" / "runbooks"
RUNBOOK_URL: Final = "https://github.com/gelu-rollout/gelu-rollout/blob/main/docs/runbooks/"
SEVERITIES: Final = frozenset({"page", "ticket"})
RUNBOOK_SECTIONS: Final = ("Meaning", "Impact", "Diagnosis", "Mitigation")
NOT_RUNBOOKS: Final = frozenset({"README.md", "index.md"})
# The windows of the SLO alerts (and the 10-minute page) that the recording rules must cover.
WINDOWS: Final = ("5m", "10m", "30m", "1h", "2h", "6h", "1d", "3d")
ERROR_BUDGET: Final = 0.001  # the SLO: 99.9% of requests succeed


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool (Debian's prometheus package, scripts/setup.sh) is missing"
    return found


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yaml"))


def unit_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.yaml"))


def rules_of(path: Path) -> Iterator[dict[str, Any]]:
    for group in yaml.safe_load(path.read_text())["groups"]:
        yield from group["rules"]


def all_rules() -> list[dict[str, Any]]:
    return [rule for path in rule_files() for rule in rules_of(path)]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


def alert_names() -> set[str]:
    return {str(rule["alert"]) for rule in alerts()}


def records() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "record" in rule]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, timeout=300
    )


def test_the_rule_files_are_there() -> None:
    assert [p.name for p in rule_files()] == [
        "operator-alerts.yaml",
        "recording.yaml",
        "serving-alerts.yaml",
        "slo-alerts.yaml",
    ]
    assert unit_test_files(), "no promtool unit tests in monitoring/rules/tests"


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_promtool_check_rules_lints_clean(path: Path) -> None:
    # --lint-fatal: a lint finding (a duplicate rule) fails the check instead of a warning.
    checked = run("check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@pytest.mark.slow
@pytest.mark.parametrize("path", unit_test_files(), ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    tested = run("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def alert_checks() -> Iterator[tuple[Path, str, bool]]:
    """Each alert_rule_test case: its file, the alert it checks, and whether it expects the
    alert to fire."""
    for path in unit_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                yield path, str(case["alertname"]), bool(case.get("exp_alerts"))


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing = {name for _, name, fires in alert_checks() if fires}
    quiet = {name for _, name, fires in alert_checks() if not fires}
    names = alert_names()
    assert not names - firing, f"never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"never tested not firing: {sorted(names - quiet)}"
    tested = firing | quiet
    assert not tested - names, f"tests of alerts that do not exist: {sorted(tested - names)}"


def test_the_unit_tests_load_the_rule_files_that_exist() -> None:
    for path in unit_test_files():
        for name in yaml.safe_load(path.read_text())["rule_files"]:
            assert (path.parent / name).resolve().parent == RULES, f"{path.name}: {name}"
            assert (path.parent / name).is_file(), f"{path.name}: {name} is missing"


def test_unit_tests_evaluate_recording_groups_before_the_alerts_reading_them() -> None:
    # Without group_eval_order promtool takes the groups in a random order at each step, and
    # an alert reading a recording rule sees this minute's value or the last one's by chance.
    for path in unit_test_files():
        test = yaml.safe_load(path.read_text())
        groups = [
            group
            for name in test["rule_files"]
            for group in yaml.safe_load((path.parent / name).read_text())["groups"]
        ]
        alerting = [i for i, g in enumerate(groups) if any("alert" in r for r in g["rules"])]
        recording = [i for i, g in enumerate(groups) if i not in alerting]
        if not (alerting and recording):
            continue  # the recording groups do not read each other's series
        order = test.get("group_eval_order", [])
        assert sorted(order) == sorted(g["name"] for g in groups), f"{path.name}: {order}"
        position = {name: i for i, name in enumerate(order)}
        for r in recording:
            for a in alerting:
                assert position[groups[r]["name"]] < position[groups[a]["name"]], path.name


def test_every_recording_rule_has_its_value_tested() -> None:
    tested = " ".join(
        str(case["expr"])
        for path in unit_test_files()
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("promql_expr_test", [])
    )
    untested = [str(r["record"]) for r in records() if not re.search(rf"\b{r['record']}\b", tested)]
    assert not untested, f"no promql_expr_test names {untested}"


def test_the_recording_rules_cover_every_name_and_window() -> None:
    names = {str(r["record"]) for r in records()}
    expected = {
        "namespace_model_arm:gelu_requests:rate5m",
        "namespace_model_arm:gelu_request_latency_seconds:mean_rate5m",
        "namespace_model_arm:gelu_queue_latency_seconds:mean_rate5m",
        "namespace_model_arm:gelu_compute_latency_seconds:mean_rate5m",
        "namespace_model_arm:gelu_request_latency_seconds:p99",
        "namespace_model_arm:gelu_nonfinite_outputs:rate5m",
    }
    for window in WINDOWS:
        expected |= {
            f"namespace_model_arm:gelu_request_errors:ratio_rate{window}",
            f"namespace_model_arm:gelu_slo_burn:rate{window}",
            f"namespace_model:gelu_request_errors:ratio_rate{window}",
            f"namespace_model:gelu_slo_burn:rate{window}",
        }
    assert not expected - names, f"missing: {sorted(expected - names)}"
    assert len(names) == len(records()), "a recording rule is defined twice"


def test_every_burn_rate_divides_by_the_same_error_budget() -> None:
    # Changing the SLO means changing every burn rule; one left behind would be caught here.
    for rule in records():
        if ":gelu_slo_burn:" in rule["record"]:
            budget = re.fullmatch(r".*/\s*([0-9.e-]+)\s*", str(rule["expr"]), flags=re.DOTALL)
            assert budget, f"{rule['record']}: not a ratio over the error budget"
            assert float(budget.group(1)) == ERROR_BUDGET, rule["record"]


def test_the_chart_ships_byte_equal_copies() -> None:
    shipped = sorted(p.name for p in CHART_RULES.glob("*"))
    assert shipped == [p.name for p in rule_files()], "charts/gelu-rollout/files/rules differs"
    for path in rule_files():
        copy = CHART_RULES / path.name
        assert copy.read_bytes() == path.read_bytes(), f"{copy} is not a copy of {path}"


def test_alert_names_are_unique() -> None:
    names = [str(rule["alert"]) for rule in alerts()]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: str(a["alert"]))
def test_every_alert_has_severity_summary_description_and_runbook(alert: dict[str, Any]) -> None:
    name = str(alert["alert"])
    assert alert["labels"]["severity"] in SEVERITIES, name
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}, name
    assert annotations["summary"].strip(), name
    assert annotations["description"].strip(), name
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}{name}.md"
    # The summary names the rollout or the model it is about; only absent() has no labels.
    if not str(alert["expr"]).lstrip().startswith("absent("):
        assert re.search(r"\{\{ \$labels\.(rollout|model) \}\}", annotations["summary"]), name


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    runbooks = {p.stem for p in RUNBOOKS.glob("*.md") if p.name not in NOT_RUNBOOKS}
    names = alert_names()
    assert not names - runbooks, f"no docs/runbooks/ page for {sorted(names - runbooks)}"
    assert not runbooks - names, f"runbooks of no alert: {sorted(runbooks - names)}"


@pytest.mark.parametrize("name", sorted(alert_names()))
def test_each_runbook_has_the_sections_on_call_needs(name: str) -> None:
    text = (RUNBOOKS / f"{name}.md").read_text()
    assert text.startswith(f"# {name}\n"), f"{name}.md: the title is the alert's name"
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert [h for h in headings if h in RUNBOOK_SECTIONS] == list(RUNBOOK_SECTIONS), headings
    for section in RUNBOOK_SECTIONS:
        body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert body.strip(), f"{name}.md: {section} is empty"


def test_the_runbook_index_lists_every_runbook() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name in alert_names():
        assert f"({name}.md)" in index, f"docs/runbooks/README.md does not link {name}.md"
