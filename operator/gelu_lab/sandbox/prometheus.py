"""A real Prometheus server for the sandbox, with file-based service discovery.

``PrometheusServer`` writes its own configuration, starts the Debian ``prometheus``
binary on a free loopback port with a temporary TSDB directory, waits until it is ready,
and stops it (process group included) and removes the directory afterwards. Scrape
targets are set while it runs: ``set_targets`` rewrites a discovery file atomically.
Prometheus reads it at once but hands new targets to its scrapers on a fixed 5-second
tick (twice: discovery, then the scrape manager), so a change takes 5 to 10 seconds to be
scraped; ``wait_for_targets`` waits for it::

    with PrometheusServer() as prometheus:
        prometheus.set_targets([ScrapeTarget("127.0.0.1:8002", {"arm": "candidate"})])
        ...  # query prometheus.url

Each writer of targets keeps a file of its own, so that one never replaces another's: the
pod runner's (the default, ``targets.json``) and, by ``group``, ``targets-<group>.json``
(the traffic router that plays the Gateway writes ``targets-gateway.json``). One job scrapes
them all.

Recording and alerting rules: ``rule_files`` (paths of promtool rule files) are copied into the
server's folder and named in its configuration, evaluated every ``evaluation_interval_seconds``::

    with PrometheusServer(rule_files=[Path("monitoring/rules/recording.yaml")]) as prometheus:
        ...
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from gelu_lab.sandbox.processes import (
    free_port,
    remove_folder,
    start_process,
    stop_process,
    temporary_folder,
    wait_until_ready,
)

DEFAULT_BINARY = "/usr/bin/prometheus"
JOB_NAME = "sandbox"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
# Tries with a fresh port when another process took the picked one first.
_START_ATTEMPTS = 3


class PrometheusNotInstalledError(RuntimeError):
    """The prometheus binary is missing."""


class PrometheusStartError(RuntimeError):
    """Prometheus exited or did not become ready; the message ends with its log."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape target: ``host:port`` serving ``/metrics``, and the labels to add."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.address or "/" in self.address or ":" not in self.address:
            raise ValueError(f"scrape target address must be host:port, got {self.address!r}")
        for name in self.labels:
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"invalid target label name {name!r}")


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as ``Ns``, otherwise milliseconds."""
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {seconds}")
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def group_targets_path(targets_file: Path, group: str) -> Path:
    """The discovery file of one ``group`` of targets, beside ``targets_file``."""
    if not _GROUP_NAME.fullmatch(group):
        raise ValueError(f"a target group is lowercase letters, digits and -, got {group!r}")
    return targets_file.with_name(f"{targets_file.stem}-{group}{targets_file.suffix}")


def render_config(
    targets_file: Path,
    *,
    scrape_interval_seconds: float,
    evaluation_interval_seconds: float,
    rule_files: Sequence[Path] = (),
) -> dict[str, Any]:
    """The server's configuration: one job whose targets come from ``targets_file`` and every
    group's file beside it (``<stem>-*<suffix>``), and the rules of ``rule_files``."""
    interval = _duration(scrape_interval_seconds)
    groups = targets_file.with_name(f"{targets_file.stem}-*{targets_file.suffix}")
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            # Prometheus refuses a scrape timeout longer than the interval.
            "scrape_timeout": interval,
            "evaluation_interval": _duration(evaluation_interval_seconds),
        },
        "scrape_configs": [
            {
                "job_name": JOB_NAME,
                "metrics_path": "/metrics",
                "file_sd_configs": [
                    {
                        "files": [str(targets_file), str(groups)],
                        "refresh_interval": "1s",
                    }
                ],
            }
        ],
    }
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
    return config


