"""Child processes of the sandbox (Prometheus, tritonserver ...): ports, start, stop.

Each process starts in a session of its own, so that stopping it stops everything it
started (a server's helper processes included): ``stop_process`` signals the whole
process group, first SIGTERM, then SIGKILL when the grace period runs out. Every
process started here is also stopped when the interpreter exits, in case its owner
never got to do it (a test that failed half-way, an interrupted demo), and by the
:mod:`~gelu_lab.sandbox.janitor` if the interpreter never gets to exit (SIGKILL, a crash).
The same goes for the temporary folders of ``temporary_folder``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from gelu_lab.sandbox import janitor

DEFAULT_STOP_TIMEOUT_S = 10.0
# What the exit-time safety net grants each process left running.
EXIT_STOP_TIMEOUT_S = 3.0

# Loopback servers are never reached through a proxy set in the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def http_get(url: str, timeout_s: float) -> tuple[int | None, bytes]:
    """GET ``url`` directly (no proxy): the status (None if unreachable) and the body."""
    try:
        with DIRECT.open(url, timeout=timeout_s) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (OSError, ValueError):
        return None, b""


def wait_until_ready(
    proc: subprocess.Popen[bytes], url: str, timeout_s: float, poll_s: float = 0.1
) -> str | None:
    """Poll ``url`` until it answers 200; None then, else why not (the process exited, or
    the time ran out), for the caller to raise with its own log."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode}"
        if http_get(url, timeout_s=1.0)[0] == 200:
            return None
        if time.monotonic() > deadline:
            return f"not ready after {timeout_s:g}s"
        time.sleep(poll_s)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago.

    The kernel picks it; another process may still take it before the caller binds it,
    so a caller whose server fails to bind should pick again.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_process(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session (its own process group), output appended to ``log_path``.

    ``env`` replaces the environment when given (pass ``{**os.environ, ...}`` to extend it).
    The process is stopped at interpreter exit unless ``stop_process`` stopped it before.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [os.fspath(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    janitor.watch("group", proc.pid)
    with _running_lock:
        _running.add(proc)
    return proc


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The group is gone once its last member exited: nothing left to signal.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
    """Stop a process started by ``start_process`` and everything in its process group.

    SIGTERM to the group, then up to ``timeout_s`` for the leader to exit, then SIGKILL to
    the group. Members that outlive their leader are killed too, so nothing is left
    behind. Returns the leader's exit status (negative: the signal that ended it). Safe to
    call more than once, and on a process that already exited.
    """
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id
    try:
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                proc.wait()
        # Helpers the leader started and did not reap (or that ignored SIGTERM).
        _signal_group(pgid, signal.SIGKILL)
    finally:
        with _running_lock:
            _running.discard(proc)
        janitor.forget("group", pgid)
    return proc.returncode


def temporary_folder(prefix: str) -> Path:
    """A new folder under the temporary directory (``$TMPDIR``, else /tmp), removed by the
    janitor should this process end before ``remove_folder`` removes it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    janitor.watch("path", path)
    return path


def remove_folder(path: Path) -> None:
    """Remove a folder of ``temporary_folder`` with everything in it."""
    shutil.rmtree(path, ignore_errors=True)
    janitor.forget("path", path)


def running_processes() -> tuple[subprocess.Popen[bytes], ...]:
    """Processes started here and not stopped yet (for diagnostics and tests)."""
    with _running_lock:
        return tuple(p for p in _running if p.poll() is None)


@atexit.register
def _stop_all_at_exit() -> None:
    with _running_lock:
        left = list(_running)
    for proc in left:
        stop_process(proc, EXIT_STOP_TIMEOUT_S)
