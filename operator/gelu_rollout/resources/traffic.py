"""Where traffic goes: the Services, replica counts in ReplicaRatio mode, HTTPRoute weights.

Every arm has a Service of its own (``<rollout>-baseline``, ``<rollout>-candidate``): the paired
probe reaches each arm through it, and an HTTPRoute uses them as its two weighted backends.

In ReplicaRatio mode a third Service, ``<rollout>``, sends traffic to the pods of both arms, so
each arm's share is its share of the ready pods: a weight is realised by replica counts
(:func:`replica_split`). That Service selects the candidate's pods only while the candidate's
weight is above 0, so a candidate started early for the probe gets no traffic before its first
step.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from gelu_rollout.resources.names import (
    Arm,
    OwnerRef,
    object_labels,
    selector_labels,
    service_name,
)
from gelu_rollout.resources.workloads import GRPC_PORT, HTTP_PORT, METRICS_PORT

_SERVICE_PORTS: Final[tuple[dict[str, Any], ...]] = (
    {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
    {
        "name": "grpc",
        "port": GRPC_PORT,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    },
    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
)


def _check_weight(weight: int) -> None:
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within [0, 100], got {weight}")


def replica_split(weight: int, baseline_replicas: int) -> tuple[int, int]:
    """(baseline, candidate) replicas that give the candidate at least ``weight`` % of the pods.

    The baseline keeps its ``baseline_replicas``; the candidate gets
    ``ceil(B * w / (100 - w))``, at least 1 while ``w > 0`` and none at ``w = 0``. The
    candidate's realised share (:func:`effective_weight`) is never below ``w`` and can be well
    above it with few baseline replicas (1 baseline replica: 50 % at any weight up to 50).
    At ``w = 100`` the candidate takes the baseline's size and the baseline none.
    """
    _check_weight(weight)
    if baseline_replicas < 1:
        raise ValueError(f"baseline_replicas must be at least 1, got {baseline_replicas}")
    if weight == 0:
        return baseline_replicas, 0
    if weight == 100:
        return 0, baseline_replicas
    candidate = -(-baseline_replicas * weight // (100 - weight))  # exact integer ceiling
    return baseline_replicas, max(candidate, 1)


def effective_weight(baseline_replicas: int, candidate_replicas: int) -> float:
    """The candidate's share of the pods, in percent (0 when there are none)."""
    if baseline_replicas < 0 or candidate_replicas < 0:
        raise ValueError("replica counts must be at least 0")
    total = baseline_replicas + candidate_replicas
    return 100.0 * candidate_replicas / total if total else 0.0


def render_service(
    owner: OwnerRef, arm: Arm | None, *, select_arm: Arm | None = None
) -> dict[str, Any]:
    """A ClusterIP Service: one arm's, or (``arm=None``) the rollout's in front of both.

    ``select_arm`` narrows the rollout's Service to one arm's pods.
    """
    selected = arm if arm is not None else select_arm
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(service_name(owner.name, arm), object_labels(owner.name, arm)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name, selected),
            "ports": [dict(port) for port in _SERVICE_PORTS],
        },
    }


def render_services(
    owner: OwnerRef, *, replica_ratio: bool, candidate_weight: int
) -> list[dict[str, Any]]:
    """The Services of a rollout: each arm's, and in ReplicaRatio mode the one for both.

    ``candidate_weight`` is the traffic share the candidate's objects should get now; at 0
    the rollout's Service selects only the baseline's pods.
    """
    _check_weight(candidate_weight)
    services = [render_service(owner, "baseline"), render_service(owner, "candidate")]
    if replica_ratio:
        only: Arm | None = "baseline" if candidate_weight == 0 else None
        services.insert(0, render_service(owner, None, select_arm=only))
    return services


def backend_refs(rollout_name: str, weight: int) -> list[dict[str, Any]]:
    """HTTPRoute ``backendRefs``: the baseline at ``100 - weight``, the candidate at ``weight``."""
    _check_weight(weight)
    shares: tuple[tuple[Arm, int], ...] = (("baseline", 100 - weight), ("candidate", weight))
    return [
        {
            "group": "",
            "kind": "Service",
            "name": service_name(rollout_name, arm),
            "port": HTTP_PORT,
            "weight": arm_weight,
        }
        for arm, arm_weight in shares
    ]


def route_backends_patch(
    route: Mapping[str, Any], rollout_name: str, weight: int
) -> dict[str, Any]:
    """A JSON merge patch for the user's HTTPRoute that sends ``weight`` % to the candidate.

    A merge patch replaces lists whole, so the patch carries every rule of ``route`` with
    everything but its ``backendRefs`` unchanged (matches, filters, timeouts ...); in each rule
    the backends become the two arm Services on the HTTP port. Backend-level filters the
    route had are dropped with the backends they belonged to. A route without rules gets one
    rule (match everything) with the two backends.
    """
    spec = route.get("spec")
    rules = spec.get("rules") if isinstance(spec, Mapping) else None
    refs = backend_refs(rollout_name, weight)
    if not isinstance(rules, list) or not rules:
        return {"spec": {"rules": [{"backendRefs": refs}]}}
    patched = []
    for rule in rules:
        new_rule = copy.deepcopy(dict(rule)) if isinstance(rule, Mapping) else {}
        new_rule["backendRefs"] = copy.deepcopy(refs)
        patched.append(new_rule)
    return {"spec": {"rules": patched}}


def route_backends(route: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """Each rule's ``backendRefs`` as the route has them now (copies)."""
    spec = route.get("spec")
    rules = spec.get("rules") if isinstance(spec, Mapping) else None
    if not isinstance(rules, list):
        return []
    return [
        copy.deepcopy(list(rule.get("backendRefs") or [])) if isinstance(rule, Mapping) else []
        for rule in rules
    ]


def is_rollouts_own(backends: list[list[dict[str, Any]]], rollout_name: str) -> bool:
    """Whether every rule's backends are this rollout's two arm Services (the operator set
    them): then they are not the route's originals."""
    ours = {service_name(rollout_name, "baseline"), service_name(rollout_name, "candidate")}
    refs = [ref for rule in backends for ref in rule]
    return bool(refs) and all(isinstance(r, Mapping) and r.get("name") in ours for r in refs)


def route_restore_patch(
    route: Mapping[str, Any], original: list[list[dict[str, Any]]]
) -> dict[str, Any] | None:
    """A merge patch that gives each rule of ``route`` back its ``backendRefs`` from before the
    rollout (a rule added since gets the first rule's), or None when nothing is to restore.
    Everything else of each rule stays as it is now."""
    spec = route.get("spec")
    rules = spec.get("rules") if isinstance(spec, Mapping) else None
    if not isinstance(rules, list) or not rules:
        return None
    restored = []
    for index, rule in enumerate(rules):
        new_rule = copy.deepcopy(dict(rule)) if isinstance(rule, Mapping) else {}
        refs = original[index] if index < len(original) else (original[0] if original else [])
        new_rule["backendRefs"] = copy.deepcopy(refs)
        restored.append(new_rule)
    if route_backends({"spec": {"rules": restored}}) == route_backends(route):
        return None
    return {"spec": {"rules": restored}}
