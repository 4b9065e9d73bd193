"""The operator's image, read as text (no container engine runs here): a build stage that
installs the operator alone into a virtual environment, a slim final stage that copies it and
runs as a numeric non-root user, and a build context that holds nothing else."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Final

import pytest
import yaml

from tests.chart.rendering import CHART, ROOT

DOCKERFILE: Final = ROOT / "Dockerfile"
DOCKERIGNORE: Final = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    found: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name))
        elif found:
            found[-1].instructions.append((instruction, arguments.strip()))
    return found


def copy_sources(arguments: str) -> tuple[list[str], str]:
    words = [w for w in shlex.split(arguments) if not w.startswith("--")]
    return words[:-1], words[-1]


def test_a_build_stage_and_a_slim_final_stage_from_the_same_image() -> None:
    build, final = stages(DOCKERFILE.read_text())
    assert build.name is not None
    assert build.base == final.base  # the venv's interpreter link must hold in the final stage
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    assert build.base == "${PYTHON_IMAGE}"
    # The final stage takes the virtual environment and nothing else from the build.
    (copy,) = final.all("COPY")
    assert copy == f"--from={build.name} /opt/venv /opt/venv"
    assert all("pip" not in run for run in final.all("RUN"))


def test_only_the_operator_is_installed() -> None:
    build, _ = stages(DOCKERFILE.read_text())
    sources = [s for arguments in build.all("COPY") for s in copy_sources(arguments)[0]]
    assert sorted(sources) == ["README.md", "operator/gelu_rollout", "pyproject.toml"]
    installs = [run for run in build.all("RUN") if "pip install" in run]
    assert len(installs) == 1
    # A plain install of the top-level project (which packages gelu_rollout* only).
    assert re.search(r"/opt/venv/bin/pip install \.(\s|$)", installs[0])
    assert "-e" not in installs[0].split()
    assert "operator/" not in installs[0]


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    _, final = stages(DOCKERFILE.read_text())
    user = final.all("USER")[-1]
    assert re.fullmatch(r"[0-9]+(:[0-9]+)?", user), f"USER {user} is not numeric"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0
    assert not gid or int(gid) != 0
    # The chart's default user is the image's.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == int(uid)


def test_the_entrypoint_is_the_operator_on_the_charts_ports() -> None:
    _, final = stages(DOCKERFILE.read_text())
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint == '["gelu-rollout", "run"]'
    values = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]
    assert final.all("EXPOSE") == [f"{values['metricsPort']} {values['healthPort']}"]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it (Go's filepath.Match, plus ``**``)."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):  # "**/" may match no directory at all
                out = out[:-2] + "(.*/)?"
                i += 1
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches
    the path or a folder above it decides, a ``!`` one taking the path back in."""
    result = False
    parts = path.split("/")
    for raw in patterns:
        negated = raw.startswith("!")
        regex = pattern_regex(raw.lstrip("!").strip("/"))
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negated
    return result


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/unit/test_spec.py",
        "tests/chart/test_dockerfile.py",
        "operator/gelu_lab/cli.py",
        "operator/gelu_lab/sandbox/stack.py",
        "operator/pyproject.toml",
        "operator/gelu_rollout.egg-info/PKG-INFO",
        "operator/build/lib/gelu_rollout/run.py",
        "operator/gelu_rollout/__pycache__/run.cpython-311.pyc",
        "build/setup.log",
        "charts/gelu-rollout/Chart.yaml",
        "docs/install.md",
        "examples/rollout.yaml",
        "Dockerfile",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert ignored(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "operator/gelu_rollout/run.py",
        "operator/gelu_rollout/py.typed",
        "operator/gelu_rollout/adapters/kube/kinds.py",
    ],
)
def test_the_build_context_holds_what_the_build_copies(path: str) -> None:
    assert not ignored(path, dockerignore_patterns())


def test_the_matcher_reads_patterns_as_docker_does() -> None:
    assert ignored("a/b/c.pyc", ["**/*.pyc"])
    assert ignored("c.pyc", ["**/*.pyc"])
    assert not ignored("a/keep.py", ["*", "!a"])
    assert ignored("a/b/x", ["a"])  # a folder's contents go with it
    assert not ignored("ab/x", ["a"])
    assert ignored("x.pyo", ["*.py[cod]"])
