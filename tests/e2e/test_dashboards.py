"""Every query of every dashboard against a real Prometheus that scraped a sandbox rollout.

The sandbox's Prometheus evaluates monitoring/rules/*.yaml and scrapes the pods, the Gateway
and the operator's own metrics. One rollout is rolled back by its probe, then one healthy
rollout is promoted; then each panel target and annotation of monitoring/dashboards/*.json,
its variables substituted as Grafana would (``$namespace``=default, ``$model``=the rollout's
model, ``$__rate_interval`` by Grafana's rule), runs as a range query over the rollouts' time:
each must return at least one series with a point that is not NaN, except the few listed in
:data:`NO_DATA_IN_SANDBOX`.
The template variables' ``label_values`` queries must offer the rollout's namespace and model.
With ``-s`` it prints a table per dashboard.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pytest

from gelu_lab.sandbox.stack import SCRAPE_INTERVAL_SECONDS, Sandbox, sandbox
from tests.e2e.test_operator import MODEL, apply, finished, manifest, stage, traffic
from tests.monitoring.dashboards import (
    RULES,
    Query,
    dashboard_files,
    label_values,
    load,
    queries,
    substitute,
    variables,
    visible_panels,
)

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

NAMESPACE: Final = "default"
STEP_SECONDS: Final = 2.0
"""The range queries' step, which is Grafana's ``$__interval``."""
NO_DATA_IN_SANDBOX: Final[Mapping[tuple[str, str, str], str]] = {
    ("gelu-oncall", "Stalled rollouts", "A"): (
        "gelu_rollout_stalled exists only while a rollout waits for a person (Stalled); "
        "neither rollout here ever does"
    ),
}
"""Queries that may return nothing here, with the reason (dashboard uid, panel, refId)."""


def rate_interval(step_seconds: float, scrape_seconds: float) -> float:
    """Grafana's ``$__rate_interval``: max($__interval + scrape interval, 4 x scrape interval)."""
    return max(step_seconds + scrape_seconds, 4 * scrape_seconds)


def seconds(value: float) -> str:
    return f"{round(value * 1000)}ms" if value % 1 else f"{int(value)}s"


def grafana_values(start: float, end: float) -> dict[str, str]:
    """The variables of every query, as Grafana fills them for ``start``..``end``."""
    span = end - start
    return {
        "namespace": NAMESPACE,
        "model": MODEL,
        "__rate_interval": seconds(rate_interval(STEP_SECONDS, SCRAPE_INTERVAL_SECONDS)),
        "__interval": seconds(STEP_SECONDS),
        "__interval_ms": str(round(STEP_SECONDS * 1000)),
        "__range": f"{round(span)}s",
        "__range_s": str(round(span)),
        "__range_ms": str(round(span * 1000)),
        "__from": str(round(start * 1000)),
        "__to": str(round(end * 1000)),
    }


def api(prometheus_url: str, path: str, params: Mapping[str, str | list[str]]) -> Any:
    """GET one Prometheus API path; its ``data``, or AssertionError with Prometheus' error."""
    url = f"{prometheus_url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        body = json.load(error)
    assert body.get("status") == "success", f"{params}: {body.get('error')}"
    return body["data"]


def range_query(prometheus_url: str, expr: str, start: float, end: float) -> list[Any]:
    data = api(
        prometheus_url,
        "/api/v1/query_range",
        {"query": expr, "start": str(start), "end": str(end), "step": str(STEP_SECONDS)},
    )
    result: list[Any] = data["result"]
    return result


def has_data(result: list[Any]) -> bool:
    """Whether a series has a point Grafana draws: a NaN (0/0, a quantile of no
    observations) draws nothing."""
    return any(value != "NaN" for series in result for _, value in series["values"])


@dataclass
class Board:
    uid: str
    panels: int
    queries: int = 0
    with_data: int = 0
    exempt: int = 0


