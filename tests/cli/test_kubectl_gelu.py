"""``kubectl gelu``: the status view on hand-made rollouts, then the CLI against the sandbox
(the API emulator, real Triton processes, Prometheus and the operator), through typer's runner
and through kubectl's own plugin mechanism."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner, Result

from gelu_lab.sandbox.stack import Sandbox, sandbox
from gelu_rollout.adapters.kube import Kind, KubeClient, KubeError, login_for
from gelu_rollout.cli.kubectl import (
    CliError,
    Cluster,
    Connection,
    app,
    connect,
    refusal,
    request_id,
    watch_rollout,
)
from gelu_rollout.cli.status_view import (
    FAIL_STYLE,
    format_columns,
    human_duration,
    ledger_table,
    list_rows,
    newest_first,
    read_rollout,
    render_status,
    summary_line,
    summary_text,
    to_text,
)
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, RequestKind, parse_request
from gelu_rollout.spec import Stage

BIN = Path(sys.executable).parent
NOW = datetime(2026, 11, 25, 20, 10, tzinfo=UTC)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def entry(seconds_ago: float, gate: str, verdict: str, **extra: Any) -> dict[str, Any]:
    return {
        "time": at(seconds_ago),
        "step": 1,
        "weight": 25,
        "gate": gate,
        "verdict": verdict,
        "samples": 1200,
        "windowSeconds": 60,
        "message": f"{gate} says {verdict}",
        **extra,
    }


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": at(30),
    }


def rollout(
    status: Mapping[str, Any], name: str = "gelu", namespace: str = "prod"
) -> dict[str, Any]:
    return {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": at(600)},
        "spec": {
            "model": {"name": "gelu_mlp"},
            "baseline": {"variant": "exact"},
            "candidate": {"repository": {"configMapName": "my-gelu"}},
            "traffic": {"steps": [{"weight": 10}, {"weight": 25}, {"weight": 50}]},
        },
        "status": dict(status),
    }


NONFINITE_MESSAGE = "12 non-finite outputs in the candidate, none in the baseline"
ROLLED_BACK = rollout(
    {
        "stage": "RolledBack",
        "stepIndex": 1,
        "candidateWeight": 0,
        "startedAt": at(300),
        "stepStartedAt": at(120),
        "finishedAt": at(20),
        "lastVerdict": "Fail",
        "message": f"nonFinite failed: {NONFINITE_MESSAGE}",
        "conditions": [
            condition("Progressing", "False", "Finished", "rolled back"),
            condition("RolledBack", "True", "NonFiniteOutputs", NONFINITE_MESSAGE),
        ],
        # As the operator writes it: oldest first, the gates of one look in a fixed order.
        "ledger": [
            entry(200, "probe", "Pass", step=0, weight=0),
            entry(100, "errorRate", "Pass", value=0.001, threshold=0.01),
            entry(20, "nonFinite", "Fail", value=12, threshold=0, message=NONFINITE_MESSAGE),
            entry(20, "errorRate", "Inconclusive"),
        ],
    }
)


def test_the_ledger_reads_newest_first_and_keeps_the_gate_order_of_a_look() -> None:
    view = read_rollout(ROLLED_BACK)
    ordered = [(e.gate, e.verdict) for e in newest_first(view.status.ledger)]
    assert ordered == [
        ("nonFinite", "Fail"),
        ("errorRate", "Inconclusive"),
        ("errorRate", "Pass"),
        ("probe", "Pass"),
    ]
    text = to_text(ledger_table(ROLLED_BACK, NOW))
    lines = [line for line in text.splitlines() if line[:2].isdigit()]
    assert [line.split()[3] for line in lines] == ["nonFinite", "errorRate", "errorRate", "probe"]
    first = ["20:09:40", "2", "25%", "nonFinite", "Fail", "12", "0", "1200", "60s"]
    assert lines[0].split()[:9] == first
    assert lines[-1].split()[1] == "probe"


def test_only_failing_rows_are_bold_red_and_the_summary_names_the_failing_gate() -> None:
    table = ledger_table(ROLLED_BACK, NOW)
    assert [row.style for row in table.rows] == [FAIL_STYLE, None, None, None]
    assert summary_line(ROLLED_BACK) == f"rolled back: nonFinite failed: {NONFINITE_MESSAGE}"
    text = to_text(render_status(ROLLED_BACK, now=NOW))
    assert text.splitlines()[0] == f"rolled back: nonFinite failed: {NONFINITE_MESSAGE}"
    for expected in (
        "Stage:                 RolledBack",
        "Step:                  2/3",
        "Candidate weight:      0%",
        "Baseline → candidate:  exact → configmap/my-gelu",
        "Age:                   10m",
        "RolledBack    True     NonFiniteOutputs",
    ):
        assert expected in text, text


def test_the_rich_summary_is_coloured_by_stage() -> None:
    text = summary_text(ROLLED_BACK)
    assert isinstance(text, Text)
    assert str(text.style) == "bold red"


def test_the_power_plan_shows_what_each_gate_needs_while_the_rollout_runs() -> None:
    plan = [
        {"gate": "errorRate", "detects": "a burn rate of 6", "needed": 4600.0, "have": 600.0,
         "unit": "candidate requests", "met": False, "etaSeconds": 7200.0},
        {"gate": "latencyRegression", "detects": "a +50% P99 regression", "needed": 900.0,
         "have": 1200.0, "unit": "candidate requests", "met": True, "etaSeconds": 0.0},
    ]  # fmt: skip
    running = rollout({"stage": "Progressing", "candidateWeight": 10, "powerPlan": plan})
    text = to_text(render_status(running, now=NOW), width=160)
    assert "Power plan" in text
    assert "4,600" in text
    assert "120m" in text  # the errorRate gate's time to go
    assert "met" in text
    done = rollout({"stage": "Promoted", "candidateWeight": 100, "powerPlan": plan})
    assert "Power plan" not in to_text(render_status(done, now=NOW), width=160)


def test_a_pass_says_what_it_rests_on() -> None:
    passed = rollout(
        {"stage": "Progressing", "ledger": [entry(30, "errorRate", "Pass", basis="power")]}
    )
    assert "Pass (power)" in to_text(render_status(passed, now=NOW), width=200)


def test_a_limited_ledger_says_how_many_rows_it_hides() -> None:
    table = ledger_table(ROLLED_BACK, NOW, limit=1)
    assert len(table.rows) == 1
    assert table.caption == "… 3 earlier decisions"
    assert to_text(table).splitlines()[-1] == "… 3 earlier decisions"
    assert ledger_table(ROLLED_BACK, NOW, limit=0).caption == "… 4 decisions"
    assert ledger_table(ROLLED_BACK, NOW).caption is None


def test_summary_lines_for_each_stage() -> None:
    aborted = rollout(
        {
            **ROLLED_BACK["status"],
            "message": "aborted on request",
            "conditions": [condition("RolledBack", "True", "Aborted", "aborted on request")],
        }
    )
    assert summary_line(aborted) == "rolled back (Aborted): aborted on request"
    # A failure from before a retry is not why the rollout is rolled back now.
    retried = rollout({**ROLLED_BACK["status"], "startedAt": at(10)})
    assert summary_line(retried).startswith("rolled back (NonFiniteOutputs): nonFinite failed")
    promoted = rollout({"stage": "Promoted", "message": "every step passed"})
    assert summary_line(promoted) == "promoted: every step passed"
    progressing = rollout(
        {
            "stage": "Progressing",
            "stepIndex": 1,
            "candidateWeight": 25,
            "stepStartedAt": at(5),
            "message": "waiting for data",
        }
    )
    assert summary_line(progressing) == "progressing: step 2/3 at 25%: waiting for data"
    assert summary_line(rollout({})) == "pending: waiting for the operator"
    unreadable = rollout({"stage": "Sideways"})
    assert summary_line(unreadable).startswith("pending: unreadable status: status.stage")


def test_an_unacted_request_shows_in_the_header() -> None:
    waiting = rollout({"stage": "Progressing", "handledRequest": "old"})
    waiting["metadata"]["annotations"] = {REQUEST_ANNOTATION: "promote/new"}
    assert "promote/new (not acted on yet)" in to_text(render_status(waiting, now=NOW))
    waiting["status"]["handledRequest"] = "new"
    assert "not acted on yet" not in to_text(render_status(waiting, now=NOW))


def test_list_rows_are_kubectl_columns() -> None:
    pending = rollout({}, name="b-pending", namespace="dev")
    rows = list_rows([ROLLED_BACK, pending], all_namespaces=True, now=NOW)
    assert format_columns(rows) == (
        "NAMESPACE   NAME        STAGE        STEP   WEIGHT   VERDICT   AGE\n"
        "dev         b-pending   Pending      0/3    0%       <none>    10m\n"
        "prod        gelu        RolledBack   2/3    0%       Fail      10m\n"
    )
    assert list_rows([pending], all_namespaces=False, now=NOW)[0][0] == "NAME"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(-3, "0s"), (59, "59s"), (119, "119s"), (303, "5m3s"), (2820, "47m"), (11400, "3h10m"),
     (86400 * 3 + 3600, "3d1h"), (86400 * 30, "30d"), (86400 * 800, "2y")],
)  # fmt: skip
def test_ages_read_like_kubectl(seconds: float, expected: str) -> None:
    assert human_duration(seconds) == expected


def test_requests_apply_only_where_the_operator_acts_on_them() -> None:
    assert refusal(RequestKind.PROMOTE, "x", Stage.PROGRESSING) is None
    assert refusal(RequestKind.PROMOTE, "x", Stage.PAUSED) is None
    assert refusal(RequestKind.ABORT, "x", Stage.PENDING) is None
    assert refusal(RequestKind.RETRY, "x", Stage.ROLLED_BACK) is None
    assert refusal(RequestKind.RETRY, "x", Stage.PAUSED) is None
    retry = refusal(RequestKind.RETRY, "x", Stage.PROGRESSING)
    assert retry == (
        "gelumodelrollout/x is Progressing: retry is ignored unless the rollout is Paused "
        "or RolledBack"
    )
    assert "finished" in str(refusal(RequestKind.PROMOTE, "x", Stage.PROMOTED))
    assert "retry starts" in str(refusal(RequestKind.ABORT, "x", Stage.ROLLED_BACK))
    assert "probe has passed" in str(refusal(RequestKind.PROMOTE, "x", Stage.PENDING))
    request = parse_request(f"promote/{request_id(NOW)}")
    assert (request.kind, request.id) == (RequestKind.PROMOTE, "2026-11-25T20:10:00Z")


class ScriptedClient(KubeClient):
    """Answers each ``get`` with the next of ``answers``: an object, None (gone) or an error."""

    def __init__(self, answers: list[dict[str, Any] | Exception | None]) -> None:
        super().__init__(login_for())  # never logs in: every answer is scripted
        self.answers = answers

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> dict[str, Any] | None:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


PROGRESSING = rollout(
    {"stage": "Progressing", "stepIndex": 1, "candidateWeight": 25, "stepStartedAt": at(5)}
)


def test_watch_redraws_in_place_in_a_terminal_through_api_blips() -> None:
    client = ScriptedClient([PROGRESSING, KubeError(503, "the server is busy"), ROLLED_BACK])
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, height=60)
    outcome = asyncio.run(watch_rollout(Cluster(client, "prod"), "gelu", console, 0))
    assert outcome is Stage.ROLLED_BACK
    out = buffer.getvalue()
    assert out.count("\x1b[2K") > 10  # lines erased to redraw in place
    assert "progressing: step 2/3 at 25%" in out
    assert "error: the server is busy (retrying)" in out
    assert "rolled back: nonFinite failed" in out
    assert not client.answers


def test_a_plain_watch_prints_each_new_summary_and_fails_when_the_rollout_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = ScriptedClient([PROGRESSING, PROGRESSING, None])
    console = Console(file=io.StringIO(), force_terminal=False)
    with pytest.raises(CliError, match='gelumodelrollouts "gelu" not found'):
        asyncio.run(watch_rollout(Cluster(client, "prod"), "gelu", console, 0))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" progressing: step 2/3 at 25%")
    refused = ScriptedClient([KubeError(403, "forbidden")])
    with pytest.raises(KubeError):
        asyncio.run(watch_rollout(Cluster(refused, "p"), "g", console, 0))


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
            {"name": "b", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "a",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_namespace_comes_from_the_option_then_the_context(tmp_path: Path) -> None:
    kubeconfig = str(write_kubeconfig(tmp_path / "config", "http://127.0.0.1:1"))
    assert connect(Connection(kubeconfig)).namespace == "team-a"
    assert connect(Connection(kubeconfig, "b")).namespace == "default"
    assert connect(Connection(kubeconfig, "b", "ops")).namespace == "ops"
    with pytest.raises(CliError, match='context "c" does not exist'):
        connect(Connection(kubeconfig, "c"))


def test_errors_go_to_stderr_without_a_traceback(tmp_path: Path) -> None:
    kubeconfig = str(write_kubeconfig(tmp_path / "config", "http://127.0.0.1:1"))
    runner = CliRunner()
    for args in (
        ["list", "--kubeconfig", kubeconfig],
        ["status", "x", "--kubeconfig", str(tmp_path / "missing")],
        ["--kubeconfig", kubeconfig, "promote", "x", "--context", "nope"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert result.stderr.startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr
    assert (
        "connection to the server http://127.0.0.1:1 failed"
        in runner.invoke(app, ["list", "--kubeconfig", kubeconfig]).stderr
    )


# --- against the sandbox -----------------------------------------------------------------
#
# The sandbox runs on its own event loop in a thread for the whole module: Kopf cancels, when
# it stops, every task created after it started, which on a shared pytest-asyncio loop
# includes the fixture's own teardown. The tests stay synchronous and call the CLI directly;
# ``Running.run`` runs a sandbox coroutine on the sandbox's loop.

MODEL = "gelu_mlp"
T = TypeVar("T")


def manifest(name: str, candidate: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": MODEL},
            "baseline": {"variant": "exact"},
            "candidate": {"variant": candidate},
            # One long step: without traffic the healthy rollout stays Progressing.
            "traffic": {"steps": [{"weight": 10, "analysisSeconds": 600}]},
            "analysis": {"intervalSeconds": 10, "warmupSeconds": 0},
        },
    }


def stage(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("stage", ""))


@dataclass
class Running:
    stack: Sandbox
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def rollout(self, name: str) -> dict[str, Any]:
        return self.run(self.stack.rollout(name))

    def cli(self, *args: str) -> Result:
        """``kubectl gelu ARGS`` in-process, against the sandbox."""
        return CliRunner().invoke(app, [*args, "--kubeconfig", str(self.stack.kubeconfig)])


async def _serve(ready: Future[Running]) -> None:
    try:
        async with sandbox() as stack:
            for obj in (
                manifest("naive", "tanh-fp16-naive"),
                manifest("tanh", "tanh"),
                manifest("idle", "tanh", namespace="team-b"),
            ):
                await stack.apply(yaml.safe_dump(obj))
            await stack.wait_for("naive", lambda r: stage(r) == "RolledBack", timeout_s=90)
            await stack.wait_for("tanh", lambda r: stage(r) == "Progressing", timeout_s=90)
            running = Running(stack, asyncio.get_running_loop(), asyncio.Event())
            ready.set_result(running)
            await running.stop.wait()
    except BaseException as error:
        if not ready.done():
            ready.set_exception(error)
        raise


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """One sandbox for the module: ``naive`` (rolled back by the probe), ``tanh`` (healthy,
    Progressing), and ``idle`` in a namespace the operator does not watch (no status)."""
    ready: Future[Running] = Future()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(_serve(ready))
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=serve, name="sandbox")
    thread.start()
    try:
        yield ready.result(timeout=180)
    finally:
        if ready.done() and ready.exception() is None:
            started = ready.result()
            started.loop.call_soon_threadsafe(started.stop.set)
        thread.join(timeout=120)
    assert not thread.is_alive(), "the sandbox did not stop"
    assert not failures, failures


def plugin_environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.e2e
@pytest.mark.triton
@pytest.mark.prometheus
@pytest.mark.slow
class TestAgainstTheSandbox:
    def test_status_of_the_rolled_back_rollout(self, running: Running) -> None:
        result = running.cli("status", "naive")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].startswith("rolled back: probe failed: candidate produced")
        assert "non-finite" in lines[0]
        assert any(line.split() == ["Stage:", "RolledBack"] for line in lines)
        assert any(line.split()[:3] == ["RolledBack", "True", "ProbeFailed"] for line in lines)
        probe_rows = [line for line in lines if line[:2].isdigit() and " probe " in line]
        assert len(probe_rows) == 1
        # 100 columns, not a terminal: the ledger keeps the step, gate and verdict beside the
        # message, and leaves out the columns the message says in words.
        assert probe_rows[0].split()[1:4] == ["probe", "probe", "Fail"]
        assert max(len(line) for line in lines) <= 100
        print("KUBECTL-GELU status naive:\n" + result.stdout)

    def test_watch_exits_1_on_a_rolled_back_rollout(self, running: Running) -> None:
        result = running.cli("status", "naive", "--watch", "--interval-seconds", "0.2")
        assert result.exit_code == 1, result.output
        assert "rolled back: probe failed" in result.stdout
        assert "Decisions (newest first)" in result.stdout

    def test_list_one_namespace_and_all(self, running: Running) -> None:
        result = running.cli("list")
        assert result.exit_code == 0, result.output
        rows = [line.split() for line in result.stdout.splitlines()]
        assert rows[0] == ["NAME", "STAGE", "STEP", "WEIGHT", "VERDICT", "AGE"]
        assert [row[:5] for row in rows[1:]] == [
            ["naive", "RolledBack", "0/1", "0%", "Fail"],
            ["tanh", "Progressing", "1/1", "10%", rows[2][4]],
        ]
        everywhere = running.cli("list", "-A")
        assert everywhere.exit_code == 0, everywhere.output
        rows = [line.split() for line in everywhere.stdout.splitlines()]
        assert rows[0][:2] == ["NAMESPACE", "NAME"]
        assert [row[:3] for row in rows[1:]] == [
            ["default", "naive", "RolledBack"],
            ["default", "tanh", "Progressing"],
            ["team-b", "idle", "Pending"],
        ]
        other = running.cli("list", "-n", "team-c")
        assert other.exit_code == 0
        assert other.stderr == "No resources found in team-c namespace.\n"

    def test_missing_rollouts_and_refused_requests_are_errors(self, running: Running) -> None:
        missing = running.cli("status", "missing")
        assert missing.exit_code == 1
        assert missing.stdout == ""
        assert missing.stderr == 'error: gelumodelrollouts "missing" not found\n'
        retry = running.cli("retry", "tanh")
        assert retry.exit_code == 1
        assert "retry is ignored unless the rollout is Paused or RolledBack" in retry.stderr
        finished = running.cli("promote", "naive")
        assert finished.exit_code == 1
        assert finished.stderr.startswith("error: gelumodelrollout/naive is RolledBack")
        for name in ("tanh", "naive"):
            annotations = running.rollout(name)["metadata"].get("annotations") or {}
            assert REQUEST_ANNOTATION not in annotations

    def test_through_the_kubectl_plugin_mechanism(self, running: Running) -> None:
        kubeconfig = str(running.stack.kubeconfig)
        command = ["kubectl", "gelu", "status", "naive", "--kubeconfig", kubeconfig]
        env = plugin_environment()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("rolled back: probe failed")
        assert "ProbeFailed" in done.stdout
        command[3] = "missing"
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 1
        assert done.stderr == 'error: gelumodelrollouts "missing" not found\n'

    def test_ctrl_c_ends_a_watch_quietly_with_130(self, running: Running) -> None:
        command = [str(BIN / "kubectl-gelu"), "status", "tanh", "-w", "--interval-seconds"]
        command += ["0.2", "--kubeconfig", str(running.stack.kubeconfig)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert b"progressing: step 1/1" in first
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
        assert process.returncode == 130, err.decode()
        assert b"Traceback" not in err
        assert b"Aborted" not in err

    def test_promote_sets_the_annotation_and_watch_exits_0(self, running: Running) -> None:
        result = running.cli("promote", "tanh", "-n", "default")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(
            "gelumodelrollout/tanh: promote requested; the operator promotes at its next "
            "analysis tick unless a critical gate (nonFinite, burnRate) fails\n"
        )
        annotations = running.rollout("tanh")["metadata"]["annotations"]
        request = parse_request(annotations[REQUEST_ANNOTATION])
        assert request.kind is RequestKind.PROMOTE
        assert f"{REQUEST_ANNOTATION}={request.kind.value}/{request.id}" in result.stdout
        promoted = running.run(
            running.stack.wait_for("tanh", lambda r: stage(r) == "Promoted", timeout_s=30)
        )
        assert promoted["status"]["handledRequest"] == request.id
        watched = running.cli("status", "tanh", "--watch")
        assert watched.exit_code == 0, watched.output
        assert "promoted: promoted on request" in watched.stdout
