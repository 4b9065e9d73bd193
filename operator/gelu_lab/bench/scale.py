"""The scale benchmark: one operator, N concurrent rollouts, a real Prometheus.

Per N (``--rollouts``, default 100, 300 and 1000), side by side in one run:

- the API is a light in-memory one over HTTP in this process
  (:mod:`gelu_lab.bench.scale_api`), counting every request it serves: the sandbox's faithful
  emulator could not serve 1000 rollouts from one core, and the operator waited on it;
- Prometheus is the real one (:class:`~gelu_lab.sandbox.prometheus.PrometheusServer`),
  scraping a synthetic exporter here that serves Triton's series (and the GELU models' output
  metrics) for every arm's one pod, labelled ``namespace``, ``rollout``, ``arm`` and ``pod``
  as the sandbox's kubelet labels its scrape targets; it counts its own query requests
  (``prometheus_http_requests_total``);
- the operator runs in a process of its own (:mod:`gelu_lab.bench.scale_operator`: the real
  controller and Kopf handlers), so its CPU time and peak RSS are its own;
- the rollouts have the probe and the sampled comparison off (no Triton), their Deployments
  are ready as soon as written (the light API's kubelet), and their traffic mode is
  ReplicaRatio.

The benchmark waits until every rollout has been analysed once (warm-up: created, started,
first queries), then measures until every rollout has been analysed ``ticks`` more times.
A *tick* is one analysis interval of one rollout. The figures: reconcile latency (one timer
firing's ``Controller.reconcile``, queueing inside the operator included) P50 and P99,
Prometheus queries and API requests per rollout per tick, the operator's CPU seconds per
tick of all N rollouts, its peak RSS, and each figure's growth against the first run.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from gelu_lab.bench.scale_api import LightAPI, serve_light_api
from gelu_lab.sandbox.emulator_server import write_kubeconfig
from gelu_lab.sandbox.processes import (
    http_get,
    remove_folder,
    start_process,
    stop_process,
    temporary_folder,
)
from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_rollout.resources.crd import render_crd
from gelu_rollout.resources.names import label_value
from gelu_rollout.spec.resource import GROUP, KIND, PLURAL, VERSION

DEFAULT_ROLLOUTS: Final = (100, 300, 1000)
DEFAULT_TICKS: Final = 2
DEFAULT_INTERVAL_SECONDS: Final = 30
DEFAULT_SCRAPE_INTERVAL_SECONDS: Final = 5.0
ROLLOUTS_PER_NAMESPACE: Final = 50
MODEL: Final = "gelu_mlp"
REQUESTS_PER_SECOND: Final = 20.0
"""Each synthetic pod's traffic: enough for the error-rate gate's minimum per interval."""

QUERY_HANDLERS: Final = frozenset({"/api/v1/query", "/api/v1/query_range"})


# -- the synthetic Triton series ---------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    rollout: str
    arm: str
    variant: str

    @property
    def labels(self) -> str:
        name = f"{self.rollout}-{self.arm}-0"
        return (
            f'namespace="{self.namespace}",rollout="{label_value(self.rollout)}",'
            f'arm="{self.arm}",pod="{name}",model="{MODEL}"'
        )


class TritonExporter:
    """``/metrics`` for every pod of every rollout, as Triton and the GELU models export them:
    counters that grow at :data:`REQUESTS_PER_SECOND`, the same for both arms (a healthy
    candidate), so every gate has data and none fails."""

    def __init__(self, pods: Sequence[Pod]) -> None:
        self.pods = list(pods)
        self.started = time.monotonic()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bench-exporter", daemon=True
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def render(self) -> str:
        seconds = time.monotonic() - self.started
        success = REQUESTS_PER_SECOND * seconds
        failure = success * 1e-4  # a tenth of the 99.9% SLO's budget: no burn-rate alarm
        outputs = success * 8  # eight output values per request
        lines: list[str] = []
        add = lines.append
        for pod in self.pods:
            labels = pod.labels
            add(f'nv_inference_request_success{{{labels},version="1"}} {success:.3f}')
            add(
                f'nv_inference_request_failure{{{labels},version="1",reason="REJECTED"}} '
                f"{failure:.3f}"
            )
            add(f'nv_inference_request_duration_us{{{labels},version="1"}} {success * 2000:.1f}')
            add(f'nv_inference_queue_duration_us{{{labels},version="1"}} {success * 100:.1f}')
            add(
                f'nv_inference_compute_infer_duration_us{{{labels},version="1"}} '
                f"{success * 1500:.1f}"
            )
            for quantile, value in (("0.5", 2000.0), ("0.99", 5000.0)):
                add(
                    f'nv_inference_request_summary_us{{{labels},version="1",'
                    f'quantile="{quantile}"}} {value}'
                )
            variant = f'variant="{pod.variant}"'
            add(f"gelu_nonfinite_outputs_total{{{labels},{variant}}} 0")
            for le, share in (("-1", 0.1), ("0", 0.5), ("1", 0.9), ("+Inf", 1.0)):
                count = outputs * share
                add(f'gelu_output_value_bucket{{{labels},{variant},le="{le}"}} {count:.1f}')
        return "\n".join(lines) + "\n"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per scrape is noise

        return Handler

    def __enter__(self) -> TritonExporter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- the rollouts ------------------------------------------------------------------------------


def namespace_of(index: int) -> str:
    return f"bench-{index // ROLLOUTS_PER_NAMESPACE:03d}"


def rollout_manifest(index: int, interval_seconds: int) -> dict[str, Any]:
    """One rollout: exact against tanh, probe and sampled comparison off (no Triton)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": f"r{index:04d}", "namespace": namespace_of(index)},
        "spec": {
            "model": {"name": MODEL},
            "baseline": {"variant": "exact"},
            "candidate": {"variant": "tanh"},
            "analysis": {
                "intervalSeconds": interval_seconds,
                "probe": {"enabled": False},
                "outputSample": {"enabled": False},
            },
        },
    }


