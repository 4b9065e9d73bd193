"""The observer against a real Prometheus scraping loopback targets the test controls.

One Prometheus and all targets start once for the module (discovery of new targets
takes 5 to 10 s); each test reads its own rollout. The "exact" pods stamp their samples
with explicit timestamps, so the test knows every sample Prometheus holds and can expect
exact numbers; the "live" pods are scraped like Triton is (no timestamps). The "gateway"
target plays a Gateway: a request-duration histogram per arm Service, stamped like the
exact pods.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_rollout.adapters.prometheus import PrometheusObserver
from gelu_rollout.analysis.observations import WindowCounts
from gelu_rollout.analysis.tail_latency import LatencyHistogram
from gelu_rollout.resources.names import service_name
from gelu_rollout.spec.model import LatencyHistogramSource
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


# Per exact pod at T2 (T1: 40% of it, T0: zero): Triton's cumulative microseconds.
# (request, queue, {compute part: us}); the baseline pod exports no queue time and only the
# infer part of compute; the candidate's two pods average 2 ms over their 1100 successes.
DURATIONS: dict[str, tuple[float, float | None, dict[str, float]]] = {
    "b-0": (990 * 1500.0, None, {"infer": 990 * 1200.0}),
    "c-0": (600 * 2500.0, 110_000.0, {"input": 55_000.0, "infer": 1_000_000.0, "output": 0.0}),
    "c-1": (500 * 1400.0, 0.0, {"input": 55_000.0, "infer": 650_000.0, "output": 110_000.0}),
}
SERVICES = {arm: service_name(ROLLOUT, arm) for arm in ("baseline", "candidate")}
GATEWAY_LE = ("0.001", "0.0025", "0.01", "+Inf")
# The Gateway's cumulative bucket counts per arm Service at T2 (T1: half, T0: zero).
GATEWAY = {
    SERVICES["baseline"]: (400, 900, 980, 1000),
    SERVICES["candidate"]: (100, 700, 1000, 1121),
    "someone-else": (10**6, 10**6, 10**6, 10**6),
}
LATENCY_SOURCE = LatencyHistogramSource.model_validate(
    {
        "metric": "gateway_request_duration_seconds_bucket",
        "armLabel": "destination_service",
        "matchers": [{"label": "destination_namespace", "value": NS}],
    }
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def duration_metrics(model: str, pod: str, share: float, stamp: str = "") -> str:
    """Triton's duration counters of an exact pod, ``share`` of their values at T2."""
    request, queue, compute = DURATIONS[pod]
    labels = f'{{model="{_escape(model)}",version="1"}}'
    lines = [f"nv_inference_request_duration_us{labels} {request * share}{stamp}"]
    if queue is not None:
        lines.append(f"nv_inference_queue_duration_us{labels} {queue * share}{stamp}")
    for part, us in compute.items():
        lines.append(f"nv_inference_compute_{part}_duration_us{labels} {us * share}{stamp}")
    return "\n".join(["# TYPE nv_inference_request_duration_us counter", *lines]) + "\n"


def gateway_metrics(share: float, stamp: str = "") -> str:
    lines = ["# TYPE gateway_request_duration_seconds histogram"]
    for service, cumulative in GATEWAY.items():
        for le, count in zip(GATEWAY_LE, cumulative, strict=True):
            labels = (
                f'destination_namespace="{_escape(NS)}",destination_service="{service}",le="{le}"'
            )
            lines.append(
                f"gateway_request_duration_seconds_bucket{{{labels}}} {count * share}{stamp}"
            )
    # Another namespace's Service of the same name: never counted.
    other = f'destination_namespace="prod",destination_service="{SERVICES["candidate"]}"'
    lines.append(f'gateway_request_duration_seconds_bucket{{{other},le="+Inf"}} 5e6{stamp}')
    return "\n".join(lines) + "\n"