async def run_rollouts(stack: Sandbox) -> None:
    """A candidate rolled back by its probe (NaN outputs), then a healthy one promoted."""
    started = time.monotonic()
    await apply(stack, manifest("naive", {"variant": "tanh-fp16-naive"}))
    rolled_back = await stack.wait_for("naive", finished, timeout_s=90)
    assert stage(rolled_back) == "RolledBack", rolled_back.get("status")
    rolled_back_s = time.monotonic() - started
    await apply(stack, manifest("tanh", {"variant": "tanh"}))
    async with traffic(stack, "tanh", seconds=150):
        promoted = await stack.wait_for("tanh", finished, timeout_s=150)
    assert stage(promoted) == "Promoted", promoted.get("status")
    promoted_s = time.monotonic() - started - rolled_back_s
    print(f"\nE2E dashboards: rolled back in {rolled_back_s:.1f}s, promoted in {promoted_s:.1f}s")


@pytest.mark.asyncio
async def test_every_dashboard_query_returns_data_from_a_sandbox_rollout() -> None:
    rule_files = sorted(RULES.glob("*.yaml"))
    assert any(p.name == "recording.yaml" for p in rule_files), rule_files
    async with sandbox(rule_files=rule_files) as stack:
        loaded = {group["file"] for group in await asyncio.to_thread(stack.prometheus.rule_groups)}
        assert len(loaded) == len(rule_files)
        # The Gateway and the operator, scraped before the first rollout: a counter's first
        # sample must be its 0, or increase() misses the outcome of a rollout that ends in
        # seconds (file discovery takes 5 to 10 s to scrape a new target).
        await asyncio.to_thread(stack.prometheus.wait_for_targets, 2)
        start = time.time()
        await run_rollouts(stack)
        # The outcome's counters and the rules over them: a few scrapes and evaluations.
        await asyncio.sleep(4 * SCRAPE_INTERVAL_SECONDS)
        end = time.time()
        values = grafana_values(start, end)
        prometheus = stack.prometheus.url
        boards: list[Board] = []
        missing: list[str] = []
        every_query = {key(q) for path in dashboard_files() for q in queries(load(path))}
        assert NO_DATA_IN_SANDBOX.keys() <= every_query, "an exemption of no query"
        for path in dashboard_files():
            dashboard = load(path)
            board = Board(dashboard["uid"], len(visible_panels(dashboard)))
            boards.append(board)
            for name, variable in variables(dashboard).items():
                if variable["type"] != "query":
                    continue
                selector, label = label_values(variable)
                params: dict[str, str | list[str]] = {"start": str(start), "end": str(end)}
                if selector is not None:
                    params["match[]"] = [substitute(selector, values)]
                offered = await asyncio.to_thread(
                    api, prometheus, f"/api/v1/label/{label}/values", params
                )
                assert values[name] in offered, f"{board.uid}: ${name} offers {offered}"
            for query in queries(dashboard):
                board.queries += 1
                result = await asyncio.to_thread(
                    range_query, prometheus, substitute(query.expr, values), start, end
                )
                if has_data(result):
                    board.with_data += 1
                elif key(query) in NO_DATA_IN_SANDBOX:
                    board.exempt += 1
                else:
                    missing.append(f"{query.name}: {query.expr}")
    print_table(boards, values)
    assert not missing, "queries without data:\n" + "\n".join(missing)


def key(query: Query) -> tuple[str, str, str]:
    return (query.dashboard, query.panel, query.ref)


def print_table(boards: list[Board], values: Mapping[str, str]) -> None:
    print(
        f"\nDASHBOARDS against the sandbox ($__rate_interval={values['__rate_interval']}, "
        f"$__interval={values['__interval']}, $__range={values['__range']})"
    )
    print(f"{'dashboard':<16} {'panels':>6} {'queries':>7} {'with data':>9} {'exempt':>6}")
    for board in boards:
        print(
            f"{board.uid:<16} {board.panels:>6} {board.queries:>7} {board.with_data:>9} "
            f"{board.exempt:>6}"
        )
    for (uid, panel, ref), reason in NO_DATA_IN_SANDBOX.items():
        print(f"exempt: {uid} / {panel} / {ref}: {reason}")
