"""A GeluModelRollout, as an on-call engineer reads it: pure rendering, no I/O.

Everything here takes the rollout as the API server returns it (a mapping with ``metadata``,
``spec`` and ``status``) and gives rich renderables or plain text: the one-line summary, the
header, the conditions, the decision ledger newest first with failures in bold red, and the
kubectl-style rows of ``list``. ``kubectl gelu`` and the demo's live view both use it.

Views fit the terminal: tables drop their least needed columns where a message would get too
narrow (:func:`choose_columns`), and :class:`FitToHeight` shows the newest decisions that fit
the screen's height, summing up the rest.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, parse_request
from gelu_rollout.spec import (
    LedgerEntry,
    RolloutStatus,
    SpecError,
    Stage,
    parse_spec,
    parse_status,
)

NONE: Final = "<none>"
"""What kubectl prints for an empty column."""

FAIL_STYLE: Final = "bold red"
STAGE_STYLES: Final[Mapping[Stage, str]] = {
    Stage.PENDING: "yellow",
    Stage.PROGRESSING: "cyan",
    Stage.PAUSED: "yellow",
    Stage.PROMOTED: "bold green",
    Stage.ROLLED_BACK: "bold red",
}
VERDICT_STYLES: Final[Mapping[str, str]] = {
    "Pass": "green",
    "Fail": FAIL_STYLE,
    "Inconclusive": "yellow",
}


def verdict_text(verdict: str) -> Text:
    """A gate's verdict in the palette every view shares (``Pass (power)`` as ``Pass``)."""
    return Text(verdict, style=VERDICT_STYLES.get(verdict.split(" ", maxsplit=1)[0], ""))


@dataclass(frozen=True)
class RolloutView:
    """What the views need from one rollout object, read once."""

    name: str
    namespace: str
    created: datetime | None
    status: RolloutStatus
    steps: int | None
    """How many traffic steps the spec has (None if the spec cannot be read)."""
    baseline: str
    candidate: str
    problem: str | None
    """Why the spec or status could not be read, if it could not."""
    pending_request: str | None
    """A manual request in the annotation that the operator has not acted on yet."""


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _arm(spec: Mapping[str, Any], arm: str) -> str:
    value = spec.get(arm)
    if not isinstance(value, Mapping):
        return NONE
    if value.get("variant"):
        return str(value["variant"])
    repository = value.get("repository")
    if isinstance(repository, Mapping) and repository.get("configMapName"):
        return f"configmap/{repository['configMapName']}"
    return NONE


def _steps(spec: Mapping[str, Any]) -> tuple[int | None, str | None]:
    try:
        return len(parse_spec(spec).traffic.steps), None
    except SpecError as error:
        traffic = spec.get("traffic")
        raw = traffic.get("steps") if isinstance(traffic, Mapping) else None
        count = len(raw) if isinstance(raw, list) and raw else None
        return count, f"invalid spec: {str(error).splitlines()[0]}"


def _pending_request(metadata: Mapping[str, Any], status: RolloutStatus) -> str | None:
    annotations = metadata.get("annotations")
    value = annotations.get(REQUEST_ANNOTATION) if isinstance(annotations, Mapping) else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        request = parse_request(value)
    except ValueError:
        return None
    if status.handled_request in (request.id, value):
        return None
    return value.strip()


def read_rollout(rollout: Mapping[str, Any]) -> RolloutView:
    """Read the parts of a rollout object the views show; never raises on a bad object."""
    metadata = rollout.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    spec = rollout.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    problem: str | None = None
    try:
        status = parse_status(rollout.get("status"))
    except SpecError as error:
        status = RolloutStatus()
        problem = f"unreadable status: {str(error).splitlines()[0]}"
    steps, spec_problem = _steps(spec)
    return RolloutView(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        created=_timestamp(metadata.get("creationTimestamp")),
        status=status,
        steps=steps,
        baseline=_arm(spec, "baseline"),
        candidate=_arm(spec, "candidate"),
        problem=problem or spec_problem,
        pending_request=_pending_request(metadata, status),
    )


def _view(rollout: Mapping[str, Any] | RolloutView) -> RolloutView:
    return rollout if isinstance(rollout, RolloutView) else read_rollout(rollout)


