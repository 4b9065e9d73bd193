"""``gelu-rollout check-model``: the per-gate report on captured Triton metrics, the command
against a local endpoint (tables, JSON, exit codes, unreadable endpoints), and both kinds of
model served by one real Triton server."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import tritonclient.http.aio as triton_http
import yaml
from typer.testing import CliRunner, Result

from gelu_rollout.adapters.prometheus.queries import (
    NONFINITE,
    OUTPUT_BUCKETS,
    REQUEST_FAILURE,
    REQUEST_SUCCESS,
)
from gelu_rollout.adapters.prometheus.series import (
    MISSING,
    P99_SUMMARY,
    READY,
    SAMPLED,
    ExpositionError,
    ModelReport,
    check_histogram,
    model_report,
    parse_exposition,
)
from gelu_rollout.adapters.triton import infer
from gelu_rollout.analysis.observations import OUTPUT_METRICS, SAMPLED_COMPARISON
from gelu_rollout.cli.check_model import settings_yaml
from gelu_rollout.cli.main import app
from gelu_rollout.spec import parse_spec
from gelu_rollout.variants import Faults
from tests.triton.helpers import build_repository, serving

ROOT = Path(__file__).parents[2]
PLAIN_REPOSITORY = ROOT / "operator" / "gelu_lab" / "models" / "plain_gelu"
OUTPUT_GATES = ("nonFinite", "divergence")
TRAFFIC_GATES = ("burnRate", "errorRate", "latencyRegression", "latencyCeiling")
ALL_GATES = (
    "nonFinite",
    "burnRate",
    "errorRate",
    "latencyRegression",
    "latencyCeiling",
    "divergence",
)


def _triton_lines(model: str, *, summary: bool = True, failures: bool = True) -> str:
    """Triton 2.51's series for one model, as its endpoint writes them (trimmed)."""
    lines = [
        f'nv_inference_request_success{{model="{model}",version="1"}} 3',
        *(
            [f'nv_inference_request_failure{{model="{model}",reason="BACKEND",version="1"}} 0']
            if failures
            else []
        ),
        f'nv_inference_request_duration_us{{model="{model}",version="1"}} 19878',
        f'nv_inference_queue_duration_us{{model="{model}",version="1"}} 626',
        f'nv_inference_compute_infer_duration_us{{model="{model}",version="1"}} 18830',
    ]
    if summary:
        lines += [
            f'nv_inference_request_summary_us_count{{model="{model}",version="1"}} 3',
            f'nv_inference_request_summary_us_sum{{model="{model}",version="1"}} 19878',
            f'nv_inference_request_summary_us{{model="{model}",version="1",quantile="0.5"}} 1205',
            f'nv_inference_request_summary_us{{model="{model}",version="1",quantile="0.99"}} 1381',
        ]
    return "\n".join(lines)


TRITON_HEADERS = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
"""


def endpoint_text(*bodies: str) -> str:
    """One endpoint's text: Triton groups each family's samples under its TYPE line, and so
    does this (the families are sorted by name into groups)."""
    samples = [line for body in bodies for line in body.splitlines() if line]
    families: dict[str, list[str]] = {}
    kinds = {
        "nv_inference_request_success": "counter",
        "nv_inference_request_failure": "counter",
        "nv_inference_request_duration_us": "counter",
        "nv_inference_queue_duration_us": "counter",
        "nv_inference_compute_infer_duration_us": "counter",
        "nv_inference_request_summary_us": "summary",
        "gelu_nonfinite_outputs_total": "counter",
        "gelu_output_value": "histogram",
    }
    for line in samples:
        name = line.split("{", 1)[0].split(" ", 1)[0]
        family = next((k for k in kinds if name == k or name.startswith(k + "_")), name)
        families.setdefault(family, []).append(line)
    text = []
    for family, lines in families.items():
        if family in kinds:
            text.append(f"# TYPE {family} {kinds[family]}")
        text += lines
    return "\n".join(text) + "\n"


def output_lines(model: str) -> str:
    """This project's instrumentation, as a built-in variant exports it (trimmed buckets)."""
    labels = f'model="{model}",variant="tanh"'
    return "\n".join(
        [
            f"gelu_nonfinite_outputs_total{{{labels}}} 0",
            f'gelu_output_value_bucket{{{labels},le="-0.1"}} 10',
            f'gelu_output_value_bucket{{{labels},le="0.1"}} 30',
            f'gelu_output_value_bucket{{{labels},le="+Inf"}} 48',
            f"gelu_output_value_count{{{labels}}} 48",
            f"gelu_output_value_sum{{{labels}}} 9.8",
        ]
    )


