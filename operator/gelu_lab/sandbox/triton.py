"""Run a real ``tritonserver`` on loopback from the PyTriton wheel's server files.

The wheel ships the server, the Python backend and one backend stub per Python version. The
stub for 3.11 embeds the system's libpython, so the models' ``model.py`` runs on the system
interpreter and needs Debian's ``python3-numpy``; :func:`find_triton` checks for all of it and
says what to run when something is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from gelu_lab.sandbox import janitor
from gelu_lab.sandbox.processes import (
    DIRECT,
    remove_folder,
    start_process,
    stop_process,
    temporary_folder,
    wait_until_ready,
)

STUB_PYTHON: Final = "3.11"
SYSTEM_PYTHON: Final = Path("/usr/bin/python3.11")
SETUP_HINT: Final = "run `make setup` (it installs the sandbox extra and Debian's python3-numpy)"
LOOPBACK: Final = "127.0.0.1"
START_ATTEMPTS: Final = 3
# How long tritonserver waits on SIGTERM for open client connections and model unloading.
EXIT_TIMEOUT_S: Final = 3
SHARED_MEMORY: Final = Path("/dev/shm")
_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()
# Triton's log lines are glog's: severity letter, date, time. "E" is an error.
_ERROR_LINE: Final = re.compile(r"^E\d{4} ")
# Errors every CPU-only start logs.
_BENIGN_ERRORS: Final = ("CudaDriverHelper has not been initialized",)
# Loopback requests must not go through an HTTP proxy set in the environment.


class TritonUnavailableError(RuntimeError):
    """The Triton server files, or what its models need, are not installed."""


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with its log."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the server files are."""

    server: Path
    python_backend: Path
    stub: Path
    libraries: Path