# --- small formatters -------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """A duration the way kubectl prints ages: ``45s``, ``5m3s``, ``47m``, ``3h10m``, ``4d``."""
    if seconds < 0:
        return "0s"
    total = int(seconds)
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def age(since: datetime | None, now: datetime) -> str:
    """How long ago ``since`` was, kubectl style; ``<unknown>`` when it is not known."""
    if since is None:
        return "<unknown>"
    return human_duration((now - since).total_seconds())


def number(value: float | None) -> str:
    """A gate's value, threshold or sample count: 4 significant digits, ``-`` when absent."""
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def step_label(view: RolloutView) -> str:
    """``2/3``: the current step, 1-based, of how many; ``0/3`` before the first step starts."""
    status = view.status
    total = str(view.steps) if view.steps is not None else "?"
    if status.step_started_at is None:
        return f"0/{total}"
    return f"{status.step_index + 1}/{total}"


def verdict(view: RolloutView) -> str | None:
    """The last overall verdict; before the first analysis tick, that of the newest look
    (the probe's), so that a rollout the probe rolled back reads ``Fail``."""
    if view.status.last_verdict is not None:
        return view.status.last_verdict
    ledger = view.status.ledger
    if not ledger:
        return None
    newest = max(entry.time for entry in ledger)
    verdicts = {entry.verdict for entry in ledger if entry.time == newest}
    return next(v for v in ("Fail", "Inconclusive", "Pass") if v in verdicts)


def _ledger_step(entry: LedgerEntry) -> str:
    return "probe" if entry.gate == "probe" else str(entry.step + 1)


# --- summary ----------------------------------------------------------------------------


def newest_first(ledger: Sequence[LedgerEntry]) -> list[LedgerEntry]:
    """The ledger newest first; entries of one look keep their gate order."""
    ordered = sorted(enumerate(ledger), key=lambda item: (item[1].time, -item[0]), reverse=True)
    return [entry for _, entry in ordered]


def failing_entry(rollout: Mapping[str, Any] | RolloutView) -> LedgerEntry | None:
    """The newest failing gate decision, if any."""
    view = _view(rollout)
    return next((e for e in newest_first(view.status.ledger) if e.verdict == "Fail"), None)


def summary_line(rollout: Mapping[str, Any] | RolloutView) -> str:
    """One line that says where the rollout is and why, naming a failing gate first.

    ``rolled back: nonFinite failed: 12 non-finite outputs ...``,
    ``promoted: all steps passed``, ``progressing: step 2/3 at 25%: ...``.
    """
    view = _view(rollout)
    status = view.status
    if view.problem is not None and status.stage is not Stage.ROLLED_BACK:
        return f"{status.stage.value.lower()}: {view.problem}"
    if status.stage is Stage.ROLLED_BACK:
        condition = status.condition("RolledBack")
        failed = failing_entry(view)
        current = failed is not None and (
            status.started_at is None or failed.time >= status.started_at
        )
        aborted = condition is not None and condition.reason == "Aborted"
        if failed is not None and current and not aborted:
            return f"rolled back: {failed.gate} failed: {failed.message}"
        reason = f" ({condition.reason})" if condition is not None else ""
        return f"rolled back{reason}: {status.message or 'no message'}"
    if status.stage is Stage.PROMOTED:
        return f"promoted: {status.message or 'all steps passed'}"
    if status.stage is Stage.PENDING:
        return f"pending: {status.message or 'waiting for the operator'}"
    label = "paused" if status.stage is Stage.PAUSED else "progressing"
    where = f"step {step_label(view)} at {status.candidate_weight}%"
    if not status.message:
        return f"{label}: {where}"
    if status.message.startswith(f"step {step_label(view)}"):
        return f"{label}: {status.message}"
    return f"{label}: {where}: {status.message}"


# --- rich views -------------------------------------------------------------------------


def _stage_text(stage: Stage) -> Text:
    return Text(stage.value, style=STAGE_STYLES.get(stage, ""))


