"""A real S3 API server on loopback for model repositories in object storage: moto's server.

It runs from its own environment (``build/s3-venv``, made by ``make setup``; its AWS libraries
pin an older python-dateutil than the Kubernetes client accepts), or any ``moto_server`` on the
PATH. Files go up with plain S3 REST calls (moto does not check signatures), so the lab needs no
AWS library of its own. Triton reads the bucket itself:
``--model-repository=s3://http://127.0.0.1:PORT/BUCKET/PREFIX``.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from gelu_lab.sandbox.processes import (
    DIRECT,
    free_port,
    remove_folder,
    start_process,
    stop_process,
    temporary_folder,
    wait_until_ready,
)
from gelu_lab.sandbox.triton import LOOPBACK

S3_VENV: Final = Path(__file__).resolve().parents[3] / "build" / "s3-venv"
ACCESS_KEY: Final = "sandbox-access-key"
SECRET_KEY: Final = "sandbox-secret-key"
REGION: Final = "us-east-1"


class S3NotInstalledError(RuntimeError):
    """No moto_server to run."""


def find_moto_server() -> Path:
    for candidate in (S3_VENV / "bin" / "moto_server", shutil.which("moto_server")):
        if candidate is not None and Path(candidate).is_file():
            return Path(candidate)
    raise S3NotInstalledError(
        f"no moto_server: run `make setup` (it installs one in {S3_VENV}) or put one on PATH"
    )


class S3Server:
    """moto's S3 server on a free loopback port, for as long as the context lasts."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the spec's ``storage.endpoint``."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        server = find_moto_server()
        self._workdir = temporary_folder("gelu-s3-")
        self.port = free_port()
        self._process = start_process(
            [server, "-H", LOOPBACK, "-p", str(self.port)],
            log_path=self._workdir / "moto.log",
        )
        problem = wait_until_ready(self._process, f"{self.endpoint}/", timeout_s=30.0)
        if problem is not None:
            log = (self._workdir / "moto.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"moto_server {problem}:\n{log}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self._workdir is not None:
            remove_folder(self._workdir)
            self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _put(self, path: str, body: bytes = b"") -> None:
        # A body without a content type would be read as a form and stored mangled.
        request = urllib.request.Request(
            f"{self.endpoint}/{path}",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        with DIRECT.open(request, timeout=10.0) as response:
            response.read()

    def create_bucket(self, bucket: str) -> None:
        self._put(bucket)

    def upload_folder(self, bucket: str, prefix: str, folder: Path) -> list[str]:
        """Every file under ``folder`` as ``prefix/<relative path>``; returns the keys."""
        keys = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}"
            self._put(f"{bucket}/{key}", path.read_bytes())
            keys.append(key)
        return keys