def find_triton() -> TritonInstall:
    """Locate the server files in the installed wheel and check the system Python's numpy."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonUnavailableError(
            f"the Triton server (nvidia-pytriton) is not installed: {SETUP_HINT}"
        )
    package = Path(spec.origin).parent
    root = package / "tritonserver"
    install = TritonInstall(
        server=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub",
        libraries=package.parent / "nvidia_pytriton.libs",
    )
    for path in (install.server, install.python_backend, install.stub, install.libraries):
        if not path.exists():
            raise TritonUnavailableError(
                f"the Triton install is incomplete, {path} is missing: {SETUP_HINT}"
            )
    if not SYSTEM_PYTHON.exists():
        raise TritonUnavailableError(
            f"Triton's Python backend runs models on {SYSTEM_PYTHON}, which is missing: "
            f"{SETUP_HINT}"
        )
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import numpy"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        raise TritonUnavailableError(
            f"Triton's Python backend needs numpy on {SYSTEM_PYTHON}: {SETUP_HINT}"
        )
    return install


def lay_out_backends(install: TritonInstall, directory: Path) -> Path:
    """A backends folder: the Python backend with the 3.11 stub beside ``libtriton_python.so``."""
    python = directory / "python"
    python.mkdir(parents=True, exist_ok=True)
    for item in install.python_backend.iterdir():
        if item.is_file() and not (python / item.name).exists():
            (python / item.name).symlink_to(item)
    stub = python / install.stub.name
    if not stub.exists():
        shutil.copy2(install.stub, stub)
    return directory


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int

    @staticmethod
    def pick() -> TritonPorts:
        """Three distinct free loopback ports, none handed to a server of this process yet.

        A server binds its ports only after loading its models (a second or more), so
        servers started side by side must not be given the same free port.
        """
        with _ports_lock:
            while True:
                with contextlib.ExitStack() as stack:
                    sockets = [stack.enter_context(socket.socket()) for _ in range(3)]
                    for sock in sockets:
                        sock.bind((LOOPBACK, 0))
                    ports = [int(sock.getsockname()[1]) for sock in sockets]
                if not _ports_handed_out.intersection(ports):
                    _ports_handed_out.update(ports)
                    return TritonPorts(*ports)

    def release(self) -> None:
        with _ports_lock:
            _ports_handed_out.difference_update((self.http, self.grpc, self.metrics))


class TritonServer:
    """A ``tritonserver`` process serving ``repository`` on free loopback ports.

    Use it as a context manager: it starts on enter, waits until every model is ready, and on
    exit stops the process group and removes its working files, whatever happened inside.
    """

    def __init__(
        self,
        repository: Path | str,
        *,
        install: TritonInstall | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 60.0,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """``repository``: a folder, or a URL Triton reads itself (``s3://...``, ``gs://...``);
        ``extra_args`` go after the server's own, ``extra_env`` into its environment (a
        pod's container args and env, as the sandbox's kubelet passes them on)."""
        self.repository = repository
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(extra_env or {})
        self.install = install
        self.ready_timeout_s = ready_timeout_s
        self._workdir: Path | None = None
        self._given_log_path = log_path
        self._log_path = log_path
        self._log_start = 0  # where the current attempt's output begins in the log
        self._process: subprocess.Popen[bytes] | None = None
        self.ports: TritonPorts | None = None
        self._held_ports: TritonPorts | None = None
        self._shm_prefix = ""

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint (the form tritonclient takes)."""
        return f"{LOOPBACK}:{self._ports().http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self._ports().metrics}/metrics"

    @property
    def metrics_address(self) -> str:
        """``host:port`` of the metrics endpoint (a Prometheus scrape target)."""
        return f"{LOOPBACK}:{self._ports().metrics}"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise RuntimeError("the server has not been started")
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _ports(self) -> TritonPorts:
        if self.ports is None:
            raise RuntimeError("the server has not been started")
        return self.ports

    def start(self) -> Self:
        install = self.install or find_triton()
        self._workdir = temporary_folder("gelu-triton-")
        self._shm_prefix = f"{self._workdir.name}-shm-"
        janitor.watch("path", SHARED_MEMORY / f"{self._shm_prefix}*")
        try:
            backends = lay_out_backends(install, self._workdir / "backends")
            self._log_path = self._given_log_path or self._workdir / "tritonserver.log"
            env = {**os.environ, **self.extra_env}
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(install.libraries), env.get("LD_LIBRARY_PATH", "")) if p
            )
            for attempt in range(1, START_ATTEMPTS + 1):
                self._log_start = self._log_path.stat().st_size if self._log_path.exists() else 0
                self.ports = self._held_ports = TritonPorts.pick()
                self._process = start_process(
                    self._arguments(install, backends, self.ports), env=env, log_path=self._log_path
                )
                try:
                    self._wait_ready()
                    return self
                except TritonStartError:
                    # Another process took a port between pick() and the server's bind:
                    # pick again (the kernel's choice is only a hint).
                    if attempt == START_ATTEMPTS or not self._lost_port_race():
                        raise
                    stop_process(self._process)
                    self._process = None
                    self._release_ports()
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _arguments(self, install: TritonInstall, backends: Path, ports: TritonPorts) -> list[str]:
        return [
            str(install.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--metrics-address={LOOPBACK}",
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
            "--metrics-config=summary_latencies=true",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            *self.extra_args,
        ]

    def _lost_port_race(self) -> bool:
        if self._process is None or self._process.poll() is None:
            return False
        return "already in use" in self._log_text()

    def _log_text(self) -> str:
        """What the server logged since it was last started (a given log may hold more)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def _wait_ready(self) -> None:
        assert self._process is not None
        url = f"http://{self.http_url}/v2/health/ready"
        problem = wait_until_ready(self._process, url, self.ready_timeout_s, poll_s=0.2)
        if problem is not None:
            raise TritonStartError(f"tritonserver {problem}:\n{self.log_tail()}")

    def metrics_text(self, timeout_s: float = 10.0) -> str:
        """The metrics endpoint's current text (Prometheus exposition format)."""
        with DIRECT.open(self.metrics_url, timeout=timeout_s) as response:
            text: str = response.read().decode()
            return text

    def log_tail(self, lines: int = 8) -> str:
        """The server's error lines and its last ``lines`` lines (what a start failure says).

        Triton prints its model and option tables after the errors that stopped it, so the
        plain tail of the log rarely shows why a model failed to load.
        """
        text = self._log_text().splitlines()
        errors = [
            line
            for line in text
            if _ERROR_LINE.match(line) and not any(benign in line for benign in _BENIGN_ERRORS)
        ]
        tail = text[-lines:]
        return "\n".join([*(e for e in errors if e not in tail), *tail]) or "(no log)"

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout_s=10.0)
            self._process = None
        self._release_ports()
        # The Python backend's shared-memory regions outlive a server that did not unload its
        # models (it gives up after the exit timeout while clients keep connections open).
        if self._shm_prefix:
            for region in SHARED_MEMORY.glob(f"{self._shm_prefix}*"):
                region.unlink(missing_ok=True)
            janitor.forget("path", SHARED_MEMORY / f"{self._shm_prefix}*")
        if self._workdir is not None:
            remove_folder(self._workdir)
            self._workdir = None

    def _release_ports(self) -> None:
        if self._held_ports is not None:
            self._held_ports.release()
            self._held_ports = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
