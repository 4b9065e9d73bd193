"""However the demo ends, nothing of it stays: no process it started (tritonserver, Prometheus,
kubectl, its janitor) and no folder or shared memory region it made.

Signals at two points of a run: while the sandbox is being set up, and in the middle of the
rollout. SIGHUP and SIGTERM end it cleanly, with the signal's exit status; SIGKILL (as a crash
would) leaves the clean-up to the janitor. Under ``make demo``, a SIGTERM to make reaches the
demo, and make killed outright is a parent gone: the demo stops with it.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.demo.runs import CLI, ROOT, Run

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]


@pytest.mark.parametrize(
    ("sig", "point"),
    [
        (signal.SIGHUP, "setup"),
        (signal.SIGTERM, "setup"),
        (signal.SIGHUP, "rollout"),
        (signal.SIGTERM, "rollout"),
        (signal.SIGKILL, "rollout"),
    ],
    ids=lambda value: value.name if isinstance(value, signal.Signals) else value,
)
def test_a_signal_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals, point: str) -> None:
    run = Run(tmp_path)
    demo = subprocess.Popen(
        [str(CLI), "demo", "--scenario", "healthy"],
        cwd=ROOT,
        env=run.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run.wait_until(point, demo, timeout_s=120)
        assert run.folders()  # the sandbox had made its folders
        demo.send_signal(sig)
        _, stderr = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    if sig is signal.SIGKILL:
        assert demo.returncode == -signal.SIGKILL
    else:
        assert demo.returncode == 128 + sig, stderr
        assert f"interrupted by {sig.name}: the sandbox was stopped and cleaned up" in stderr
        assert "Traceback" not in stderr
    assert run.leftovers() == ([], [])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_make_demo_ends_with_make(tmp_path: Path, sig: signal.Signals) -> None:
    run = Run(tmp_path)
    make = subprocess.Popen(
        ["make", "--no-print-directory", "demo", "SCENARIO=healthy"],
        cwd=ROOT,
        env=run.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run.wait_until("rollout", make, timeout_s=150)
        make.send_signal(sig)  # SIGTERM: make passes it on; SIGKILL: the demo's parent is gone
        make.communicate(timeout=90)
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
    assert make.returncode == -sig
    assert run.leftovers() == ([], [])
