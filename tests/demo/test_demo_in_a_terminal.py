"""The demo as a person sees it: in a real terminal (tmux), 80x24 and 200x50, with a stale
$COLUMNS and $LINES in the environment that the terminal's own size must override.

The live view redraws one frame in place that keeps to the screen (its first line shows once
in everything the terminal showed, no line is wider than the terminal), and the final screen
says the outcome and what to try next. Two short scenarios: ``errors`` walks into its first
step and is rolled back on traffic (many decisions to fit), ``nan`` is rolled back by the probe.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo.runs import CLI, ROOT, Run
from tests.terminal_helpers import terminal, too_wide

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]


@pytest.mark.parametrize(("scenario", "width", "height"), [("errors", 80, 24), ("nan", 200, 50)])
def test_the_demo_keeps_to_the_terminal(
    tmp_path: Path, scenario: str, width: int, height: int
) -> None:
    run = Run(tmp_path)
    env = run.env({"COLUMNS": "160", "LINES": "60"})
    command = [str(CLI), "demo", "--scenario", scenario]
    with terminal(
        command, width=width, height=height, cwd=ROOT, env=env, tmp_path=tmp_path
    ) as pane:
        status = pane.wait_for_exit(timeout_s=240)
        screen, history = pane.screen(), pane.history()
    print(f"final screen at {width}x{height}:\n" + "\n".join(screen))
    assert status == 0, "\n".join(history)
    assert not too_wide(history, width), "\n".join(too_wide(history, width))
    frames = [line for line in history if line.startswith(f"scenario {scenario} ")]
    assert len(frames) == 1, "\n".join(history)
    assert any(line.startswith("outcome RolledBack (expected RolledBack)") for line in screen), (
        "\n".join(screen)
    )
    assert any(line.startswith("make demo SCENARIO=healthy|") for line in screen)
    assert any("docs/operator.md" in line for line in screen)
    assert run.leftovers() == ([], [])
