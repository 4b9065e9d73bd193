"""One observer's queries share one bounded thread pool and one HTTP session, for every
rollout it observes (observer.py), against a stub Prometheus that counts connections."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from gelu_rollout.adapters.prometheus import PrometheusObserver
from gelu_rollout.adapters.prometheus.queries import build_plan
from gelu_rollout.rollout.observations import Observations


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)
        self.lock = threading.Lock()
        self.connections: set[int] = set()  # the client ports seen
        self.queries = 0
        self.authorizations: set[str | None] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay_seconds = 0.01  # long enough for queries to overlap


class _Answers(BaseHTTPRequestHandler):
    """Every count is 10, the output histogram three buckets; the optional latency queries
    an error (so that the arm is whole without them)."""

    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many queries
    server: _Counting

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.connections.add(self.client_address[1])
            server.queries += 1
            server.authorizations.add(self.headers.get("Authorization"))
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            time.sleep(server.delay_seconds)
            query = parse_qs(urlparse(self.path).query)["query"][0]
            if "duration" in query or "gateway_" in query:
                self._answer(422, {"status": "error", "errorType": "bad_data", "error": "no"})
                return
            if "by (le)" in query:
                result = [
                    {"metric": {"le": le}, "value": [1, str(v)]}
                    for le, v in (("0", 4), ("1", 8), ("+Inf", 10))
                ]
            else:
                result = [{"metric": {}, "value": [1, "10"]}]
            data = {"resultType": "vector", "result": result}
            self._answer(200, {"status": "success", "data": data})
        finally:
            with server.lock:
                server.in_flight -= 1

    def _answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[_Counting]:
    server = _Counting()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: _Counting) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _observe(observer: PrometheusObserver, rollout: str) -> Observations:
    return observer.observe("ns", rollout, "m", 60, [60, 720], datetime.now(UTC))


def _queries_per_observation() -> int:
    plan = build_plan("ns", "r", "m", 60, [60, 720], scrape_interval_seconds=15.0)
    return len(plan.expressions())


def _query_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("prometheus")}


def _whole(observations: Observations) -> bool:
    arms = (observations.baseline, observations.candidate)
    return observations.missing_reason is None and all(
        arm is not None and (arm.requests, arm.failures) == (10, 10) for arm in arms
    )


def test_two_observations_at_once_share_the_pool_and_its_connections(
    prometheus: _Counting,
) -> None:
    before = _query_threads()
    with PrometheusObserver(_url(prometheus), timeout_seconds=5.0, max_workers=3) as observer:
        # Two rollouts' ticks at the same time, as the operator's executor runs them.
        with ThreadPoolExecutor(max_workers=2) as ticks:
            first, second = ticks.map(lambda rollout: _observe(observer, rollout), ["a", "b"])
        threads = _query_threads() - before
        assert _whole(first)
        assert _whole(second)
        assert prometheus.queries == 2 * _queries_per_observation()
        # Both batches went through the same three workers and their kept-alive connections.
        assert len(threads) == 3
        assert prometheus.most_in_flight <= 3
        assert len(prometheus.connections) <= 3
        # A later tick reuses them: no new thread, no new connection.
        connections = set(prometheus.connections)
        assert _whole(_observe(observer, "c"))
        assert _query_threads() - before == threads
        assert prometheus.connections == connections
    # Closed with the observer.
    for thread in threads:
        thread.join(timeout=5.0)
        assert not thread.is_alive()


def test_one_observation_may_use_every_worker(prometheus: _Counting) -> None:
    with PrometheusObserver(_url(prometheus), max_workers=4) as observer:
        assert _whole(_observe(observer, "a"))
    assert prometheus.most_in_flight == 4


def test_a_closed_observer_reports_missing_data(prometheus: _Counting) -> None:
    observer = PrometheusObserver(_url(prometheus))
    observer.close()
    observations = _observe(observer, "a")
    assert (observations.baseline, observations.candidate) == (None, None)
    assert (
        observations.missing_reason == f"the observer of Prometheus at {_url(prometheus)} is closed"
    )
    assert prometheus.queries == 0


def test_queries_waiting_for_a_worker_count_against_the_timeout(prometheus: _Counting) -> None:
    # One worker, each query 0.2 s: the batch of one observation cannot finish within 1 s.
    prometheus.delay_seconds = 0.2
    with PrometheusObserver(_url(prometheus), timeout_seconds=1.0, max_workers=1) as observer:
        started = time.monotonic()
        observations = _observe(observer, "a")
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert observations.missing_reason is not None
    assert observations.missing_reason.startswith(f"Prometheus at {_url(prometheus)} answered ")
    assert observations.missing_reason.endswith(" queries within 1s")
    # Those still queued when the time ran out were never sent.
    time.sleep(0.3)
    assert prometheus.queries < _queries_per_observation()


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        PrometheusObserver("http://127.0.0.1:9", max_workers=0)


def test_credentials_in_the_url_go_as_basic_auth(prometheus: _Counting) -> None:
    port = prometheus.server_address[1]
    with PrometheusObserver(f"http://ops:s%3Acret@127.0.0.1:{port}") as observer:
        assert _whole(_observe(observer, "a"))
    # base64 of "ops:s:cret"
    assert prometheus.authorizations == {"Basic b3BzOnM6Y3JldA=="}
    prometheus.authorizations.clear()
    with PrometheusObserver(_url(prometheus)) as observer:
        assert _whole(_observe(observer, "a"))
    assert prometheus.authorizations == {None}
