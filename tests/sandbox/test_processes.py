"""Starting and stopping the sandbox's child processes, their whole process group included."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from gelu_lab.sandbox.processes import (
    free_port,
    running_processes,
    start_process,
    stop_process,
)

IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def gone(pid: int) -> bool:
    """No such process, or only its zombie left for its (new) parent to reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_for_file(path: Path, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text().strip()


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_process_runs_in_its_own_session_and_logs(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "out.log"
    proc = start_process(
        [
            sys.executable,
            "-c",
            "import os, sys; print('hello', os.environ['GREETING']); sys.stdin.read()",
        ],
        env={**os.environ, "GREETING": "sandbox"},
        log_path=log,
    )
    try:
        assert os.getsid(proc.pid) == proc.pid
        assert os.getpgid(proc.pid) == proc.pid
        assert proc in running_processes()
        assert proc.wait(timeout=5) == 0  # stdin is /dev/null: the read ends at once
        assert log.read_text() == "hello sandbox\n"
    finally:
        stop_process(proc)
    assert proc not in running_processes()


def test_stop_terminates_then_kills_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The leader exits on SIGTERM; its child ignores it and must still be stopped.
    script = f"""
        {sys.executable} -c '{IGNORE_TERM}' &
        echo $! > {pidfile}
        wait
    """
    proc = start_process(["sh", "-c", textwrap.dedent(script)], log_path=tmp_path / "log")
    child = int(wait_for_file(pidfile))
    code = stop_process(proc, timeout_s=5)
    assert code == -signal.SIGTERM
    assert wait_gone(child)
    assert stop_process(proc) == code  # twice is fine


def test_a_leader_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    proc = start_process([sys.executable, "-c", IGNORE_TERM], log_path=tmp_path / "log")
    time.sleep(0.3)  # let it install its handler
    started = time.monotonic()
    assert stop_process(proc, timeout_s=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 3


def test_processes_left_running_are_stopped_at_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper.pid"
    program = f"""
        from pathlib import Path
        from gelu_lab.sandbox.processes import start_process
        proc = start_process(["sleep", "300"], log_path=Path({str(tmp_path)!r}) / "log")
        Path({str(pidfile)!r}).write_text(str(proc.pid))
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(program)], check=True, timeout=30)
    assert wait_gone(int(pidfile.read_text()), timeout_s=1)