# -- the operator's process --------------------------------------------------------------------


def process_cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User and system CPU time of a process so far (all its threads), or of one of its
    threads: ``thread=pid`` is its main thread, the operator's event loop."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def prometheus_counts(url: str) -> tuple[int, float]:
    """How many query requests Prometheus has answered, and its CPU seconds (its own
    counters)."""
    status, body = http_get(f"{url}/metrics", 10.0)
    if status != 200:
        raise RuntimeError(f"Prometheus' own metrics answered {status}")
    queries, cpu = 0.0, 0.0
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "process_cpu_seconds":
            cpu = sum(sample.value for sample in family.samples)
        if family.name != "prometheus_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("handler") in QUERY_HANDLERS:
                queries += sample.value
    return int(queries), cpu


@dataclass(frozen=True)
class Reconcile:
    key: tuple[str, str]
    start: float
    end: float
    analysed: bool


class Records:
    """The operator's reconcile records, read as it writes them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.all: list[Reconcile] = []
        self._offset = 0

    def read(self) -> list[Reconcile]:
        if not self.path.exists():
            return self.all
        with self.path.open("rb") as file:
            file.seek(self._offset)
            chunk = file.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            row = json.loads(line)
            self.all.append(
                Reconcile((row["ns"], row["name"]), row["start"], row["end"], row["analysed"])
            )
        return self.all


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# -- one run -----------------------------------------------------------------------------------


@dataclass
class ScaleRun:
    rollouts: int
    reconcile_p50_s: float
    reconcile_p99_s: float
    analysis_reconcile_p50_s: float
    analysis_reconcile_p99_s: float
    prom_queries_per_rollout_tick: float
    api_requests_per_rollout_tick: float
    cpu_s_per_tick: float
    loop_cpu_s_per_tick: float
    """The event loop's thread's share of ``cpu_s_per_tick`` (Kopf, the controller, the API
    client); the rest is the Prometheus queries' threads."""
    cpu_share_of_one_core: float
    peak_rss_mb: float
    achieved_interval_s: float
    """Seconds between two analyses of one rollout, on average: above the interval, the
    operator did not keep up."""
    ticks_measured: float
    reconciles: int
    analyses: int
    never_analysed: int
    window_s: float
    warmup_s: float
    complete: bool
    api_cpu_share_of_one_core: float
    """This process's: the API, the exporter and the benchmark itself."""
    prometheus_cpu_share_of_one_core: float
    api_requests_by_kind: dict[str, float] = field(default_factory=dict)


