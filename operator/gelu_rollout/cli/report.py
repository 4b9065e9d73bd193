"""The decision report: one self-contained HTML page that explains a rollout's outcome.

Pure rendering, like :mod:`.status_view`: the rollout object as the API server returns it (and
its Events, optionally) in, a string of HTML out. The page needs nothing but itself: the charts
are inline SVG drawn here, the style sheet is inline, there is no script and no URL to fetch,
so it opens from a mail attachment, an incident ticket or a machine with no network.

What it shows, top to bottom:

* a plain-language summary of the outcome (what happened, when, which gate decided, on what);
* the timeline: the candidate's traffic weight over time, step by step, with the probe, every
  tick that decided, and the outcome marked;
* one chart per gate from ``status.gateHistory``: its value, the confidence bound its test
  compares with the threshold, and the threshold, over time, each tick coloured by verdict, and
  the tick that decided marked (from the ledger when a status has no history);
* the decision ledger, the conditions and the Events.

Every string that came from a user or the cluster (names, messages, reasons) is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any, Final

from gelu_rollout.cli.status_view import (
    RolloutView,
    human_duration,
    number,
    read_rollout,
    summary_line,
)
from gelu_rollout.rollout.conditions import FAILURE_REASONS
from gelu_rollout.spec import LedgerEntry, Stage

VERDICT_COLOURS: Final[Mapping[str, str]] = {
    "Pass": "#1a7f37",
    "Fail": "#cf222e",
    "Inconclusive": "#bf8700",
}
LETTER_VERDICTS: Final[Mapping[str, str]] = {"P": "Pass", "F": "Fail", "I": "Inconclusive"}
VALUE_COLOUR: Final = "#0969da"
BOUND_COLOUR: Final = "#8250df"
THRESHOLD_COLOUR: Final = "#cf222e"
OUTCOME_COLOURS: Final[Mapping[Stage, str]] = {
    Stage.PROMOTED: "#1a7f37",
    Stage.ROLLED_BACK: "#cf222e",
}

GATE_UNITS: Final[Mapping[str, str]] = {
    "probe": "largest |candidate - baseline| on the probe's inputs",
    "nonFinite": "non-finite outputs (per million with a tolerance, else a count)",
    "burnRate": "error-budget burn rate over the long window (x)",
    "errorRate": "error-budget burn rate over the segment (x)",
    "latencyRegression": "candidate / baseline P99 (or the tail's exceedance ratio)",
    "latencyCeiling": "candidate P99 in ms (or the share of requests above the ceiling)",
    "divergence": "KL(baseline || candidate) in nats, or the sampled answers' largest difference",
}
"""What each gate's numbers are in, said once under its chart."""

# The charts' geometry, in SVG user units; the page scales them to its width.
WIDTH: Final = 960
LEFT: Final = 64
RIGHT: Final = 24
TOP: Final = 30
BOTTOM: Final = 34


# --- what the charts are drawn from ------------------------------------------------------


@dataclass(frozen=True)
class GatePoint:
    """One gate at one tick."""

    time: datetime
    value: float | None
    bound: float | None
    threshold: float | None
    verdict: str


@dataclass(frozen=True)
class Tick:
    """One judged tick of the timeline: where the evidence was gathered, whether it decided."""

    time: datetime
    step: int
    weight: int
    decided: bool
    probe: bool


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def gate_series(view: RolloutView) -> dict[str, list[GatePoint]]:
    """Each gate's points in time order, in the order the gates first appear: from the gate
    history, or from the ledger (values and thresholds only) when the status has none."""
    series: dict[str, list[GatePoint]] = {}
    history = view.status.gate_history
    if history:
        for tick in history:
            for gate, (value, bound, threshold, letter) in tick.gates.items():
                series.setdefault(gate, []).append(
                    GatePoint(tick.time, value, bound, threshold, LETTER_VERDICTS[letter])
                )
    else:
        for entry in view.status.ledger:
            series.setdefault(entry.gate, []).append(
                GatePoint(entry.time, entry.value, None, entry.threshold, entry.verdict)
            )
    for points in series.values():
        points.sort(key=lambda p: p.time)
    return series


