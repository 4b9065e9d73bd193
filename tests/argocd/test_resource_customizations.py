"""Argo CD's health check and actions for GeluModelRollout (argocd/resource_customizations/),
run case by case from health_test.yaml and actions/action_test.yaml the way Argo CD runs them
(tests/argocd/argocd_lua.py), and checked against the operator: the test statuses are ones it
writes, and the actions write the request its reader takes and enable what it acts on."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lupa import lua51

from gelu_rollout.cli.kubectl.requests import refusal
from gelu_rollout.controller import _request
from gelu_rollout.rollout.conditions import (
    SUMMARY,
    ConditionType,
    Reason,
    Resources,
    health,
)
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, RequestKind
from gelu_rollout.spec.parse import SpecError, parse_status
from gelu_rollout.spec.status import RolloutStatus, Stage
from tests.argocd.argocd_lua import ArgoLua, load_yaml

ROOT = Path(__file__).resolve().parents[2] / "argocd" / "resource_customizations"
HERE = ROOT / "gelu.dev" / "GeluModelRollout"
ACTIONS = HERE / "actions"
HEALTH_CASES: list[dict[str, Any]] = load_yaml(HERE / "health_test.yaml")["tests"]
ACTION_TESTS: dict[str, list[dict[str, Any]]] = load_yaml(ACTIONS / "action_test.yaml")
DISCOVERY_CASES = ACTION_TESTS["discoveryTests"]
ACTION_CASES = ACTION_TESTS["actionTests"]
PLACEHOLDER = "0001-01-01T00:00:00Z"
"""What the expected outputs hold where an action writes the time (Argo CD's own tests
normalize such fields the same way)."""
SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# A status a newer operator might write: the health check must not fail on it.
FROM_A_NEWER_OPERATOR = {"testdata/unknown_stage.yaml"}


@pytest.fixture(scope="module")
def lua() -> ArgoLua:
    return ArgoLua()


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone 5h30 off UTC, so an action writing local time is caught."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def case_id(case: dict[str, Any]) -> str:
    return "-".join(filter(None, (case.get("action"), Path(case["inputPath"]).stem)))


@pytest.mark.parametrize("case", HEALTH_CASES, ids=case_id)
def test_health(lua: ArgoLua, case: dict[str, Any]) -> None:
    obj = load_yaml(HERE / case["inputPath"])
    expected = {"status": "", "message": "", **case["healthStatus"]}
    assert lua.health(HERE / "health.lua", obj) == expected


@pytest.mark.parametrize(
    "case", [c for c in HEALTH_CASES if c["inputPath"] not in FROM_A_NEWER_OPERATOR], ids=case_id
)
def test_health_cases_are_statuses_the_operator_writes(case: dict[str, Any]) -> None:
    obj = load_yaml(HERE / case["inputPath"])
    if "status" not in obj:
        return  # a rollout the operator has not seen yet: nothing to check
    status = parse_status(obj["status"])
    assert all(c.observed_generation == status.observed_generation for c in status.conditions)
    resources = status.condition(ConditionType.RESOURCES_READY.value)
    assert resources is not None
    summary = health(
        status, Resources(resources.status == "True", Reason(resources.reason), resources.message)
    )
    true = [c for c in status.conditions if c.type in SUMMARY and c.status == "True"]
    assert [(c.type, c.reason, c.message) for c in true] == [
        (summary.state.value, summary.reason, summary.message)
    ]


def test_a_status_from_a_newer_operator_is_one_this_one_cannot_read() -> None:
    for path in FROM_A_NEWER_OPERATOR:
        with pytest.raises(SpecError):
            parse_status(load_yaml(HERE / path)["status"])


@pytest.mark.parametrize("case", DISCOVERY_CASES, ids=case_id)
def test_discovery(lua: ArgoLua, case: dict[str, Any]) -> None:
    obj = load_yaml(ACTIONS / case["inputPath"])
    expected = sorted(
        ({"disabled": False, **action} for action in case["result"]), key=lambda a: a["name"]
    )
    assert lua.discover(ACTIONS / "discovery.lua", obj) == expected


@pytest.mark.parametrize("stage", list(Stage))
def test_discovery_enables_what_the_operator_acts_on(lua: ArgoLua, stage: Stage) -> None:
    obj = {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": "gelu-mlp", "namespace": "prod", "generation": 1},
        "spec": {},
        "status": {"observedGeneration": 1, "stage": stage.value},
    }
    offered = {a["name"]: not a["disabled"] for a in lua.discover(ACTIONS / "discovery.lua", obj)}
    # The kubectl plugin refuses a request exactly where the operator would ignore it.
    assert offered == {kind.value: refusal(kind, "gelu-mlp", stage) is None for kind in RequestKind}


@pytest.mark.usefixtures("far_from_utc")
@pytest.mark.parametrize("case", ACTION_CASES, ids=case_id)
def test_action(lua: ArgoLua, case: dict[str, Any]) -> None:
    source = load_yaml(ACTIONS / case["inputPath"])
    # Lua's os.time() reads the kernel's coarse clock, which may trail Python's by a tick:
    # a second's slack at the start.
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    result = lua.act(ACTIONS / case["action"] / "action.lua", source)
    after = datetime.now(UTC)
    value = result["metadata"]["annotations"][REQUEST_ANNOTATION]
    kind, _, request_id = value.partition("/")
    assert kind == case["action"]
    assert SECOND.match(request_id), value
    assert before <= datetime.fromisoformat(request_id) <= after, "not the UTC time"
    result["metadata"]["annotations"][REQUEST_ANNOTATION] = f"{kind}/{PLACEHOLDER}"
    assert result == load_yaml(ACTIONS / case["expectedOutputPath"])


@pytest.mark.parametrize("case", ACTION_CASES, ids=case_id)
def test_the_operator_reads_the_request_an_action_writes(
    lua: ArgoLua, case: dict[str, Any]
) -> None:
    source = load_yaml(ACTIONS / case["inputPath"])
    status = parse_status(source.get("status") or {})
    result = lua.act(ACTIONS / case["action"] / "action.lua", source)
    request, problem = _request(result["metadata"], status)
    assert problem is None
    assert request is not None
    assert request.kind is RequestKind(case["action"])
    # A request the operator already handled is not taken for the new one.
    assert request.id != status.handled_request
    assert refusal(request.kind, "gelu-mlp", status.stage) is None


def test_every_action_is_discovered_and_tested_and_every_file_used() -> None:
    scripts = {p.parent.name for p in ACTIONS.glob("*/action.lua")}
    assert scripts == {kind.value for kind in RequestKind}
    for case in DISCOVERY_CASES:
        assert {a["name"] for a in case["result"]} == scripts
    assert {c["action"] for c in ACTION_CASES} == scripts
    used = {c["inputPath"] for c in HEALTH_CASES}
    assert used == {f"testdata/{p.name}" for p in (HERE / "testdata").glob("*")}
    used = {c["inputPath"] for c in DISCOVERY_CASES + ACTION_CASES}
    used |= {c["expectedOutputPath"] for c in ACTION_CASES}
    assert used == {f"testdata/{p.name}" for p in (ACTIONS / "testdata").glob("*")}
    assert {p.name for p in HERE.iterdir()} == {
        "health.lua",
        "health_test.yaml",
        "testdata",
        "actions",
    }


def test_every_stage_has_a_health_case() -> None:
    stages = {
        (load_yaml(HERE / c["inputPath"]).get("status") or {}).get("stage") for c in HEALTH_CASES
    }
    assert {s.value for s in Stage} <= stages


def test_the_sandbox_is_argo_cds(lua: ArgoLua, tmp_path: Path) -> None:
    """Without these limits a script could pass here and fail in Argo CD."""
    for source in (
        'return {status = string.upper("healthy")}',
        'return {status = ("x"):upper()}',
        "return {status = math.floor(1)}",
        'return {status = io.read("*a")}',
        'local json = require("json") return {}',
        "return {status = os.getenv('HOME')}",
    ):
        script = tmp_path / "health.lua"
        script.write_text(source)
        with pytest.raises(lua51.LuaError, match=r"a nil value|a string value|not found"):
            lua.health(script, {})
    # goto is not Lua 5.1 (nor gopher-lua).
    (tmp_path / "goto.lua").write_text("goto done ::done:: return {}")
    with pytest.raises(lua51.LuaError, match="'=' expected near 'done'"):
        lua.run(tmp_path / "goto.lua", {})


def test_results_read_as_argo_cd_reads_them(lua: ArgoLua, tmp_path: Path) -> None:
    script = tmp_path / "action.lua"
    script.write_text(
        'obj.metadata.labels = {} obj.spec.list = {"a", "b"} obj.spec.n = 3 return obj'
    )
    out = lua.act(script, {"metadata": {"labels": {}, "gone": None}, "spec": {"keep": {}}})
    # An empty table is an empty array unless the input had an object there.
    assert out == {"metadata": {"labels": {}}, "spec": {"keep": {}, "list": ["a", "b"], "n": 3}}
    script.write_text("return {status = 'Fine'}")
    assert lua.health(script, {}) == {
        "status": "Unknown",
        "message": "Lua returned an invalid health status",
    }


def test_health_cases_cover_each_summary_state() -> None:
    states = set()
    for case in HEALTH_CASES:
        if case["inputPath"] in FROM_A_NEWER_OPERATOR:
            continue
        raw = load_yaml(HERE / case["inputPath"]).get("status")
        if raw is None:
            continue
        status: RolloutStatus = parse_status(raw)
        states |= {c.type for c in status.conditions if c.type in SUMMARY and c.status == "True"}
    assert states == {t.value for t in SUMMARY}
