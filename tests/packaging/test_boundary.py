"""The operator ships alone: its wheel holds no lab, and importing it loads none."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IMPORT_EVERY_OPERATOR_MODULE = """
import importlib, importlib.metadata, pkgutil, sys
importlib.metadata.entry_points = lambda **_: []  # as where no plugin is installed
import gelu_rollout
names = [m.name for m in pkgutil.walk_packages(gelu_rollout.__path__, "gelu_rollout.")]
for name in names:
    if not name.endswith("triton_model"):  # runs inside Triton, on its backend utilities
        importlib.import_module(name)
lab = sorted(m for m in sys.modules if m.split(".")[0] == "gelu_lab")
print(len(names), "modules;", "lab modules loaded:", lab)
sys.exit(1 if lab else 0)
"""


@pytest.mark.slow
def test_the_operator_wheel_holds_only_the_operator(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("gelu_rollout-*.whl")
    packages = {
        name.split("/")[0]
        for name in zipfile.ZipFile(wheel).namelist()
        if not name.split("/")[0].endswith(".dist-info")
    }
    assert packages == {"gelu_rollout"}
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt"))
    )
    assert b"gelu_lab" not in entry_points


def test_importing_the_operator_loads_nothing_of_the_lab() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_OPERATOR_MODULE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lab modules loaded: []" in result.stdout


def test_the_lab_adds_its_commands_through_the_plugin_entry_point() -> None:
    from typer.testing import CliRunner

    from gelu_rollout.cli.main import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate", "crd", "demo", "replay", "bench"):
        assert command in result.output
