"""Lint of the Grafana dashboards, in the spirit of Grafana's dashboard-linter: a data source
variable that every query uses, ``$__rate_interval`` in every rate, a unit on every panel,
stable unique uids, template variables that exist, recording rules that exist, queries that
promtool parses, and chart copies equal to the canonical files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest
import yaml

from tests.monitoring.dashboards import (
    CHART_DASHBOARDS,
    DATASOURCE_UID,
    GLOBAL_VARIABLES,
    RULES,
    dashboard_files,
    label_values,
    load,
    panels,
    prometheus_annotations,
    queries,
    range_functions,
    substitute,
    variable_query,
    variables,
    variables_used,
    visible_panels,
)

EXPECTED: Final = ("gelu-debug", "gelu-executive", "gelu-oncall")
PROMETHEUS_DATASOURCE: Final = {"type": "prometheus", "uid": DATASOURCE_UID}
# Series without a namespace label: the operator's reconcile histogram is per process.
WITHOUT_NAMESPACE: Final = ("gelu_rollout_reconcile_duration_seconds",)
RECORDING_RULE: Final = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")
FIXED_RANGE: Final = re.compile(r"\[\s*\d+(?:ms|[smhdwy])")

FILES: Final = dashboard_files()
IDS: Final = [p.stem for p in FILES]


def test_the_three_dashboards_are_there() -> None:
    assert tuple(IDS) == EXPECTED


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_uid_is_the_file_name_and_the_schema_is_current(path: Path) -> None:
    dashboard = load(path)
    # A stable uid keeps links and bookmarks working when Grafana re-imports the file.
    assert dashboard["uid"] == path.stem
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["title"].startswith("gelu-rollout / ")
    assert "gelu-rollout" in dashboard["tags"]
    assert "id" not in dashboard or dashboard["id"] is None  # an id is per Grafana instance


def test_uids_and_titles_are_unique() -> None:
    dashboards = [load(p) for p in FILES]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_a_datasource_variable_of_prometheus_exists(path: Path) -> None:
    datasource = variables(load(path)).get("datasource")
    assert datasource is not None, "no `datasource` template variable"
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_panel_and_target_uses_the_datasource_variable(path: Path) -> None:
    for panel in visible_panels(load(path)):
        targets = panel.get("targets", [])
        if panel["type"] == "text":
            assert not targets, panel["title"]
            continue
        assert targets, f"{panel['title']}: no query"
        assert panel.get("datasource") == PROMETHEUS_DATASOURCE, panel["title"]
        for target in targets:
            assert target.get("datasource") == PROMETHEUS_DATASOURCE, (
                f"{panel['title']} / {target['refId']}"
            )
    for annotation in prometheus_annotations(load(path)):
        assert annotation.get("datasource") == PROMETHEUS_DATASOURCE, annotation["name"]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_query_variables_ask_the_datasource_variable_for_label_values(path: Path) -> None:
    found = variables(load(path))
    assert {"namespace", "model"} <= found.keys()
    for name in ("namespace", "model"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == PROMETHEUS_DATASOURCE
        _, label = label_values(variable)
        assert label == name
    # The model list follows the namespaces chosen.
    assert "namespace" in variables_used(variable_query(found["model"]))


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_rate_uses_the_rate_interval(path: Path) -> None:
    for query in queries(load(path)):
        calls = range_functions(query.expr)
        for function, argument in calls:
            assert argument.rstrip().endswith("[$__rate_interval]"), (
                f"{query.name}: {function}({argument}) does not use [$__rate_interval]"
            )
        # Windows of fixed length belong in the recording rules, not in a panel.
        assert not FIXED_RANGE.search(query.expr), f"{query.name}: a fixed range"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_panel_has_a_unit(path: Path) -> None:
    for panel in visible_panels(load(path)):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert isinstance(unit, str), f"{panel['title']}: no unit"
        assert unit, f"{panel['title']}: an empty unit"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_variable_used_is_defined_and_every_defined_one_used(path: Path) -> None:
    dashboard = load(path)
    defined = set(variables(dashboard))
    used: set[str] = set()
    for query in queries(dashboard):
        names = variables_used(query.expr)
        assert names <= defined | GLOBAL_VARIABLES, f"{query.name}: {names - defined}"
        used |= names
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            used |= variables_used(variable_query(variable))
    assert defined - {"datasource"} <= used, "a variable nothing uses"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_query_is_filtered_by_namespace(path: Path) -> None:
    for query in queries(load(path)):
        if any(metric in query.expr for metric in WITHOUT_NAMESPACE):
            continue
        assert 'namespace=~"$namespace"' in query.expr, query.name


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_panel_ids_are_unique_and_panels_do_not_overlap(path: Path) -> None:
    laid_out = list(panels(load(path)))
    ids = [p["id"] for p in laid_out]
    assert len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in laid_out:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def recorded_names() -> set[str]:
    names: set[str] = set()
    for path in RULES.glob("*.yaml"):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            names |= {str(r["record"]) for r in group.get("rules", []) if "record" in r}
    return names


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_recording_rule_a_query_names_exists(path: Path) -> None:
    recorded = recorded_names()
    for query in queries(load(path)):
        for name in RECORDING_RULE.findall(query.expr):
            assert name in recorded, f"{query.name}: no recording rule {name}"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    # promtool has no command that parses a lone expression; as recording rules, `check
    # rules` parses each one (variables substituted as Grafana would).
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package, scripts/setup.sh) is missing"
    values = dict.fromkeys(GLOBAL_VARIABLES, "30s") | {"namespace": ".*", "model": ".*"}
    rules = [
        {"record": f"dashboard:query:{index}", "expr": substitute(query.expr, values)}
        for index, query in enumerate(q for path in FILES for q in queries(load(path)))
    ]
    assert rules
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_the_chart_copy_is_byte_equal(path: Path) -> None:
    copy = CHART_DASHBOARDS / path.name
    assert copy.is_file(), f"{copy} is missing: copy {path} into the chart"
    assert copy.read_bytes() == path.read_bytes(), f"{copy} differs from {path}"


def test_the_chart_holds_no_other_dashboard() -> None:
    assert sorted(p.name for p in CHART_DASHBOARDS.glob("*.json")) == [p.name for p in FILES]
