"""The sandbox's API emulator on loopback HTTP, and a kubeconfig that points at it.

``serve_emulator`` serves a :class:`~gelu_lab.sandbox.emulator.SandboxEmulator` over HTTP;
``write_kubeconfig`` points kubectl, the operator's client and Kopf at it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Final

import aiohttp.web
import kmock
import yaml

from gelu_lab.sandbox.emulator import NAMESPACES, SandboxEmulator, sandbox_resources

KUBECONFIG_CONTEXT: Final = "gelu-sandbox"


@dataclasses.dataclass(frozen=True)
class EmulatorServer:
    """A running emulator: its state, and where it listens."""

    emulator: SandboxEmulator
    url: str
    host: str
    port: int

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server; see ``write_kubeconfig``."""
        return write_kubeconfig(path, self.url, namespace)


@contextlib.asynccontextmanager
async def serve_emulator(
    resources: Mapping[str, kmock.ResourceInfo] | None = None,
    *,
    emulator: SandboxEmulator | None = None,
    namespaces: Iterable[str] = ("default",),
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[EmulatorServer]:
    """Serve a ``SandboxEmulator`` over HTTP on ``host`` (a free port unless ``port`` is given).

    ``resources`` (default: ``sandbox_resources()``) are declared in ``emulator`` (default: a
    new one). The ``namespaces`` exist from the start, as ``default`` does on a real cluster
    (Kopf serves only the namespaces that it can list).
    """
    emulator = SandboxEmulator() if emulator is None else emulator
    for key, info in (sandbox_resources() if resources is None else resources).items():
        emulator.resources[key] = info
    async with emulator:
        for namespace in namespaces:
            if emulator.get_object(NAMESPACES, None, namespace) is None:
                await emulator.create_object(NAMESPACES, {"metadata": {"name": namespace}})
        # handler_cancellation: a watch ends when its client goes away, not at its next event.
        server = aiohttp.web.Server(emulator, handler_cancellation=True)
        # A short shutdown: open watches would otherwise hold the exit for a minute.
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, host, port)
            await site.start()
            bound_port = int(runner.addresses[0][1])
            yield EmulatorServer(
                emulator=emulator, url=f"http://{host}:{bound_port}", host=host, port=bound_port
            )
        finally:
            await runner.cleanup()


def write_kubeconfig(path: str | Path, url: str, namespace: str = "default") -> Path:
    """Write a kubeconfig whose current context is the API at ``url`` (no credentials needed)."""
    name = KUBECONFIG_CONTEXT
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "sandbox"}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
        "preferences": {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target
