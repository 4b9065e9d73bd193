"""``gelu-rollout replay``: one generated rollout replayed through the state machine.

The decision core on its own, no sandbox: the
stage, step and weight tick by tick, the gates' verdicts, the Events, and the
decision ledger an on-call engineer would read in the resource's status.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gelu_lab.bench.generate import FAULTS, _scenario
from gelu_lab.bench.policies.gelu import replay_decisions, spec_for
from gelu_rollout.cli.status_view import ledger_table, verdict_text
from gelu_rollout.rollout.evaluate import gate_names
from gelu_rollout.spec.status import Stage


def run_demo(kind: str, seed: int, console: Console) -> int:
    """Replay a scenario of ``kind``; returns 0 when the outcome is the expected one."""
    faults = {f.kind: f for f in FAULTS}
    if kind != "healthy" and kind not in faults:
        choices = ", ".join(["healthy", *faults])
        raise ValueError(f"unknown scenario {kind!r}: choose one of {choices}")
    scenario = _scenario(np.random.default_rng([seed, 0]), f"demo-{kind}", faults.get(kind))
    spec = spec_for(scenario)
    onset = scenario.fault_onset_tick
    console.print(
        f"[bold]{scenario.name}[/]: {'; '.join(scenario.notes)}"
        + (f"; fault {kind} from tick {onset}" if onset is not None else "")
    )
    gates = gate_names(spec)
    ticks = Table(title="Tick by tick", title_justify="left")
    for column in ("tick", "stage", "step", "weight", *gates, "events"):
        ticks.add_column(column, no_wrap=column != "events")
    final = None
    for tick, decision in replay_decisions(scenario, spec):
        status = decision.status
        final = status
        verdicts = {r.gate: r.verdict.value for r in decision.results}
        ticks.add_row(
            "start" if tick < 0 else str(tick),
            status.stage.value,
            str(status.step_index + 1),
            f"{status.candidate_weight}%",
            *(verdict_text(verdicts[g]) if g in verdicts else Text("-") for g in gates),
            ", ".join(e.reason for e in decision.events),
        )
    console.print(ticks)
    assert final is not None
    console.print(ledger_table({"status": final.to_dict()}, limit=12, width=console.width))
    finished = final.condition(final.stage.value)
    reason = f" ({finished.reason})" if finished is not None else ""
    console.print(
        Text.assemble(("outcome", "bold"), f": {final.stage.value}{reason}: {final.message}")
    )
    expected = Stage.PROMOTED if scenario.expected == "promote" else Stage.ROLLED_BACK
    return 0 if final.stage is expected else 1