def header(rollout: Mapping[str, Any] | RolloutView, now: datetime | None = None) -> Table:
    """Name, namespace, stage, step, weight, the two arms, age and message, as a grid."""
    view = _view(rollout)
    now = now or datetime.now(UTC)
    status = view.status
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("Name:", view.name)
    grid.add_row("Namespace:", view.namespace)
    grid.add_row("Stage:", _stage_text(status.stage))
    grid.add_row("Step:", step_label(view))
    grid.add_row("Candidate weight:", f"{status.candidate_weight}%")
    grid.add_row("Baseline → candidate:", f"{view.baseline} → {view.candidate}")
    last = verdict(view)
    grid.add_row("Last verdict:", Text(last or NONE, style=VERDICT_STYLES.get(last or "", "")))
    grid.add_row("Age:", age(view.created, now))
    if status.finished_at is not None:
        grid.add_row("Finished:", f"{age(status.finished_at, now)} ago")
    grid.add_row("Message:", status.message or NONE)
    if view.pending_request is not None:
        grid.add_row("Request:", Text(f"{view.pending_request} (not acted on yet)", style="yellow"))
    if view.problem is not None:
        grid.add_row("Problem:", Text(view.problem, style=FAIL_STYLE))
    return grid


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )


MIN_MESSAGE_WIDTH: Final = 40
"""The fewest columns a table's message gets before it drops other columns to widen it."""
COLUMN_GAP: Final = 3
"""What separates two columns of a :func:`_table` (padding, divider, padding)."""


def choose_columns(
    column_sets: Sequence[Sequence[str]],
    rows: Sequence[Mapping[str, str]],
    width: int | None,
    message_width: int = MIN_MESSAGE_WIDTH,
) -> Sequence[str]:
    """The first of ``column_sets`` (richest first) whose columns, at their widest in ``rows``,
    leave a message column beside them ``message_width`` wide; else the last. Every set when
    ``width`` is None (no limit)."""
    if width is None:
        return column_sets[0]
    for columns in column_sets:
        needed = sum(
            max([cell_len(column), *(cell_len(row.get(column, "")) for row in rows)])
            for column in columns
        )
        if width - needed - COLUMN_GAP * len(columns) >= message_width:
            return columns
    return column_sets[-1]