def timeline_ticks(view: RolloutView) -> list[Tick]:
    """The judged ticks, from the gate history, else from the ledger's looks."""
    if view.status.gate_history:
        return [
            Tick(t.time, t.step, t.weight, bool(t.decided), "probe" in t.gates)
            for t in view.status.gate_history
        ]
    looks: dict[datetime, Tick] = {}
    for entry in view.status.ledger:
        seen = looks.get(entry.time)
        probe = entry.gate == "probe" or (seen is not None and seen.probe)
        looks[entry.time] = Tick(entry.time, entry.step, entry.weight, False, probe)
    return sorted(looks.values(), key=lambda t: t.time)


def deciding_time(view: RolloutView) -> datetime | None:
    """When the outcome was decided: the finish of a promoted or rolled-back rollout."""
    status = view.status
    return status.finished_at if status.stage.terminal else None


def deciding_gate(view: RolloutView) -> str | None:
    """The gate whose failure rolled the rollout back, read from the RolledBack condition's
    reason (several gates may fail at one tick; the operator acts on one and says which)."""
    status = view.status
    condition = status.condition("RolledBack")
    if status.stage is not Stage.ROLLED_BACK or condition is None:
        return None
    return next((g for g, r in FAILURE_REASONS.items() if r.value == condition.reason), None)


def deciding_entry(view: RolloutView) -> LedgerEntry | None:
    """The ledger's record of the failure that rolled the rollout back in its latest run."""
    gate = deciding_gate(view)
    started = view.status.started_at
    failures = [
        e
        for e in view.status.ledger
        if e.verdict == "Fail" and (started is None or e.time >= started)
    ]
    chosen = [e for e in failures if e.gate == gate] or ([] if gate else failures)
    return max(chosen, key=lambda e: e.time) if chosen else None


# --- the summary -------------------------------------------------------------------------


def _clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def summary_sentences(view: RolloutView, ticks: Sequence[Tick]) -> list[str]:
    """The outcome in plain words, first what happened, then on what evidence."""
    status = view.status
    sentences: list[str] = []
    steps = f" of {view.steps}" if view.steps is not None else ""
    top = max((t.weight for t in ticks), default=status.candidate_weight)
    if status.started_at is not None:
        sentences.append(f"The rollout started at {_clock(status.started_at)}.")
    took = (
        f" after {human_duration((status.finished_at - status.started_at).total_seconds())}"
        if status.finished_at is not None and status.started_at is not None
        else ""
    )
    if status.stage is Stage.ROLLED_BACK:
        condition = status.condition("RolledBack")
        reason = f" ({condition.reason})" if condition is not None else ""
        where = (
            "by the probe, before any traffic moved"
            if status.step_started_at is None
            else f"at step {status.step_index + 1}{steps}"
        )
        sentences.append(
            f"It was rolled back{reason}{took}, {where}; the candidate never received more than "
            f"{top}% of the traffic and now receives none."
        )
        failed = deciding_entry(view)
        if failed is not None:
            sentences.append(
                f"The {failed.gate} gate decided it at {_clock(failed.time)}, at "
                f"{failed.weight}% of traffic: {failed.message}"
            )
        elif status.message:
            sentences.append(status.message)
    elif status.stage is Stage.PROMOTED:
        sentences.append(
            f"It was promoted{took}: {status.message or 'every step passed'}. The candidate "
            "now serves all of the traffic."
        )
    else:
        sentences.append(f"It has not finished: {summary_line(view)}.")
    judged = len(ticks)
    if judged:
        sentences.append(
            f"{judged} judged tick{'s' if judged != 1 else ''} are charted below"
            + (" (the newest the status keeps)." if judged >= 200 else ".")
        )
    return sentences


