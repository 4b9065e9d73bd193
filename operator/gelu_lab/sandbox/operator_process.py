"""The operator in a process of its own, for tests that kill it (SIGKILL) and start it again.

In the sandbox the operator usually runs in the lab's own process and asks the pod runner
directly where a Service's ready pods answer. A separate process cannot: here the lab writes
those addresses to a JSON file (:class:`EndpointsPublisher`, ``{"namespace/service":
["host:port", ...]}``), kept current as pods come and go, and the operator's process reads it
(:class:`FileEndpoints`). A pod's own address is an annotation on its Pod object
(:meth:`~gelu_lab.sandbox.kubelet.PodRunner.pod_address`), which the operator reads through
the API anyway.

``python -m gelu_lab.sandbox.operator_process --config FILE`` runs :func:`run_operator` with
the :class:`~gelu_rollout.run.OperatorConfig` in ``FILE`` (JSON) and the endpoints file it
names; it touches ``readyFile`` once Kopf is ready. :class:`OperatorProcess` starts it, waits
for it, kills it and starts it again, in a process group of its own that the janitor stops
should the lab die first (:mod:`gelu_lab.sandbox.processes`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from gelu_lab.sandbox.processes import start_process, stop_process

PUBLISH_INTERVAL_S: Final = 0.2
READY_TIMEOUT_S: Final = 60.0


def _write_atomically(path: Path, text: str) -> None:
    """Readers never see half a file: write beside it, then rename over it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class FileEndpoints:
    """An :class:`~gelu_rollout.controller.EndpointResolver` that reads the publisher's file,
    again only when it changed (its modification time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: int | None = None
        self._endpoints: dict[str, list[str]] = {}

    def __call__(self, namespace: str, service: str) -> list[str]:
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp != self._stamp:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self._endpoints = {str(k): [str(a) for a in v] for k, v in loaded.items()}
                self._stamp = stamp
        except (OSError, ValueError):
            pass  # not written yet, or gone with the sandbox: what was read last holds
        return list(self._endpoints.get(f"{namespace}/{service}", []))


class EndpointsPublisher:
    """Keeps the endpoints file current: every Service the emulator holds, resolved through
    ``resolve`` (the pod runner's ``service_endpoints``), rewritten when it changes."""

    def __init__(
        self,
        path: Path,
        services: Callable[[], Sequence[Mapping[str, Any]]],
        resolve: Callable[[str, str], list[str]],
        interval_s: float = PUBLISH_INTERVAL_S,
    ) -> None:
        self.path = path
        self.services = services
        self.resolve = resolve
        self.interval_s = interval_s
        self._last: str | None = None
        self._task: asyncio.Task[None] | None = None

    def publish(self) -> None:
        endpoints: dict[str, list[str]] = {}
        for service in self.services():
            meta = service.get("metadata") or {}
            namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            endpoints[f"{namespace}/{name}"] = self.resolve(namespace, name)
        text = json.dumps(endpoints, sort_keys=True)
        if text != self._last:
            _write_atomically(self.path, text)
            self._last = text

    async def _run(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> Self:
        self.publish()
        self._task = asyncio.create_task(self._run(), name="endpoints-publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@dataclasses.dataclass
class OperatorProcess:
    """The operator as a child process: :meth:`start`, :meth:`kill` (SIGKILL, no goodbye),
    :meth:`stop` (SIGTERM: Kopf's own clean stop). ``config`` holds the
    :class:`~gelu_rollout.run.OperatorConfig` fields as JSON values; ``env`` is added to the
    process's environment (``POD_ID``: the name a replica has in Kopf's peering, as a pod's)."""

    workdir: Path
    config: Mapping[str, Any]
    endpoints_file: Path
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    starts: int = 0
    kills: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start it and wait until Kopf is ready; the seconds that took. Asynchronous: the
        API emulator it talks to may serve from the caller's own event loop."""
        if self.running:
            raise RuntimeError("the operator process is running already")
        self.starts += 1
        ready_file = self.workdir / f"operator-ready-{self.starts}"
        config_file = self.workdir / "operator-config.json"
        _write_atomically(
            config_file,
            json.dumps(
                {
                    **self.config,
                    "endpointsFile": str(self.endpoints_file),
                    "readyFile": str(ready_file),
                }
            ),
        )
        started = time.monotonic()
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- start #{self.starts}\n")
        self._proc = start_process(
            [sys.executable, "-m", "gelu_lab.sandbox.operator_process", "--config", config_file],
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            log_path=self.log_path,
        )
        deadline = started + ready_timeout_s
        while not ready_file.exists():
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the operator exited ({self._proc.returncode}) before it was ready; "
                    f"log: {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator was not ready in {ready_timeout_s:g}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the whole process group: nothing of the operator runs a line more."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self.kills += 1
        stop_process(self._proc)  # reaped already; forgets it in the janitor's list
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- killed (SIGKILL) #{self.kills}\n")
        self._proc = None

    async def stop(self) -> None:
        """SIGTERM (Kopf's clean stop), SIGKILL after a grace period."""
        if self._proc is not None:
            await asyncio.to_thread(stop_process, self._proc)
            self._proc = None

    def log_text(self) -> str:
        """Everything every start of it logged."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_text()[-characters:]


# -- the child ------------------------------------------------------------------------------


def _touch_when(flag: threading.Event, path: Path) -> None:
    flag.wait()
    path.touch()


def main(argv: Sequence[str] | None = None) -> None:
    # Imported here: the parent imports this module for the classes above without Kopf's
    # start-up cost.
    from gelu_lab.sandbox.kubelet import PodRunner
    from gelu_rollout.run import OperatorConfig, configure_logging, run_operator

    parser = argparse.ArgumentParser(prog="python -m gelu_lab.sandbox.operator_process")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    raw = json.loads(args.config.read_text(encoding="utf-8"))
    endpoints = FileEndpoints(Path(raw.pop("endpointsFile")))
    ready_file = Path(raw.pop("readyFile"))
    if "namespaces" in raw:
        raw["namespaces"] = tuple(raw["namespaces"])
    config = OperatorConfig(**raw)
    configure_logging(args.verbose)
    ready = threading.Event()
    threading.Thread(target=_touch_when, args=(ready, ready_file), daemon=True).start()
    asyncio.run(
        run_operator(
            config, endpoints=endpoints, pod_address=PodRunner.pod_address, ready_flag=ready
        )
    )


if __name__ == "__main__":
    main()
