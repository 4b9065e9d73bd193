"""The janitor: what a lab process registered goes when it ends without cleaning up, and only
that; a forked child does not keep it waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.sandbox.test_processes import wait_gone

OWNER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from gelu_lab.sandbox import janitor
    from gelu_lab.sandbox.processes import remove_folder, start_process, temporary_folder

    kept = temporary_folder("gelu-janitor-test-")
    cleaned = temporary_folder("gelu-janitor-test-")
    (kept / "file").write_text("x")
    region = Path(os.environ["REGION"])
    region.write_text("x")
    janitor.watch("path", str(region.parent / (region.name[:-3] + "*")))
    # A server that ignores SIGTERM, so that only SIGKILL ends it.
    server = start_process(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"],
        log_path=kept / "server.log",
    )
    remove_folder(cleaned)  # removed by its owner, forgotten by the janitor
    child = os.fork() if os.environ.get("FORK") else -1
    if child == 0:
        os.close(1)  # not the owner's output: the test reads it to its end
        os.close(2)
        time.sleep(300)  # a forked child, alive after its parent
        os._exit(0)
    print(kept, cleaned, server.pid, child, flush=True)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_owner(tmp_path: Path, *, fork: bool) -> tuple[Path, Path, int, Path, int]:
    region = tmp_path / "region-abc"
    env = {**os.environ, "TMPDIR": str(tmp_path), "REGION": str(region)}
    if fork:
        env["FORK"] = "1"
    owner = subprocess.run(
        [sys.executable, "-c", OWNER], env=env, capture_output=True, text=True, check=False
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    kept, cleaned, pid, child = owner.stdout.split()
    return Path(kept), Path(cleaned), int(pid), region, int(child)


def wait_removed(path: Path, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_killed_owner_leaves_no_process_and_no_file(tmp_path: Path) -> None:
    kept, cleaned, server, region, _ = run_owner(tmp_path, fork=False)
    assert not cleaned.exists()
    assert wait_gone(server, timeout_s=20)  # SIGTERM ignored: SIGKILL after the grace period
    assert wait_removed(kept)
    assert not region.exists()  # a glob pattern registered as a path


def test_a_forked_child_does_not_hold_the_clean_up_back(tmp_path: Path) -> None:
    kept, _, server, _, child = run_owner(tmp_path, fork=True)
    try:
        assert not wait_gone(child, timeout_s=0.1)  # the child still runs, and yet:
        assert wait_gone(server, timeout_s=20)
        assert wait_removed(kept)
    finally:
        os.kill(child, signal.SIGKILL)


def ignores(pid: int, signals: tuple[signal.Signals, ...]) -> bool:
    """Whether the process has set these signals to be ignored (its SigIgn mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return all(mask & (1 << (sig - 1)) for sig in signals)
    return False


def test_a_janitor_ignores_the_signals_meant_for_the_lab(tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    janitor = subprocess.Popen(
        [sys.executable, "-m", "gelu_lab.sandbox.janitor"], stdin=subprocess.PIPE
    )
    assert janitor.stdin is not None
    janitor.stdin.write(f'{{"op": "watch", "kind": "path", "value": "{folder}"}}\n'.encode())
    janitor.stdin.flush()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while not ignores(janitor.pid, signals):  # it has started and set them aside
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for sig in signals:
        janitor.send_signal(sig)
    time.sleep(0.2)
    assert janitor.poll() is None
    assert folder.exists()
    janitor.stdin.close()  # the lab's end: now it cleans up and goes
    assert janitor.wait(timeout=10) == 0
    assert not folder.exists()
