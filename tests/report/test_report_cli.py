"""``kubectl gelu report`` against the sandbox's API emulator: the rollout is read as the
plugin reads it from a cluster, and the page lands where ``-o`` says (NAME.html by default)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from gelu_lab.cli import app as lab_app
from gelu_lab.demo.run import DemoResult
from gelu_lab.sandbox.emulator_server import serve_emulator
from gelu_rollout.adapters.kube import KubeClient, login_for
from gelu_rollout.adapters.kube.kinds import ROLLOUT
from gelu_rollout.cli.kubectl import app
from tests.report.html_parts import external_references, parse
from tests.report.scenario import NAME, rolled_back_rollout

BIN = Path(sys.executable).parent
T = TypeVar("T")


@dataclass
class Api:
    loop: asyncio.AbstractEventLoop
    kubeconfig: Path
    client: KubeClient
    stop: asyncio.Event

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def put(self, rollout: dict[str, Any]) -> None:
        """Create the rollout, then write its status through the status subresource, as the
        operator does."""
        metadata = rollout["metadata"]

        async def put() -> None:
            await self.client.create({k: v for k, v in rollout.items() if k != "status"})
            await self.client.merge_patch(
                ROLLOUT,
                metadata["namespace"],
                metadata["name"],
                {"status": rollout["status"]},
                subresource="status",
            )

        self.run(put())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API emulator on loopback, on an event loop in a thread of its own, holding the
    rolled-back rollout in ``default``."""
    ready: Future[Api] = Future()
    kubeconfig = tmp_path_factory.mktemp("api") / "kubeconfig"

    async def serve() -> None:
        async with serve_emulator(namespaces=("default", "other")) as server:
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
    started.put(rolled_back_rollout(namespace="default"))
    try:
        yield started
    finally:
        started.loop.call_soon_threadsafe(started.stop.set)
        thread.join(timeout=30)
    assert not thread.is_alive(), "the API emulator did not stop"


def test_the_plugin_writes_name_html_by_default(api: Api, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "kubectl-gelu"), "report", NAME, "--kubeconfig", str(api.kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    written = tmp_path / f"{NAME}.html"
    assert done.stdout == f"gelumodelrollout/{NAME}: report written to {written.name}\n"
    page = written.read_text(encoding="utf-8")
    parsed = parse(page)
    assert len(parsed.all("svg", **{"class": "gate-chart"})) == 7
    assert f"Decision report: default/{NAME}" in " ".join(parsed.text)
    assert "It was rolled back (ErrorRateAboveTolerance)" in " ".join(parsed.text)
    assert external_references(page) == []


def test_output_goes_where_o_says(api: Api, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "canary.html"
    target.parent.mkdir()
    result = CliRunner().invoke(
        app, ["report", NAME, "-o", str(target), "--kubeconfig", str(api.kubeconfig)]
    )
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    longer = CliRunner().invoke(
        app,
        [
            "-n",
            "default",
            "report",
            NAME,
            "--output",
            str(target),
            "--kubeconfig",
            str(api.kubeconfig),
        ],
    )
    assert longer.exit_code == 0, longer.output


def test_a_missing_rollout_or_folder_is_an_error_and_writes_nothing(
    api: Api, tmp_path: Path
) -> None:
    runner = CliRunner()
    target = tmp_path / "x.html"
    for args in (
        ["report", "missing", "-o", str(target)],
        ["report", NAME, "-n", "other", "-o", str(target)],
    ):
        result = runner.invoke(app, [*args, "--kubeconfig", str(api.kubeconfig)])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: "), result.stderr
        assert "not found" in result.stderr
        assert not target.exists()
    nowhere = tmp_path / "no-such-folder" / "x.html"
    result = runner.invoke(
        app, ["report", NAME, "-o", str(nowhere), "--kubeconfig", str(api.kubeconfig)]
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: cannot write {nowhere}"), result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_offers_the_report_and_keeps_the_object_out_of_its_json() -> None:
    result = CliRunner().invoke(lab_app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--report" in result.stdout
    rollout = rolled_back_rollout()
    finished = DemoResult("errors", "RolledBack", "RolledBack", 1.0, 1.0, "m", rollout=rollout)
    assert finished.rollout is rollout
    assert "rollout" not in finished.to_dict()
    assert finished.to_dict()["outcome"] == "RolledBack"
