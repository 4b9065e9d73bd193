"""The benchmarks' reports as terminal tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("false_rollback_rate", "false rollbacks (healthy)", "pct"),
    ("healthy_promoted_rate", "healthy promoted", "pct"),
    ("healthy_stalled_rate", "healthy still waiting at the end", "pct"),
    ("severe_detection_rate", "severe faults detected", "pct"),
    ("moderate_detection_rate", "moderate faults detected", "pct"),
    ("minor_detection_rate", "minor faults detected", "pct"),
    ("median_delay_ticks_severe", "median delay, severe (ticks)", "num"),
    ("p90_delay_ticks_severe", "P90 delay, severe (ticks)", "num"),
    ("median_delay_ticks_moderate", "median delay, moderate (ticks)", "num"),
    ("p90_delay_ticks_moderate", "P90 delay, moderate (ticks)", "num"),
    ("faulty_promoted_rate", "faulty candidates promoted", "pct"),
    ("rollback_before_onset", "faulty rolled back before onset", "int"),
)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return str(value)
    return f"{value:.1f}"


def print_bench_report(report: dict[str, Any], console: Console) -> None:
    policies = report["policies"]
    names = list(policies)
    console.print(
        f"[bold]Decision benchmark[/]: {report['scenarios']} scenarios "
        f"({report['healthy']} healthy, {report['faulty']} faulty), "
        f"{report['seconds']:.1f} s"
    )
    summary = Table(title="Outcomes", title_justify="left")
    summary.add_column("figure")
    for name in names:
        summary.add_column(name, justify="right")
    for key, label, kind in SUMMARY_ROWS:
        summary.add_row(label, *(_cell(policies[n].get(key), kind) for n in names))
    console.print(summary)

    faults = Table(title="Detection rate and median delay (ticks) by fault", title_justify="left")
    faults.add_column("fault")
    for name in names:
        faults.add_column(name, justify="right")
    kinds = sorted({k for n in names for k in policies[n]["detection_rate_by_fault"]})
    for kind in kinds:
        cells = []
        for n in names:
            rate = policies[n]["detection_rate_by_fault"].get(kind)
            delay = policies[n]["median_delay_ticks_by_fault"].get(kind)
            cells.append(f"{_cell(rate, 'pct')} / {_cell(delay, 'num')}")
        faults.add_row(kind, *cells)
    console.print(faults)

    for name in names:
        params = ", ".join(f"{k}={v}" for k, v in policies[name]["parameters"].items())
        console.print(f"[bold]{name}[/]: {params}")
    if "goals" in report:
        checks = dict(report["goals"])
        worse = checks.pop("worse_than_a_reference_on", [])
        marks = "  ".join(
            f"{'[green]yes[/]' if ok else '[red]NO[/]'} {goal}" for goal, ok in checks.items()
        )
        console.print(f"[bold]goals[/]: {marks}")
        for figure in worse:
            console.print(f"  a reference does better on {figure}", markup=False)


def print_variants_report(report: dict[str, Any], console: Console) -> None:
    """The variant benchmark as one table, ratios to the baseline variant beside the figures."""
    base = report["baseline"]
    table = Table(title=f"GELU variants on Triton (ratios to {base}, same run)")
    for header in (
        "variant",
        "max |err| grid",
        "max |err| N(0,3²)",
        f"KL vs {base}",
        "non-finite N(0,3²)",
        "non-finite extreme",
        "P50 ms b1",
        "P99 ms b1",
        "P99 ratio",
        "rows/s b64",
        "throughput ratio",
    ):
        table.add_column(header, justify="left" if header == "variant" else "right")
    for name, v in report["variants"].items():
        table.add_row(
            name,
            f"{v['max_abs_error_grid']:.3g}",
            f"{v['max_abs_error']:.3g}",
            f"{v['kl_vs_exact']:.2g}",
            Text(str(v["nonfinite_normal"]), style="bold red" if v["nonfinite_normal"] else ""),
            Text(str(v["nonfinite_extreme"]), style="bold red" if v["nonfinite_extreme"] else ""),
            f"{v['p50_ms_batch1']:.3f}",
            f"{v['p99_ms_batch1']:.3f}",
            f"{v['p99_ratio_batch1']:.2f}",
            f"{v['throughput_rows_per_s_batch64']:,.0f}",
            f"{v['throughput_ratio_batch64']:.2f}",
        )
    console.print(table)
    settings = report["settings"]
    console.print(
        f"batch 1: {settings['requests_batch1']} requests per variant; batch 64: "
        f"{settings['requests_batch64']} requests at concurrency "
        f"{settings['concurrency_batch64']} (median of {settings['rounds_batch64']} rounds); "
        f"accuracy on {settings['normal_rows']} N(0, 3²) rows and a grid of {settings['grid']}; "
        "max |err| is over the finite outputs, the others are counted as non-finite."
    )