INSTRUMENTED = "gelu_mlp"
PLAIN = "gelu_plain"
SERVER_TEXT = endpoint_text(
    _triton_lines(INSTRUMENTED), _triton_lines(PLAIN), output_lines(INSTRUMENTED)
)
GATEWAY_TEXT = """\
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{destination_service_name="r-baseline",le="100"} 5
istio_request_duration_milliseconds_bucket{destination_service_name="r-baseline",le="+Inf"} 6
istio_request_duration_milliseconds_count{destination_service_name="r-baseline"} 6
istio_request_duration_milliseconds_sum{destination_service_name="r-baseline"} 310
"""


def report(text: str, model: str, **options: Any) -> ModelReport:
    return model_report(parse_exposition(text), model, **options)


def statuses(result: ModelReport | Mapping[str, Any]) -> dict[str, str]:
    if isinstance(result, ModelReport):
        return {g.gate: g.status for g in result.gates}
    return {g["gate"]: g["status"] for g in result["gates"]}


def fits_the_spec(result: ModelReport) -> None:
    """The suggested settings, laid over a minimal manifest, pass the operator's own spec
    validation (so every key is a real field with a valid value)."""
    spec: dict[str, Any] = {
        "model": {"name": result.model},
        "baseline": {"variant": "exact"},
        "candidate": {"variant": "tanh"},
    }
    snippet = yaml.safe_load(settings_yaml(result.settings))["spec"]

    def merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, Mapping):
                merge(into.setdefault(key, {}), value)
            else:
                into[key] = value

    merge(spec, snippet)
    assert snippet == result.to_dict()["spec"]
    parse_spec(spec)


# --- The report on captured text ---------------------------------------------------------


def test_instrumented_model_feeds_every_gate_itself() -> None:
    result = report(SERVER_TEXT, INSTRUMENTED)
    assert statuses(result) == dict.fromkeys(ALL_GATES, READY)
    assert result.ok
    assert result.gate("nonFinite").source == OUTPUT_METRICS
    assert result.gate("nonFinite").found == (NONFINITE, OUTPUT_BUCKETS)
    assert result.gate("latencyRegression").source == "Triton's mean per tick"
    assert result.gate("latencyCeiling").source == "Triton's summary P99"
    assert result.gate("latencyCeiling").found == (P99_SUMMARY,)
    assert result.models == (INSTRUMENTED, PLAIN)
    fits_the_spec(result)


def test_uninstrumented_model_has_its_output_gates_fed_by_the_sampled_comparison() -> None:
    result = report(SERVER_TEXT, PLAIN)
    assert statuses(result) == {
        **dict.fromkeys(TRAFFIC_GATES, READY),
        **dict.fromkeys(OUTPUT_GATES, SAMPLED),
    }
    assert result.ok
    nonfinite = result.gate("nonFinite")
    assert nonfinite.source == SAMPLED_COMPARISON
    assert nonfinite.missing == (NONFINITE, OUTPUT_BUCKETS)
    assert "docs/models.md" in nonfinite.action
    settings = {s.dotted: s.value for s in result.settings}
    assert settings["analysis.outputSample.enabled"] is True
    # The sample feeds the output gates: nothing tells them to do without.
    assert not any(path.endswith(".required") for path in settings)
    fits_the_spec(result)


