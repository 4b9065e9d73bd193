"""Rollouts of a model nobody instrumented for this tool, end to end on the sandbox.

The candidate is ``operator/gelu_lab/models/plain_gelu``: a Python-backend model with no
metrics of its own, so Prometheus has Triton's request, failure and duration series for it
and no output histogram or non-finite counter. The output gates then run on the operator's
sampled comparison; with them optional and the sample off, the rollout is judged on errors
and latency alone, and says so.

Each test prints its outcome (``E2E ...`` lines) for the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gelu_lab.demo.scenarios import read_repository
from gelu_lab.sandbox.stack import Sandbox, sandbox
from tests.e2e.test_operator import (
    apply,
    condition,
    deployment_replicas,
    event_reasons,
    finished,
    manifest,
    traffic,
)

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

PLAIN_MODEL = Path(__file__).parents[2] / "operator" / "gelu_lab" / "models" / "plain_gelu"
SAMPLED = "(from the sampled comparison)"


async def apply_plain(stack: Sandbox, name: str, **parameters: str) -> None:
    """The plain model as a repository ConfigMap, with fault parameters in its config."""
    _, files = read_repository(PLAIN_MODEL)
    files["config.pbtxt"] += "".join(
        f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
        for key, value in parameters.items()
    )
    await apply(
        stack,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            "data": files,
        },
    )


def plain_manifest(name: str, config_map: str, **analysis: Any) -> dict[str, Any]:
    rollout = manifest(name, {"repository": {"configMapName": config_map}})
    rollout["spec"]["baseline"] = {"variant": "tanh"}
    for key, value in analysis.items():
        rollout["spec"]["analysis"][key] = value
    return rollout


def ledger(rollout: Mapping[str, Any], gate: str) -> list[Mapping[str, Any]]:
    return [e for e in rollout["status"]["ledger"] if e["gate"] == gate]


@pytest.mark.asyncio
async def test_an_uninstrumented_healthy_candidate_is_promoted() -> None:
    async with sandbox() as stack:
        await apply_plain(stack, "plain")
        await apply(stack, plain_manifest("plain", "plain"))
        async with traffic(stack, "plain"):
            rollout = await stack.wait_for("plain", finished, timeout_s=200)
        status = rollout["status"]
        assert status["stage"] == "Promoted", status["message"]
        # The output gates passed on answers the operator compared itself.
        for gate in ("nonFinite", "divergence"):
            final = ledger(rollout, gate)[-1]
            assert final["verdict"] == "Pass", final
            assert SAMPLED in final["message"], final
        print("E2E plain healthy:", status["message"], "|", ledger(rollout, "divergence")[-1])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "gate", "reason"),
    [
        ({"nan_after_requests": "60"}, "nonFinite", "NonFiniteOutputs"),
        ({"drift_after_requests": "60", "drift_scale": "1.5"}, "divergence", "OutputDivergence"),
    ],
    ids=["nan-after-traffic-starts", "drift-after-traffic-starts"],
)
async def test_an_uninstrumented_candidate_that_breaks_after_the_probe_is_rolled_back(
    fault: dict[str, str], gate: str, reason: str
) -> None:
    async with sandbox() as stack:
        await apply_plain(stack, "broken", **fault)
        await apply(stack, plain_manifest("broken", "broken"))
        async with traffic(stack, "broken"):
            rollout = await stack.wait_for("broken", finished, timeout_s=200)
        status = rollout["status"]
        assert status["stage"] == "RolledBack", status["message"]
        # The probe passed: the fault starts after it, and only the sample saw it.
        assert ledger(rollout, "probe")[-1]["verdict"] == "Pass"
        assert condition(rollout, "RolledBack")["reason"] == reason
        failure = next(e for e in status["ledger"] if e["verdict"] == "Fail")
        assert failure["gate"] == gate
        assert SAMPLED in failure["message"] or "sampled inputs" in failure["message"]
        assert await deployment_replicas(stack, "broken-candidate") == 0
        assert reason in await event_reasons(stack, "broken")
        print(f"E2E plain {gate}:", status["message"], "at", status["finishedAt"])


@pytest.mark.asyncio
async def test_without_output_data_optional_gates_are_left_out_and_the_status_says_so() -> None:
    async with sandbox() as stack:
        await apply_plain(stack, "errors-latency")
        rollout_manifest = plain_manifest(
            "errors-latency", "errors-latency", outputSample={"enabled": False}
        )
        gates = rollout_manifest["spec"]["analysis"]["gates"]
        gates["divergence"]["required"] = False
        gates["nonFinite"] = {"required": False}
        await apply(stack, rollout_manifest)
        async with traffic(stack, "errors-latency"):
            rollout = await stack.wait_for("errors-latency", finished, timeout_s=200)
        status = rollout["status"]
        assert status["stage"] == "Promoted", status["message"]
        assert "judged without nonFinite, divergence" in status["message"]
        for gate in ("nonFinite", "divergence"):
            final = ledger(rollout, gate)[-1]
            assert (final["verdict"], final.get("basis")) == ("Inconclusive", "skipped"), final
            assert "gelu_output_value_bucket" in final["message"], final
        for gate in ("errorRate", "latencyRegression"):
            assert ledger(rollout, gate)[-1]["verdict"] == "Pass"
        assert "GateSkipped" in await event_reasons(stack, "errors-latency")
        print("E2E plain, output gates optional:", status["message"])
