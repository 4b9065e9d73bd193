"""Runs of the demo as a user starts it, and what each one leaves on the machine.

Every run gets a temporary directory of its own ($TMPDIR, where the sandbox makes its
folders) and a mark in its environment that every process it starts inherits (tritonserver,
Prometheus, kubectl, the janitor): what a run left behind is told apart from anything else
on the machine, another test's sandbox included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parents[2]
CLI = Path(sys.executable).parent / "gelu-rollout"
MARK = "GELU_TEST_RUN"
SHARED_MEMORY = Path("/dev/shm")


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def marked_processes(tag: str) -> list[int]:
    """Live processes (not zombies waiting to be reaped) whose environment has the run's mark."""
    wanted = f"\0{MARK}={tag}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = b"\0" + (entry / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        if wanted in environ and _state(entry.name) not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@dataclass
class Run:
    """Where one run of the demo keeps its files, and how to find its processes."""

    tmp_path: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    triton_folders: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)

    @property
    def tmpdir(self) -> Path:
        return self.tmp_path / "tmp"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        # make's own variables would tie a make run by a test to the make that runs the tests.
        base = {
            k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
        }
        return {**base, MARK: self.tag, "TMPDIR": str(self.tmpdir), **(extra or {})}

    def folders(self) -> list[Path]:
        """The run's folders now (and the Triton ones remembered, for their shared memory)."""
        found = sorted(self.tmpdir.iterdir())
        self.triton_folders |= {p.name for p in found if p.name.startswith("gelu-triton-")}
        return found

    def stage(self) -> str | None:
        """The demo rollout's stage, read from the sandbox's API; None before it is there."""
        for kubeconfig in self.tmpdir.glob("gelu-sandbox-*/kubeconfig"):
            done = subprocess.run(
                [
                    "kubectl",
                    "--kubeconfig",
                    str(kubeconfig),
                    "get",
                    "gelumodelrollouts/gelu-demo",
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            if done.returncode == 0:
                return str((json.loads(done.stdout).get("status") or {}).get("stage", ""))
        return None

    def wait_until(self, point: str, process: subprocess.Popen[str], timeout_s: float) -> None:
        """Wait until the run is at ``point``: ``setup`` (the sandbox is being set up:
        Prometheus is starting) or ``rollout`` (the rollout is Progressing: traffic through
        Triton pods of both arms)."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert process.poll() is None, f"the demo ended early with {process.returncode}"
            assert time.monotonic() < deadline, f"never got to {point}: {self.folders()}"
            folders = self.folders()
            if point == "setup" and any(p.name.startswith("gelu-prometheus-") for p in folders):
                return
            if point == "rollout" and self.stage() == "Progressing":
                return
            time.sleep(0.2 if point == "setup" else 0.5)

    def wait_until_gone(self, timeout_s: float) -> list[int]:
        """Wait until no process of the run is left (the janitor may still be at work);
        the ones left when the time runs out."""
        deadline = time.monotonic() + timeout_s
        while (left := marked_processes(self.tag)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def leftovers(self) -> tuple[list[int], list[Path]]:
        """The run's processes and files still there: processes, then folders and shared
        memory regions."""
        processes = self.wait_until_gone(timeout_s=30)
        files = sorted(self.tmpdir.iterdir())
        for name in self.triton_folders:
            files += sorted(SHARED_MEMORY.glob(f"{name}-shm-*"))
        return processes, files