def exact_page(name: str, counters: PodCounters, share: float, stamp_ms: int) -> str:
    page = triton_metrics(MODEL, counters, timestamp_ms=stamp_ms)
    return page + duration_metrics(MODEL, name, share, f" {stamp_ms}")


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
    gateway: MetricsTarget

    def query(self, expr: str) -> list[dict[str, object]]:
        answer = requests.get(
            f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=5
        )
        answer.raise_for_status()
        result: list[dict[str, object]] = answer.json()["data"]["result"]
        return result

    def wait_scraped(
        self,
        pods: list[str],
        *,
        stamp_ms: int | None = None,
        success: float | None = None,
        metric: str = "nv_inference_request_success",
        series: int | None = None,
    ) -> None:
        """Wait until Prometheus holds the pods' latest sample (by its stamp or its value)."""
        selector = '{pod=~"' + "|".join(pods) + '"}'
        if stamp_ms is not None:
            expr = f"timestamp({metric}{selector}) * 1000 >= {stamp_ms}"
        else:
            expr = f"{metric}{selector} == {success}"
        deadline = time.monotonic() + 10
        while len(self.query(expr)) < (len(pods) if series is None else series):
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
    gateway = MetricsTarget(gateway_metrics(0.0, f" {t0_ms}"))
    with PrometheusServer(scrape_interval_seconds=1.0) as prometheus:
        try:
            for name, arm, namespace, rollout, model in specs:
                pods[name] = Pod(name, arm, MetricsTarget(), namespace, rollout, model)
            for name in EXACT:
                pods[name].target.serve(exact_page(name, ZERO, 0.0, t0_ms))
            decoy = counters(10**6, 10**5, 10**4, (1, 2, 3, 10**6), 9e9)
            pods["decoy"].target.serve(triton_metrics(MODEL, decoy))
            pods["live-b"].target.serve(
                triton_metrics("gelu_mlp", ZERO) + live_durations(ZERO.success)
            )
            # An exporter that has not created its failure counters yet.
            pods["live-c"].target.serve(triton_metrics("gelu_mlp", ZERO, failure_series=False))
            pods["partial-b"].target.serve(triton_metrics("gelu_mlp", ZERO))
            prometheus.set_targets(
                [
                    *(
                        ScrapeTarget(
                            p.target.address,
                            {
                                "namespace": p.namespace,
                                "rollout": p.rollout,
                                "arm": p.arm,
                                "pod": p.name,
                            },
                        )
                        for p in pods.values()
                    ),
                    # The Gateway is no pod of any rollout: no rollout or arm labels.
                    ScrapeTarget(gateway.address, {"pod": "gateway"}),
                ]
            )
            prometheus.wait_for_targets(len(pods) + 1)
            yield Stack(prometheus, pods, t0_ms, gateway)
        finally:
            for pod in pods.values():
                pod.target.close()
            gateway.close()


def live_durations(success: float) -> str:
    """live-b's duration counters: 3 ms a request, 1 ms of it queued, 1.5 ms computing."""
    labels = '{model="gelu_mlp",version="1"}'
    return (
        f"nv_inference_request_duration_us{labels} {success * 3000}\n"
        f"nv_inference_queue_duration_us{labels} {success * 1000}\n"
        f"nv_inference_compute_infer_duration_us{labels} {success * 1500}\n"
    )


