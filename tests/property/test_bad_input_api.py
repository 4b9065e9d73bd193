"""Bad input through the API: hundreds of invalid rollouts at a running operator.

The sandbox's API emulator (which admits custom resources by the CRD's schema and CEL rules,
``gelu_lab.sandbox.admission``) and the operator, in this process, with its Prometheus on a
closed port (no query is needed to judge a spec). One valid rollout runs beside them. Each
generated object is created as kubectl creates it by default (``fieldValidation=Strict``):

1. with the committed CRD, each is refused by the API, by a message naming its field, or, where
   the spec is merely hostile but valid (a quote in a free-form label value, a null the server
   drops), admitted and treated as the valid rollout it is;
2. with the CRD less its CEL rules (an API server before Kubernetes 1.25, or a CRD older than
   the operator: Helm never upgrades CRDs), each object the rules refused is admitted, and the
   operator must report it: ``Ready`` False and ``Stalled`` True with reason ``InvalidSpec``
   and a ``Warning`` Event ``InvalidSpec`` whose message names the field;
3. throughout, the operator's task never ends, and the valid rollout still ticks: an edit of
   its spec is observed (``status.observedGeneration``) after the flood.

A handful go through the real kubectl too, whose error output must name each object and field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings

from gelu_lab.sandbox.emulator import SandboxEmulator
from gelu_lab.sandbox.emulator_server import EmulatorServer, serve_emulator
from gelu_lab.sandbox.processes import free_port
from gelu_lab.sandbox.shutdown import reclaim_signals
from gelu_rollout.resources.crd import render_crd
from gelu_rollout.run import OperatorConfig, run_operator
from gelu_rollout.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION
from tests.property.bad_rollouts import (
    DROPPED_NULL,
    FREE_FORM,
    VARIANT_BASE,
    BadRollout,
    bad_rollouts,
)
from tests.property.test_bad_input import normalized, related, without_rules

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OBJECTS = 600
ROLLOUTS = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
Json = dict[str, Any]


def drawn(count: int) -> list[BadRollout]:
    """``count`` generated objects, the same on every run (derandomized, no shrinking)."""
    found: list[BadRollout] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(bad_rollouts)
    def collect(bad: BadRollout) -> None:
        found.append(bad)

    collect()
    return found


@contextlib.asynccontextmanager
async def operator_on(api: EmulatorServer, workdir: Path) -> AsyncIterator[asyncio.Task[None]]:
    """The operator in this process against ``api``; Prometheus on a port nothing listens on."""
    config = OperatorConfig(
        prometheus_url=f"http://127.0.0.1:{free_port()}",
        kubeconfig=str(api.write_kubeconfig(workdir / "kubeconfig")),
        namespaces=("default",),
        tick_seconds=2.0,
        scrape_interval_seconds=1.0,
        prometheus_timeout_seconds=1.0,
        metrics_port=None,
        liveness_port=None,
        bind_address="127.0.0.1",
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_operator(config, stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        reclaim_signals()
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def put_crd(session: aiohttp.ClientSession, crd: Json) -> None:
    name = crd["metadata"]["name"]
    async with session.get(f"{CRDS}/{name}") as found:
        if found.status == 404:
            async with session.post(CRDS, json=crd) as response:
                assert response.status == 201, await response.text()
            return
        current = await found.json()
    crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": None}}
    async with session.put(f"{CRDS}/{name}", json=crd) as response:
        assert response.status == 200, await response.text()
    assert current["metadata"]["name"] == name


async def create(session: aiohttp.ClientSession, obj: Json) -> tuple[int, Json]:
    async with session.post(ROUTES_STRICT, json=obj) as response:
        return response.status, await response.json()


ROUTES_STRICT = f"{ROLLOUTS}?fieldValidation=Strict"


def refusal_names(bad: BadRollout, status: int, answer: Mapping[str, Any]) -> bool:
    """Whether an API refusal names the broken field."""
    message = str(answer.get("message", ""))
    if status == 400:
        return "unknown field" in message and any(
            related(path, bad.field)
            for path in (part.split('"')[1] for part in message.split("unknown field ")[1:])
        )
    causes = (answer.get("details") or {}).get("causes") or []
    return any(related(str(c.get("field")), bad.field) for c in causes)


# How the schema's messages read (the CEL rules' are "Invalid value: ...: <rule message>").
SCHEMA_WORDS = (" in body ", "Required value", "Unsupported value", "Too long", "Too many")
_PATH = re.compile(r"(spec[^\s:]*):")


def names_field(text: str, bad: BadRollout) -> bool:
    """Whether a message (a SpecError's lines, kubectl's output) names the broken field."""
    return any(related(path, bad.field) for path in _PATH.findall(text))


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found.get("type") == type_:
            return found  # type: ignore[no-any-return]
    return None


def invalid_spec(obj: Mapping[str, Any]) -> bool:
    ready, stalled = condition(obj, "Ready"), condition(obj, "Stalled")
    return (
        ready is not None
        and stalled is not None
        and (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        and (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    )


def kubectl(kubeconfig: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


VALID: Json = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "valid", "namespace": "default"},
    "spec": VARIANT_BASE,
}


@pytest.mark.asyncio
async def test_bad_rollouts_through_the_api_beside_a_valid_one(tmp_path: Path) -> None:
    started = time.monotonic()
    objects = drawn(OBJECTS)
    assert len(objects) >= min(500, OBJECTS)
    outcomes: dict[str, int] = {}

    def count(outcome: str) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async with (
        # A bounded request history: kmock's matching would otherwise grow with every request.
        serve_emulator(emulator=SandboxEmulator(request_history_limit=50)) as api,
        aiohttp.ClientSession(api.url, headers={"User-Agent": "kubectl/v1.32"}) as session,
    ):
        crd = render_crd()
        await put_crd(session, crd)
        async with operator_on(api, tmp_path) as operator:
            status, answer = await create(session, VALID)
            assert status == 201, answer

            # 1. The committed CRD: refused naming the field, or valid after all.
            by_rules: list[tuple[str, BadRollout]] = []
            admitted_valid: list[str] = []
            for i, bad in enumerate(objects):
                name = f"bad-{i}"
                status, answer = await create(session, bad.manifest(name))
                if status == 201:
                    assert normalized(bad.field) in FREE_FORM or bad.category == DROPPED_NULL, (
                        bad,
                        answer,
                    )
                    admitted_valid.append(name)
                    count("admitted: valid (escaped value, or null dropped)")
                    continue
                assert status in (400, 422), (bad, status, answer)
                assert refusal_names(bad, status, answer), (bad, answer)
                causes = (answer.get("details") or {}).get("causes") or []
                rules_only = status == 422 and not any(
                    c.get("field") == "<nil>" or any(m in c["message"] for m in SCHEMA_WORDS)
                    for c in causes
                )
                if status == 400:
                    count("refused by the schema: unknown field (400)")
                elif rules_only:
                    count("refused by a CEL rule (422)")
                    by_rules.append((name, bad))
                else:
                    count("refused by the schema (422)")
                assert not operator.done()

            # 2. The CRD less its rules: what they refused is admitted; the operator reports it.
            await put_crd(session, without_rules(crd))
            reported: dict[str, BadRollout] = {}
            for name, bad in by_rules:
                status, answer = await create(session, bad.manifest(f"{name}-unchecked"))
                assert status == 201, (bad, answer)
                reported[f"{name}-unchecked"] = bad

            # 3. The valid rollout still ticks: an edit of it is observed.
            async with session.get(f"{ROLLOUTS}/valid") as response:
                valid = await response.json()
            edit = {"spec": {"analysis": {"warmupSeconds": 11}}}
            async with session.patch(
                f"{ROLLOUTS}/valid",
                data=json.dumps(edit),
                headers={"Content-Type": "application/merge-patch+json"},
            ) as response:
                assert response.status == 200, await response.text()
                generation = (await response.json())["metadata"]["generation"]
            assert generation == valid["metadata"]["generation"] + 1

            deadline = time.monotonic() + 90
            pending = set(reported)
            while True:
                stored = {
                    o["metadata"]["name"]: o
                    for o in api.emulator.list_objects(f"{GROUP}/{VERSION}/{PLURAL}", "default")
                }
                events = api.emulator.list_objects("v1/events", "default")
                warned = {
                    (e.get("involvedObject") or {}).get("name"): str(e.get("message", ""))
                    for e in events
                    if e.get("reason") == "InvalidSpec" and e.get("type") == "Warning"
                }
                pending = {
                    name for name in reported if not (invalid_spec(stored[name]) and name in warned)
                }
                observed = (stored["valid"].get("status") or {}).get("observedGeneration")
                if not pending and observed == generation:
                    break
                assert not operator.done(), operator
                assert time.monotonic() < deadline, (
                    f"{len(pending)} not reported, e.g. {sorted(pending)[:3]}; valid rollout "
                    f"observed generation {observed}, wanted {generation}"
                )
                await asyncio.sleep(0.5)

            for name, bad in reported.items():
                ready = condition(stored[name], "Ready")
                assert ready is not None
                # The condition and the Event name the field (as parse_spec writes its path).
                assert names_field(ready["message"], bad), (bad, ready)
                assert names_field(warned[name], bad), (bad, warned[name])
                count("without CEL rules: admitted, InvalidSpec condition and Event")
            for name in admitted_valid:
                assert not invalid_spec(stored[name]), stored[name]
            assert not invalid_spec(stored["valid"])
            assert not operator.done()

            # A few through the real kubectl: each refusal names the object and the field.
            await put_crd(session, crd)
            sample = [
                (f"kubectl-{i}", bad)
                for i, bad in enumerate(objects)
                if bad.category not in ("unknown field", DROPPED_NULL)
                and normalized(bad.field) not in FREE_FORM
            ][:20]
            text = yaml.safe_dump_all([bad.manifest(name) for name, bad in sample])
            done = await asyncio.to_thread(
                kubectl, tmp_path / "kubeconfig", "create", "--validate=false", "-f", "-",
                stdin=text,
            )  # fmt: skip
            assert done.returncode != 0
            # One block per object: `The GeluModelRollout "NAME" is invalid: ...` and its
            # `* FIELD: ...` lines.
            blocks = re.split(r"\n(?=The |Error from server)", done.stderr)
            for name, bad in sample:
                (block,) = [b for b in blocks if f'"{name}"' in b]
                assert "is invalid" in block, block
                assert names_field(block, bad), (bad, block)
            count_kubectl = len(sample)

    elapsed = time.monotonic() - started
    print(
        f"\n{len(objects)} objects through the API in {elapsed:.0f}s; {count_kubectl} more "
        f"through kubectl:\n{json.dumps(outcomes, indent=2)}"
    )
    assert elapsed < 150  # 75 s when measured, on a busy machine
