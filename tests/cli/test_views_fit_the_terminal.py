"""The views fit the terminal they are drawn in: ``kubectl gelu status --watch`` in a real
terminal (tmux) at 80x24 and 200x50 while a rollout's status grows, the layout that the
watch and the demo share at several sizes, and plain text where the output is not a terminal.

The watch reads the rollout from the sandbox's API emulator, whose status the tests write
(recorded statuses, no Triton or operator): the view code is the one a real rollout gets.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rich.console import Console, RenderableType

from gelu_lab.demo.scenarios import SCENARIOS
from gelu_lab.demo.view import RECENT_DECISIONS, live_view
from gelu_lab.sandbox.emulator_server import serve_emulator
from gelu_rollout.adapters.kube import KubeClient, login_for
from gelu_rollout.adapters.kube.kinds import ROLLOUT
from gelu_rollout.cli.status_view import FitToHeight, status_layouts
from tests.terminal_helpers import recorded_rollout, terminal, too_wide

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]
T = TypeVar("T")
SUMMARY_STARTS = ("progressing:", "rolled back:", "pending:", "promoted:")
"""How the watch view's first line begins, whatever the stage."""
TRAFFIC = {"baseline": {"succeeded": 951, "failed": 0}, "candidate": {"succeeded": 92, "failed": 3}}


def rendered(view: RenderableType, width: int, height: int) -> list[str]:
    """The lines a terminal of this size shows for ``view``."""
    console = Console(
        file=io.StringIO(), width=width, height=height, force_terminal=True, color_system=None
    )
    console.print(view)
    file = console.file
    assert isinstance(file, io.StringIO)
    return [line.rstrip() for line in file.getvalue().splitlines()]


SIZES = [(80, 24), (100, 30), (200, 50), (80, 60), (132, 43)]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_the_watch_view_keeps_to_the_screen_with_the_newest_decisions(
    width: int, height: int
) -> None:
    rollout = recorded_rollout(8)
    rows = len(rollout["status"]["ledger"])
    lines = rendered(FitToHeight(status_layouts(rollout), rows, least=3), width, height)
    assert len(lines) <= height, "\n".join(lines)
    assert not too_wide(lines, width)
    assert lines[0].startswith("progressing: step 1/1 at 10%: look 8")
    decisions = [line for line in lines if line[:2] == "20"]  # rows begin with their time
    assert decisions, "\n".join(lines)
    assert all(line.startswith("20:01:20") for line in decisions[:6])  # the last look first
    notes = [line for line in lines if line.startswith("… ")]
    assert notes == [f"… {rows - len(decisions)} earlier decisions"], "\n".join(lines)


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_the_demo_view_keeps_to_the_screen_with_the_newest_decisions(
    width: int, height: int
) -> None:
    rollout = recorded_rollout(8)
    view = live_view(SCENARIOS["healthy"], rollout, TRAFFIC)
    lines = rendered(view, width, height)
    assert len(lines) <= height, "\n".join(lines)
    assert not too_wide(lines, width)
    assert sum(line.startswith("scenario healthy") for line in lines) == 1
    assert any(line.startswith("latencyRegression") for line in lines)  # every gate's look
    assert any(line.startswith("… ") and "earlier decisions" in line for line in lines)


def test_the_demo_view_in_a_file_shows_the_newest_decisions_at_any_length() -> None:
    rollout = recorded_rollout(8)
    view = live_view(SCENARIOS["healthy"], rollout, TRAFFIC, fit=False)
    lines = rendered(view, 100, 25)  # a file's "height" does not count
    assert len(lines) > 25
    assert not too_wide(lines, 100)
    hidden = len(rollout["status"]["ledger"]) - RECENT_DECISIONS
    assert f"… {hidden} earlier decisions" in lines


def test_a_narrow_ledger_drops_columns_not_the_message() -> None:
    rollout = recorded_rollout(1)
    wide = rendered(FitToHeight(status_layouts(rollout), 7, height=200), 200, 100)
    narrow = rendered(FitToHeight(status_layouts(rollout), 7, height=200), 80, 100)
    assert any("THRESHOLD" in line and "MESSAGE" in line for line in wide)
    header = next(line for line in narrow if line.startswith("TIME"))
    assert header.split() == ["TIME", "(UTC)", "GATE", "VERDICT", "MESSAGE"]
    assert any(line.endswith("compute 1.07 ms") for line in narrow)  # wrapped, not cut