def at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.mark.prometheus
def test_counts_match_what_the_pods_served(stack: Stack) -> None:
    t1, t2 = stack.t0_ms + 5000, stack.t0_ms + 10000
    for step, stamp, share, gateway_share in ((0, t1, 0.4, 0.5), (1, t2, 1.0, 1.0)):
        for name, states in EXACT.items():
            stack.pods[name].target.serve(exact_page(name, states[step], share, stamp))
        stack.gateway.serve(gateway_metrics(gateway_share, f" {stamp}"))
        stack.wait_scraped(list(EXACT), stamp_ms=stamp)
        buckets = 4 * len(GATEWAY) + 1
        stack.wait_scraped(
            ["gateway"],
            stamp_ms=stamp,
            metric="gateway_request_duration_seconds_bucket",
            series=buckets,
        )

    with PrometheusObserver(stack.prometheus.url, scrape_interval_seconds=1.0) as observer:
        # Evaluated at T2: the 30 s range holds T0 (zeros), T1 and T2; the 5 s window
        # starts exactly at T1 (Prometheus 2 ranges include their start).
        obs = observer.observe(
            NS,
            ROLLOUT,
            MODEL,
            30,
            [5, 30],
            at_ms(t2),
            latency_histogram=LATENCY_SOURCE,
            rollout_name=ROLLOUT,
        )

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
    # Means per successful request over the tick, added up across pods before dividing.
    assert b.latency_mean_ms == 1.5
    assert b.compute_ms == pytest.approx(1.2)  # infer alone: all this pod exports
    assert b.queue_ms is None  # no queue series: that field alone is unknown
    assert c.latency_mean_ms == pytest.approx((1_500_000 + 700_000) / 1100 / 1000)
    assert c.queue_ms == pytest.approx(0.1)
    assert c.compute_ms == pytest.approx((110_000 + 1_650_000 + 110_000) / 1100 / 1000)
    # The Gateway's histogram per arm Service, in milliseconds, per bucket, +Inf last.
    assert b.latency_histogram == LatencyHistogram((1.0, 2.5, 10.0), (400, 500, 80, 20))
    assert c.latency_histogram == LatencyHistogram((1.0, 2.5, 10.0), (100, 600, 300, 121))

    # Without a histogram source nothing of the Gateway is asked; the rest is the same.
    with PrometheusObserver(stack.prometheus.url, scrape_interval_seconds=1.0) as observer:
        plain = observer.observe(NS, ROLLOUT, MODEL, 30, [5, 30], at_ms(t2))
    assert plain.candidate is not None
    assert plain.candidate.latency_histogram is None
    assert plain.candidate.requests == c.requests
    assert plain.candidate.latency_mean_ms == c.latency_mean_ms


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
    stack.pods["live-b"].target.serve(
        triton_metrics("gelu_mlp", served["live-b"]) + live_durations(2000)
    )
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
    # Extrapolation scales a pod's counters alike: its mean is exact.
    assert b.latency_mean_ms == pytest.approx(3.0)
    assert b.queue_ms == pytest.approx(1.0)
    assert b.compute_ms == pytest.approx(1.5)
    # No duration series at all: the means are unknown, and the counts are all there.
    assert (c.latency_mean_ms, c.queue_ms, c.compute_ms) == (None, None, None)
    assert c.requests > 0


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


class _Stub(BaseHTTPRequestHandler):
    """A Prometheus that answers the counts and the P99 (one sample each, 10; the output
    histogram, three buckets) and, for the optional latency queries, does what ``optional``
    says: ``error`` (an error answer), ``slow`` (answers after 2 s) or ``garbage``."""

    optional = "error"

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)["query"][0]
        if "duration" in query or "gateway_" in query:
            if self.optional == "slow":
                time.sleep(2)
            elif self.optional == "error":
                self._answer(422, {"status": "error", "errorType": "bad_data", "error": "no"})
                return
            else:
                self._answer(200, {"status": "success", "data": "garbage"})
                return
        if "by (le)" in query:
            result = [
                {"metric": {"le": le}, "value": [1, str(v)]}
                for le, v in (("0", 4), ("1", 8), ("+Inf", 10))
            ]
        else:
            result = [{"metric": {}, "value": [1, "10"]}]
        self._answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    def _answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("optional", ["error", "slow", "garbage"])
def test_failed_latency_queries_leave_the_rest_of_the_arm(optional: str) -> None:
    handler = type("Stub", (_Stub,), {"optional": optional})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        started = time.monotonic()
        with PrometheusObserver(url, timeout_seconds=1.0) as observer:
            obs = observer.observe(
                "ns", "r", "m", 60, [60], datetime.now(UTC), latency_histogram=LATENCY_SOURCE
            )
        assert time.monotonic() - started < 1.9
    finally:
        server.shutdown()
        server.server_close()
    assert obs.missing_reason is None
    for arm in (obs.baseline, obs.candidate):
        assert arm is not None
        assert (arm.requests, arm.failures, arm.p99_ms, arm.histogram) == (10, 10, 10, (4, 4, 2))
        assert (arm.latency_mean_ms, arm.queue_ms, arm.compute_ms) == (None, None, None)
        assert arm.latency_histogram is None
