"""The decision report in a real browser: Debian's headless Chromium, with the network shut
off, renders the page of a real rollback, a chart per gate, into a screenshot that is not
blank."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from gelu_rollout.cli.report import VALUE_COLOUR, VERDICT_COLOURS, render_report
from tests.report.html_parts import external_references, parse
from tests.report.png import read_png
from tests.report.scenario import rolled_back_rollout

WINDOW = (1280, 2400)
# No proxy that answers, and no name that resolves: anything the page tried to fetch fails.
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")
# Colours the charts must have drawn: the value lines' blue and the failure's red.
DRAWN = {"value line": VALUE_COLOUR, "failure": VERDICT_COLOURS["Fail"]}


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium (Debian's chromium package, scripts/setup.sh) is missing"
    command: Sequence[str] = (
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *OFFLINE,
        *args,
    )
    # A session of its own: should it hang, its renderer and helper processes go with it.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    html = render_report(rolled_back_rollout(), generated_at=datetime(2026, 3, 1, 13, tzinfo=UTC))
    assert external_references(html) == []  # nothing to fetch, so nothing the flags hide
    path = folder / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.slow
def test_the_page_renders_offline_into_a_screenshot_that_is_not_blank(page: Path) -> None:
    screenshot = page.parent / "report.png"
    done = chromium(page.parent / "profile-shot", f"--screenshot={screenshot}", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert screenshot.exists(), done.stderr[-2000:]
    pixels = read_png(screenshot)[..., :3]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    # Mostly white page, but far from uniform: text, axes, lines.
    assert float(pixels.astype(np.float64).std()) > 10.0
    assert float((pixels.min(axis=2) > 250).mean()) > 0.5
    for name, colour in DRAWN.items():
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        near = (np.abs(pixels.astype(int) - rgb).sum(axis=2) < 30).sum()
        assert near > 200, f"{name} ({colour}): {near} pixels"


@pytest.mark.slow
def test_the_browser_builds_one_chart_per_gate(page: Path) -> None:
    done = chromium(page.parent / "profile-dom", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = parse(done.stdout)
    gates = list(
        dict.fromkeys(g for t in rolled_back_rollout()["status"]["gateHistory"] for g in t["gates"])
    )
    charts = dom.all("svg", **{"class": "gate-chart"})
    assert [c.attrs["aria-label"] for c in charts] == [f"{g} over time" for g in gates]
    for gate in gates:
        section = f"gate-{gate}"
        assert len(dom.within(section, "svg")) == 1, gate
        assert dom.within(section, "circle"), gate  # its ticks
    assert len(dom.all("svg", **{"class": "timeline"})) == 1
    assert external_references(done.stdout) == []
