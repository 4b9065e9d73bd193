"""What the lab leaves behind, cleaned up however the lab's process ends.

The sandbox stops its servers and removes its folders itself when it can (a context manager
exits, Ctrl-C, SIGTERM). When it cannot (SIGKILL, a crash of the interpreter, ``os._exit``,
a parent that kills it), a janitor does: a small process of its own session, started the
first time the lab registers something, that reads registrations from a pipe. The pipe's
end, which the kernel brings about however the lab's process ends, is its cue: it stops
every process group still registered (SIGTERM, then SIGKILL) and removes every path still
registered, then exits. A lab that cleaned up after itself has unregistered everything, and
its janitor just exits.

The lab's side is :func:`watch` and :func:`forget`; ``python -m gelu_lab.sandbox.janitor``
is the janitor itself.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Final, Literal

Kind = Literal["group", "path"]

STOP_GRACE_S: Final = 5.0
"""How long the janitor waits for the groups it sent SIGTERM to before it sends SIGKILL."""


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), to tell it from a later one that
    reuses its pid; None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# --- the lab's side --------------------------------------------------------------------


class _Client:
    """The registrations of this process and the pipe to its janitor (started on demand)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self._registered: dict[tuple[Kind, str], str] = {}

    def watch(self, kind: Kind, value: str) -> None:
        key = (kind, value)
        with self._lock:
            stamp = (_start_time(int(value)) or "") if kind == "group" else ""
            self._registered[key] = stamp
            self._send({"op": "watch", "kind": kind, "value": value, "stamp": stamp})

    def forget(self, kind: Kind, value: str) -> None:
        with self._lock:
            if self._registered.pop((kind, value), None) is not None:
                self._send({"op": "forget", "kind": kind, "value": value})

    def _send(self, message: dict[str, str]) -> None:
        line = (json.dumps(message) + "\n").encode()
        for _ in range(2):  # a janitor that was killed is replaced, and told everything again
            process = self._running()
            if process is None:
                return
            try:
                assert process.stdin is not None
                process.stdin.write(line)
                process.stdin.flush()
                return
            except (BrokenPipeError, OSError):
                self._process = None

    def _running(self) -> subprocess.Popen[bytes] | None:
        if os.getpid() != self._owner:  # a forked child: the lab's cleanup is not its job
            return None
        if self._process is not None and self._process.poll() is None:
            return self._process
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                # Not the lab's output: a reader of it (a pipe, a test) would wait for the
                # janitor's end too.
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # signals to the lab's process group spare it
            )
        except OSError:
            return None
        assert process.stdin is not None
        for (kind, value), stamp in self._registered.items():
            entry = {"op": "watch", "kind": kind, "value": value, "stamp": stamp}
            process.stdin.write((json.dumps(entry) + "\n").encode())
        self._process = process
        return process

    def after_fork(self) -> None:
        """In a forked child: drop the pipe, so that only the lab's own end keeps it open."""
        process, self._process = self._process, None
        self._lock = threading.Lock()
        self._registered = {}
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()


_client = _Client()
os.register_at_fork(after_in_child=_client.after_fork)


def watch(kind: Kind, value: str | os.PathLike[str] | int) -> None:
    """Have the janitor stop this process group (``group``, its id) or remove this file,
    folder or glob pattern (``path``) should this process end without doing it."""
    _client.watch(kind, os.fspath(value) if not isinstance(value, int) else str(value))


def forget(kind: Kind, value: str | os.PathLike[str] | int) -> None:
    """This process group was stopped, or this path removed: the janitor can forget it."""
    _client.forget(kind, os.fspath(value) if not isinstance(value, int) else str(value))


# --- the janitor -------------------------------------------------------------------------


def _alive(pgid: int, stamp: str) -> bool:
    """Whether the group registered as ``pgid`` still has members. A pid is not reused while
    a group of that id has members, so a leader whose start time differs is a newcomer."""
    leader = _start_time(pgid)
    if leader is not None and stamp and leader != stamp:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def clean_up(groups: dict[int, str], paths: set[str]) -> None:
    """Stop ``groups`` (pgid: leader's start time), SIGTERM then SIGKILL, then remove
    ``paths`` (files, folders or glob patterns)."""
    left = {pgid: stamp for pgid, stamp in groups.items() if _alive(pgid, stamp)}
    for pgid in left:
        _signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pgid: stamp for pgid, stamp in left.items() if _alive(pgid, stamp)}
    for pgid in left:
        _signal(pgid, signal.SIGKILL)
    # The servers are gone (or going): nothing writes into the folders any more.
    for pattern in paths:
        wildcard = any(c in pattern for c in "*?[")
        for path in glob.glob(pattern) if wildcard else [pattern]:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def main() -> None:
    # Only the pipe's end may end it: not a Ctrl-C, a hang-up or a SIGTERM meant for the lab.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: dict[int, str] = {}
    paths: set[str] = set()
    for raw in sys.stdin.buffer:
        try:
            message = json.loads(raw)
            kind, value, op = message["kind"], str(message["value"]), message["op"]
        except (ValueError, KeyError, TypeError):
            continue
        if kind == "group" and value.isdigit():
            if op == "watch":
                groups[int(value)] = str(message.get("stamp", ""))
            else:
                groups.pop(int(value), None)
        elif kind == "path":
            if op == "watch":
                paths.add(value)
            else:
                paths.discard(value)
    clean_up(groups, paths)


if __name__ == "__main__":
    main()