async def _wait_until(
    records: Records,
    keys: set[tuple[str, str]],
    since: float,
    count: int,
    timeout_s: float,
    operator: subprocess.Popen[bytes],
) -> bool:
    """Until every rollout of ``keys`` has ``count`` analysed reconciles started after
    ``since``; False if ``timeout_s`` passed first or the operator exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and operator.poll() is None:
        analysed = Counter(r.key for r in records.read() if r.analysed and r.start >= since)
        if all(analysed[key] >= count for key in keys):
            return True
        await asyncio.sleep(0.5)
    return False


async def run_scale(
    rollouts: int,
    *,
    ticks: int = DEFAULT_TICKS,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    timer_seconds: float | None = None,
    scrape_interval_seconds: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
    progress: Callable[[str], None] = lambda _: None,
    profile: Path | None = None,
) -> ScaleRun:
    """One operator against ``rollouts`` concurrent rollouts; see the module's docstring.
    ``timer_seconds``: the operator's timer (``--tick-seconds``), default the interval;
    ``profile``: cProfile the operator's event loop's thread over the measured window (the
    Prometheus queries' worker threads are not in it) and write its stats there."""
    timer = float(timer_seconds if timer_seconds is not None else interval_seconds)
    workdir = temporary_folder("gelu-bench-scale-")
    pods = [
        Pod(namespace_of(i), f"r{i:04d}", arm, variant)
        for i in range(rollouts)
        for arm, variant in (("baseline", "exact"), ("candidate", "tanh"))
    ]
    keys = {(namespace_of(i), f"r{i:04d}") for i in range(rollouts)}
    namespaces = sorted({key[0] for key in keys})
    try:
        with (
            TritonExporter(pods) as exporter,
            PrometheusServer(scrape_interval_seconds=scrape_interval_seconds) as prometheus,
        ):
            prometheus.set_targets([ScrapeTarget(exporter.address, {"component": "triton"})])
            api = LightAPI()
            api.create(
                api.resource("apiextensions.k8s.io/v1", "customresourcedefinitions"), render_crd()
            )
            for namespace in namespaces:
                api.create(api.resource("v1", "namespaces"), {"metadata": {"name": namespace}})
            progress(f"{rollouts} rollouts: creating them")
            kind = api.resource(f"{GROUP}/{VERSION}", PLURAL)
            for index in range(rollouts):
                api.create(kind, rollout_manifest(index, interval_seconds))
            async with serve_light_api(api) as url:
                kubeconfig = write_kubeconfig(workdir / "kubeconfig", url)
                records = Records(workdir / "reconciles.jsonl")
                operator = start_process(
                    [
                        sys.executable,
                        "-m",
                        "gelu_lab.bench.scale_operator",
                        *(["--profile", str(profile)] if profile is not None else []),
                        "--kubeconfig",
                        str(kubeconfig),
                        "--prometheus",
                        prometheus.url,
                        "--records",
                        str(records.path),
                        "--tick-seconds",
                        f"{timer:g}",
                        "--scrape-interval-seconds",
                        f"{scrape_interval_seconds:g}",
                    ],
                    log_path=workdir / "operator.log",
                )
                try:
                    return await _measure(
                        rollouts,
                        keys,
                        records,
                        operator,
                        api,
                        prometheus.url,
                        ticks=ticks,
                        interval_seconds=interval_seconds,
                        timer_seconds=timer,
                        progress=progress,
                        log=workdir / "operator.log",
                        profile=profile,
                    )
                finally:
                    # The API keeps serving while Kopf stops: it may still write.
                    await asyncio.to_thread(stop_process, operator, 20.0)
    finally:
        remove_folder(workdir)


async def _measure(
    rollouts: int,
    keys: set[tuple[str, str]],
    records: Records,
    operator: subprocess.Popen[bytes],
    api: LightAPI,
    prometheus_url: str,
    *,
    ticks: int,
    interval_seconds: int,
    timer_seconds: float,
    progress: Callable[[str], None],
    log: Path,
    profile: Path | None = None,
) -> ScaleRun:
    began = time.monotonic()
    progress(f"{rollouts} rollouts: warming up (started and analysed once)")
    # Creation, the start, and one analysis: a few timer periods, more where it is slow.
    warm = await _wait_until(records, keys, 0.0, 1, 60 + 3 * timer_seconds, operator)
    if not any(r.analysed for r in records.read()):
        raise RuntimeError(
            f"no rollout of {rollouts} was analysed within the warm-up (operator "
            f"{'exited ' + str(operator.returncode) if operator.poll() is not None else 'running'}"
            f"); its log ends:\n{_tail(log)}"
        )
    warmup_s = time.monotonic() - began
    t0 = time.monotonic()
    cpu0, bench_cpu0 = process_cpu_seconds(operator.pid), time.process_time()
    loop0 = process_cpu_seconds(operator.pid, operator.pid)
    api0, kinds0 = sum(api.served.values()), Counter(api.served)
    prom0, prom_cpu0 = prometheus_counts(prometheus_url)
    if profile is not None:
        operator.send_signal(signal.SIGUSR1)  # the profile covers the window
    progress(f"{rollouts} rollouts: measuring {ticks} ticks of {interval_seconds}s")
    # A saturated operator analyses each rollout less often than the interval: the window
    # ends anyway, and the achieved interval says so.
    complete = await _wait_until(
        records, keys, t0, ticks, ticks * max(interval_seconds, timer_seconds) * 1.5 + 15, operator
    )
    t1 = time.monotonic()
    cpu1, bench_cpu1 = process_cpu_seconds(operator.pid), time.process_time()
    loop1 = process_cpu_seconds(operator.pid, operator.pid)
    api1, kinds = sum(api.served.values()), Counter(api.served)
    prom1, prom_cpu1 = prometheus_counts(prometheus_url)
    if profile is not None:
        await _write_profile(operator, profile)
    kinds.subtract(kinds0)
    rss = peak_rss_mb(operator.pid)
    window = [r for r in records.read() if r.start >= t0 and r.end <= t1]
    analysed = [r for r in window if r.analysed]
    durations = [r.end - r.start for r in window]
    analysis_durations = [r.end - r.start for r in analysed]
    n_analyses = max(len(analysed), 1)
    ticks_measured = n_analyses / rollouts  # analysis intervals of all rollouts together
    seconds = t1 - t0
    return ScaleRun(
        rollouts=rollouts,
        reconcile_p50_s=percentile(durations, 0.5),
        reconcile_p99_s=percentile(durations, 0.99),
        analysis_reconcile_p50_s=percentile(analysis_durations, 0.5),
        analysis_reconcile_p99_s=percentile(analysis_durations, 0.99),
        prom_queries_per_rollout_tick=(prom1 - prom0) / n_analyses,
        api_requests_per_rollout_tick=(api1 - api0) / n_analyses,
        cpu_s_per_tick=(cpu1 - cpu0) / ticks_measured,
        loop_cpu_s_per_tick=(loop1 - loop0) / ticks_measured,
        cpu_share_of_one_core=(cpu1 - cpu0) / seconds,
        peak_rss_mb=rss,
        achieved_interval_s=seconds / ticks_measured,
        ticks_measured=ticks_measured,
        reconciles=len(window),
        analyses=len(analysed),
        never_analysed=len(keys - {r.key for r in analysed}),
        window_s=seconds,
        warmup_s=warmup_s,
        complete=warm and complete,
        api_cpu_share_of_one_core=(bench_cpu1 - bench_cpu0) / seconds,
        prometheus_cpu_share_of_one_core=(prom_cpu1 - prom_cpu0) / seconds,
        api_requests_by_kind={
            kind: count / n_analyses for kind, count in sorted(kinds.items()) if count
        },
    )


async def _write_profile(operator: subprocess.Popen[bytes], profile: Path) -> None:
    """Have the operator write its profile of the window, and wait until it has."""
    profile.unlink(missing_ok=True)
    operator.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not profile.exists():
        if time.monotonic() > deadline or operator.poll() is not None:
            raise RuntimeError(f"the operator wrote no profile to {profile}")
        await asyncio.sleep(0.5)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


# -- the benchmark -----------------------------------------------------------------------------

GROWTH_FIGURES: Final = (
    "reconcile_p50_s",
    "reconcile_p99_s",
    "prom_queries_per_rollout_tick",
    "api_requests_per_rollout_tick",
    "cpu_s_per_tick",
    "peak_rss_mb",
)


def growth(runs: Sequence[ScaleRun]) -> list[dict[str, float]]:
    """Each run's figures as ratios to the first run's, beside the ratio of rollouts."""
    if not runs:
        return []
    first = asdict(runs[0])
    rows = []
    for run in runs:
        figures = asdict(run)
        row = {"rollouts": run.rollouts, "rollouts_ratio": run.rollouts / runs[0].rollouts}
        for name in GROWTH_FIGURES:
            base = first[name]
            row[f"{name}_ratio"] = figures[name] / base if base else math.nan
        rows.append(row)
    return rows


def benchmark_scale(
    rollouts: Sequence[int] = DEFAULT_ROLLOUTS,
    *,
    ticks: int = DEFAULT_TICKS,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    timer_seconds: float | None = None,
    scrape_interval_seconds: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
    progress: Callable[[str], None] = lambda _: None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Every N of ``rollouts`` in turn, in one process run: the report. With ``profile``,
    the operator's cProfile stats of each run go to ``<profile>.<N>``."""
    runs = [
        asyncio.run(
            run_scale(
                n,
                ticks=ticks,
                interval_seconds=interval_seconds,
                timer_seconds=timer_seconds,
                scrape_interval_seconds=scrape_interval_seconds,
                progress=progress,
                profile=None if profile is None else profile.with_name(f"{profile.name}.{n}"),
            )
        )
        for n in rollouts
    ]
    return {
        "settings": {
            "ticks": ticks,
            "interval_seconds": interval_seconds,
            "timer_seconds": timer_seconds if timer_seconds is not None else interval_seconds,
            "scrape_interval_seconds": scrape_interval_seconds,
            "rollouts_per_namespace": ROLLOUTS_PER_NAMESPACE,
            "cpus": os.cpu_count(),
        },
        "runs": [asdict(run) for run in runs],
        "growth": growth(runs),
    }


Column = tuple[str, str, str]
"""(the run's key, the heading, the format of its cells)."""


def _table(title: str, columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> Table:
    """One row per entry of ``rows``, one right-aligned column per entry of ``columns``."""
    table = Table(title=title)
    for _, heading, _ in columns:
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(row[key]) for key, _, fmt in columns))
    return table


def print_scale_report(report: dict[str, Any], console: Console) -> None:
    settings = report["settings"]
    title = (
        f"one operator, analysis every {settings['interval_seconds']}s "
        f"(timer {settings['timer_seconds']:g}s), {settings['ticks']} ticks measured"
    )
    runs = report["runs"]
    figures: tuple[Column, ...] = (
        ("rollouts", "rollouts", "{:d}"),
        ("reconcile_p50_s", "reconcile P50 s", "{:.3f}"),
        ("reconcile_p99_s", "reconcile P99 s", "{:.3f}"),
        ("analysis_reconcile_p99_s", "analysing P99 s", "{:.3f}"),
        ("prom_queries_per_rollout_tick", "queries/rollout/tick", "{:.1f}"),
        ("api_requests_per_rollout_tick", "API req/rollout/tick", "{:.1f}"),
        ("cpu_s_per_tick", "CPU s/tick", "{:.2f}"),
        ("loop_cpu_s_per_tick", "of it event loop", "{:.2f}"),
        ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    )
    console.print(_table(title, figures, runs))
    machine: tuple[Column, ...] = (
        ("rollouts", "rollouts", "{:d}"),
        ("achieved_interval_s", "s between analyses", "{:.1f}"),
        ("never_analysed", "never analysed", "{:d}"),
        ("cpu_share_of_one_core", "operator (cores)", "{:.2f}"),
        ("api_cpu_share_of_one_core", "API + exporter (cores)", "{:.2f}"),
        ("prometheus_cpu_share_of_one_core", "Prometheus (cores)", "{:.2f}"),
    )
    console.print(_table("during the window: did it keep up, and who used the CPUs", machine, runs))
    ratios: tuple[Column, ...] = (
        ("rollouts_ratio", "rollouts", "{:.2f}x"),
        ("reconcile_p50_s_ratio", "P50", "{:.2f}x"),
        ("reconcile_p99_s_ratio", "P99", "{:.2f}x"),
        ("prom_queries_per_rollout_tick_ratio", "queries/rollout/tick", "{:.2f}x"),
        ("api_requests_per_rollout_tick_ratio", "API req/rollout/tick", "{:.2f}x"),
        ("cpu_s_per_tick_ratio", "CPU s/tick", "{:.2f}x"),
        ("peak_rss_mb_ratio", "peak RSS", "{:.2f}x"),
    )
    console.print(_table("growth against the first run", ratios, report["growth"]))
    kinds = Table(title="API requests per rollout per tick, by kind")
    kinds.add_column("request")
    for run in report["runs"]:
        kinds.add_column(f"N={run['rollouts']}", justify="right")
    names = sorted({k for run in report["runs"] for k in run["api_requests_by_kind"]})
    for name in names:
        kinds.add_row(
            name, *(f"{run['api_requests_by_kind'].get(name, 0):.2f}" for run in report["runs"])
        )
    console.print(kinds)
    for run in report["runs"]:
        if not run["complete"]:
            console.print(
                f"[yellow]N={run['rollouts']}: not every rollout was analysed {settings['ticks']} "
                "times in the time allowed; the figures cover what was.[/yellow]"
            )
