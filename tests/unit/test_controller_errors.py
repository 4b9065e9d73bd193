"""The error policy, one failure at a time, against the in-memory API: what the rollout's
status, its Events, the operator's log and its failure counter say, how long it waits, and
that no failure ever promotes.

- permanent (403, 400/422 on a write, 404 on a write): Stalled with the reason, one Warning
  Event per distinct problem, no API request until a change or the slow recheck;
- a referenced ConfigMap or HTTPRoute missing: Stalled, one Event, found again when it exists;
- transient (5xx, 409, 429, timeouts, no connection): nothing written, retried with a growing
  delay (the handler's, in test_controller_fast.py), no traceback;
- Prometheus down or answering nonsense: no failure at all; the gates say Inconclusive and the
  rollout pauses once its time for data is out;
- a bug: its traceback once, then retried like a transient failure.
"""

from __future__ import annotations

import copy
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gelu_rollout.adapters.errors import (
    RETRY_CAP_SECONDS,
    FailureKind,
    classify,
    retry_delay_seconds,
)
from gelu_rollout.adapters.kube import KubeClient, KubeError
from gelu_rollout.adapters.prometheus.fake import FakeObserver, ObserverCall
from gelu_rollout.adapters.prometheus.observer import PrometheusObserver
from gelu_rollout.controller import PERMANENT_RECHECK_SECONDS
from gelu_rollout.rollout.observations import Observations
from tests.fakes.world import SPEC, RolloutWorld, fake_triton, healthy

ROUTED: dict[str, Any] = {
    **SPEC,
    "traffic": {**SPEC["traffic"], "mode": "HTTPRoute", "httpRouteName": "gelu"},
}


def progressing(monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any] = ROUTED) -> RolloutWorld:
    """A rollout at its first step (10% to the candidate), its probe passed."""
    fake_triton(monkeypatch)
    world = RolloutWorld(spec)
    world.add_route()
    world.tick()
    world.tick()
    assert (world.stage, world.candidate_weight()) == ("Progressing", 10)
    return world


def nudge_route(world: RolloutWorld) -> None:
    """Someone edits the route's weights and the owned objects' labels: the next tick patches
    and applies them back (and so meets a fault injected on the route's patch or on an
    apply; an unchanged object is not applied again)."""
    route = world.api.objects[("HTTPRoute", "prod", "gelu")]
    for ref in route["spec"]["rules"][0]["backendRefs"]:
        ref["weight"] = 33  # no weight the rollout ever sets
    for (kind, _, _), obj in world.api.objects.items():
        if kind in ("ConfigMap", "Deployment", "Service"):
            obj["metadata"].setdefault("labels", {})["app.kubernetes.io/name"] = "edited"


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None]


# -- permanent: a condition, one Event, then a wait ------------------------------------------

PERMANENT = [
    pytest.param("apply", "Deployment", 403, "Forbidden", id="403-apply"),
    pytest.param("list", "Deployment", 403, "Forbidden", id="403-list"),
    pytest.param("get", "HTTPRoute", 403, "Forbidden", id="403-get-route"),
    pytest.param("patch", "HTTPRoute", 403, "Forbidden", id="403-patch-route"),
    pytest.param("apply", "Service", 422, "ApplyRejected", id="422-apply"),
    pytest.param("apply", "ConfigMap", 400, "ApplyRejected", id="400-apply"),
    pytest.param("apply", "Deployment", 404, "NotFound", id="404-apply"),
]