def test_without_the_sampled_comparison_an_uninstrumented_model_leaves_gates_unfed() -> None:
    result = report(SERVER_TEXT, PLAIN, output_sample=False)
    assert statuses(result) == {
        **dict.fromkeys(TRAFFIC_GATES, READY),
        **dict.fromkeys(OUTPUT_GATES, MISSING),
    }
    assert not result.ok
    assert "analysis.outputSample.enabled: true" in result.gate("divergence").action
    # Instrumented, the sample is not needed.
    assert report(SERVER_TEXT, INSTRUMENTED, output_sample=False).ok


def test_a_model_with_only_the_output_histogram_has_nonfinite_sampled() -> None:
    text = endpoint_text(_triton_lines(PLAIN), "\n".join(output_lines(PLAIN).splitlines()[1:]))
    result = report(text, PLAIN)
    assert result.gate("nonFinite").status == SAMPLED
    assert result.gate("nonFinite").missing == (NONFINITE,)
    assert result.gate("divergence").status == READY


def test_an_absent_model_feeds_no_gate_and_the_report_names_the_models_there() -> None:
    result = report(SERVER_TEXT, "resnet")
    assert statuses(result) == dict.fromkeys(ALL_GATES, MISSING)
    assert not result.ok
    assert result.settings == ()
    assert all(f"{INSTRUMENTED}, {PLAIN}" in g.action for g in result.gates)
    assert REQUEST_SUCCESS in result.gate("burnRate").missing
    empty = report("", "resnet")
    assert "is this Triton's metrics port" in empty.gate("burnRate").action


@pytest.mark.parametrize(
    "garbage",
    [
        "<html><body>Not found</body></html>",
        '{"name":"triton","version":"2.51.0"}',
        "nv_inference_request_success{model=",
        "404 page not found",
    ],
)
def test_garbage_is_not_taken_for_metrics(garbage: str) -> None:
    with pytest.raises(ExpositionError):
        parse_exposition(garbage)


def test_series_keep_the_names_the_endpoint_exposed() -> None:
    """prometheus_client's parser renames counters to ``..._total``; Prometheus, and so the
    operator's queries, keep the exposed name."""
    names = {s.name for s in parse_exposition(SERVER_TEXT)}
    assert {REQUEST_SUCCESS, REQUEST_FAILURE, NONFINITE} <= names
    assert REQUEST_SUCCESS + "_total" not in names


def test_without_a_summary_the_ceiling_has_no_source() -> None:
    result = report(endpoint_text(_triton_lines(PLAIN, summary=False)), PLAIN)
    assert result.gate("latencyRegression").status == READY
    ceiling = result.gate("latencyCeiling")
    assert ceiling.status == MISSING
    assert ceiling.missing == (P99_SUMMARY,)
    assert "summary_latencies=true" in ceiling.action
    assert not result.ok
    settings = {s.dotted: s.value for s in result.settings}
    assert settings["analysis.gates.latency.required"] is False
    fits_the_spec(result)


def test_the_summary_alone_feeds_both_latency_gates_even_before_traffic() -> None:
    text = endpoint_text(
        f'nv_inference_request_success{{model="{PLAIN}",version="1"}} 0',
        f'nv_inference_request_summary_us{{model="{PLAIN}",version="1",quantile="0.99"}} Nan',
    )
    result = report(text, PLAIN)
    regression, ceiling = result.gate("latencyRegression"), result.gate("latencyCeiling")
    assert regression.status == ceiling.status == READY
    assert regression.source == ceiling.source == "Triton's summary P99"
    assert "NaN" in ceiling.action
    assert f"failures count as 0 until Triton exports {REQUEST_FAILURE}" in (
        result.gate("burnRate").action
    )