def conditions_table(
    rollout: Mapping[str, Any] | RolloutView, now: datetime | None = None
) -> Table:
    """The conditions: type, status, reason, message, age."""
    view = _view(rollout)
    now = now or datetime.now(UTC)
    table = _table("Conditions")
    for column in ("TYPE", "STATUS", "REASON"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    table.add_column("AGE", no_wrap=True, justify="right")
    for condition in view.status.conditions:
        alarming = condition.type in ("RolledBack", "Stalled") and condition.status == "True"
        table.add_row(
            condition.type,
            condition.status,
            condition.reason,
            condition.message,
            age(condition.last_transition_time, now),
            style=FAIL_STYLE if alarming else None,
        )
    return table


def _count(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "-"


def power_plan_table(rollout: Mapping[str, Any] | RolloutView) -> Table:
    """What each gate needs before it can pass on power, what it has, and how long the rest
    takes at the current traffic; a gate that cannot plan is in bold red (one that has no
    plan yet, waiting for the baseline's data, is not)."""
    view = _view(rollout)
    table = _table("Power plan (what each gate needs before it can pass on no evidence of harm)")
    for column in ("GATE", "DETECTS", "NEEDED", "HAVE", "UNIT", "MORE"):
        table.add_column(
            column,
            no_wrap=column not in ("DETECTS", "UNIT"),
            justify="right" if column in ("NEEDED", "HAVE") else "left",
        )
    for entry in view.status.power_plan:
        eta = entry.get("etaSeconds")
        waiting = entry.get("planned") is False
        if entry.get("met"):
            more = "met"
        elif waiting:
            more = "no plan yet"
        elif isinstance(eta, int | float):
            more = human_duration(float(eta))
        else:
            more = "unknown"
        table.add_row(
            str(entry.get("gate", "")),
            str(entry.get("detects", "")),
            _count(entry.get("needed")),
            _count(entry.get("have")),
            str(entry.get("unit", "")),
            more,
            style=FAIL_STYLE if entry.get("needed") is None and not waiting else None,
        )
    return table


LEDGER_COLUMNS: Final = (
    ("TIME (UTC)", "STEP", "WEIGHT", "GATE", "VERDICT", "VALUE", "THRESHOLD", "SAMPLES", "WINDOW"),
    ("TIME (UTC)", "STEP", "WEIGHT", "GATE", "VERDICT", "VALUE", "THRESHOLD"),
    ("TIME (UTC)", "STEP", "GATE", "VERDICT"),
    ("TIME (UTC)", "GATE", "VERDICT"),
)
"""The ledger's columns beside MESSAGE, richest first; a narrower terminal gets a later set
(the message says the value and its limit in words too)."""
_RIGHT_ALIGNED: Final = frozenset({"VALUE", "THRESHOLD", "SAMPLES", "WINDOW"})


def _ledger_cells(entry: LedgerEntry) -> dict[str, str]:
    return {
        "TIME (UTC)": entry.time.astimezone(UTC).strftime("%H:%M:%S"),
        "STEP": _ledger_step(entry),
        "WEIGHT": f"{entry.weight}%",
        "GATE": entry.gate,
        "VERDICT": f"{entry.verdict} ({entry.basis})" if entry.basis else entry.verdict,
        "VALUE": number(entry.value),
        "THRESHOLD": number(entry.threshold),
        "SAMPLES": number(entry.samples),
        "WINDOW": human_duration(entry.window_seconds) if entry.window_seconds else "-",
    }


def hidden_note(hidden: int, shown: int) -> str:
    """What stands for the decisions left out: ``… 12 earlier decisions``."""
    noun = "decision" if hidden == 1 else "decisions"
    return f"… {hidden} earlier {noun}" if shown else f"… {hidden} {noun}"


def ledger_table(
    rollout: Mapping[str, Any] | RolloutView,
    now: datetime | None = None,
    *,
    limit: int | None = None,
    width: int | None = None,
) -> Table:
    """The decision ledger newest first (at most ``limit`` rows, the rest summed up below);
    failures in bold red; the columns that fit ``width`` (all of them without one)."""
    view = _view(rollout)
    entries = newest_first(view.status.ledger)
    shown = entries if limit is None else entries[: max(limit, 0)]
    hidden = len(entries) - len(shown)
    table = _table("Decisions (newest first)")
    if hidden:
        table.caption = hidden_note(hidden, len(shown))
        table.caption_justify = "left"
    cells = [_ledger_cells(entry) for entry in shown]
    columns = choose_columns(LEDGER_COLUMNS, cells, width)
    for column in columns:
        table.add_column(
            column, no_wrap=True, justify="right" if column in _RIGHT_ALIGNED else "left"
        )
    table.add_column("MESSAGE", overflow="fold")
    for entry, row in zip(shown, cells, strict=True):
        values: list[RenderableType] = [
            verdict_text(row[c]) if c == "VERDICT" else row[c] for c in columns
        ]
        table.add_row(*values, entry.message, style=FAIL_STYLE if entry.verdict == "Fail" else None)
    return table


def fitted_ledger(
    rollout: Mapping[str, Any] | RolloutView,
    now: datetime | None = None,
    *,
    limit: int,
    width: int | None = None,
) -> RenderableType:
    """:func:`ledger_table` with at most ``limit`` rows; where none fits, only the line that
    says how many there are (a table of headings alone would take three lines for nothing)."""
    view = _view(rollout)
    if limit > 0 or not view.status.ledger:
        return ledger_table(view, now, limit=limit, width=width)
    return Text(hidden_note(len(view.status.ledger), 0), style="dim")


Layout = Callable[[int, int], RenderableType]
"""A view drawn with at most ``limit`` ledger rows, ``width`` columns wide."""


class FitToHeight:
    """The first of ``layouts`` (most detailed first) that fits the screen's height with at
    least ``least`` of the ``rows`` ledger rows, drawn with as many as fit; if none does, the
    last, with as many as fit (possibly none).

    Measured by rendering, so wrapped messages count as the lines they take. For
    ``rich.live.Live``, whose frame must fit the screen to be redrawn in place: one line less
    than the screen's, for the cursor's line after the frame, so that the frame stays whole on
    the screen once the command has ended.
    """

    def __init__(
        self, layouts: Sequence[Layout], rows: int, *, least: int = 1, height: int | None = None
    ) -> None:
        self.layouts = layouts
        self.rows = rows
        self.least = min(least, rows)
        self.height = height

    def _lines(self, console: Console, options: ConsoleOptions, view: RenderableType) -> int:
        return len(console.render_lines(view, options, pad=False))

    def _most_rows(self, console: Console, options: ConsoleOptions, layout: Layout) -> int | None:
        """The most ledger rows with which ``layout`` fits, None if it does not fit at all."""
        height = self.height or options.size.height - 1
        width = options.max_width

        def fits(rows: int) -> bool:
            return self._lines(console, options, layout(rows, width)) <= height

        if not fits(0):
            return None
        low, high = 0, self.rows  # fits(low); the height only grows with the rows
        while low < high:
            middle = (low + high + 1) // 2
            if fits(middle):
                low = middle
            else:
                high = middle - 1
        return low

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        measure = options.update(height=None)
        most = 0
        for layout in self.layouts:
            found = self._most_rows(console, measure, layout)
            if found is not None and found >= self.least:
                yield layout(found, options.max_width)
                return
            most = found or 0
        yield self.layouts[-1](most, options.max_width)


def summary_text(rollout: Mapping[str, Any] | RolloutView) -> Text:
    """:func:`summary_line`, coloured by stage."""
    view = _view(rollout)
    return Text(summary_line(view), style=STAGE_STYLES.get(view.status.stage, ""))


def compact_header(rollout: Mapping[str, Any] | RolloutView, now: datetime | None = None) -> Text:
    """The header's essentials in a line or two, for a short screen."""
    view = _view(rollout)
    now = now or datetime.now(UTC)
    status = view.status
    last = verdict(view)
    return Text.assemble(
        (f"{view.namespace}/{view.name}", "bold"),
        "  ",
        _stage_text(status.stage),
        f"  step {step_label(view)}  weight {status.candidate_weight}%",
        f"  {view.baseline} → {view.candidate}  verdict ",
        (last or NONE, VERDICT_STYLES.get(last or "", "")),
        f"  age {age(view.created, now)}",
    )


def render_status(
    rollout: Mapping[str, Any],
    *,
    now: datetime | None = None,
    ledger_limit: int | None = None,
    width: int | None = None,
    detail: int = 2,
) -> RenderableType:
    """The whole status view: summary line, header, conditions, the power plan while the
    rollout runs, and the decision ledger (its columns those that fit ``width``).

    ``detail`` 1 leaves the power plan out, 0 the conditions too and shortens the header: for
    screens too short for the rest (see :func:`status_layouts`).
    """
    view = read_rollout(rollout)
    now = now or datetime.now(UTC)
    parts: list[RenderableType] = [summary_text(view), Text()]
    if detail > 0:
        parts += [header(view, now), Text()]
        parts.append(
            conditions_table(view, now) if view.status.conditions else Text("Conditions: none")
        )
        parts.append(Text())
    else:
        parts += [compact_header(view, now), Text()]
    if detail > 1 and view.status.power_plan and not view.status.stage.terminal:
        parts += [power_plan_table(view), Text()]
    if view.status.ledger and ledger_limit is not None:
        parts.append(fitted_ledger(view, now, limit=ledger_limit, width=width))
    elif view.status.ledger:
        parts.append(ledger_table(view, now, width=width))
    else:
        parts.append(Text("Decisions: none yet"))
    return Group(*parts)


def status_layouts(
    rollout: Mapping[str, Any], now: datetime | None = None, footer: Sequence[RenderableType] = ()
) -> list[Layout]:
    """:func:`render_status` at each level of detail, most first, each followed by
    ``footer``: the layouts :class:`FitToHeight` picks from."""
    now = now or datetime.now(UTC)

    def layout(detail: int) -> Layout:
        return lambda limit, width: Group(
            render_status(rollout, now=now, ledger_limit=limit, width=width, detail=detail),
            *footer,
        )

    return [layout(detail) for detail in (2, 1, 0)]


def to_text(renderable: RenderableType, *, width: int = 160) -> str:
    """A renderable as plain text (no colour), for logs, files and tests."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(renderable)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


# --- list -------------------------------------------------------------------------------

LIST_COLUMNS: Final = ("NAME", "STAGE", "STEP", "WEIGHT", "VERDICT", "AGE")


def list_rows(
    rollouts: Iterable[Mapping[str, Any]], *, all_namespaces: bool, now: datetime | None = None
) -> list[list[str]]:
    """The rows of ``list``, header first, sorted by namespace and name."""
    now = now or datetime.now(UTC)
    columns = ("NAMESPACE", *LIST_COLUMNS) if all_namespaces else LIST_COLUMNS
    rows: list[list[str]] = [list(columns)]
    views = sorted((read_rollout(r) for r in rollouts), key=lambda v: (v.namespace, v.name))
    for view in views:
        status = view.status
        row = [
            view.name,
            status.stage.value,
            step_label(view),
            f"{status.candidate_weight}%",
            verdict(view) or NONE,
            age(view.created, now),
        ]
        rows.append([view.namespace, *row] if all_namespaces else row)
    return rows


def format_columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as kubectl prints them: left-aligned columns three spaces apart, no box."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"
