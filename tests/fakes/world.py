"""One GeluModelRollout in the in-memory API, ticked the way the operator's Kopf timer does.

``RolloutWorld.tick`` calls :meth:`Controller.reconcile` on a copy of the rollout's body,
merges the status patch back as Kopf's status patch would, and keeps the Events; the clock is
the world's own (``tick(seconds=...)`` moves it). Triton is replaced by :func:`fake_triton`:
the probe's verdict is the test's to choose and the sampled comparison is off.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import pytest

import gelu_rollout.controller as controller_module
from gelu_rollout.adapters.kube import KubeClient
from gelu_rollout.adapters.prometheus.fake import FakeObserver, ObserverCall
from gelu_rollout.adapters.prometheus.observer import Observer
from gelu_rollout.analysis.verdict import GateResult, Verdict
from gelu_rollout.controller import Controller, TickResult
from gelu_rollout.metrics import OperatorMetrics
from gelu_rollout.rollout.events import EmitEvent
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION
from tests.fakes.kube import FakeKubeAPI
from tests.rollout_helpers import T0, arm

NAMESPACE = "prod"
NAME = "gelu-mlp"

SPEC: dict[str, Any] = {
    "model": {"name": "gelu-mlp"},
    "baseline": {"variant": "exact"},
    "candidate": {"variant": "tanh", "replicas": 2},
    "traffic": {
        "steps": [{"weight": 10, "analysisSeconds": 180}, {"weight": 50, "analysisSeconds": 180}]
    },
    "analysis": {
        "intervalSeconds": 60,
        "warmupSeconds": 0,
        "probe": {"enabled": True},
        "outputSample": {"enabled": False},
    },
}
REPOSITORY = {"config.pbtxt": 'name: "gelu-mlp"', "model.py": "# the model"}


def healthy(call: ObserverCall) -> Observations:
    """Both arms alike and busy: enough for every gate to pass."""
    windows = call.burn_windows_seconds
    return Observations(call.at, call.interval_seconds, arm(windows=windows), arm(windows=windows))


def failing(call: ObserverCall) -> Observations:
    """The candidate fails a request in fifty, the baseline one in five thousand."""
    windows = call.burn_windows_seconds
    return Observations(
        call.at,
        call.interval_seconds,
        arm(failures=1, windows=windows),
        arm(failures=100, windows=windows),
    )


def probe_result(verdict: Verdict) -> GateResult:
    return GateResult(
        "probe",
        verdict,
        0.001 if verdict is not Verdict.FAIL else 4432.0,
        0.05,
        280,
        0.0,
        f"probe said {verdict.value}",
        critical=verdict is Verdict.FAIL,
    )


@dataclass
class FakeTriton:
    """What the probe answers; every call recorded as (baseline, candidate, model)."""

    verdict: Verdict = Verdict.PASS
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def probe(self, baseline: str, candidate: str, model: str, **_: Any) -> GateResult:
        self.calls.append((baseline, candidate, model))
        return probe_result(self.verdict)

    async def sample(self, *_: Any, **__: Any) -> str:
        return "the sampled comparison is off in these tests"


def fake_triton(monkeypatch: pytest.MonkeyPatch, verdict: Verdict = Verdict.PASS) -> FakeTriton:
    """Triton replaced for the controller: the probe answers ``verdict``."""
    triton = FakeTriton(verdict)
    monkeypatch.setattr(controller_module, "run_probe", triton.probe)
    monkeypatch.setattr(controller_module, "run_sample", triton.sample)
    return triton


class RolloutWorld:
    """The fake API holding one rollout (and a ConfigMap repository), a controller over it."""

    def __init__(
        self,
        spec: Mapping[str, Any] = SPEC,
        *,
        observer: Observer | None = None,
        script: Callable[[ObserverCall], Observations] = healthy,
    ) -> None:
        self.api = FakeKubeAPI()
        self.now = T0
        self.observer = observer if observer is not None else FakeObserver([script] * 1000)
        self.metrics = OperatorMetrics()
        self.controller = self._controller()
        self.body: dict[str, Any] = {
            "apiVersion": "gelu.dev/v1alpha1",
            "kind": "GeluModelRollout",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "u1", "generation": 1},
            "spec": copy.deepcopy(dict(spec)),
        }
        self.events: list[EmitEvent] = []
        self.stages: list[str] = []

    def _controller(self) -> Controller:
        return Controller(
            kube=cast(KubeClient, self.api),
            observer=self.observer,
            endpoints=lambda namespace, service: [f"{service}.{namespace}:8000"],
            metrics=self.metrics,
            clock=lambda: self.now,
        )

    # -- driving -----------------------------------------------------------------------------

    def restart(self) -> None:
        """The operator restarted: a fresh controller, remembering nothing but the API."""
        self.controller = self._controller()

    def tick(self, seconds: float = 5.0) -> TickResult:
        """One firing of the timer ``seconds`` after the last."""
        self.now += timedelta(seconds=seconds)
        result = asyncio.run(self.controller.reconcile(copy.deepcopy(self.body)))
        status = {**(self.body.get("status") or {}), **result.status}
        self.body["status"] = {k: v for k, v in status.items() if v is not None}
        self.events.extend(result.events)
        stage = self.body["status"].get("stage")
        if stage is not None and (not self.stages or self.stages[-1] != stage):
            self.stages.append(stage)
        return result

    def run_until(self, stage: str, *, seconds: float = 60.0, limit: int = 40) -> None:
        for _ in range(limit):
            if self.stage == stage:
                return
            self.tick(seconds=seconds)
        raise AssertionError(f"not {stage} after {limit} ticks: {self.status.get('message')}")

    def edit(self, spec: Mapping[str, Any]) -> None:
        self.body["spec"] = copy.deepcopy(dict(spec))
        self.body["metadata"]["generation"] += 1

    def request(self, value: str) -> None:
        """A manual request, as ``kubectl gelu`` writes it."""
        self.body["metadata"].setdefault("annotations", {})[REQUEST_ANNOTATION] = value

    def add_repository(self, name: str) -> None:
        self.api.put(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "data": REPOSITORY,
            }
        )

    def add_route(self, name: str = "gelu") -> None:
        self.api.put(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"rules": [{"backendRefs": [{"name": "gelu-mlp", "port": 8000}]}]},
            }
        )

    # -- reading -----------------------------------------------------------------------------

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

    @property
    def stage(self) -> str | None:
        return self.status.get("stage")

    def condition(self, type_: str) -> tuple[str, str]:
        found = next(c for c in self.status.get("conditions") or [] if c["type"] == type_)
        return found["status"], found["reason"]

    def condition_message(self, type_: str) -> str:
        found = next(c for c in self.status.get("conditions") or [] if c["type"] == type_)
        return str(found.get("message") or "")

    def warnings(self) -> list[str]:
        return [e.reason for e in self.events if e.type == "Warning"]

    def failures(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "gelu_rollout_reconcile_errors_total",
            {"namespace": NAMESPACE, "rollout": NAME, "kind": kind},
        )
        return value or 0.0

    def candidate_weight(self) -> int:
        return int(self.status.get("candidateWeight") or 0)
