"""The operator side of the scale benchmark, run as a process of its own.

``python -m gelu_lab.bench.scale_operator`` wires the operator as ``gelu-rollout run`` does
(the real :class:`~gelu_rollout.controller.Controller`, the real Kopf handlers of
:func:`~gelu_rollout.handlers.build_registry`, the real Prometheus observer and Kubernetes
client) and adds two things the benchmark reads: every timer firing's reconcile, timed, one
JSON line each in ``--records`` (start and end on the system-wide monotonic clock, and whether
the firing queried Prometheus), and, with ``--profile PATH``, a cProfile of its event loop's
thread over the window the benchmark measures: the first SIGUSR1 starts it, the second writes
its stats to PATH (Kopf may take longer to stop 1000 timers than the benchmark waits, so the
stats are not left to the process's exit). A process of its own, so that its CPU time
and peak RSS are the operator's alone, not the API's, the exporter's or the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import kopf

from gelu_rollout.adapters.kube import login_for
from gelu_rollout.adapters.prometheus.observer import Observer, PrometheusObserver
from gelu_rollout.controller import Controller, TickResult
from gelu_rollout.handlers import build_registry
from gelu_rollout.metrics import OperatorMetrics
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.run import configure_logging, owned_objects_client
from gelu_rollout.spec.model import LatencyHistogramSource


@dataclass
class CountingObserver:
    """The real observer, remembering which rollouts it was asked about since last asked."""

    inner: Observer
    asked: set[tuple[str, str]] = field(default_factory=set)

    def observe(
        self,
        namespace: str,
        rollout: str,
        model: str,
        interval_seconds: float,
        burn_windows_seconds: Sequence[float],
        at: datetime,
        *,
        latency_histogram: LatencyHistogramSource | None = None,
        rollout_name: str | None = None,
    ) -> Observations:
        # Kopf runs one handler at a time per object, so one flag per rollout is enough.
        self.asked.add((namespace, rollout_name or rollout))
        return self.inner.observe(
            namespace,
            rollout,
            model,
            interval_seconds,
            burn_windows_seconds,
            at,
            latency_histogram=latency_histogram,
            rollout_name=rollout_name,
        )


@dataclass
class TimedController(Controller):
    """The controller, each reconcile timed and written as one JSON line to ``records``."""

    records: IO[str] | None = None
    counting: CountingObserver | None = None

    async def reconcile(self, body: Mapping[str, Any]) -> TickResult:
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        started = time.monotonic()
        try:
            return await super().reconcile(body)
        finally:
            ended = time.monotonic()
            analysed = False
            if self.counting is not None and key in self.counting.asked:
                self.counting.asked.discard(key)
                analysed = True
            if self.records is not None:
                line = {"ns": key[0], "name": key[1], "start": started, "end": ended}
                self.records.write(json.dumps(line | {"analysed": analysed}) + "\n")


@dataclass
class WindowProfile:
    """A cProfile of the event loop's thread, started and written on signals."""

    path: Path
    profiler: cProfile.Profile = field(default_factory=cProfile.Profile)
    running: bool = False

    def toggle(self) -> None:
        # Runs in the event loop's thread (a loop signal handler): the thread profiled.
        if not self.running:
            self.running = True
            self.profiler.enable()
            return
        self.profiler.disable()
        self.running = False
        partial = self.path.with_name(self.path.name + ".partial")
        self.profiler.dump_stats(partial)
        os.replace(partial, self.path)  # whole or absent, for the benchmark waiting on it


async def serve(args: argparse.Namespace) -> None:
    if args.profile is not None:
        profile = WindowProfile(Path(args.profile))
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, profile.toggle)
    login = login_for(args.kubeconfig, None)
    with (
        open(args.records, "a", encoding="utf-8", buffering=1) as records,
        PrometheusObserver(
            args.prometheus,
            args.prometheus_timeout,
            scrape_interval_seconds=args.scrape_interval_seconds,
        ) as prometheus,
    ):
        counting = CountingObserver(prometheus)
        kube = owned_objects_client(login)
        controller = TimedController(
            kube, counting, metrics=OperatorMetrics(), records=records, counting=counting
        )
        registry = build_registry(controller, tick_seconds=args.tick_seconds, login=login)
        try:
            # Kopf takes SIGTERM and SIGINT: the benchmark stops it with SIGTERM.
            await kopf.operator(registry=registry, clusterwide=True, standalone=True)
        finally:
            await kube.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--tick-seconds", type=float, required=True)
    parser.add_argument("--scrape-interval-seconds", type=float, required=True)
    parser.add_argument("--prometheus-timeout", type=float, default=5.0)
    parser.add_argument("--profile", help="cProfile the window between two SIGUSR1 to here")
    args = parser.parse_args(argv)
    configure_logging(verbose=False)
    # Kopf's per-firing lines at INFO are the operator's as it ships; keep them.
    logging.getLogger("kopf").setLevel(logging.INFO)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
