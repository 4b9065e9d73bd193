"""What the demo draws: the rollout live, then a summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from gelu_lab.demo.run import DemoResult
from gelu_lab.demo.scenarios import Scenario
from gelu_rollout.cli.status_view import ledger_table, number, verdict_text

RECENT_DECISIONS = 6


def _value(value: object) -> str:
    return number(float(value)) if isinstance(value, int | float) else number(None)


def live_view(
    scenario: Scenario, rollout: Mapping[str, Any], traffic: Mapping[str, Any]
) -> RenderableType:
    """Stage, step and weight; each gate's latest value against its threshold; recent decisions."""
    status = rollout.get("status") or {}
    spec = rollout.get("spec") or {}
    steps = (spec.get("traffic") or {}).get("steps") or []
    stage = str(status.get("stage", "Pending"))
    header = Text.assemble(
        (f"scenario {scenario.name}", "bold"),
        f"  ({scenario.summary})\n",
        ("stage ", "dim"),
        (stage, "bold cyan"),
        ("   step ", "dim"),
        f"{int(status.get('stepIndex', 0)) + 1}/{len(steps)}",
        ("   candidate weight ", "dim"),
        f"{status.get('candidateWeight', 0)}%",
        ("   traffic ", "dim"),
        "  ".join(
            f"{arm} {counts.get('succeeded', 0)} ok / {counts.get('failed', 0)} failed"
            for arm, counts in traffic.items()
        )
        or "—",
        "\n",
        (str(status.get("message", "")), "italic"),
    )
    ledger = list(status.get("ledger") or [])
    latest: dict[str, Mapping[str, Any]] = {}
    for entry in ledger:
        latest[str(entry.get("gate"))] = entry
    gates = Table(title="gates (latest look)", title_justify="left", expand=False)
    for column in ("gate", "verdict", "value", "threshold", "samples", "why"):
        gates.add_column(column, overflow="fold", max_width=70 if column == "why" else None)
    for gate, entry in latest.items():
        gates.add_row(
            gate,
            verdict_text(str(entry.get("verdict"))),
            _value(entry.get("value")),
            _value(entry.get("threshold")),
            _value(entry.get("samples")),
            str(entry.get("message", "")),
        )
    recent = ledger_table(rollout, limit=RECENT_DECISIONS)
    return Group(header, gates, recent)


def print_summary(result: DemoResult, console: Console) -> None:
    console.print()
    style = "bold green" if result.outcome == result.expected else "bold red"
    console.print(
        Text.assemble(
            ("outcome ", "dim"),
            (result.outcome, style),
            f" (expected {result.expected})",
            ("   apply → outcome ", "dim"),
            f"{result.seconds_apply_to_outcome} s" if result.seconds_apply_to_outcome else "—",
            ("   fault → weight 0 ", "dim"),
            f"{result.seconds_fault_to_zero_weight} s"
            if result.seconds_fault_to_zero_weight is not None
            else "—",
        )
    )
    console.print(Text(result.message, style="italic"))
    for event in result.events:
        style = "yellow" if event["type"] == "Warning" else ""
        console.print(Text(f"  event {event['reason']}: {event['message']}", style=style))
