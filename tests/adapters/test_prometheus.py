"""The observer against a real Prometheus scraping loopback targets the test controls.

One Prometheus and all targets start once for the module (discovery of new targets
takes 5 to 10 s); each test reads its own rollout. The "exact" pods stamp their samples
with explicit timestamps, so the test knows every sample Prometheus holds and can expect
exact numbers; the "live" pods are scraped like Triton is (no timestamps).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_rollout.adapters.prometheus import PrometheusObserver
from gelu_rollout.analysis.observations import WindowCounts
from tests.metrics_targets import MetricsTarget, PodCounters, triton_metrics

NS = 'team "a"\\b'
ROLLOUT = 'canary"} or vector(1) or up{x="\n'
MODEL = 'gelu"\\\nmlp'
LIVE = ("default", "live", "gelu_mlp")
BUCKETS = ("-1", "0", "1", "+Inf")


def counters(
    success: float,
    failures: float,
    nonfinite: float,
    cumulative: tuple[float, float, float, float],
    p99_us: float,
) -> PodCounters:
    return PodCounters(
        success=success,
        failures={"BACKEND": failures},
        nonfinite=nonfinite,
        buckets=tuple(zip(BUCKETS, cumulative, strict=True)),
        p99_us=p99_us,
    )


ZERO = counters(0, 0, 0, (0, 0, 0, 0), 1000)
# Per exact pod: its counters at T1 and at T2 (T0: all zero).
EXACT = {
    "b-0": (
        counters(400, 4, 0, (100, 250, 380, 404), 2000),
        counters(990, 10, 0, (200, 600, 950, 1000), 2100),
    ),
    "c-0": (
        counters(300, 12, 5, (50, 150, 280, 312), 3000),
        counters(600, 20, 9, (80, 300, 590, 620), 3300),
    ),
    "c-1": (
        counters(200, 0, 1, (20, 120, 190, 200), 4500),
        counters(500, 1, 1, (40, 280, 480, 501), 4000),
    ),
}


@dataclass
class Pod:
    name: str
    arm: str
    target: MetricsTarget
    namespace: str
    rollout: str
    model: str


@dataclass
class Stack:
    prometheus: PrometheusServer
    pods: dict[str, Pod]
    t0_ms: int

    def query(self, expr: str) -> list[dict[str, object]]:
        answer = requests.get(
            f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=5
        )
        answer.raise_for_status()
        result: list[dict[str, object]] = answer.json()["data"]["result"]
        return result

    def wait_scraped(
        self, pods: list[str], *, stamp_ms: int | None = None, success: float | None = None
    ) -> None:
        """Wait until Prometheus holds the pods' latest sample (by its stamp or its value)."""
        selector = '{pod=~"' + "|".join(pods) + '"}'
        if stamp_ms is not None:
            expr = f"timestamp(nv_inference_request_success{selector}) * 1000 >= {stamp_ms}"
        else:
            expr = f"nv_inference_request_success{selector} == {success}"
        deadline = time.monotonic() + 10
        while len(self.query(expr)) < len(pods):
            assert time.monotonic() < deadline, f"{pods} not scraped: {expr}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    t0_ms = int(time.time() * 1000) - 30_000
    specs = [
        ("b-0", "baseline", NS, ROLLOUT, MODEL),
        ("c-0", "candidate", NS, ROLLOUT, MODEL),
        ("c-1", "candidate", NS, ROLLOUT, MODEL),
        # Same namespace and model, another rollout: must never be counted.
        ("decoy", "candidate", NS, "canary", MODEL),
        ("live-b", "baseline", *LIVE),
        ("live-c", "candidate", *LIVE),
        ("partial-b", "baseline", "default", "partial", "gelu_mlp"),
    ]
    pods: dict[str, Pod] = {}
    with PrometheusServer(scrape_interval_seconds=1.0) as prometheus:
        try:
            for name, arm, namespace, rollout, model in specs:
                pods[name] = Pod(name, arm, MetricsTarget(), namespace, rollout, model)
            for name in EXACT:
                pods[name].target.serve(triton_metrics(MODEL, ZERO, timestamp_ms=t0_ms))
            decoy = counters(10**6, 10**5, 10**4, (1, 2, 3, 10**6), 9e9)
            pods["decoy"].target.serve(triton_metrics(MODEL, decoy))
            pods["live-b"].target.serve(triton_metrics("gelu_mlp", ZERO))
            # An exporter that has not created its failure counters yet.
            pods["live-c"].target.serve(triton_metrics("gelu_mlp", ZERO, failure_series=False))
            pods["partial-b"].target.serve(triton_metrics("gelu_mlp", ZERO))
            prometheus.set_targets(
                ScrapeTarget(
                    p.target.address,
                    {"namespace": p.namespace, "rollout": p.rollout, "arm": p.arm, "pod": p.name},
                )
                for p in pods.values()
            )
            prometheus.wait_for_targets(len(pods))
            yield Stack(prometheus, pods, t0_ms)
        finally:
            for pod in pods.values():
                pod.target.close()


