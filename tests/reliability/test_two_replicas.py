"""Two replicas of the operator with Kopf peering, as the chart runs them with
``replicaCount: 2``: never two acting on one rollout.

Both run as processes of their own on the lab's stack (:func:`tests.reliability.harness.lab`),
each through an API front of its own, so every request is known to be one replica's or the
other's. What the chart renders for ``replicaCount: 2, peering.enabled, watchNamespaces:
[default]`` is what they get: its KopfPeering CRD installed, the peering name its Deployment
passes (``--peering=NAME``), a pod name as ``POD_ID`` (the chart's fieldRef) from which each
derives its priority (``run.peering_priority``), and every request they make checked against
the chart's ClusterRole and Role.

Shown: only the replica of higher priority acts (the other neither writes nor reads any of
the rollout's objects); killed with SIGKILL mid-step, it leaves its peering record behind,
the standby acts only once that record has expired (Kopf's ``peering.lifetime`` after the
last keep-alive) and takes the rollout to its outcome, whose Event is posted once.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import pytest

from gelu_rollout.run import NAMESPACED_PEERING, peering_priority
from tests.chart.rendering import FULLNAME, Object, of_kind, one, render
from tests.reliability.harness import ApiRequest, Lab, Replica, lab, replica
from tests.reliability.rollouts import finished, manifest, stage

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

NAMESPACE: Final = "default"
HA_VALUES: Final = {"replicaCount": 2, "peering": {"enabled": True}, "watchNamespaces": [NAMESPACE]}
# Two pods of one ReplicaSet, as the Deployment's pods are named.
POD_NAMES: Final = (f"{FULLNAME}-6c9f8d7b5-x7k2p", f"{FULLNAME}-6c9f8d7b5-q9m4t")
RATE_PER_S: Final = 25.0
KILL_INTO_STEP_S: Final = 6.0
LIFETIME_S: Final = 60  # Kopf's peering.lifetime, which the operator leaves at its default
PEERING_RESOURCE: Final = f"/{NAMESPACED_PEERING.plural}"
# What a replica reaches of the rollout: the rollout itself and what it owns, reads or posts.
ROLLOUT_RESOURCES: Final = (
    "/gelumodelrollouts",
    "/deployments",
    "/services",
    "/configmaps",
    "/pods",
    "/events",
    "/httproutes",
)


# -- what a request is, for RBAC ------------------------------------------------------------


def authorized_as(request: ApiRequest) -> tuple[str, str, str, str | None] | None:
    """The (group, resource[/subresource], verb, namespace) that the API server authorizes
    ``request`` as; None for discovery (non-resource URLs every account may read)."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if len(rest) < 3 else f"{rest[0]}/{rest[2]}"
    named = len(rest) > 1
    watching = any(p in ("watch=true", "watch=1") for p in request.query.split("&"))
    verb = {
        "GET": "get" if named else ("watch" if watching else "list"),
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete" if named else "deletecollection",
    }[request.method]
    return group, resource, verb, namespace


