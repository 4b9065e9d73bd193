"""Loopback HTTP servers that stand in for Triton's metrics port in Prometheus tests.

``MetricsTarget`` serves whatever text it was last given on ``/metrics``;
``triton_metrics`` renders the metric names and labels a Triton pod running the GELU
model exports, in Prometheus' text format.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class MetricsTarget:
    """An HTTP server on 127.0.0.1 serving ``/metrics`` from memory, in a thread."""

    def __init__(self, text: str = "") -> None:
        self._text = text
        self._lock = threading.Lock()
        self.scrapes = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                with target._lock:
                    body = target._text.encode()
                    target.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def serve(self, text: str) -> None:
        with self._lock:
            self._text = text

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _escape(value: str) -> str:
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


@dataclass(frozen=True)
class PodCounters:
    """What one Triton pod has counted since it started (Prometheus' cumulative form)."""

    success: float = 0.0
    failures: Mapping[str, float] = field(default_factory=dict)  # by reason
    nonfinite: float = 0.0
    # (upper bound, cumulative count) per bucket, "+Inf" last.
    buckets: Sequence[tuple[str, float]] = (("-1", 0.0), ("0", 0.0), ("1", 0.0), ("+Inf", 0.0))
    p99_us: float | None = None


FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def triton_metrics(
    model: str,
    counters: PodCounters,
    *,
    variant: str = "exact",
    timestamp_ms: int | None = None,
    failure_series: bool = True,
) -> str:
    """The pod's metrics page. ``timestamp_ms`` stamps every sample (Prometheus then keeps
    that time instead of the scrape's); ``failure_series`` False leaves the failure counters
    out, as an exporter that creates them on the first failure would."""
    stamp = "" if timestamp_ms is None else f" {timestamp_ms}"
    triton = {"model": model, "version": "1"}
    own = {"model": model, "variant": variant}
    lines = [
        "# TYPE nv_inference_request_success counter",
        f"nv_inference_request_success{_labels(triton)} {counters.success}{stamp}",
    ]
    if failure_series:
        lines.append("# TYPE nv_inference_request_failure counter")
        for reason in FAILURE_REASONS:
            value = counters.failures.get(reason, 0.0)
            labels = {"model": model, "reason": reason, "version": "1"}
            lines.append(f"nv_inference_request_failure{_labels(labels)} {value}{stamp}")
    count = counters.success + sum(counters.failures.values())
    lines += [
        "# TYPE nv_inference_count counter",
        f"nv_inference_count{_labels(triton)} {count}{stamp}",
    ]
    if counters.p99_us is not None:
        quantile = {**triton, "quantile": "0.99"}
        lines += [
            "# TYPE nv_inference_request_summary_us summary",
            f"nv_inference_request_summary_us{_labels(quantile)} {counters.p99_us}{stamp}",
            f"nv_inference_request_summary_us_sum{_labels(triton)} {count * 100.0}{stamp}",
            f"nv_inference_request_summary_us_count{_labels(triton)} {count}{stamp}",
        ]
    lines.append("# TYPE gelu_output_value histogram")
    for le, value in counters.buckets:
        labels = {**own, "le": le}
        lines.append(f"gelu_output_value_bucket{_labels(labels)} {value}{stamp}")
    total = counters.buckets[-1][1]
    lines += [
        f"gelu_output_value_sum{_labels(own)} 0{stamp}",
        f"gelu_output_value_count{_labels(own)} {total}{stamp}",
        "# TYPE gelu_nonfinite_outputs_total counter",
        f"gelu_nonfinite_outputs_total{_labels(own)} {counters.nonfinite}{stamp}",
    ]
    return "\n".join(lines) + "\n"
