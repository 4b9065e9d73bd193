"""The local Triton launcher: a clear message when Triton is missing, no process left behind."""

from __future__ import annotations

import importlib.machinery
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gelu_lab.sandbox import triton as launcher
from gelu_lab.sandbox.triton import (
    TritonPorts,
    TritonServer,
    TritonStartError,
    TritonUnavailableError,
    find_triton,
)
from gelu_rollout.cli.main import app
from gelu_rollout.variants import Faults, render_repository, write_repository
from tests.triton.helpers import build_repository

real_find_spec = launcher.importlib.util.find_spec


def hide_wheel(monkeypatch: pytest.MonkeyPatch, package_dir: Path | None = None) -> None:
    """Make ``pytriton`` look uninstalled (or installed at ``package_dir``) to the launcher."""

    def find_spec(name: str, package: str | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != "pytriton":
            return real_find_spec(name, package)
        if package_dir is None:
            return None
        return importlib.machinery.ModuleSpec(
            "pytriton", None, origin=str(package_dir / "__init__.py")
        )

    monkeypatch.setattr(launcher.importlib.util, "find_spec", find_spec)


def work_dir(process: subprocess.Popen[bytes]) -> Path:
    """The server's working folder (its backends folder is inside it)."""
    [backends] = [a for a in process.args if str(a).startswith("--backend-directory=")]  # type: ignore[union-attr]
    return Path(str(backends).split("=", 1)[1]).parent


def group_is_gone(pgid: int, wait_s: float = 5.0) -> bool:
    """Whether no process of the group is left, allowing for the kernel to finish the SIGKILL
    and init to reap the members that outlived their parent (both take a moment)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.fixture
def started_processes(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every process the launcher starts, to check afterwards that none is left."""
    started: list[subprocess.Popen[bytes]] = []
    real_start = launcher.start_process

    def start_process(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        process = real_start(*args, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process

    monkeypatch.setattr(launcher, "start_process", start_process)
    return started


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return build_repository(tmp_path / "models", {"gelu": ("exact", Faults())})


# --- missing or broken install (no server started) ------------------------------------------


def test_missing_wheel_says_to_run_make_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_wheel(monkeypatch)
    with pytest.raises(TritonUnavailableError, match=r"not installed.*`make setup`"):
        find_triton()


def test_incomplete_install_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "site-packages" / "pytriton"
    package.mkdir(parents=True)
    hide_wheel(monkeypatch, package)
    with pytest.raises(TritonUnavailableError, match=r"incomplete.*tritonserver.*`make setup`"):
        find_triton()


def test_missing_system_numpy_says_to_run_make_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "SYSTEM_PYTHON", Path("/bin/false"))
    with pytest.raises(TritonUnavailableError, match=r"needs numpy.*`make setup`"):
        find_triton()


def test_server_with_missing_wheel_starts_nothing(
    monkeypatch: pytest.MonkeyPatch,
    repository: Path,
    started_processes: list[subprocess.Popen[bytes]],
) -> None:
    hide_wheel(monkeypatch)
    with pytest.raises(TritonUnavailableError), TritonServer(repository):
        pytest.fail("the server must not start")
    assert started_processes == []


def test_cli_bench_variants_without_triton_prints_one_error_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_wheel(monkeypatch)
    result = CliRunner().invoke(app, ["bench", "variants"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "make setup" in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


# --- real servers ---------------------------------------------------------------------------


@pytest.mark.triton
def test_broken_repository_fails_fast_with_the_log_and_leaves_nothing(
    tmp_path: Path, started_processes: list[subprocess.Popen[bytes]]
) -> None:
    files = render_repository("gelu", "exact")
    files["config.pbtxt"] = files["config.pbtxt"].replace(
        'string_value: "exact"', 'string_value: "gelu2"'
    )
    write_repository(tmp_path / "models", "gelu", files)
    # A log that a previous run wrote to: its errors are not this start's.
    log = tmp_path / "tritonserver.log"
    log.write_text('E0101 00:00:00.000000 1 old.cc:1] "an earlier run failed"\n')
    server = TritonServer(tmp_path / "models", log_path=log, ready_timeout_s=60)
    began = time.monotonic()
    with pytest.raises(TritonStartError) as error:
        server.start()
    assert time.monotonic() - began < 20
    message = str(error.value)
    assert message.startswith("tritonserver exited with status")
    # The message names the model's complaint (Triton logs its tables after it).
    assert "parameter 'variant' is 'gelu2'" in message
    assert "failed to load all models" in message
    assert "an earlier run failed" not in message
    [process] = started_processes
    assert process.poll() is not None
    assert group_is_gone(process.pid)
    assert not work_dir(process).exists()
    assert log.exists(), "a log the caller asked for is kept"


@pytest.mark.triton
def test_server_stops_its_process_group_and_removes_its_files(
    repository: Path, started_processes: list[subprocess.Popen[bytes]]
) -> None:
    with TritonServer(repository) as server:
        pgid = server.pid
        assert pgid is not None
        assert not group_is_gone(pgid, wait_s=0)
        workdir = server.log_path.parent
        assert workdir.is_dir()
        assert work_dir(started_processes[0]) == workdir
        ports = server.ports
        assert ports is not None
        assert server.http_url == f"127.0.0.1:{ports.http}"
        assert "nv_inference_request_success" in server.metrics_text()
        regions = list(launcher.SHARED_MEMORY.glob(f"{workdir.name}-shm-*"))
        assert regions, "the Python backend's shared memory carries the server's prefix"
    assert group_is_gone(pgid)
    assert not workdir.exists()
    assert not [r for r in regions if r.exists()]
    assert [p.pid for p in started_processes] == [pgid]


@pytest.mark.triton
def test_server_is_stopped_when_the_body_raises(repository: Path) -> None:
    groups: list[int | None] = []

    def failing_test() -> None:
        with TritonServer(repository) as server:
            groups.append(server.pid)
            raise RuntimeError("test failed")

    with pytest.raises(RuntimeError, match="test failed"):
        failing_test()
    [pgid] = groups
    assert pgid is not None
    assert group_is_gone(pgid)


@pytest.mark.triton
def test_a_port_taken_before_the_server_binds_it_is_picked_again(
    monkeypatch: pytest.MonkeyPatch,
    repository: Path,
    started_processes: list[subprocess.Popen[bytes]],
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_pick = TritonPorts.pick
        picks: list[TritonPorts] = []

        def pick() -> TritonPorts:
            ports = real_pick()
            if not picks:  # the first pick loses the race for its HTTP port
                ports.release()
                ports = TritonPorts(http=taken, grpc=ports.grpc, metrics=ports.metrics)
            picks.append(ports)
            return ports

        monkeypatch.setattr(TritonPorts, "pick", staticmethod(pick))
        with TritonServer(repository) as server:
            assert server.ports == picks[-1]
            assert server.ports.http != taken
        assert len(started_processes) == 2
        assert all(group_is_gone(p.pid) for p in started_processes)