def test_a_gateway_histogram_feeds_the_latency_gates_and_is_suggested() -> None:
    histogram = check_histogram(
        parse_exposition(GATEWAY_TEXT), "istio_request_duration_milliseconds"
    )
    assert histogram.found
    assert histogram.metric == "istio_request_duration_milliseconds_bucket"
    assert histogram.labels == ("destination_service_name",)
    assert histogram.unit == "milliseconds"
    result = report(endpoint_text(_triton_lines(PLAIN, summary=False)), PLAIN, histogram=histogram)
    assert result.gate("latencyCeiling").status == READY
    assert result.gate("latencyCeiling").source == "the request-duration histogram"
    assert result.ok
    settings = {s.dotted: s.value for s in result.settings}
    assert settings["analysis.latencyHistogram.metric"] == histogram.metric
    assert settings["analysis.latencyHistogram.armLabel"] == "destination_service_name"
    assert settings["analysis.latencyHistogram.unit"] == "milliseconds"
    fits_the_spec(result)
    absent = check_histogram(parse_exposition(GATEWAY_TEXT), "envoy_cluster_upstream_rq_time")
    assert not absent.found
    missed = report(SERVER_TEXT, PLAIN, histogram=absent)
    assert "envoy_cluster_upstream_rq_time_bucket" in missed.gate("latencyCeiling").missing
    assert missed.gate("latencyCeiling").source == "Triton's summary P99"


def test_envoy_histograms_in_milliseconds_say_so_by_their_edges() -> None:
    text = (
        "# TYPE envoy_cluster_upstream_rq_time histogram\n"
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="0.5"} 1\n'
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="3600000"} 2\n'
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="+Inf"} 2\n'
    )
    histogram = check_histogram(parse_exposition(text), "envoy_cluster_upstream_rq_time_bucket")
    assert histogram.unit == "milliseconds"
    assert histogram.arm_label == "envoy_cluster_name"


