"""High availability on the operator's side: `gelu-rollout run --peering NAME` runs Kopf with
peering under that name and a priority of the replica's own, and creates the peering object
where it is missing."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import kopf
import pytest
from typer.testing import CliRunner

from gelu_rollout import run as run_module
from gelu_rollout.adapters.kube import KubeClient, KubeError
from gelu_rollout.cli.main import app
from gelu_rollout.run import (
    OperatorConfig,
    ensure_peering,
    peering_identity,
    peering_priority,
    run_operator,
)


class Answers(KubeClient):
    """A client whose requests get the given answers in turn (an exception is raised)."""

    def __init__(self, *answers: tuple[int, Any] | Exception) -> None:
        super().__init__(lambda: kopf.ConnectionInfo(server="https://127.0.0.1:1"))
        self.answers = list(answers)
        self.sent: list[tuple[str, str, Any]] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        self.sent.append((method, path, body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_replicas_get_distinct_stable_priorities_from_their_pod_names() -> None:
    names = [f"gr-gelu-rollout-7d9c{i:04x}b6f-{i % 7:x}q{i:03d}" for i in range(2000)]
    priorities = [peering_priority(n) for n in names]
    assert len(set(priorities)) == len(names)
    assert all(0 <= p < 2**31 for p in priorities)  # a 32-bit signed priority, never negative
    assert peering_priority(names[0]) == peering_priority(names[0])


def test_the_identity_is_the_pod_name_kopf_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "gr-gelu-rollout-abc12")
    assert peering_identity() == "gr-gelu-rollout-abc12"
    monkeypatch.delenv("POD_ID")
    monkeypatch.setattr(socket, "gethostname", lambda: "gr-gelu-rollout-xyz89")
    assert peering_identity() == "gr-gelu-rollout-xyz89"


def test_a_cluster_wide_operator_creates_its_cluster_peering() -> None:
    kube = Answers((201, {}))
    asyncio.run(ensure_peering(kube, "gelu-rollout", ()))
    assert kube.sent == [
        (
            "POST",
            "/apis/kopf.dev/v1/clusterkopfpeerings",
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": "gelu-rollout"},
            },
        )
    ]


def test_a_namespaced_operator_creates_one_per_namespace_and_keeps_existing_ones() -> None:
    kube = Answers((201, {}), (409, {"reason": "AlreadyExists"}))
    asyncio.run(ensure_peering(kube, "gelu-rollout", ("team-a", "team-b")))
    assert [(path, body["metadata"]) for _, path, body in kube.sent] == [
        (
            "/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings",
            {"name": "gelu-rollout", "namespace": "team-a"},
        ),
        (
            "/apis/kopf.dev/v1/namespaces/team-b/kopfpeerings",
            {"name": "gelu-rollout", "namespace": "team-b"},
        ),
    ]
    assert {body["kind"] for _, _, body in kube.sent} == {"KopfPeering"}


def test_it_retries_until_the_peering_crd_is_served(caplog: pytest.LogCaptureFixture) -> None:
    # The chart installs the CRD with the operator: the first tries may find it not served yet,
    # or no API server at all.
    kube = Answers(
        (404, {"message": "the server could not find the requested resource"}),
        KubeError(None, "the connection to the server failed"),
        (201, {}),
    )
    asyncio.run(ensure_peering(kube, "gelu-rollout", (), retry_seconds=0.001))
    assert len(kube.sent) == 3
    assert "could not find the requested resource); retrying" in caplog.text
    assert "connection to the server failed" in caplog.text


def run_with_fake_kopf(monkeypatch: pytest.MonkeyPatch, config: OperatorConfig) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        seen.update(kwargs)
        await asyncio.sleep(0)  # let the peering task start

    async def ensure(kube: KubeClient, name: str, namespaces: tuple[str, ...]) -> None:
        seen["ensured"] = (name, namespaces)

    monkeypatch.setattr(kopf, "operator", operator)
    monkeypatch.setattr(run_module, "ensure_peering", ensure)
    asyncio.run(run_operator(config))
    return seen


def test_peering_reaches_kopfs_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "gr-gelu-rollout-abc12")
    config = OperatorConfig(
        "http://prometheus:9090",
        namespaces=("team-a",),
        metrics_port=None,
        liveness_port=None,
        peering_name="gelu-rollout",
    )
    seen = run_with_fake_kopf(monkeypatch, config)
    assert seen["standalone"] is False
    assert seen["peering_name"] == "gelu-rollout"  # Kopf: peering.name, and mandatory
    assert seen["priority"] == peering_priority("gr-gelu-rollout-abc12")
    assert seen["namespaces"] == ["team-a"]
    assert seen["clusterwide"] is False
    assert seen["ensured"] == ("gelu-rollout", ("team-a",))
    fixed = run_with_fake_kopf(
        monkeypatch,
        OperatorConfig(
            "http://prometheus:9090",
            metrics_port=None,
            liveness_port=None,
            peering_name="gelu-rollout",
            peering_priority=7,
        ),
    )
    assert fixed["priority"] == 7


def test_without_peering_the_operator_runs_standalone(monkeypatch: pytest.MonkeyPatch) -> None:
    config = OperatorConfig("http://prometheus:9090", metrics_port=None, liveness_port=None)
    seen = run_with_fake_kopf(monkeypatch, config)
    assert seen["standalone"] is True
    assert seen["peering_name"] is None
    assert seen["priority"] is None
    assert seen["clusterwide"] is True
    assert "ensured" not in seen


def test_the_command_line_sets_peering(monkeypatch: pytest.MonkeyPatch) -> None:
    configs: list[OperatorConfig] = []

    async def capture(config: OperatorConfig) -> None:
        configs.append(config)

    monkeypatch.setattr(run_module, "run_operator", capture)
    arguments = ["run", "--peering", "gelu-rollout", "--peering-priority", "12", "-n", "team-a"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    (config,) = configs
    assert (config.peering_name, config.peering_priority) == ("gelu-rollout", 12)
    assert config.namespaces == ("team-a",)
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert (configs[-1].peering_name, configs[-1].peering_priority) == (None, None)