def at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.mark.prometheus
def test_counts_match_what_the_pods_served(stack: Stack) -> None:
    t1, t2 = stack.t0_ms + 5000, stack.t0_ms + 10000
    for step, stamp in ((0, t1), (1, t2)):
        for name, states in EXACT.items():
            stack.pods[name].target.serve(triton_metrics(MODEL, states[step], timestamp_ms=stamp))
        stack.wait_scraped(list(EXACT), stamp_ms=stamp)

    with PrometheusObserver(stack.prometheus.url, scrape_interval_seconds=1.0) as observer:
        # Evaluated at T2: the 30 s range holds T0 (zeros), T1 and T2; the 5 s window
        # starts exactly at T1 (Prometheus 2 ranges include their start).
        obs = observer.observe(NS, ROLLOUT, MODEL, 30, [5, 30], at_ms(t2))

    assert obs.missing_reason is None
    assert obs.at == at_ms(t2)
    b, c = obs.baseline, obs.candidate
    assert b is not None
    assert c is not None
    assert (b.requests, b.failures, b.nonfinite) == (1000, 10, 0)
    assert b.histogram == (200, 400, 350, 50)
    assert b.p99_ms == 2.1
    assert dict(b.windows) == {5: WindowCounts(596, 6), 30: WindowCounts(1000, 10)}
    # Two candidate pods: counts add up, the P99 is the worse pod's.
    assert (c.requests, c.failures, c.nonfinite) == (620 + 501, 21, 10)
    assert c.histogram == (80 + 40, 220 + 240, 290 + 200, 30 + 21)
    assert c.p99_ms == 4.0
    assert dict(c.windows) == {
        5: WindowCounts((620 - 312) + (501 - 200), 8 + 1),
        30: WindowCounts(1121, 21),
    }


