"""The endpoints file between the lab and an operator in a process of its own: what the
publisher writes, the operator's resolver reads, and a missing or half-written file never
breaks the resolver. No server is started."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gelu_lab.sandbox.operator_process import EndpointsPublisher, FileEndpoints


def _service(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}}


def test_the_resolver_reads_what_the_publisher_wrote(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    ready = {("default", "a-baseline"): ["127.0.0.1:1"], ("default", "a-candidate"): []}
    services = [_service(*key) for key in ready]
    publisher = EndpointsPublisher(path, lambda: services, lambda ns, name: ready[(ns, name)])
    resolve = FileEndpoints(path)
    assert resolve("default", "a-baseline") == []  # nothing written yet
    publisher.publish()
    assert resolve("default", "a-baseline") == ["127.0.0.1:1"]
    assert resolve("default", "a-candidate") == []
    assert resolve("default", "unknown") == []
    ready[("default", "a-candidate")] = ["127.0.0.1:2"]
    publisher.publish()
    # A rewrite may land within the same clock tick: force a new modification time.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert resolve("default", "a-candidate") == ["127.0.0.1:2"]


def test_a_broken_file_keeps_the_last_good_answer(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"default/x": ["127.0.0.1:9"]}))
    resolve = FileEndpoints(path)
    assert resolve("default", "x") == ["127.0.0.1:9"]
    path.write_text('{"default/x": [')  # as a non-atomic writer could leave it
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert resolve("default", "x") == ["127.0.0.1:9"]
    path.unlink()
    assert resolve("default", "x") == ["127.0.0.1:9"]


@pytest.mark.asyncio
async def test_the_publisher_keeps_the_file_current_while_it_runs(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    addresses: list[str] = []
    publisher = EndpointsPublisher(
        path, lambda: [_service("default", "s")], lambda *_: list(addresses), interval_s=0.01
    )
    async with publisher:
        assert json.loads(path.read_text()) == {"default/s": []}
        addresses.append("127.0.0.1:5")
        await asyncio.sleep(0.1)
        assert json.loads(path.read_text()) == {"default/s": ["127.0.0.1:5"]}
    assert not list(tmp_path.glob(".*partial"))  # no half-written file left beside it
