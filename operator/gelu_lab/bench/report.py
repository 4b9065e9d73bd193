"""The benchmarks' reports as terminal tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("false_rollback_rate", "false rollbacks (healthy)", "pct"),
    ("healthy_promoted_within_plan_rate", "healthy promoted within plan", "pct"),
    ("healthy_promoted_rate", "healthy promoted by the end", "pct"),
    ("healthy_stalled_rate", "healthy still waiting at the end", "pct"),
    ("median_promote_time_ratio", "time to promote / planned, median", "ratio"),
    ("p90_promote_time_ratio", "time to promote / planned, P90", "ratio"),
    ("plan_feasible_rate", "healthy: plan said feasible within plan", "pct"),
    ("healthy_promoted_within_plan_where_feasible_rate", "  of those promoted within plan", "pct"),
    ("severe_detection_rate", "severe faults detected", "pct"),
    ("severe_detection_rate_where_shown", "  where the plan's data showed them", "pct"),
    ("silent_faults", "  faults that never showed in the plan", "int"),
    ("moderate_detection_rate", "moderate faults detected", "pct"),
    ("minor_detection_rate", "minor faults detected", "pct"),
    ("median_delay_ticks_severe", "median delay, severe (ticks)", "num"),
    ("p90_delay_ticks_severe", "P90 delay, severe (ticks)", "num"),
    ("median_delay_ticks_moderate", "median delay, moderate (ticks)", "num"),
    ("p90_delay_ticks_moderate", "P90 delay, moderate (ticks)", "num"),
    ("faulty_promoted_rate", "faulty candidates promoted", "pct"),
    ("faulty_stalled_rate", "faulty still waiting at the end", "pct"),
    ("rollback_before_onset", "faulty rolled back before onset", "int"),
    ("seconds", "time in the policy (s, all workers)", "num"),
)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return str(value)
    if kind == "ratio":
        return f"{value:.2f}"
    return f"{value:.1f}"


def _table(title: str, first: str, names: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(first)
    for name in names:
        table.add_column(name, justify="right")
    return table


def print_bench_report(report: dict[str, Any], console: Console) -> None:
    policies = report["policies"]
    names = list(policies)
    families = ", ".join(f"{n} {f}" for f, n in report.get("families", {}).items())
    console.print(
        f"[bold]Decision benchmark[/]: {report['scenarios']} scenarios "
        f"({report['healthy']} healthy, {report['faulty']} faulty; {families}), "
        f"{report['seconds']:.1f} s on {report.get('workers', '?')} workers"
    )
    summary = _table("Outcomes", "figure", names)
    for key, label, kind in SUMMARY_ROWS:
        summary.add_row(label, *(_cell(policies[n].get(key), kind) for n in names))
    console.print(summary)

    faults = _table(
        "Detection rate / median delay / P90 delay (ticks) by family and fault", "fault", names
    )
    keys = sorted(
        {
            (family, kind)
            for n in names
            for family, figures in policies[n].get("by_family", {}).items()
            for kind in figures["detection_rate_by_fault"]
        }
    )
    for family, kind in keys:
        cells = []
        for n in names:
            figures = policies[n]["by_family"].get(family, {})
            rate = figures.get("detection_rate_by_fault", {}).get(kind)
            delay = figures.get("median_delay_ticks_by_fault", {}).get(kind)
            p90 = figures.get("p90_delay_ticks_by_fault", {}).get(kind)
            cells.append(f"{_cell(rate, 'pct')} / {_cell(delay, 'num')} / {_cell(p90, 'num')}")
        faults.add_row(f"{family}/{kind}", *cells)
    console.print(faults)

    traffic = _table(
        "Healthy rollouts by traffic: promoted within plan / by the end / rolled back",
        "traffic",
        names,
    )
    levels = sorted({level for n in names for level in policies[n].get("healthy_by_traffic", {})})
    for level in levels:
        cells = []
        for n in names:
            group = policies[n]["healthy_by_traffic"].get(level)
            cells.append(
                "-"
                if group is None
                else f"{_cell(group['promoted_within_plan'], 'pct')} / "
                f"{_cell(group['promoted'], 'pct')} / {_cell(group['rolled_back'], 'pct')}"
            )
        count = policies[names[0]]["healthy_by_traffic"].get(level, {}).get("scenarios", 0)
        traffic.add_row(f"{level} ({count})", *cells)
    console.print(traffic)

    layouts = sorted(
        {layout for n in names for layout in policies[n].get("latency_detection_by_buckets", {})}
    )
    if layouts:
        buckets = _table("Latency faults detected, by latency bucket layout", "buckets", names)
        for layout in layouts:
            buckets.add_row(
                layout,
                *(
                    _cell(policies[n]["latency_detection_by_buckets"].get(layout), "pct")
                    for n in names
                ),
            )
        console.print(buckets)

    for name in names:
        params = ", ".join(f"{k}={v}" for k, v in policies[name]["parameters"].items())
        console.print(f"[bold]{name}[/]: {params}")
    if "goals" in report:
        checks = dict(report["goals"])
        behind = checks.pop("fault_kinds_behind_a_reference", [])
        checks.pop("worse_than_a_reference_on", None)

        def mark(ok: bool | None) -> str:
            return "[yellow]n/a[/]" if ok is None else "[green]yes[/]" if ok else "[red]NO[/]"

        marks = "  ".join(f"{mark(ok)} {goal}" for goal, ok in checks.items())
        console.print(f"[bold]goals[/]: {marks}")
        for figure in behind:
            console.print(f"  a reference detects more: {figure}", markup=False)


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