@pytest.mark.prometheus
def test_live_scrapes_without_failure_series(stack: Stack) -> None:
    # Six scrapes of zeros first, so the range's samples span at least 5 s.
    history = 'count_over_time(nv_inference_request_success{pod=~"live-b|live-c"}[1m]) >= 6'
    deadline = time.monotonic() + 10
    while len(stack.query(history)) < 2:
        assert time.monotonic() < deadline, "live pods not scraped six times"
        time.sleep(0.2)
    served = {
        "live-b": counters(2000, 20, 0, (300, 1000, 1900, 2020), 1500),
        "live-c": counters(1000, 0, 4, (100, 500, 950, 1000), 2500),
    }
    stack.pods["live-b"].target.serve(triton_metrics("gelu_mlp", served["live-b"]))
    stack.pods["live-c"].target.serve(
        triton_metrics("gelu_mlp", served["live-c"], failure_series=False)
    )
    stack.wait_scraped(["live-b"], success=2000)
    stack.wait_scraped(["live-c"], success=1000)
    # The counters were zero when first scraped, less than 60 s ago.
    with PrometheusObserver(stack.prometheus.url, scrape_interval_seconds=1.0) as observer:
        obs = observer.observe(*LIVE, 60, [60], datetime.now(UTC))
    assert obs.missing_reason is None
    b, c = obs.baseline, obs.candidate
    assert b is not None
    assert c is not None
    # increase() extrapolates to the end of the range by less than 1.1 scrape intervals
    # (at most 1.1 / 5 here): each count is a little above what was served, and the same
    # factor applies to every series of one pod.
    scale = b.requests / 2020
    assert 1.0 <= scale < 1.25
    assert b.failures == pytest.approx(20 * scale)
    assert b.histogram == pytest.approx([300 * scale, 700 * scale, 900 * scale, 120 * scale])
    assert b.p99_ms == 1.5
    scale = c.requests / 1000
    assert 1.0 <= scale < 1.25
    # No failure series: zero failures, not missing data.
    assert c.failures == 0
    assert c.nonfinite == pytest.approx(4 * scale)
    assert c.windows[60] == WindowCounts(c.requests, 0)


@pytest.mark.prometheus
def test_an_arm_without_targets_is_missing_data(stack: Stack) -> None:
    with PrometheusObserver(stack.prometheus.url, scrape_interval_seconds=1.0) as observer:
        partial = observer.observe("default", "partial", "gelu_mlp", 30, [30], datetime.now(UTC))
        unknown = observer.observe("default", "nobody", "gelu_mlp", 30, [30], datetime.now(UTC))
    assert (partial.baseline, partial.candidate) == (None, None)
    assert partial.missing_reason == "no data for the candidate: requests over 30s is empty"
    assert (unknown.baseline, unknown.candidate) == (None, None)
    assert unknown.missing_reason == "no data for the baseline: requests over 30s is empty"


@pytest.mark.prometheus
def test_a_stopped_prometheus_is_missing_data() -> None:
    prometheus = PrometheusServer().start()
    url = prometheus.url
    prometheus.stop()
    started = time.monotonic()
    with PrometheusObserver(url, timeout_seconds=2) as observer:
        obs = observer.observe("ns", "r", "m", 60, [60, 720], datetime.now(UTC))
    assert time.monotonic() - started < 2
    assert (obs.baseline, obs.candidate) == (None, None)
    assert obs.missing_reason is not None
    assert obs.missing_reason.startswith(f"Prometheus unreachable at {url}")


def test_a_prometheus_that_never_answers_times_out() -> None:
    # Connections complete in the kernel's backlog; nothing ever reads or answers them.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with PrometheusObserver(url, timeout_seconds=0.5) as observer:
            obs = observer.observe("ns", "r", "m", 60, [60, 720], datetime.now(UTC))
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert (obs.baseline, obs.candidate) == (None, None)
    assert obs.missing_reason is not None
    assert obs.missing_reason.startswith(f"Prometheus at {url}")
    assert "within 0.5s" in obs.missing_reason


def test_an_error_answer_is_missing_data() -> None:
    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status":"error","errorType":"execution","error":"query timed out"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with PrometheusObserver(url) as observer:
            obs = observer.observe("ns", "r", "m", 60, [], datetime.now(UTC))
    finally:
        server.shutdown()
        server.server_close()
    assert (obs.baseline, obs.candidate) == (None, None)
    assert obs.missing_reason is not None
    assert obs.missing_reason.startswith("Prometheus query failed: HTTP Status Code 503")
    assert "query timed out" in obs.missing_reason


def test_a_naive_time_is_refused() -> None:
    with (
        PrometheusObserver("http://127.0.0.1:9") as observer,
        pytest.raises(ValueError, match="timezone"),
    ):
        observer.observe("ns", "r", "m", 60, [], datetime(2026, 3, 1))
