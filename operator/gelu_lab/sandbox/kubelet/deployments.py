"""The deployment controller's arithmetic, as pure functions: template hashes, rolling-update
limits, which pods to stop and how many to start, and the status a Deployment reports."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from gelu_lab.sandbox.kubelet.fields import mapping, metadata, sequence
from gelu_rollout.adapters.kube import Object

LABEL_TEMPLATE_HASH: Final = "pod-template-hash"


def template_hash(template: Mapping[str, Any]) -> str:
    """A short, stable hash of a pod template (the ``pod-template-hash`` label)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def desired_replicas(spec: Mapping[str, Any]) -> int:
    """``spec.replicas`` of a Deployment (1 when unset, as the API server defaults it)."""
    value = spec.get("replicas")
    return max(value, 0) if isinstance(value, int) and not isinstance(value, bool) else 1


def _int_or_percent(value: object, replicas: int, *, round_up: bool, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.endswith("%") and value[:-1].strip().isdigit():
        share = replicas * int(value[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    return default


def rolling_limits(spec: Mapping[str, Any], replicas: int) -> tuple[int, int] | None:
    """(maxSurge, maxUnavailable) of a Deployment; None for the ``Recreate`` strategy.

    Defaults are Kubernetes' (25 % each; surge rounds up, unavailability down); when both come
    out 0 the surge is 1, as the API server's validation guarantees.
    """
    strategy = mapping(spec.get("strategy"))
    if strategy.get("type") == "Recreate":
        return None
    rolling = mapping(strategy.get("rollingUpdate"))
    surge = _int_or_percent(
        rolling.get("maxSurge", "25%"), replicas, round_up=True, default=math.ceil(replicas / 4)
    )
    unavailable = _int_or_percent(
        rolling.get("maxUnavailable", "25%"), replicas, round_up=False, default=replicas // 4
    )
    if surge == 0 and unavailable == 0:
        surge = 1
    return surge, unavailable


# -- rolling updates -----------------------------------------------------------------------


class Replica(Protocol):
    """A pod of a Deployment as the rolling update weighs it."""

    @property
    def hash(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def running(self) -> bool: ...

    @property
    def ready(self) -> bool: ...


R = TypeVar("R", bound=Replica)


@dataclass(frozen=True)
class RolloutPlan(Generic[R]):
    """The deployment controller's next move for one Deployment."""

    stop: tuple[R, ...]
    start: int  # new pods of the current template


def _victims(candidates: Iterable[R]) -> list[R]:
    """Pods in the order they go: starting ones first, then unready ones, then the newest."""
    return sorted(candidates, key=lambda p: (p.running, p.ready, -p.index))


def _serving(pod: Replica) -> bool:
    return pod.running and pod.ready


def plan_rollout(
    pods: Sequence[R], current: str, replicas: int, limits: tuple[int, int] | None
) -> RolloutPlan[R]:
    """Which of a Deployment's pods (terminating ones left out) to stop, and how many pods of
    the ``current`` template hash to start, under ``limits`` (:func:`rolling_limits`).

    Surplus pods of the current template go; ``Recreate`` stops every old pod at once;
    ``RollingUpdate`` stops old pods that are not ready, and ready ones only while
    ``replicas - maxUnavailable`` pods stay ready, and starts new pods only while there are
    at most ``replicas + maxSurge`` in all.
    """
    ranked = _victims(p for p in pods if p.hash == current)
    surplus = max(len(ranked) - replicas, 0)
    stop, new = ranked[:surplus], ranked[surplus:]
    old = [p for p in pods if p.hash != current]
    if limits is None:
        stop += old
        surge = replicas
    else:
        surge, unavailable = limits
        old_ready = [p for p in old if _serving(p)]
        stop += [p for p in old if not _serving(p)]
        may_stop = len(old_ready) + sum(map(_serving, new)) - (replicas - unavailable)
        stop += _victims(old_ready)[: max(may_stop, 0)]
    total = len(pods) - len(stop)
    start = min(replicas - len(new), replicas + surge - total)
    return RolloutPlan(tuple(stop), max(start, 0))


# -- status --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodCounts:
    """The pods of one Deployment, as its status counts them (terminating pods not counted)."""

    total: int = 0
    updated: int = 0
    ready: int = 0

    @staticmethod
    def of(pods: Sequence[Replica], current: str) -> PodCounts:
        """The counts of a Deployment's pods (terminating ones left out) at template hash
        ``current``."""
        return PodCounts(
            total=len(pods),
            updated=sum(1 for p in pods if p.hash == current),
            ready=sum(map(_serving, pods)),
        )


def _condition(
    live: Mapping[str, Any], type_: str, status: bool, reason: str, message: str, now: str
) -> Object:
    """A Deployment condition; its times stay as they were while its status (and reason) do."""
    value = "True" if status else "False"
    previous: Mapping[str, Any] = next(
        (mapping(c) for c in sequence(live.get("conditions")) if mapping(c).get("type") == type_),
        {},
    )
    same_status = previous.get("status") == value
    same_reason = same_status and previous.get("reason") == reason
    return {
        "type": type_,
        "status": value,
        "lastUpdateTime": previous.get("lastUpdateTime", now) if same_reason else now,
        "lastTransitionTime": previous.get("lastTransitionTime", now) if same_status else now,
        "reason": reason,
        "message": message,
    }


def deployment_status(
    deployment: Mapping[str, Any], counts: PodCounts, *, max_unavailable: int, now: str
) -> Object:
    """The status the deployment controller would report for ``counts`` of pods at ``now``
    (an RFC 3339 time).

    Conditions keep their timestamps while they hold, so an unchanged Deployment gets an
    unchanged status (and no write).
    """
    meta, spec = metadata(deployment), mapping(deployment.get("spec"))
    live = mapping(deployment.get("status"))
    replicas = desired_replicas(spec)
    name = str(meta.get("name"))
    available = counts.ready >= replicas - max_unavailable
    complete = counts.updated == replicas and counts.total == replicas and counts.ready == replicas
    return {
        "observedGeneration": int(meta.get("generation", 1)),
        "replicas": counts.total,
        "updatedReplicas": counts.updated,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.ready,
        "unavailableReplicas": max(replicas - counts.ready, 0),
        "conditions": [
            _condition(
                live,
                "Available",
                available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                now,
            ),
            _condition(
                live,
                "Progressing",
                True,
                "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                f'Deployment "{name}" has successfully progressed.'
                if complete
                else f'Deployment "{name}" is progressing.',
                now,
            ),
        ],
    }