# --- The command against a local endpoint ------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A local HTTP server: ``/metrics`` Triton's text, ``/gateway`` a mesh's, ``/garbage``
    an HTML page."""
    _Handler.bodies = {
        "/metrics": SERVER_TEXT,
        "/gateway": GATEWAY_TEXT,
        "/garbage": "<html><body>hello</body></html>",
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def check_model(*args: str) -> Result:
    return CliRunner().invoke(app, ["check-model", *args])


def test_the_command_prints_a_row_per_gate_and_settings_that_fit(endpoint: str) -> None:
    result = check_model("--metrics-url", f"{endpoint}/metrics", "--model", PLAIN)
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[0]: line
        for line in result.stdout.splitlines()
        if line.split() and line.split()[0] in ALL_GATES
    }
    assert set(rows) == set(ALL_GATES)
    assert "sampled comparison" in rows["nonFinite"]
    assert "sampled comparison" in rows["divergence"]
    assert "ready" in rows["burnRate"]
    assert f"✗ {NONFINITE}" in result.stdout
    snippet = yaml.safe_load(result.stdout.split("Spec settings that fit:\n", 1)[1])
    assert snippet["spec"]["analysis"]["outputSample"] == {"enabled": True}
    assert snippet["spec"]["model"] == {"name": PLAIN}
    assert "Traceback" not in result.output


def test_json_output_and_exit_code_one_when_a_gate_cannot_be_fed(endpoint: str) -> None:
    url = f"{endpoint}/metrics"
    result = check_model("--metrics-url", url, "--model", PLAIN, "--no-output-sample", "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["metricsUrl"] == url
    assert document["ok"] is False
    assert statuses(document)["divergence"] == MISSING
    ready = json.loads(check_model("--metrics-url", url, "--model", INSTRUMENTED, "--json").stdout)
    assert statuses(ready) == dict.fromkeys(ALL_GATES, READY)
    absent = check_model("--metrics-url", url, "--model", "resnet")
    assert absent.exit_code == 1
    assert "Cannot be fed" in absent.stdout


def test_a_gateway_histogram_is_checked_on_its_own_endpoint(endpoint: str) -> None:
    result = check_model(
        "--metrics-url",
        f"{endpoint}/metrics",
        "--model",
        PLAIN,
        "--gateway-metrics-url",
        f"{endpoint}/gateway",
        "--histogram-metric",
        "istio_request_duration_milliseconds_bucket",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["gatewayMetricsUrl"] == f"{endpoint}/gateway"
    latency = document["spec"]["analysis"]["latencyHistogram"]
    assert latency["metric"] == "istio_request_duration_milliseconds_bucket"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/garbage", "did not answer in Prometheus' text format"),
        ("/nowhere", "answered HTTP 404"),
        ("closed", "cannot reach"),
        ("not-a-url", "is not an http:// or https:// URL"),
    ],
)
def test_an_unreadable_endpoint_exits_2_naming_the_url(endpoint: str, path: str, says: str) -> None:
    url = {
        "closed": f"http://127.0.0.1:{_closed_port()}/metrics",
        "not-a-url": "127.0.0.1:8002/metrics",
    }.get(path, endpoint + path)
    result = check_model("--metrics-url", url, "--model", PLAIN, "--timeout", "5")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert url in result.stderr
    assert says in result.stderr
    assert result.stdout == ""
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_the_gateway_options_go_together(endpoint: str) -> None:
    result = check_model(
        "--metrics-url", f"{endpoint}/metrics", "--model", PLAIN, "--gateway-metrics-url", endpoint
    )
    assert result.exit_code == 2
    assert "--histogram-metric" in result.stderr


# --- Both kinds of model on a real Triton ------------------------------------------------


def plain_model(root: Path, name: str) -> None:
    """The uninstrumented repository, copied into ``root`` and served as ``name``: its
    ``name:`` line rewritten, or one added (Triton takes the folder's name where none is
    given, and a given one must match it)."""
    shutil.copytree(PLAIN_REPOSITORY, root / name)
    config = root / name / "config.pbtxt"
    line = f'name: "{name}"'
    text, count = re.subn(r'^name:\s*".*"\s*$', line, config.read_text(), count=1, flags=re.M)
    config.write_text(text if count else f"{line}\n{text}")


async def send_requests(http_url: str, models: tuple[str, ...], requests: int = 4) -> None:
    rows = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32)
    client = triton_http.InferenceServerClient(http_url)
    try:
        for model in models:
            for _ in range(requests):
                outputs = await infer(client, model, rows)
                assert outputs.shape == rows.shape
    finally:
        await client.close()


@pytest.mark.triton
@pytest.mark.slow
def test_a_real_server_tells_an_instrumented_model_from_a_plain_one(tmp_path: Path) -> None:
    root = build_repository(tmp_path / "models", {INSTRUMENTED: ("tanh", Faults())})
    plain_model(root, PLAIN)
    with serving({"main": root}) as servers:
        server = servers["main"]
        asyncio.run(send_requests(server.http_url, (INSTRUMENTED, PLAIN)))
        url = server.metrics_url
        reports = {
            model: check_model("--metrics-url", url, "--model", model, "--json")
            for model in (INSTRUMENTED, PLAIN)
        }
        table = check_model("--metrics-url", url, "--model", PLAIN)
    for result in (*reports.values(), table):
        assert result.exit_code == 0, result.output
    instrumented = json.loads(reports[INSTRUMENTED].stdout)
    plain = json.loads(reports[PLAIN].stdout)
    assert statuses(instrumented) == dict.fromkeys(ALL_GATES, READY)
    assert statuses(plain) == {
        **dict.fromkeys(TRAFFIC_GATES, READY),
        **dict.fromkeys(OUTPUT_GATES, SAMPLED),
    }
    assert set(instrumented["models"]) == set(plain["models"]) == {INSTRUMENTED, PLAIN}
    gates = {g["gate"]: g for g in plain["gates"]}
    assert gates["nonFinite"]["missing"] == [NONFINITE, OUTPUT_BUCKETS]
    assert gates["latencyCeiling"]["found"] == [P99_SUMMARY]
    assert "sampled comparison" in table.stdout