# --- kubectl gelu status against the API emulator --------------------------------------


@dataclass
class Api:
    loop: asyncio.AbstractEventLoop
    kubeconfig: Path
    client: KubeClient
    stop: asyncio.Event

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def put(self, rollout: dict[str, Any]) -> None:
        """Create the rollout, or replace its status."""
        name = rollout["metadata"]["name"]

        async def put() -> None:
            if await self.client.get(ROLLOUT, "default", name) is None:
                await self.client.create(rollout)
            await self.client.merge_patch(
                ROLLOUT, "default", name, {"status": rollout["status"]}, subresource="status"
            )

        self.run(put())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API emulator on loopback, on an event loop in a thread of its own."""
    ready: Future[Api] = Future()
    kubeconfig = tmp_path_factory.mktemp("api") / "kubeconfig"

    async def serve() -> None:
        async with serve_emulator() as server:
            server.write_kubeconfig(kubeconfig)
            async with KubeClient(login_for(str(kubeconfig))) as client:
                api = Api(asyncio.get_running_loop(), kubeconfig, client, asyncio.Event())
                ready.set_result(api)
                await api.stop.wait()

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)

    thread = threading.Thread(target=thread_main, name="api")
    thread.start()
    started = ready.result(timeout=30)
    try:
        yield started
    finally:
        started.loop.call_soon_threadsafe(started.stop.set)
        thread.join(timeout=30)


def kubectl_gelu(api: Api, *args: str) -> list[str]:
    return [str(BIN / "kubectl-gelu"), *args, "--kubeconfig", str(api.kubeconfig)]


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 50)])
def test_watch_redraws_in_place_in_a_real_terminal(
    api: Api, tmp_path: Path, width: int, height: int
) -> None:
    name = f"watched-{width}"
    api.put(recorded_rollout(1, name=name))
    command = kubectl_gelu(api, "status", name, "--watch", "--interval-seconds", "0.2")
    # A stale size in the environment, as a parent may leave: the terminal's own must win.
    env = {**os.environ, "COLUMNS": "160", "LINES": "60"}
    with terminal(
        command, width=width, height=height, cwd=ROOT, env=env, tmp_path=tmp_path
    ) as pane:
        pane.wait_for_text("look 1", timeout_s=30)
        for looks in (4, 8, 12):
            api.put(recorded_rollout(looks, name=name))
            screen = pane.wait_for_text(f"look {looks}", timeout_s=30)
            assert not too_wide(screen, width), "\n".join(screen)
            assert any(line.startswith("… ") for line in screen), "\n".join(screen)
        api.put(recorded_rollout(12, name=name, stage="RolledBack", message="rolled back"))
        assert pane.wait_for_exit(timeout_s=30) == 1
        screen, history = pane.screen(), pane.history()
    assert not too_wide(history, width), "\n".join(too_wide(history, width))
    # One frame, redrawn in place: its first line shows once in all the terminal showed.
    summaries = [line for line in history if line.startswith(SUMMARY_STARTS)]
    assert summaries == ["rolled back: burnRate failed: fast burn: candidate burns 22.5x over 20s"]
    assert summaries[0] in screen
    assert any("burnRate" in line and "Fail" in line for line in screen), "\n".join(screen)


def test_piped_status_is_plain_text_100_wide_or_as_wide_as_columns(api: Api) -> None:
    api.put(recorded_rollout(3, name="piped"))
    plain = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    for env, width in ((plain, 100), ({**plain, "COLUMNS": "130"}, 130)):
        done = subprocess.run(
            kubectl_gelu(api, "status", "piped"),
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert "\x1b" not in done.stdout
        assert not too_wide(lines, width)
        assert max(len(line) for line in lines) > width - 10  # the width is used, not less
        assert lines[0] == "progressing: step 1/1 at 10%: look 3"
    listed = subprocess.run(
        kubectl_gelu(api, "list"), capture_output=True, text=True, check=False, env=plain
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "NAME", "STAGE", "STEP", "WEIGHT", "VERDICT", "AGE",
    ]  # fmt: skip


def test_a_piped_watch_prints_the_status_once_at_the_end(api: Api) -> None:
    api.put(recorded_rollout(2, name="piped-watch", stage="RolledBack", message="done"))
    done = subprocess.run(
        kubectl_gelu(api, "status", "piped-watch", "--watch"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.count("Decisions (newest first)") == 1
    assert not too_wide(done.stdout.splitlines(), 100)