def granted(roles: Sequence[Object]) -> set[tuple[str, str, str]]:
    return {
        (api_group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for api_group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def refused_by_rbac(requests: Sequence[ApiRequest], chart: Sequence[Object]) -> list[str]:
    """The requests the chart's roles do not grant: the ClusterRole anywhere, the Role only in
    its namespace."""
    cluster = granted([one(list(chart), "ClusterRole")])
    namespaced = {
        role["metadata"]["namespace"]: granted([role]) for role in of_kind(list(chart), "Role")
    }
    refused = []
    for request in requests:
        found = authorized_as(request)
        if found is None:
            continue
        group, resource, verb, namespace = found
        wanted = (group, resource, verb)
        if wanted in cluster or (namespace and wanted in namespaced.get(namespace, set())):
            continue
        refused.append(f"{verb} {group or 'core'}/{resource} in {namespace}: {request.path}")
    return sorted(set(refused))


# -- what a replica did ---------------------------------------------------------------------


def of_the_rollout(replica: Replica, since: float = 0.0) -> list[ApiRequest]:
    """The replica's requests (reads included) to the rollout's resources from ``since`` on."""
    return [
        r
        for r in replica.front.reached
        if r.at >= since and any(part in r.path for part in ROLLOUT_RESOURCES)
    ]


def writes(requests: Sequence[ApiRequest], part: str = "") -> list[ApiRequest]:
    return [r for r in requests if r.method != "GET" and part in r.path]


def peering_status(stack: Lab, name: str) -> dict[str, Any]:
    found = stack.get(f"kopf.dev/v1/{NAMESPACED_PEERING.plural}", name, NAMESPACE)
    return dict((found or {}).get("status") or {})


def record_deadline(record: Mapping[str, Any]) -> float:
    """When a peer's keep-alive expires (epoch seconds): its lastseen plus its lifetime."""
    lastseen = datetime.datetime.fromisoformat(str(record["lastseen"]))
    return lastseen.timestamp() + int(record["lifetime"])


async def until(check: Callable[[], bool], timeout_s: float, what: str, *logs: Replica) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {r.name}:\n{r.process.log_tail(3000)}" for r in logs)
            raise AssertionError(f"not {what} after {timeout_s:g}s\n{tails}")
        await asyncio.sleep(0.2)


def paused(replica: Replica) -> bool:
    """Kopf's last word on it: paused from its start (peering is mandatory), or paused again."""
    log = replica.process.log_text()
    return log.rfind("Resuming operations") <= log.rfind("Pausing operations")


def step_index(stack: Lab, name: str) -> int:
    return int(((stack.rollout(name) or {}).get("status") or {}).get("stepIndex") or 0)


@pytest.mark.asyncio
async def test_one_of_two_replicas_acts_and_the_standby_takes_over_after_a_kill() -> None:
    chart = render(HA_VALUES)
    crd = next(
        c for c in of_kind(chart, "CustomResourceDefinition") if c["spec"]["group"] == "kopf.dev"
    )
    args = one(chart, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    peering = next(a.removeprefix("--peering=") for a in args if a.startswith("--peering="))
    priorities = {pod: peering_priority(pod) for pod in POD_NAMES}
    active_pod = max(POD_NAMES, key=priorities.__getitem__)
    name = "ha"
    async with lab(start_operator=False) as stack:
        await stack.apply(crd)
        async with (
            replica(stack, "replica-0", env={"POD_ID": POD_NAMES[0]}, peering_name=peering) as r0,
            replica(stack, "replica-1", env={"POD_ID": POD_NAMES[1]}, peering_name=peering) as r1,
        ):
            pods = {r0.name: POD_NAMES[0], r1.name: POD_NAMES[1]}
            active, standby = (r0, r1) if pods[r0.name] == active_pod else (r1, r0)
            # Both at once, as a fresh install starts them.
            await asyncio.gather(r0.process.start(), r1.process.start())
            # Each keeps its record, under its pod's name with the priority derived from it.
            await until(
                lambda: (
                    {
                        pod: record.get("priority")
                        for pod, record in peering_status(stack, peering).items()
                    }
                    == priorities
                ),
                30,
                "both records in the peering",
                r0,
                r1,
            )
            await until(
                lambda: "Resuming operations" in active.process.log_text(),
                30,
                "the active replica working",
                active,
            )
            # Started at once, the standby may have seen no peer yet and resumed for a moment:
            # then it pauses as soon as it reads the other's keep-alive.
            await until(lambda: paused(standby), 30, "the standby paused", standby)
            await asyncio.sleep(1.0)
            assert paused(standby), standby.process.log_tail()
            started_before = "Resuming operations" in standby.process.log_text()

            applied = time.time()
            await stack.apply(manifest(name, {"variant": "tanh"}, weights=(25, 50)))
            async with stack.traffic(name, RATE_PER_S, 600):
                await until(
                    lambda: stage(stack.rollout(name)) == "Progressing",
                    120,
                    "progressing",
                    active,
                )
                await asyncio.sleep(KILL_INTO_STEP_S)
                assert stage(stack.rollout(name)) == "Progressing"
                assert step_index(stack, name) == 0, "the first step ended before the kill"

                # Until the kill: the active one acted, the standby did nothing of the rollout.
                acted = writes(of_the_rollout(active, applied))
                assert writes(acted, "/deployments"), "the active replica applied no Deployment"
                assert writes(acted, f"/gelumodelrollouts/{name}/status"), "nor wrote a status"
                assert of_the_rollout(standby, applied) == [], of_the_rollout(standby, applied)
                standby_peering = writes(standby.front.reached, PEERING_RESOURCE)
                assert standby_peering, "the standby sent no keep-alive"

                # SIGKILL mid-step: no goodbye, its record stays in the peering object.
                record = peering_status(stack, peering)[active_pod]
                expires = record_deadline(record)
                announced_before = stack.event_reasons(name)
                active.process.kill()
                killed = time.time()
                assert active_pod in peering_status(stack, peering)
                await until(
                    lambda: bool(of_the_rollout(standby, applied)),
                    expires - time.time() + 30,
                    "taken over",
                    standby,
                )
                first = of_the_rollout(standby, applied)[0]
                taken_over = time.time()
                # Where the killed one left it, mid-step: the standby goes on from there (a
                # restart would post RolloutStarted again, checked below).
                found = stack.rollout(name) or {}
                at_takeover = found.get("status") or {}
                await until(lambda: finished(stack.rollout(name)), 150, "finished", standby)
                finished_at = time.time()
            done = stack.rollout(name)
            reasons = stack.event_reasons(name)
            final_peering = peering_status(stack, peering)  # before a clean stop empties it
        assert done is not None

    # The standby waited for the killed one's record to expire, not a moment less.
    assert first.at >= expires, f"the standby acted {expires - first.at:.2f}s before expiry"
    # Never two acting: every request of the new one after the last of the old one.
    last_active = max(r.at for r in of_the_rollout(active, applied))
    assert first.at > last_active
    assert done["status"]["stage"] == "Promoted", done["status"]
    assert (at_takeover.get("stage"), at_takeover.get("stepIndex")) == ("Progressing", 0)
    # One outcome, announced once; the step announced once though two replicas ran it; and
    # nothing announced before the kill (the start, the probe's pass) announced again after.
    assert reasons.count("AllStepsPassed") == 1, reasons
    assert reasons.count("StepAdvanced") == 1, reasons
    assert reasons[: len(announced_before)] == announced_before, reasons
    announced_after = reasons[len(announced_before) :]
    assert not set(announced_after) & set(announced_before), (announced_before, announced_after)
    posted = {r.name: len(writes(of_the_rollout(r, applied), "/events")) for r in (active, standby)}
    assert posted == {active.name: len(announced_before), standby.name: len(announced_after)}
    # The dead replica's record was cleaned up by the one that took over.
    assert list(final_peering) == [pods[standby.name]], final_peering
    # And all of it within what the chart grants them.
    for each in (active, standby):
        assert refused_by_rbac(each.front.reached, chart) == [], each.name
    standby_writes = writes(of_the_rollout(standby, applied))
    print(
        f"TWO REPLICAS: priorities {priorities}, active {active_pod}; the standby "
        f"{'resumed briefly at start, then paused' if started_before else 'paused from start'};"
        f" until the kill ({KILL_INTO_STEP_S:g}s into step 1) the active replica made "
        f"{len(acted)} writes of the rollout ({len(writes(acted, '/deployments'))} Deployment "
        f"applies, {len(writes(acted, '/status'))} status writes, Events {announced_before}),"
        f" the standby none and no read, {len(standby_peering)} peering writes; killed "
        f"{expires - killed:.1f}s before its record expired; the standby's first request "
        f"{first.at - expires:.2f}s after expiry ({first.method} {first.path}), "
        f"{taken_over - killed:.1f}s after the kill, at step {at_takeover.get('stepIndex')} "
        f"weight {at_takeover.get('candidateWeight')}; then {len(standby_writes)} writes by it, "
        f"{done['status']['stage']} {finished_at - taken_over:.0f}s after the takeover, Events "
        f"{announced_after}"
    )


@pytest.mark.asyncio
async def test_two_operators_on_one_host_without_pod_id_still_elect_one() -> None:
    """Outside the chart (no ``POD_ID``: a workstation, pods sharing a host name) each
    replica still gets a name and a priority of its own, so one works and the other waits,
    rather than both pausing for an equal priority."""
    chart = render(HA_VALUES)
    crd = next(
        c for c in of_kind(chart, "CustomResourceDefinition") if c["spec"]["group"] == "kopf.dev"
    )
    async with lab(start_operator=False) as stack:
        await stack.apply(crd)
        async with (
            # An empty POD_ID is none (the lab's own environment might hold one).
            replica(stack, "replica-0", env={"POD_ID": ""}, peering_name="dev") as r0,
            replica(stack, "replica-1", env={"POD_ID": ""}, peering_name="dev") as r1,
        ):
            await asyncio.gather(r0.process.start(), r1.process.start())
            await until(lambda: len(peering_status(stack, "dev")) == 2, 30, "two records", r0, r1)
            await until(lambda: paused(r0) != paused(r1), 30, "one of them working", r0, r1)
            await asyncio.sleep(2.0)  # and it stays so
            records = peering_status(stack, "dev")
            working = [r for r in (r0, r1) if not paused(r)]
            logs = [r.process.log_text() for r in (r0, r1)]
    assert len(working) == 1, logs
    priorities = {identity: record["priority"] for identity, record in records.items()}
    assert len(set(priorities.values())) == 2, priorities
    assert not any("Possibly conflicting operators" in log for log in logs), logs
    print(f"TWO REPLICAS without POD_ID: {priorities}, working: {working[0].name}")