def copy_rule_files(rule_files: Sequence[Path], folder: Path) -> list[Path]:
    """Copy ``rule_files`` into ``folder``, numbered so that two files of one name from
    different folders both survive; the copies' paths, in order. The server reads its own
    copies, so a file edited (or removed) while it runs does not change what it evaluates."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for index, source in enumerate(rule_files):
        copy = folder / f"{index:02d}-{source.name}"
        shutil.copyfile(source, copy)
        copies.append(copy)
    return copies


def _cleanup(proc: subprocess.Popen[bytes] | None, workdir: Path, timeout_s: float) -> None:
    if proc is not None:
        stop_process(proc, timeout_s)
    remove_folder(workdir)


class PrometheusServer:
    """A Prometheus process on 127.0.0.1, its configuration and data in a temporary folder.

    Use it as a context manager, or call ``start`` and ``stop``. Should neither happen, a
    finalizer stops the process and removes the folder when the object is collected or
    the interpreter exits.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] = DEFAULT_BINARY,
        scrape_interval_seconds: float = 1.0,
        evaluation_interval_seconds: float = 1.0,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        rule_files: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        self.binary = Path(binary)
        self.rule_files = tuple(Path(path) for path in rule_files)
        self.scrape_interval_seconds = scrape_interval_seconds
        self.evaluation_interval_seconds = evaluation_interval_seconds
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._port: int | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it answers ``/-/ready``."""
        if self._proc is not None:
            raise RuntimeError("Prometheus is already running")
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            raise PrometheusNotInstalledError(
                f"{self.binary} not found: run `make setup` (it installs the Debian package "
                "`prometheus`), or pass binary= to PrometheusServer"
            )
        workdir = temporary_folder("gelu-prometheus-")
        self._workdir = workdir
        self._finalizer = weakref.finalize(self, _cleanup, None, workdir, self.stop_timeout_s)
        try:
            self.set_targets([])
            config_path = workdir / "prometheus.yml"
            config = render_config(
                self.targets_path,
                scrape_interval_seconds=self.scrape_interval_seconds,
                evaluation_interval_seconds=self.evaluation_interval_seconds,
                rule_files=copy_rule_files(self.rule_files, workdir / "rules"),
            )
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        except BaseException:
            self.stop()
            raise
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._launch(config_path)
                try:
                    self._wait_ready()
                    break
                except PrometheusStartError:
                    port_taken = "address already in use" in self.log_tail()
                    if not port_taken or attempt == _START_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, config_path: Path) -> None:
        """Start the process on a port that was free a moment ago."""
        assert self._workdir is not None
        assert self._finalizer is not None
        if self._proc is not None:  # an earlier attempt that lost its port
            stop_process(self._proc, self.stop_timeout_s)
        self.log_path.unlink(missing_ok=True)
        port = free_port()
        args: list[str | os.PathLike[str]] = [
            self.binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self._workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
        ]
        proc = start_process(args, log_path=self.log_path, cwd=self._workdir)
        self._proc, self._port = proc, port
        # The safety net now owns the process as well as the folder.
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, proc, self._workdir, self.stop_timeout_s)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        problem = wait_until_ready(
            self._proc, f"{self.url}/-/ready", self.startup_timeout_s, poll_s=0.05
        )
        if problem is not None:
            raise PrometheusStartError(f"Prometheus {problem} while starting:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the process (its group included) and remove the temporary folder. Idempotent."""
        proc, self._proc = self._proc, None
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.detach()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            _cleanup(proc, workdir, self.stop_timeout_s)
        elif proc is not None:
            stop_process(proc, self.stop_timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        if self._port is None or self._proc is None:
            raise RuntimeError("Prometheus is not running")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("Prometheus is not started")
        return self._workdir

    @property
    def targets_path(self) -> Path:
        """The file-based discovery file (JSON) Prometheus watches."""
        return self.workdir / "targets.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- targets -----------------------------------------------------------------------

    def set_targets(self, targets: Iterable[ScrapeTarget], *, group: str | None = None) -> None:
        """Replace the scrape targets (of ``group``, if given; the others stay): write a
        temporary file, then rename it over the old one, so Prometheus never reads a
        half-written file."""
        groups = [{"targets": [t.address], "labels": dict(t.labels)} for t in targets]
        path = self.targets_path if group is None else group_targets_path(self.targets_path, group)
        fd, tmp = tempfile.mkstemp(prefix=".targets-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(groups, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def active_targets(self) -> list[dict[str, Any]]:
        """The active targets as ``/api/v1/targets`` reports them (labels, health ...)."""
        with urllib.request.urlopen(
            f"{self.url}/api/v1/targets?state=active", timeout=5.0
        ) as response:
            data = json.load(response)
        targets: list[dict[str, Any]] = data["data"]["activeTargets"]
        return targets

    def rule_groups(self) -> list[dict[str, Any]]:
        """The rule groups loaded, as ``/api/v1/rules`` reports them (name, file, rules ...)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=5.0) as response:
            data = json.load(response)
        groups: list[dict[str, Any]] = data["data"]["groups"]
        return groups

    def wait_for_targets(self, count: int, *, timeout_s: float = 20.0) -> None:
        """Wait until ``count`` targets are active and healthy (scraped at least once)."""
        deadline = time.monotonic() + timeout_s
        while True:
            targets = self.active_targets()
            healthy = [t for t in targets if t.get("health") == "up"]
            if len(targets) == count and len(healthy) == count:
                return
            if time.monotonic() > deadline:
                states = [
                    (t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in targets
                ]
                raise TimeoutError(
                    f"expected {count} healthy targets within {timeout_s}s: {states}"
                )
            time.sleep(0.1)
