"""Reading the Grafana dashboards in monitoring/dashboards: their panels, their queries, and
the queries as Grafana would send them (template variables substituted)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
DASHBOARDS: Final = ROOT / "monitoring" / "dashboards"
CHART_DASHBOARDS: Final = ROOT / "charts" / "gelu-rollout" / "files" / "dashboards"
RULES: Final = ROOT / "monitoring" / "rules"

DATASOURCE_UID: Final = "${datasource}"
# Grafana's own variables (https://grafana.com/docs/grafana/latest/dashboards/variables/
# add-template-variables/#global-variables) that a Prometheus query may use.
GLOBAL_VARIABLES: Final = frozenset(
    {
        "__rate_interval",
        "__interval",
        "__interval_ms",
        "__range",
        "__range_s",
        "__range_ms",
        "__from",
        "__to",
    }
)
# $name, ${name} or ${name:format}, and the deprecated [[name]].
_VARIABLE: Final = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")

Dashboard = dict[str, Any]
Panel = dict[str, Any]


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> Dashboard:
    dashboard: Dashboard = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Dashboard) -> Iterator[Panel]:
    """Every panel, those inside collapsed rows included; rows themselves too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def visible_panels(dashboard: Dashboard) -> list[Panel]:
    """The panels that draw something: every panel but rows."""
    return [p for p in panels(dashboard) if p.get("type") != "row"]


@dataclass(frozen=True)
class Query:
    """One PromQL query of a dashboard: a panel's target or an annotation."""

    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def queries(dashboard: Dashboard) -> list[Query]:
    """Every PromQL query: each target of each panel, then each Prometheus annotation."""
    uid = str(dashboard["uid"])
    found = [
        Query(uid, str(panel["title"]), str(t["refId"]), str(t["expr"]), bool(t.get("instant")))
        for panel in visible_panels(dashboard)
        for t in panel.get("targets", [])
    ]
    found.extend(
        Query(uid, f"annotation {a['name']}", "annotation", str(a["expr"]), False)
        for a in prometheus_annotations(dashboard)
    )
    return found


def prometheus_annotations(dashboard: Dashboard) -> list[dict[str, Any]]:
    """The annotations that query Prometheus (not Grafana's built-in one)."""
    return [a for a in dashboard.get("annotations", {}).get("list", []) if not a.get("builtIn")]


def variables(dashboard: Dashboard) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def variables_used(text: str) -> set[str]:
    return {next(g for g in match.groups() if g) for match in _VARIABLE.finditer(text)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with each variable replaced by ``values[name]``, as Grafana sends it; a
    variable without a value is a KeyError (the test forgot one)."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return values[name]

    return _VARIABLE.sub(value, expr)


def variable_query(variable: Mapping[str, Any]) -> str:
    """The ``label_values(...)`` text of a query variable."""
    query = variable.get("query")
    text = query.get("query") if isinstance(query, dict) else query
    return str(text)


_LABEL_VALUES: Final = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def label_values(variable: Mapping[str, Any]) -> tuple[str | None, str]:
    """``label_values(selector, label)`` as (selector or None, label)."""
    parsed = _LABEL_VALUES.match(variable_query(variable).strip())
    assert parsed, f"variable {variable['name']}: not a label_values() query"
    return parsed.group("match"), parsed.group("label")


def range_functions(expr: str) -> list[tuple[str, str]]:
    """Each ``rate``, ``irate`` or ``increase`` call of ``expr``: (function, its argument)."""
    calls = []
    for match in re.finditer(r"\b(rate|irate|increase)\s*\(", expr):
        depth, start = 1, match.end()
        position = start
        while depth and position < len(expr):
            depth += {"(": 1, ")": -1}.get(expr[position], 0)
            position += 1
        calls.append((match.group(1), expr[start : position - 1]))
    return calls
