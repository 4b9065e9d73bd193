"""``gelu-rollout check-model``: which gates a served model's Triton metrics can feed.

It reads one scrape of the endpoint, not Prometheus: what Triton and the model export, before
any rollout. The verdict per gate is :func:`gelu_rollout.adapters.prometheus.series.model_report`.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Annotated, Any, Final

import typer
import yaml
from rich import box
from rich.table import Table
from rich.text import Text

from gelu_rollout.adapters.prometheus.series import (
    MISSING,
    READY,
    SAMPLED,
    ExpositionError,
    ModelReport,
    Series,
    Setting,
    check_histogram,
    model_report,
    parse_exposition,
    settings_tree,
)
from gelu_rollout.cli.output import fail, out

EXIT_UNFED: Final = 1
EXIT_UNREADABLE: Final = 2
YAML_WIDTH: Final = 92
STATUS_STYLES: Final = {READY: "green", SAMPLED: "yellow", MISSING: "bold red"}
# Exporters that also speak OpenMetrics answer this with the classic format the parser reads.
ACCEPT: Final = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
_DIRECT: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_PROXIED: Final = urllib.request.build_opener()


class EndpointError(Exception):
    """The endpoint could not be read, or did not answer in Prometheus' text format."""


def unreadable(message: str) -> typer.Exit:
    """``fail``, with the exit code that says an endpoint, not the model, is the problem."""
    fail(message)
    return typer.Exit(EXIT_UNREADABLE)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch_text(url: str, timeout_s: float) -> str:
    """The body of ``url``; raises EndpointError naming the URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"{url!r} is not an http:// or https:// URL")
    # An HTTP proxy set in the environment cannot reach this machine's loopback.
    opener = _DIRECT if _loopback(parts.hostname) else _PROXIED
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as error:
        raise EndpointError(f"{url} answered HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise EndpointError(f"cannot reach {url}: {error.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise EndpointError(f"cannot read {url}: {error or type(error).__name__}") from None
    return body.decode("utf-8", errors="replace")


def scrape(url: str, timeout_s: float) -> tuple[Series, ...]:
    """The samples at ``url``; raises EndpointError."""
    text = fetch_text(url, timeout_s)
    try:
        return parse_exposition(text)
    except ExpositionError as error:
        detail = str(error)
        detail = detail if len(detail) <= 80 else detail[:77] + "..."
        raise EndpointError(
            f"{url} did not answer in Prometheus' text format ({detail}): is it a metrics "
            "endpoint (Triton's is http://HOST:8002/metrics)?"
        ) from None


def _scalar(value: str | bool | int) -> str:
    text: str = yaml.safe_dump(value, default_flow_style=True)
    return text.removesuffix("\n").removesuffix("\n...")


def settings_yaml(settings: Sequence[Setting]) -> str:
    """The settings as one YAML ``spec`` document, each setting's note as comment lines
    above it; settings that share a parent are written under it once."""
    lines = ["spec:"]

    def write(node: dict[str, Any], depth: int) -> None:
        indent = "  " * depth
        for key, child in node.items():
            if isinstance(child, dict):
                lines.append(f"{indent}{key}:")
                write(child, depth + 1)
                continue
            lines.extend(
                f"{indent}# {line}"
                for line in textwrap.wrap(child.note, max(40, YAML_WIDTH - len(indent) - 2))
            )
            lines.append(f"{indent}{key}: {_scalar(child.value)}")

    write(settings_tree(settings), 1)
    return "\n".join(lines) + "\n"


def gate_table(report: ModelReport, url: str) -> Table:
    """One row per gate: its status and what feeds it; its series, found and missing, and
    what to do (one column for both, so that a plain 100-column line holds them)."""
    table = Table(
        title=f'Model "{report.model}" at {url}',
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_lines=True,
    )
    table.add_column("Gate", no_wrap=True)
    table.add_column("Status", max_width=22)
    table.add_column("Series, and what to do", ratio=1)
    for gate in report.gates:
        status = Text(gate.status, style=STATUS_STYLES.get(gate.status, ""))
        if gate.source is not None and gate.status != SAMPLED:
            status.append(f"\n{gate.source}", style="dim")
        details = Text(overflow="fold")
        for name in gate.found:
            details.append(f"✓ {name}\n")
        for name in gate.missing:
            details.append(f"✗ {name}\n", style="red")
        details.append(f"→ {gate.action}", style="bold" if gate.status == MISSING else "")
        table.add_row(gate.gate, status, details)
    return table


def check_model(
    metrics_url: Annotated[
        str, typer.Option(help="Triton's metrics endpoint, e.g. http://127.0.0.1:8002/metrics.")
    ],
    model: Annotated[str, typer.Option(help="The Triton model name (spec.model.name).")],
    gateway_metrics_url: Annotated[
        str | None,
        typer.Option(help="A Gateway's or mesh's metrics endpoint (with --histogram-metric)."),
    ] = None,
    histogram_metric: Annotated[
        str | None,
        typer.Option(help="Its request-duration histogram (analysis.latencyHistogram.metric)."),
    ] = None,
    output_sample: Annotated[
        bool, typer.Option(help="Whether analysis.outputSample is on (the default).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for each endpoint.")
    ] = 10.0,
) -> None:
    """Check which gates a served model's metrics can feed, and print spec settings that fit.

    Exit codes: 0 every gate can be fed, 1 some cannot, 2 an endpoint could not be read.
    """
    if (gateway_metrics_url is None) != (histogram_metric is None):
        raise typer.BadParameter(
            "--gateway-metrics-url and --histogram-metric go together",
            param_hint="--histogram-metric"
            if histogram_metric is None
            else "--gateway-metrics-url",
        )
    try:
        samples = scrape(metrics_url, timeout)
        histogram = None
        if gateway_metrics_url is not None and histogram_metric is not None:
            histogram = check_histogram(scrape(gateway_metrics_url, timeout), histogram_metric)
    except EndpointError as error:
        raise unreadable(str(error)) from None
    report = model_report(samples, model, output_sample=output_sample, histogram=histogram)
    if as_json:
        document = {"metricsUrl": metrics_url, **report.to_dict()}
        if gateway_metrics_url is not None:
            document["gatewayMetricsUrl"] = gateway_metrics_url
        typer.echo(json.dumps(document, indent=2))
    else:
        out.print(gate_table(report, metrics_url))
        unfed = [g.gate for g in report.gates if g.status == MISSING]
        if unfed:
            out.print(f"Cannot be fed: {', '.join(unfed)}.", style="bold red")
        else:
            out.print("Every gate can be fed.", style="green")
        # Last, so that it can be copied or piped as it stands.
        if report.settings:
            out.print("\nSpec settings that fit:", style="bold")
            out.print(settings_yaml(report.settings), markup=False, soft_wrap=True, end="")
    if not report.ok:
        raise typer.Exit(EXIT_UNFED)
