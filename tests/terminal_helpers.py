"""Commands run in a real terminal (tmux) of a given size, and what they leave on it.

Each pane runs in a tmux server of its own, so nothing is shared with a tmux the person
running the tests may have open. ``history`` is everything the terminal showed, scrolled off
or still on screen, with lines the terminal had to wrap joined again: a line wider than the
terminal reads wider here, and a frame drawn anew instead of in place shows more than once.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.cells import cell_len


@dataclass
class Pane:
    socket: str
    session: str
    width: int
    height: int
    status_file: Path

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> list[str]:
        """The lines on the screen now, wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-t", self.session).splitlines()

    def history(self) -> list[str]:
        """Every line the terminal showed (scrolled off, then on screen), wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", self.session).splitlines()

    def exit_status(self) -> int | None:
        """The command's exit status once it has ended, else None."""
        text = self.status_file.read_text().strip() if self.status_file.exists() else ""
        return int(text) if text else None

    def wait_for_exit(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while (status := self.exit_status()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"still running after {timeout_s:g}s; screen:\n" + "\n".join(self.screen())
                )
            time.sleep(0.2)
        return status

    def wait_for_text(self, text: str, timeout_s: float) -> list[str]:
        """The screen, once ``text`` is on it."""
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if any(text in line for line in screen):
                return screen
            if time.monotonic() > deadline or self.exit_status() is not None:
                raise AssertionError(f"{text!r} never showed; screen:\n" + "\n".join(screen))
            time.sleep(0.1)


@contextlib.contextmanager
def terminal(
    command: Sequence[str],
    *,
    width: int,
    height: int,
    cwd: Path,
    env: Mapping[str, str],
    tmp_path: Path,
) -> Iterator[Pane]:
    """Run ``command`` in a ``width`` x ``height`` terminal; the terminal stays after the
    command ends (its exit status in a file) until the context exits."""
    socket = f"gelu-test-{uuid.uuid4().hex[:8]}"
    status_file = tmp_path / f"{socket}.status"
    line = shlex.join(command)
    # The shell stays after the command so that its last screen can still be read.
    script = f"cd {shlex.quote(str(cwd))}; {line}; echo $? > {shlex.quote(str(status_file))}"
    subprocess.run(
        [
            *("tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "test"),
            *("-x", str(width), "-y", str(height), f"{script}; exec sleep 3600"),
        ],
        env=dict(env),
        check=True,
    )
    try:
        yield Pane(socket, "test", width, height, status_file)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def too_wide(lines: Sequence[str], width: int) -> list[str]:
    """The lines wider than ``width`` terminal cells."""
    return [line for line in lines if cell_len(line.rstrip()) > width]


# --- a rollout as the operator records it, with as many looks as wanted ----------------

MESSAGES: dict[str, str] = {
    "nonFinite": "0 non-finite outputs in 12604",
    "burnRate": "candidate burns 0.00x over 20s (limit 14.4x)",
    "errorRate": "candidate burn rate 0.00 within 1 over 800 requests (a burn of 6 would "
    "have shown with power 80%); baseline 0.00",
    "latencyRegression": "no evidence of a tail slower than 1.50x the baseline (1 of 604 "
    "candidate requests above their edge, 27 of 603 baseline; evidence 0.1 of 2e+03); 372 "
    "requests would have caught a +150% P99 regression with power 80%; candidate mean 1.37 "
    "ms: queue 0.289 ms, compute 1.07 ms",
    "latencyCeiling": "candidate P99 within the 250 ms ceiling: 0 of 804 candidate requests "
    "above 250 ms",
    "divergence": "KL(baseline||candidate) 0.0000 over 12604 outputs (limit 0.01)",
}
PROBE_MESSAGE = (
    "max abs error 0.000833 (limit 0.05), KL 9.3e-06, non-finite outputs 0 (baseline 0) over "
    "280 rows, latency ratio 0.964 (limit 3; median over 2 batch(es) of 9 timed round(s), "
    "baseline 1.73 ms, candidate 1.48 ms)"
)


def recorded_rollout(
    looks: int, *, stage: str = "Progressing", name: str = "gelu", message: str = ""
) -> dict[str, Any]:
    """A GeluModelRollout after the probe and ``looks`` analysis ticks of six gates each; at
    ``RolledBack`` the last look's burnRate failed."""
    start = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)

    def at(seconds: float) -> str:
        return (start + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    ledger: list[dict[str, Any]] = [
        {"time": at(0), "step": 0, "weight": 0, "gate": "probe", "verdict": "Pass",
         "value": 0.000833, "threshold": 0.05, "samples": 280, "message": PROBE_MESSAGE}
    ]  # fmt: skip
    for look in range(looks):
        for gate, text in MESSAGES.items():
            failed = stage == "RolledBack" and look == looks - 1 and gate == "burnRate"
            ledger.append(
                {"time": at(10 * (look + 1)), "step": 0, "weight": 10, "gate": gate,
                 "verdict": "Fail" if failed else "Pass", "value": 22.5 if failed else 0.0416,
                 "threshold": 14.4 if failed else 1, "samples": 604, "windowSeconds": 40,
                 "message": "fast burn: candidate burns 22.5x over 20s" if failed else text}
            )  # fmt: skip
    finished = stage in ("Promoted", "RolledBack")
    return {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": at(-5)},
        "spec": {
            "model": {"name": "gelu_mlp"},
            "baseline": {"variant": "exact"},
            "candidate": {"variant": "tanh"},
            "traffic": {"steps": [{"weight": 10, "analysisSeconds": 600}]},
            "analysis": {"intervalSeconds": 10, "warmupSeconds": 0},
        },
        "status": {
            "stage": stage,
            "stepIndex": 0,
            "candidateWeight": 0 if finished else 10,
            "startedAt": at(0),
            "stepStartedAt": at(1),
            **({"finishedAt": at(10 * looks + 1)} if finished else {}),
            "message": message or f"look {looks}",
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False" if finished else "True",
                    "reason": "Finished" if finished else "StepStarted",
                    "message": message or f"look {looks}",
                    "lastTransitionTime": at(1),
                }
            ],
            "ledger": ledger,
        },
    }
