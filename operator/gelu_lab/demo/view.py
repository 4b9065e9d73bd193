"""What the demo draws: the rollout live, then a summary and what to try next."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Final

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from gelu_lab.demo.run import DemoResult
from gelu_lab.demo.scenarios import SCENARIOS, Scenario
from gelu_rollout.cli.status_view import (
    FitToHeight,
    Layout,
    choose_columns,
    fitted_ledger,
    number,
    verdict_text,
)

RECENT_DECISIONS: Final = 8
"""Decisions in the one frame written to a file or a pipe (``--json`` keeps them all)."""
HEADER: Final = "scenario "
"""How the live view's first line begins (tests look for it)."""
GATE_COLUMNS: Final = (
    ("gate", "verdict", "value", "threshold", "samples"),
    ("gate", "verdict", "value", "threshold"),
    ("gate", "verdict"),
)
"""The gates table's columns beside "why", richest first; a narrow screen gets a later set."""


def _value(value: object) -> str:
    return number(float(value)) if isinstance(value, int | float) else number(None)


def _header(scenario: Scenario, status: Mapping[str, Any], steps: int, traffic: Any) -> Text:
    return Text.assemble(
        (f"{HEADER}{scenario.name}", "bold"),
        f"  ({scenario.summary})\n",
        ("stage ", "dim"),
        (str(status.get("stage", "Pending")), "bold cyan"),
        ("   step ", "dim"),
        f"{int(status.get('stepIndex', 0)) + 1}/{steps}",
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


def gates_table(ledger: list[Mapping[str, Any]], width: int | None, *, short: bool) -> Table:
    """Each gate's latest look: verdict, value against threshold, samples, and why; ``short``
    keeps each why to one line, for a short screen."""
    latest: dict[str, Mapping[str, Any]] = {}
    for entry in ledger:
        latest[str(entry.get("gate"))] = entry
    rows = [
        {
            "gate": gate,
            "verdict": str(entry.get("verdict")),
            "value": _value(entry.get("value")),
            "threshold": _value(entry.get("threshold")),
            "samples": _value(entry.get("samples")),
            "why": str(entry.get("message", "")),
        }
        for gate, entry in latest.items()
    ]
    table = Table(
        title="Gates (latest look)",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    columns = choose_columns(GATE_COLUMNS, rows, width)
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("why", overflow="fold")
    for row in rows:
        # Cut, not wrapped, in the cell: the column still narrows first to fit the width.
        why = Text(row["why"], no_wrap=True, overflow="ellipsis") if short else row["why"]
        table.add_row(*(verdict_text(row[c]) if c == "verdict" else row[c] for c in columns), why)
    return table


def live_view(
    scenario: Scenario,
    rollout: Mapping[str, Any],
    traffic: Mapping[str, Any],
    *,
    fit: bool = True,
) -> RenderableType:
    """Stage, step and weight; each gate's latest value against its threshold; the newest
    decisions. ``fit``: as many decisions as fit the screen, each gate's why cut to a line if
    the screen is short (for a terminal); else the :data:`RECENT_DECISIONS` newest."""
    status = rollout.get("status") or {}
    steps = len(((rollout.get("spec") or {}).get("traffic") or {}).get("steps") or [])
    header = _header(scenario, status, steps, traffic)
    ledger = list(status.get("ledger") or [])

    def layout(short: bool) -> Layout:
        return lambda limit, width: Group(
            header,
            Text(),
            gates_table(ledger, width, short=short),
            fitted_ledger(rollout, limit=limit, width=width),
        )

    layouts = [layout(short=False), layout(short=True)]
    if fit:
        return FitToHeight(layouts, len(ledger), least=2)
    return FitToHeight(layouts[:1], min(len(ledger), RECENT_DECISIONS), height=sys.maxsize)


def print_summary(result: DemoResult, console: Console) -> None:
    console.print()
    events = Table.grid(padding=(0, 2))
    events.add_column(no_wrap=True)
    events.add_column(overflow="fold")
    for event in result.events:
        style = "yellow" if event["type"] == "Warning" else ""
        events.add_row(Text(event["reason"], style=style or "dim"), event["message"])
    if result.events:
        console.print(Text("Events", style="bold"))
        console.print(events)
    style = "bold green" if result.outcome == result.expected else "bold red"
    outcome = Text.assemble(
        ("outcome ", "dim"),
        (result.outcome, style),
        f" (expected {result.expected})",
        ("   apply → outcome ", "dim"),
        f"{result.seconds_apply_to_outcome} s" if result.seconds_apply_to_outcome else "—",
    )
    if result.seconds_fault_to_zero_weight is not None:  # a faulty candidate, rolled back
        outcome.append_text(
            Text.assemble(
                ("   fault → weight 0 ", "dim"), f"{result.seconds_fault_to_zero_weight} s"
            )
        )
    console.print(outcome)
    # The last Event says it already, often word for word.
    if not result.events or result.message not in result.events[-1]["message"]:
        console.print(Text(result.message, style="italic"))


def print_next_steps(scenario: Scenario, console: Console) -> None:
    """What to try after the demo: the other scenarios, one's own model, the on-call view."""
    others = "|".join(name for name in SCENARIOS if name != scenario.name)
    steps = Table.grid(padding=(0, 2))
    steps.add_column(no_wrap=True, style="bold")
    steps.add_column(overflow="fold")
    steps.add_row(f"make demo SCENARIO={others}", "the other scenarios")
    steps.add_row(
        "gelu-rollout demo --candidate-repository DIR", "your own Triton model repository"
    )
    steps.add_row("gelu-rollout demo --json report.json", "the outcome, timings and ledger")
    steps.add_row("kubectl gelu status NAME --watch", "follow a rollout on any cluster")
    steps.add_row("docs/operator.md", "the operator on a real cluster")
    console.print(Text("Next", style="bold"))
    console.print(steps)