@pytest.mark.parametrize(("verb", "kind", "code", "reason"), PERMANENT)
def test_a_permanent_refusal_stalls_the_rollout_once_and_waits_for_a_change(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    verb: str,
    kind: str,
    code: int,
    reason: str,
) -> None:
    world = progressing(monkeypatch)
    caplog.set_level(logging.INFO)
    world.api.fail(verb, kind, status=code)
    nudge_route(world)
    result = world.tick(seconds=60)
    assert result.retry is None, "a permanent failure is not retried"
    assert world.condition("Stalled") == ("True", reason)
    assert world.condition("Ready") == ("False", reason)
    assert world.condition("ResourcesReady") == ("False", reason)
    assert f"HTTP {code}" in world.condition_message("Stalled")
    assert world.warnings() == [reason]
    assert (world.failures("permanent"), world.failures("transient")) == (1, 0)
    assert (world.stage, world.candidate_weight()) == ("Progressing", 10)
    assert tracebacks(caplog) == []
    assert sum(reason in r.getMessage() for r in caplog.records) == 1
    # Waiting: nothing is read or written, nothing posted, nothing counted, for five minutes.
    world.api.reset_counts()
    for _ in range(int(PERMANENT_RECHECK_SECONDS // 60) - 1):
        assert world.tick(seconds=60).rested
    assert world.api.count() == 0
    assert world.warnings() == [reason]
    assert world.failures("permanent") == 1
    # The recheck meets the same refusal: the same condition, no second Event.
    assert not world.tick(seconds=60).rested
    assert world.condition("Stalled") == ("True", reason)
    assert world.warnings() == [reason]
    assert world.failures("permanent") == 2
    # A spec change is acted on at once (and meets the refusal again).
    edited = copy.deepcopy(ROUTED)
    edited["traffic"]["steps"][1]["analysisSeconds"] = 240
    world.edit(edited)
    assert not world.tick().rested
    assert world.condition("Stalled") == ("True", reason)
    assert world.status["observedGeneration"] == 2
    assert world.stage != "Promoted"
    # Mended (RBAC granted, a webhook relaxed): found at the next recheck, and it goes on.
    world.api.heal()
    assert world.tick().rested
    world.tick(seconds=PERMANENT_RECHECK_SECONDS)
    assert world.condition("Stalled") == ("False", "NotStalled")
    world.run_until("Promoted")
    assert world.warnings() == [reason]


def test_a_refused_promotion_is_not_recorded_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    world, twin = progressing(monkeypatch), progressing(monkeypatch)
    for _ in range(5):
        world.tick(seconds=60)
        twin.tick(seconds=60)
    assert world.candidate_weight() == 50
    # The next tick promotes (as the twin shows); this one's apply of the baseline (now the
    # candidate's model) is refused: its status still says what the cluster runs.
    twin.tick(seconds=60)
    assert twin.stage == "Promoted"
    world.api.fail("apply", "Deployment", status=403)
    world.tick(seconds=60)
    assert world.stage == "Progressing"
    assert world.condition("Promoted")[0] == "False"
    assert world.condition("Stalled") == ("True", "Forbidden")
    world.api.heal()
    world.tick(seconds=PERMANENT_RECHECK_SECONDS)
    assert world.stage == "Promoted"


def test_each_distinct_problem_is_one_event(monkeypatch: pytest.MonkeyPatch) -> None:
    world = progressing(monkeypatch)
    world.api.fail("apply", "Deployment", status=403)
    nudge_route(world)
    world.tick()
    world.api.heal()
    world.api.fail("apply", "Service", status=422, message="spec.ports[0].port: Invalid value")
    nudge_route(world)
    world.tick(seconds=PERMANENT_RECHECK_SECONDS)
    assert world.condition("Stalled") == ("True", "ApplyRejected")
    assert "spec.ports[0].port" in world.condition_message("Stalled")
    assert world.warnings() == ["Forbidden", "ApplyRejected"]


# -- a referenced object missing -------------------------------------------------------------


def test_a_missing_repository_configmap_stalls_until_it_is_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_triton(monkeypatch)
    spec = copy.deepcopy(SPEC)
    spec["candidate"] = {"replicas": 2, "repository": {"configMapName": "gelu-v2"}}
    world = RolloutWorld(spec)
    for _ in range(3):
        world.tick(seconds=60)
    assert world.condition("Stalled") == ("True", "RepositoryMissing")
    assert "ConfigMap prod/gelu-v2 not found" in world.condition_message("Stalled")
    assert world.warnings() == ["RepositoryMissing"]
    assert world.api.count("apply") == 0, "nothing is rendered from a repository not there"
    # Not an error of the tick: a read per tick, no failure counted, no log storm.
    assert world.failures("permanent") == world.failures("transient") == 0
    world.add_repository("gelu-v2")
    world.tick()
    assert world.condition("Stalled") == ("False", "NotStalled")
    world.run_until("Promoted")
    assert world.warnings() == ["RepositoryMissing"]


def test_a_missing_route_stalls_until_it_is_created(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_triton(monkeypatch)
    world = RolloutWorld(ROUTED)
    for _ in range(10):
        world.tick(seconds=60)
    assert world.condition("Stalled") == ("True", "HTTPRouteMissing")
    assert "HTTPRoute prod/gelu not found" in world.condition_message("Stalled")
    assert world.warnings() == ["HTTPRouteMissing"]
    # Without the route no traffic moves, so nothing is decided: no step, no promotion.
    assert (world.stage, world.candidate_weight()) == ("Pending", 0)
    assert world.api.count("apply") == 0
    world.add_route()
    world.tick()
    world.tick()
    assert world.condition("Stalled") == ("False", "NotStalled")
    assert world.stage == "Progressing"
    world.run_until("Promoted")
    assert world.warnings() == ["HTTPRouteMissing"]


def test_a_route_deleted_between_read_and_patch_reads_as_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = progressing(monkeypatch)
    world.api.fail("patch", "HTTPRoute", status=404, times=1)
    nudge_route(world)
    world.tick(seconds=60)
    assert world.condition("ResourcesReady") == ("False", "HTTPRouteMissing")
    assert world.failures("permanent") == world.failures("transient") == 0
    assert not world.tick().rested, "a missing route is looked for every tick"
    assert world.condition("ResourcesReady") == ("True", "ResourcesApplied")


# -- transient: nothing written, retried with back-off ----------------------------------------

TRANSIENT = [
    pytest.param("apply", "Deployment", {"status": 409}, id="409-apply"),
    pytest.param("list", "*", {"status": 500}, id="500-list"),
    pytest.param("patch", "HTTPRoute", {"status": 503}, id="503-patch-route"),
    pytest.param("patch", "HTTPRoute", {"status": 429}, id="429-patch-route"),
    pytest.param("get", "HTTPRoute", {"error": TimeoutError()}, id="timeout-get"),
    pytest.param(
        "apply",
        "*",
        {"error": KubeError(None, "the connection to the server failed: refused")},
        id="no-connection",
    ),
]


@pytest.mark.parametrize(("verb", "kind", "fault"), TRANSIENT)
def test_a_transient_failure_writes_nothing_and_is_retried_with_back_off(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    verb: str,
    kind: str,
    fault: dict[str, Any],
) -> None:
    world = progressing(monkeypatch)
    caplog.set_level(logging.INFO)
    before = copy.deepcopy(world.status)
    world.api.fail(verb, kind, **fault)
    nudge_route(world)
    attempts = []
    for _ in range(3):
        result = world.tick(seconds=60)
        assert result.status == {}
        assert result.events == ()
        assert result.retry is not None
        assert result.retry.failure.kind is FailureKind.TRANSIENT
        attempts.append(result.retry.attempt)
    assert attempts == [1, 2, 3]
    assert world.status == before, "a failed tick writes nothing"
    assert world.failures("transient") == 3
    assert world.failures("permanent") == 0
    assert tracebacks(caplog) == []
    assert world.warnings() == []
    world.api.heal()
    result = world.tick(seconds=60)
    assert result.retry is None
    assert world.stage == "Progressing"
    # Recovered: the count of failures in a row starts again.
    world.api.fail(verb, kind, **fault, times=1)
    nudge_route(world)
    retry = world.tick().retry
    assert retry is not None
    assert retry.attempt == 1
    world.run_until("Promoted")


def test_a_transient_failure_at_the_last_step_does_not_promote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = progressing(monkeypatch)
    for _ in range(5):
        world.tick(seconds=60)
    world.api.fail("apply", status=500)
    for _ in range(10):
        world.tick(seconds=60)
        assert world.stage == "Progressing"
    world.api.heal()
    world.tick()
    assert world.stage == "Promoted"


# -- Prometheus: down, nonsense, or raising ---------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Nonsense(http.server.BaseHTTPRequestHandler):
    """A 'Prometheus' whose answers are no query results."""

    body = b"<html>502 Bad Gateway</html>"

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WrongShape(Nonsense):
    body = b'{"status": "success", "data": {"resultType": "vector", "result": "NaN"}}'


@pytest.fixture(params=["down", "nonsense", "wrong-shape"])
def prometheus_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "down":
        yield f"http://127.0.0.1:{closed_port()}"
        return
    handler = Nonsense if request.param == "nonsense" else WrongShape
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prometheus_down_or_answering_nonsense_pauses_and_never_promotes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, prometheus_url: str
) -> None:
    spec = copy.deepcopy(ROUTED)
    spec["analysis"]["insufficientData"] = {"maxExtensionSeconds": 120}
    world = progressing(monkeypatch, spec)
    caplog.set_level(logging.INFO)
    with PrometheusObserver(prometheus_url, timeout_seconds=2.0) as observer:
        world.controller.observer = observer
        for _ in range(8):
            result = world.tick(seconds=60)
            assert result.retry is None, "missing metrics are not a failed tick"
            assert world.stage != "Promoted"
    assert world.stage == "Paused"
    status, reason = world.condition("Stalled")
    assert status == "True"
    assert reason in ("InsufficientData", "GateWithoutData")
    assert reason in world.warnings()
    assert world.condition("Promoted")[0] == "False"
    assert world.candidate_weight() == 10, "paused where it was, not advanced"
    latest = [e for e in world.status["ledger"] if e["gate"] == "errorRate"][-1]
    assert latest["verdict"] == "Inconclusive"
    assert any(word in latest["message"] for word in ("unreachable", "unexpected answer"))
    assert world.failures("transient") == world.failures("permanent") == 0
    # One log line when the metrics went missing, not one per tick; no traceback.
    assert sum("no metrics" in r.getMessage() for r in caplog.records) == 1
    assert tracebacks(caplog) == []
    # Prometheus is back: the evidence comes in and the rollout goes on.
    world.controller.observer = FakeObserver([healthy] * 100)
    world.run_until("Promoted")
    assert "AnalysisResumed" in [e.reason for e in world.events]
    assert sum("metrics are back" in r.getMessage() for r in caplog.records) == 1


def test_an_observer_that_raises_a_connection_error_is_transient(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world = progressing(monkeypatch)

    def refused(call: ObserverCall) -> Observations:
        raise requests.exceptions.ConnectionError("Connection refused")

    world.controller.observer = FakeObserver([refused] * 3)
    retry = world.tick(seconds=60).retry
    assert retry is not None
    assert retry.failure.kind is FailureKind.TRANSIENT
    assert "ConnectionError" in retry.failure.message
    assert tracebacks(caplog) == []


# -- a bug --------------------------------------------------------------------------------------


def test_an_unexpected_error_logs_its_traceback_once_and_backs_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world = progressing(monkeypatch)

    def broken(call: ObserverCall) -> Observations:
        raise ZeroDivisionError("division by zero")

    world.controller.observer = FakeObserver([broken] * 3 + [healthy] + [broken] + [healthy] * 50)
    attempts = []
    for _ in range(3):
        retry = world.tick(seconds=60).retry
        assert retry is not None
        assert retry.failure.kind is FailureKind.UNEXPECTED
        attempts.append(retry.attempt)
    assert attempts == [1, 2, 3]
    (logged,) = tracebacks(caplog)
    assert logged.exc_info is not None
    assert logged.exc_info[0] is ZeroDivisionError
    assert "prod/gelu-mlp" in logged.getMessage()
    assert world.failures("transient") == 3, "counted with the transient ones: it is retried"
    assert world.stage == "Progressing"
    # A good tick in between: the next bug's traceback is logged again, once.
    assert world.tick(seconds=60).retry is None
    assert world.tick(seconds=60).retry is not None
    assert len(tracebacks(caplog)) == 2
    world.run_until("Promoted")


# -- the classification itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (KubeError(403, "forbidden", "Forbidden", "get"), FailureKind.PERMANENT, "Forbidden"),
        (KubeError(422, "invalid", "Invalid", "apply"), FailureKind.PERMANENT, "ApplyRejected"),
        (KubeError(422, "invalid", "Invalid", "patch"), FailureKind.PERMANENT, "ApplyRejected"),
        (KubeError(400, "bad", "BadRequest", "list"), FailureKind.PERMANENT, "RequestRejected"),
        (KubeError(404, "gone", "NotFound", "apply"), FailureKind.PERMANENT, "NotFound"),
        (KubeError(405, "no", "MethodNotAllowed", "get"), FailureKind.PERMANENT, "RequestRejected"),
        (KubeError(401, "expired", "Unauthorized", "get"), FailureKind.TRANSIENT, None),
        (KubeError(408, "slow", "Timeout", "get"), FailureKind.TRANSIENT, None),
        (KubeError(409, "conflict", "Conflict", "apply"), FailureKind.TRANSIENT, None),
        (KubeError(429, "throttled", "TooManyRequests", "list"), FailureKind.TRANSIENT, None),
        (KubeError(500, "oops", "InternalError", "apply"), FailureKind.TRANSIENT, None),
        (KubeError(504, "late", "Timeout", "get"), FailureKind.TRANSIENT, None),
        (KubeError(None, "refused"), FailureKind.TRANSIENT, None),
        (TimeoutError(), FailureKind.TRANSIENT, None),
        (ConnectionResetError("reset"), FailureKind.TRANSIENT, None),
        (requests.exceptions.ReadTimeout("slow"), FailureKind.TRANSIENT, None),
        (KeyError("stage"), FailureKind.UNEXPECTED, None),
        (ValueError("bug"), FailureKind.UNEXPECTED, None),
    ],
)
def test_classify(error: BaseException, kind: FailureKind, reason: str | None) -> None:
    failure = classify(error)
    assert failure.kind is kind
    assert (failure.reason.value if failure.reason is not None else None) == reason
    assert failure.message


def test_the_retry_delay_doubles_up_to_its_cap() -> None:
    delays = [retry_delay_seconds(attempt, 5.0) for attempt in range(1, 9)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0]
    assert retry_delay_seconds(10_000, 1.0) == RETRY_CAP_SECONDS
    with pytest.raises(ValueError, match="from 1"):
        retry_delay_seconds(0, 5.0)


@pytest.mark.parametrize("verb", ["get", "list", "create", "patch", "apply", "delete"])
def test_the_clients_errors_say_their_verb(verb: str) -> None:
    answer = {"kind": "Status", "message": "spec.replicas: Invalid value", "reason": "Invalid"}
    with pytest.raises(KubeError) as raised:
        KubeClient._check(422, answer, f"{verb} Deployment prod/gelu-mlp-candidate")
    assert (raised.value.status, raised.value.reason, raised.value.verb) == (422, "Invalid", verb)
    # A write's 422 is the object refused; a read's is a request the client got wrong.
    expected = (
        "ApplyRejected" if verb in ("create", "patch", "apply", "delete") else "RequestRejected"
    )
    failure = classify(raised.value)
    assert failure.kind is FailureKind.PERMANENT
    assert failure.reason is not None
    assert failure.reason.value == expected
