"""Shared by the tests that start real Triton servers: repositories, parallel start, metrics."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gelu_lab.sandbox.triton import TritonServer
from gelu_rollout.variants import Faults, render_repository, write_repository

ModelSpec = tuple[str, Faults]
"""A model to serve: its variant and the faults injected into it."""


def build_repository(root: Path, models: Mapping[str, ModelSpec]) -> Path:
    """A model repository at ``root`` serving each named model."""
    for name, (variant, faults) in models.items():
        write_repository(root, name, render_repository(name, variant, faults=faults))
    return root


@contextlib.contextmanager
def serving(repositories: Mapping[str, Path]) -> Iterator[dict[str, TritonServer]]:
    """Start one server per repository, side by side; stop them all at the end, whatever
    happened (a server that failed to start included)."""
    servers = {key: TritonServer(path) for key, path in repositories.items()}
    try:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            started = [pool.submit(server.start) for server in servers.values()]
        for future in started:
            future.result()
        yield servers
    finally:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(TritonServer.stop, servers.values()))


_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(metrics_text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one series name in Prometheus' text format: (labels, value)."""
    found = []
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            found.append((dict(_LABEL.findall(match["labels"] or "")), float(match["value"])))
    return found


def value(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    matching = [v for have, v in samples(metrics_text, name) if labels.items() <= have.items()]
    if not matching:
        raise AssertionError(f"no sample of {name} with {labels}")
    return sum(matching)