# --- SVG ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A chart's plot area and the scales that map time and value into it."""

    start: datetime
    end: datetime
    low: float
    high: float
    height: int

    def x(self, when: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        return LEFT + (WIDTH - LEFT - RIGHT) * (when - self.start).total_seconds() / span

    def y(self, value: float) -> float:
        span = (self.high - self.low) or 1.0
        inner = self.height - TOP - BOTTOM
        return TOP + inner * (1.0 - (value - self.low) / span)


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _f(value: float) -> str:
    return f"{value:.1f}"


def time_domain(times: Iterable[datetime]) -> tuple[datetime, datetime]:
    """The times' range, widened by a twentieth on each side (a minute when it is a point)."""
    known = sorted(times)
    if not known:
        now = datetime.fromtimestamp(0, UTC)
        return now, now + timedelta(minutes=1)
    start, end = known[0], known[-1]
    pad = (end - start) / 20 if end > start else timedelta(seconds=30)
    return start - pad, end + pad


def value_domain(values: Iterable[float]) -> tuple[float, float]:
    """A range that holds every value and zero where the values are all of one sign."""
    known = [v for v in values if math.isfinite(v)]
    if not known:
        return 0.0, 1.0
    low, high = min(*known, 0.0), max(*known, 0.0)
    if high == low:
        high = low + 1.0
    pad = (high - low) * 0.08
    return low - (pad if low < 0 else 0.0), high + pad


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values between ``low`` and ``high`` for an axis."""
    span = high - low
    if span <= 0 or not math.isfinite(span):
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _axes(frame: Frame, y_ticks: Sequence[float], y_label: str, labels: bool = True) -> list[str]:
    """Grid lines, both axes' labels (time in UTC below)."""
    parts: list[str] = []
    bottom = frame.height - BOTTOM
    for value in y_ticks:
        y = frame.y(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y)}" y2="{_f(y)}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">'
            f"{escape(number(value))}{escape(y_label)}</text>"
        )
    span = (frame.end - frame.start).total_seconds()
    seconds = next(
        (
            s
            for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
            if span / s <= 8
        ),
        14400,
    )
    first = math.ceil(frame.start.timestamp() / seconds) * seconds
    moment = datetime.fromtimestamp(first, UTC)
    while labels and moment <= frame.end:
        x = frame.x(moment)
        text = moment.strftime("%H:%M:%S" if seconds < 60 else "%H:%M")
        parts.append(f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{TOP}" y2="{bottom}"/>')
        parts.append(
            f'<text class="axis" x="{_f(x)}" y="{bottom + 16}" text-anchor="middle">{text}</text>'
        )
        moment += timedelta(seconds=seconds)
    parts.append(
        f'<line class="frame" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}"/>'
    )
    parts.append(f'<line class="frame" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}"/>')
    return parts


def _svg(body: Sequence[str], height: int, label: str, css_class: str) -> str:
    return (
        f'<svg class="{css_class}" role="img" aria-label="{_attr(label)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def _polyline(points: Sequence[tuple[float, float]], css_class: str) -> str:
    if len(points) < 2:
        return ""
    coordinates = " ".join(f"{_f(x)},{_f(y)}" for x, y in points)
    return f'<polyline class="{css_class}" points="{coordinates}"/>'


def _runs(points: Sequence[GatePoint], frame: Frame, pick: str) -> list[list[tuple[float, float]]]:
    """The points of one line, split where a value is missing (a gap, not a zero)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        value = getattr(point, pick)
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((frame.x(point.time), frame.y(value)))
    return [run for run in runs if run]


def _marker(frame: Frame, when: datetime, label: str, colour: str, css_class: str) -> list[str]:
    x = frame.x(when)
    bottom = frame.height - BOTTOM
    anchor = "end" if x > WIDTH - 200 else "start"
    shift = -4 if anchor == "end" else 4
    return [
        f'<line class="{css_class}" x1="{_f(x)}" x2="{_f(x)}" y1="{TOP}" y2="{bottom}" '
        f'stroke="{colour}"/>',
        f'<text class="marker-label" x="{_f(x + shift)}" y="{TOP - 8}" text-anchor="{anchor}" '
        f'fill="{colour}">{escape(label)}</text>',
    ]


def outcome_label(view: RolloutView) -> str:
    stage = view.status.stage
    if stage is Stage.ROLLED_BACK:
        return "rolled back"
    if stage is Stage.PROMOTED:
        return "promoted"
    return stage.value.lower()


def weight_after(view: RolloutView, ticks: Sequence[Tick], index: int) -> int:
    """The candidate's weight once tick ``index`` was acted on: a tick that decided moved it
    to the next tick's weight (the last to the status's), any other left it."""
    tick = ticks[index]
    if index + 1 == len(ticks):
        return view.status.candidate_weight if tick.decided else tick.weight
    return ticks[index + 1].weight if tick.decided else tick.weight


def weight_line(
    view: RolloutView, ticks: Sequence[Tick], frame: Frame
) -> list[tuple[float, float]]:
    """The weight as a step line: each level from the tick that set it to the next tick."""
    if not ticks:
        return []
    level = ticks[0].weight
    started = view.status.started_at
    first = min(ticks[0].time, started) if started is not None else ticks[0].time
    points = [(frame.x(first), frame.y(level))]
    for index, tick in enumerate(ticks):
        x = frame.x(tick.time)
        after = weight_after(view, ticks, index)
        points += [(x, frame.y(level)), (x, frame.y(after))]
        level = after
    points.append((frame.x(frame.end), frame.y(level)))
    return points


def step_labels(view: RolloutView, ticks: Sequence[Tick]) -> list[tuple[str, datetime, int]]:
    """``step N · W%`` where each step's weight begins: at the tick that moved it there."""
    labels: list[tuple[str, datetime, int]] = []
    if ticks and not ticks[0].probe and ticks[0].weight > 0:
        first = ticks[0]
        labels.append((f"step {first.step + 1} · {first.weight}%", first.time, first.weight))
    for index, tick in enumerate(ticks[:-1]):
        after = weight_after(view, ticks, index)
        following = ticks[index + 1]
        if after != tick.weight and after > 0:
            labels.append((f"step {following.step + 1} · {after}%", tick.time, after))
    return labels


def timeline_svg(view: RolloutView, ticks: Sequence[Tick], start: datetime, end: datetime) -> str:
    """The candidate's weight over time: a step line through the judged ticks to the outcome,
    the probe, the ticks that decided and the outcome marked."""
    height = 240
    frame = Frame(start, end, 0.0, 105.0, height)
    status = view.status
    body = _axes(frame, [0, 25, 50, 75, 100], "%")
    decided_at = deciding_time(view)
    body.append(_polyline(weight_line(view, ticks, frame), "weight"))
    for label, when, weight in step_labels(view, ticks):
        body.append(
            f'<text class="step-label" x="{_f(frame.x(when) + 6)}" y="{_f(frame.y(weight) - 8)}">'
            f"{escape(label)}</text>"
        )
    for tick in ticks:
        x, y = frame.x(tick.time), frame.y(tick.weight)
        if tick.probe:
            body.append(
                f'<path class="probe" d="M{_f(x)},{_f(y - 7)} l7,7 l-7,7 l-7,-7 z">'
                f"<title>probe at {escape(_clock(tick.time))}</title></path>"
            )
        elif tick.decided:
            body.append(
                f'<circle class="decided" cx="{_f(x)}" cy="{_f(y)}" r="5">'
                f"<title>decided at {escape(_clock(tick.time))}: step {tick.step + 1}, "
                f"{tick.weight}%</title></circle>"
            )
        else:
            body.append(f'<circle class="tick" cx="{_f(x)}" cy="{_f(y)}" r="2.5"/>')
    probes = [t for t in ticks if t.probe]
    if probes:
        body.append(
            f'<text class="marker-label" x="{_f(frame.x(probes[0].time) + 9)}" '
            f'y="{_f(frame.y(0) - 10)}">probe</text>'
        )
    if decided_at is not None:
        colour = OUTCOME_COLOURS.get(status.stage, "#57606a")
        body += _marker(frame, decided_at, outcome_label(view), colour, "outcome")
    label = f"Candidate traffic weight over time for {view.name}"
    return _svg(body, height, label, "timeline")


def gate_svg(
    gate: str, points: Sequence[GatePoint], start: datetime, end: datetime, decided: datetime | None
) -> str:
    """One gate: value, bound and threshold over time; points coloured by verdict; the
    deciding tick marked. A gate with no value at all says so in the chart."""
    height = 220
    numbers = [v for p in points for v in (p.value, p.bound, p.threshold) if v is not None]
    low, high = value_domain(numbers)
    frame = Frame(start, end, low, high, height)
    body = _axes(frame, nice_ticks(low, high), "")
    for run in _runs(points, frame, "threshold"):
        # A threshold known at one tick only still reads as a line across the chart.
        line = run if len(run) > 1 else [(LEFT, run[0][1]), (WIDTH - RIGHT, run[0][1])]
        body.append(_polyline(line, "threshold"))
    for run in _runs(points, frame, "bound"):
        body.append(_polyline(run, "bound"))
        body += [f'<circle class="bound-point" cx="{_f(x)}" cy="{_f(y)}" r="3"/>' for x, y in run]
    for run in _runs(points, frame, "value"):
        body.append(_polyline(run, "value"))
    for point in points:
        if point.value is None:
            continue
        colour = VERDICT_COLOURS.get(point.verdict, "#57606a")
        deciding = decided is not None and point.time == decided
        body.append(
            f'<circle class="{"deciding" if deciding else "point"}" '
            f'cx="{_f(frame.x(point.time))}" cy="{_f(frame.y(point.value))}" '
            f'r="{7 if deciding else 4}" fill="{colour}">'
            f"<title>{escape(_clock(point.time))}: {escape(point.verdict)}, value "
            f"{escape(number(point.value))}, bound {escape(number(point.bound))}, threshold "
            f"{escape(number(point.threshold))}</title></circle>"
        )
    if not any(p.value is not None for p in points):
        body.append(
            f'<text class="empty" x="{WIDTH / 2:.0f}" y="{height / 2:.0f}" '
            'text-anchor="middle">no values recorded: the gate had no data to judge</text>'
        )
    if decided is not None:
        body += _marker(frame, decided, "decided", "#24292f", "decided-line")
    return _svg(body, height, f"{gate} over time", "gate-chart")


# --- HTML --------------------------------------------------------------------------------

STYLE: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#24292f;
margin:24px auto;max-width:1000px;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de;padding-bottom:4px}h3{font-size:15px;margin:18px 0 4px}
.meta{color:#57606a;margin:0 0 12px}.summary{border-left:6px solid #57606a;padding:10px 14px;
background:#f6f8fa;font-size:15px}.summary.RolledBack{border-color:#cf222e}
.summary.Promoted{border-color:#1a7f37}.summary p{margin:4px 0}
svg{display:block;max-width:100%;height:auto;background:#fff}
.grid{stroke:#eaeef2;stroke-width:1}.frame{stroke:#8c959f;stroke-width:1}
.axis{font-size:11px;fill:#57606a}.step-label{font-size:12px;fill:#0969da}.marker-label{font-size:12px;font-weight:600}
.weight{fill:none;stroke:#0969da;stroke-width:3}.tick{fill:#0969da}
.decided{fill:#fff;stroke:#0969da;stroke-width:2.5}.probe{fill:#bf8700;stroke:#fff}
.outcome{stroke-width:3;stroke-dasharray:6 3}.decided-line{stroke-width:1.5;stroke-dasharray:4 3}
.value{fill:none;stroke:#0969da;stroke-width:2}.bound{fill:none;stroke:#8250df;stroke-width:2;
stroke-dasharray:5 3}.bound-point{fill:#8250df}.threshold{fill:none;stroke:#cf222e;
stroke-width:2;stroke-dasharray:2 2}.point{stroke:#fff;stroke-width:1}
.deciding{stroke:#24292f;stroke-width:2.5}.empty{font-size:14px;fill:#57606a}
.legend{color:#57606a;font-size:12px;margin:2px 0 0}.legend b{font-weight:600}
.swatch{display:inline-block;width:18px;height:0;border-top:3px solid;vertical-align:middle;
margin:0 4px 0 12px}
table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{text-align:left;
padding:4px 6px;border-bottom:1px solid #eaeef2;vertical-align:top}th{background:#f6f8fa}
td.n{text-align:right;white-space:nowrap}tr.Fail td{color:#cf222e;font-weight:600}
.verdict-Pass{color:#1a7f37}.verdict-Fail{color:#cf222e}.verdict-Inconclusive{color:#bf8700}
.gate-caption{margin:2px 0 6px}.none{color:#57606a}
"""


def _table(
    headers: Sequence[str], rows: Iterable[tuple[Sequence[str], str]], numeric: set[int]
) -> str:
    """An HTML table; each row's cells are escaped here, with a class for the row."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for cells, row_class in rows:
        tds = "".join(
            f'<td class="n">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f'<tr class="{_attr(row_class)}">{tds}</tr>')
    if not body:
        return '<p class="none">None.</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def ledger_html(view: RolloutView) -> str:
    """The decision ledger, oldest first: the report reads as a story."""
    rows = []
    for entry in sorted(view.status.ledger, key=lambda e: e.time):
        rows.append(
            (
                [
                    entry.time.astimezone(UTC).strftime("%H:%M:%S"),
                    "probe" if entry.gate == "probe" else str(entry.step + 1),
                    f"{entry.weight}%",
                    entry.gate,
                    f"{entry.verdict} ({entry.basis})" if entry.basis else entry.verdict,
                    number(entry.value),
                    number(entry.threshold),
                    number(entry.samples),
                    entry.message,
                ],
                entry.verdict,
            )
        )
    headers = ("Time (UTC)", "Step", "Weight", "Gate", "Verdict", "Value", "Threshold", "Samples")
    return _table([*headers, "Message"], rows, {5, 6, 7})


def conditions_html(view: RolloutView) -> str:
    rows = [
        (
            [c.type, c.status, c.reason, c.message, _clock(c.last_transition_time)],
            "Fail" if c.type in ("RolledBack", "Stalled") and c.status == "True" else "",
        )
        for c in view.status.conditions
    ]
    return _table(("Type", "Status", "Reason", "Message", "Since"), rows, set())


def events_html(events: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for event in events:
        when = _time(event.get("lastTimestamp") or event.get("eventTime") or event.get("time"))
        rows.append(
            (
                [
                    _clock(when) if when is not None else "",
                    str(event.get("type", "")),
                    str(event.get("reason", "")),
                    str(event.get("message", "")),
                ],
                "Fail" if event.get("type") == "Warning" else "",
            )
        )
    return _table(("Time", "Type", "Reason", "Message"), rows, set())


def _legend() -> str:
    return (
        '<p class="legend">'
        f'<span class="swatch" style="border-color:{VALUE_COLOUR}"></span>value'
        f'<span class="swatch" style="border-color:{BOUND_COLOUR};border-top-style:dashed">'
        "</span>confidence bound (lower end of what the evidence allows)"
        f'<span class="swatch" style="border-color:{THRESHOLD_COLOUR};border-top-style:dotted">'
        "</span>threshold; points: "
        + ", ".join(
            f'<b style="color:{colour}">{escape(verdict)}</b>'
            for verdict, colour in VERDICT_COLOURS.items()
        )
        + "</p>"
    )


def _gate_caption(
    gate: str, points: Sequence[GatePoint], decided: datetime | None, decider: str | None
) -> str:
    last = points[-1] if points else None
    at_decision = next((p for p in points if decided is not None and p.time == decided), None)
    shown = at_decision or last
    parts = []
    if gate == decider:
        parts.append('<b class="verdict-Fail">this gate decided the outcome</b>')
    elif at_decision is not None and at_decision.verdict == "Fail":
        parts.append('<b class="verdict-Fail">failing too at the deciding tick</b>')
    if gate in GATE_UNITS:
        parts.append(f'<span class="none">{escape(GATE_UNITS[gate])}</span>')
    if shown is not None:
        when = "at the deciding tick" if at_decision is not None else "last"
        parts.append(
            f'{when}: <span class="verdict-{_attr(shown.verdict)}">{escape(shown.verdict)}'
            f"</span>, value {escape(number(shown.value))}, bound {escape(number(shown.bound))},"
            f" threshold {escape(number(shown.threshold))}"
        )
    return f'<p class="gate-caption">{" — ".join(parts)}</p>'


def render_report(
    rollout: Mapping[str, Any],
    *,
    events: Sequence[Mapping[str, Any]] = (),
    generated_at: datetime | None = None,
) -> str:
    """The decision report of ``rollout`` (an object as the API server returns it) as one
    self-contained HTML page. ``events``: the rollout's Events, shown when given."""
    view = read_rollout(rollout)
    status = view.status
    ticks = timeline_ticks(view)
    series = gate_series(view)
    decided = deciding_time(view)
    decider = deciding_gate(view)
    times = [t.time for t in ticks]
    times += [p.time for points in series.values() for p in points]
    times += [t for t in (status.started_at, status.finished_at) if t is not None]
    start, end = time_domain(times)
    title = f"Decision report: {view.namespace}/{view.name}" if view.namespace else view.name
    meta = (
        f"{view.baseline} → {view.candidate} · stage {status.stage.value} · step "
        f"{status.step_index + 1}{f'/{view.steps}' if view.steps is not None else ''} · "
        f"candidate weight {status.candidate_weight}%"
    )
    generated = _clock(generated_at) if generated_at is not None else None
    sentences = "".join(f"<p>{escape(s)}</p>" for s in summary_sentences(view, ticks))
    if view.problem is not None:
        sentences += f"<p>{escape(view.problem)}</p>"
    gates_html = []
    for gate, points in series.items():
        gates_html.append(
            f'<section class="gate" id="gate-{_attr(gate)}"><h3>{escape(gate)}</h3>'
            + _gate_caption(gate, points, decided, decider)
            + gate_svg(gate, points, start, end, decided)
            + "</section>"
        )
    if not gates_html:
        gates_html.append('<p class="none">No gate has been judged yet.</p>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(meta)}'
        + (f" · generated {escape(generated)}" if generated else "")
        + "</p>",
        f'<div class="summary {_attr(status.stage.value)}">{sentences}</div>',
        "<h2>Timeline</h2>",
        '<p class="legend">The candidate\'s share of traffic at each judged tick; '
        "◆ the probe, ○ a tick that decided (a step, the outcome), the dashed line the "
        "outcome.</p>",
        timeline_svg(view, ticks, start, end),
        "<h2>Gates</h2>",
        _legend(),
        *gates_html,
        '<section id="ledger"><h2>Decision ledger</h2>',
        ledger_html(view),
        '</section><section id="conditions"><h2>Conditions</h2>',
        conditions_html(view),
        "</section>",
    ]
    if events:
        parts += ['<section id="events"><h2>Events</h2>', events_html(events), "</section>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
