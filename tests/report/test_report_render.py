"""The decision report's HTML, rendered from statuses decide() made and from hand-made ones."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from gelu_rollout.cli.report import render_report
from tests.report.html_parts import external_references, parse
from tests.report.scenario import NAME, probe_failed_rollout, rolled_back_rollout

GENERATED = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rolled_back() -> dict[str, Any]:
    return rolled_back_rollout()


def test_a_real_rollback_has_a_chart_per_gate_and_marks_the_deciding_tick(
    rolled_back: dict[str, Any],
) -> None:
    page = render_report(rolled_back, generated_at=GENERATED)
    parsed = parse(page)
    gates = list(dict.fromkeys(g for t in rolled_back["status"]["gateHistory"] for g in t["gates"]))
    assert gates == [
        "probe",
        "nonFinite",
        "burnRate",
        "errorRate",
        "latencyRegression",
        "latencyCeiling",
        "divergence",
    ]
    charts = parsed.all("svg", **{"class": "gate-chart"})
    assert [c.attrs["aria-label"] for c in charts] == [f"{g} over time" for g in gates]
    assert len(parsed.all("svg", **{"class": "timeline"})) == 1
    # The failing gate's deciding tick is drawn large and red; its bound line is there.
    deciding = parsed.within("gate-errorRate", "circle")
    assert [c.attrs["fill"] for c in deciding if c.attrs.get("class") == "deciding"] == ["#cf222e"]
    assert parsed.within("gate-errorRate", "polyline")
    assert any(p.attrs["class"] == "bound" for p in parsed.within("gate-errorRate", "polyline"))
    # Every gate chart marks the tick that decided; the timeline marks the outcome.
    assert len(parsed.all("line", **{"class": "decided-line"})) == len(gates)
    assert len(parsed.all("line", **{"class": "outcome"})) == 1
    text = " ".join(parsed.text)
    assert "It was rolled back (ErrorRateAboveTolerance)" in text
    assert "The errorRate gate decided it at 2026-03-01 12:08:00 UTC, at 50% of traffic" in text
    assert "this gate decided the outcome" in text
    assert "step 2 · 50%" in text
    assert "generated 2026-03-01 13:00:00 UTC" in text
    # The ledger: one row per entry, the failure's row marked.
    rows = [r.attrs["class"] for r in parsed.within("ledger", "tr") if "class" in r.attrs]
    ledger = rolled_back["status"]["ledger"]
    assert rows == [e["verdict"] for e in sorted(ledger, key=lambda e: e["time"])]
    assert rows.count("Fail") == 1
    conditions = [r.attrs["class"] for r in parsed.within("conditions", "tr") if r.attrs]
    assert conditions.count("Fail") == 2  # RolledBack and Stalled
    assert external_references(page) == []


def test_the_page_is_the_same_for_the_same_object(rolled_back: dict[str, Any]) -> None:
    first = render_report(rolled_back, generated_at=GENERATED)
    assert render_report(copy.deepcopy(rolled_back), generated_at=GENERATED) == first


def test_everything_users_and_the_cluster_wrote_is_escaped(rolled_back: dict[str, Any]) -> None:
    hostile = copy.deepcopy(rolled_back)
    hostile["metadata"]["name"] = '<script>alert("name")</script>'
    hostile["metadata"]["namespace"] = 'ns"><img src=x onerror=alert(1)>'
    hostile["spec"]["candidate"] = {"variant": "<b>tanh</b>"}
    status = hostile["status"]
    status["ledger"][-1]["message"] = "</td></tr></table><iframe src=https://evil.example>"
    status["conditions"][0]["message"] = "<svg onload=alert(2)>"
    status["gateHistory"][-1]["gates"]['<img src="x">'] = [1.0, None, 2.0, "F"]
    events = [{"type": "Warning", "reason": "Odd", "message": "<script>evil()</script>"}]
    page = render_report(hostile, events=events, generated_at=GENERATED)
    for raw in ("<script", "<img", "<iframe", "<svg onload", "<b>tanh"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in page
    assert "&lt;iframe src=https://evil.example&gt;" in page
    parsed = parse(page)
    assert not [(e.tag, name) for e in parsed.elements for name in e.attrs if name.startswith("on")]
    assert {e.tag for e in parsed.elements} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "div", "span",
        "b", "section", "svg", "line", "text", "polyline", "circle", "path", "table", "thead",
        "tbody", "tr", "th", "td",
    }  # fmt: skip
    # The hostile gate still gets its chart, under its escaped name.
    assert '<svg class="gate-chart" role="img" aria-label="&lt;img src=&quot;x&quot;&gt; over' in (
        page
    )
    assert external_references(page) == []


def test_a_gate_with_no_values_says_so_in_its_chart() -> None:
    status = {
        "stage": "Progressing",
        "stepIndex": 0,
        "candidateWeight": 10,
        "startedAt": "2026-03-01T12:00:00Z",
        "stepStartedAt": "2026-03-01T12:00:00Z",
        "gateHistory": [
            {
                "time": f"2026-03-01T12:0{minute}:00Z",
                "step": 0,
                "weight": 10,
                "gates": {"divergence": [None, None, None, "I"], "errorRate": [0.5, 0.1, 1, "I"]},
            }
            for minute in (1, 2, 3)
        ],
    }
    page = render_report({"metadata": {"name": "r"}, "spec": {}, "status": status})
    parsed = parse(page)
    assert len(parsed.all("svg", **{"class": "gate-chart"})) == 2
    assert parsed.within("gate-divergence", "text")
    empty = [e for e in parsed.within("gate-divergence", "text") if e.attrs.get("class") == "empty"]
    assert len(empty) == 1
    assert "no values recorded" in page
    assert not parsed.within("gate-divergence", "circle")
    assert len(parsed.within("gate-errorRate", "circle")) >= 3
    assert "It has not finished: progressing" in " ".join(parsed.text)
    assert not parsed.all("line", **{"class": "decided-line"})  # nothing has decided yet


def test_an_empty_ledger_and_no_history_still_make_a_page() -> None:
    page = render_report({"metadata": {"name": NAME, "namespace": "serving"}, "status": {}})
    parsed = parse(page)
    text = " ".join(parsed.text)
    assert "No gate has been judged yet." in text
    assert text.count("None.") == 2  # the ledger and the conditions
    assert len(parsed.all("svg", **{"class": "timeline"})) == 1
    assert not parsed.all("svg", **{"class": "gate-chart"})
    assert "Events" not in text
    assert external_references(page) == []


def test_a_status_without_history_charts_its_ledger(rolled_back: dict[str, Any]) -> None:
    older = copy.deepcopy(rolled_back)
    del older["status"]["gateHistory"]
    parsed = parse(render_report(older))
    charts = parsed.all("svg", **{"class": "gate-chart"})
    assert len(charts) == 7
    # The ledger has values and thresholds but no bounds.
    assert not [p for p in parsed.all("polyline") if p.attrs["class"] == "bound"]
    assert [p for p in parsed.all("polyline") if p.attrs["class"] == "value"]


def test_events_are_listed_when_given(rolled_back: dict[str, Any]) -> None:
    events = [
        {"type": "Normal", "reason": "RolloutStarted", "message": "rollout started"},
        {"type": "Warning", "reason": "ErrorRateAboveTolerance", "message": "errorRate failed"},
    ]
    parsed = parse(render_report(rolled_back, events=events))
    text = " ".join(parsed.text)
    assert "Events" in text
    assert "ErrorRateAboveTolerance" in text
    assert "RolloutStarted" in text


def test_only_the_gate_the_operator_acted_on_is_said_to_have_decided(
    rolled_back: dict[str, Any],
) -> None:
    both = copy.deepcopy(rolled_back)
    last = both["status"]["gateHistory"][-1]["gates"]["burnRate"]
    last[3] = "F"
    page = render_report(both)
    parsed = parse(page)
    assert page.count("this gate decided the outcome") == 1
    assert page.count("failing too at the deciding tick") == 1
    error_rate = page[page.index('id="gate-errorRate"') :]
    assert error_rate.index("this gate decided the outcome") < error_rate.index("</section>")
    assert "The errorRate gate decided it" in " ".join(parsed.text)


def test_a_probe_rollback_reads_as_one() -> None:
    parsed = parse(render_report(probe_failed_rollout()))
    text = " ".join(parsed.text)
    assert "It was rolled back (ProbeFailed)" in text
    assert "by the probe, before any traffic moved" in text
    assert "never received more than 0% of the traffic" in text
    assert "The probe gate decided it" in text
    assert [c.attrs["aria-label"] for c in parsed.all("svg", **{"class": "gate-chart"})] == [
        "probe over time"
    ]
    # Two probe ticks on the timeline, the second one deciding.
    assert len([e for e in parsed.all("path") if e.attrs.get("class") == "probe"]) == 2
