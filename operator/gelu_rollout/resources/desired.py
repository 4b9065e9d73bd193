"""Every object a rollout owns, as it should be now: ``desired_resources``.

The objects follow from the spec, the status's stage and weight, and the two arms' model
repositories alone; the same arguments always give the same objects, so applying them again
changes nothing. By stage:

* **Pending, Progressing, Paused**: the baseline at ``spec.baseline.replicas``; the candidate
  running from Pending on, since the paired probe needs it before the first traffic step. In
  ReplicaRatio mode the candidate's replicas follow its weight (:func:`replica_split`); before
  its first step (weight 0) it runs at the first step's size and the rollout's Service does not
  select it. In HTTPRoute mode it runs ``spec.candidate.replicas`` and the route's weights
  decide its share.
* **Promoted**: the candidate becomes the new baseline: the baseline Deployment serves the
  candidate's repository (a new revision, rolled in without losing ready pods), and the
  candidate Deployment is scaled to 0. All traffic goes to the baseline's pods.
* **RolledBack**: the baseline as it was; the candidate Deployment scaled to 0 and no traffic.

A finished rollout keeps its candidate Deployment (at 0 replicas) and Services, so the set of
objects is the same in every stage and needs no deletion; ConfigMaps of revisions no longer
served are reported by :func:`stale_objects` for the caller to delete. Everything is removed by
garbage collection when the rollout is deleted (owner references). :func:`needs_apply` tells
whether a live object already matches its desired form, so an unchanged rollout writes nothing:
each object carries its own fingerprint (:func:`fingerprinted`), so "matches" also means "was
applied from this rendering", after a restart of the operator too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from gelu_rollout.resources.names import ANNOTATION_RENDERED, Arm, OwnerRef
from gelu_rollout.resources.pod_settings import arm_pod
from gelu_rollout.resources.traffic import render_services, replica_split
from gelu_rollout.resources.workloads import ArmSource, render_config_map, render_deployment
from gelu_rollout.spec.model import ArmSpec, RolloutSpec
from gelu_rollout.spec.status import RolloutStatus, Stage
from gelu_rollout.variants.repository import CONFIG_KEY, render_repository

MAX_REPOSITORY_BYTES: Final = 1_000_000
"""Room for a repository in a ConfigMap (the API server's limit is 1 MiB, metadata included)."""


def _frozen(files: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType({key: files[key] for key in sorted(files)})


@dataclass(frozen=True)
class ArmRepositories:
    """Each arm's model repository as ConfigMap data (file key -> text).

    Rendered from the arm's variant, or read by the caller from the user's ConfigMap.
    """

    baseline: Mapping[str, str] = field(default_factory=dict)
    candidate: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "baseline", _frozen(self.baseline))
        object.__setattr__(self, "candidate", _frozen(self.candidate))

    def of(self, arm: Arm) -> Mapping[str, str]:
        """The repository of ``arm``."""
        return self.baseline if arm == "baseline" else self.candidate


def arm_repository(
    model_name: str, arm: ArmSpec, config_maps: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """An arm's repository: its variant rendered, or its user ConfigMap's data from
    ``config_maps`` (by name); empty for a repository in storage, which Triton reads itself.
    Raises KeyError when the user's ConfigMap is not given."""
    if arm.storage_uri is not None:
        return {}
    if arm.repository is not None:
        return dict(config_maps[arm.repository.config_map_name])
    if arm.variant is None:  # the spec model forbids this; keeps the type checker honest
        raise ValueError("an arm needs a variant or a repository")
    return render_repository(model_name, arm.variant)


def repositories_for(
    spec: RolloutSpec, config_maps: Mapping[str, Mapping[str, str]] | None = None
) -> ArmRepositories:
    """Both arms' repositories; ``config_maps`` holds the data of the user ConfigMaps the spec
    names (by name). Raises KeyError when one of them is not given."""
    given = config_maps or {}
    return ArmRepositories(
        baseline=arm_repository(spec.model.name, spec.baseline, given),
        candidate=arm_repository(spec.model.name, spec.candidate, given),
    )


def repository_problems(files: Mapping[str, str]) -> list[str]:
    """What keeps ``files`` from being a servable model repository (empty when nothing)."""
    problems = []
    if CONFIG_KEY not in files:
        problems.append(f"has no {CONFIG_KEY} key")
    if not any(key != CONFIG_KEY for key in files):
        problems.append(f"has no model file (a key besides {CONFIG_KEY}, served from 1/)")
    size = sum(len(key.encode()) + len(text.encode()) for key, text in files.items())
    if size > MAX_REPOSITORY_BYTES:
        problems.append(f"is {size} bytes, more than a ConfigMap holds ({MAX_REPOSITORY_BYTES})")
    return problems


def candidate_traffic_weight(status: RolloutStatus) -> int:
    """The share of traffic (percent) the candidate's objects get now.

    0 once the rollout is finished: after a rollback the candidate gets nothing, and after a
    promotion the baseline's pods serve the candidate's repository and take all traffic.
    """
    return 0 if status.stage.terminal else status.candidate_weight


def arm_replicas(spec: RolloutSpec, status: RolloutStatus) -> tuple[int, int]:
    """(baseline, candidate) replicas for the rollout's stage, mode and weight."""
    baseline = spec.baseline.replicas
    if status.stage.terminal:
        return baseline, 0
    if spec.traffic.mode == "HTTPRoute":
        return baseline, spec.candidate.replicas
    # ReplicaRatio: before the first step, warm the candidate at the first step's size.
    weight = status.candidate_weight or spec.traffic.steps[0].weight
    _, candidate = replica_split(min(weight, 99), baseline)
    return baseline, candidate


def desired_resources(
    owner: OwnerRef,
    spec: RolloutSpec,
    status: RolloutStatus,
    repositories: ArmRepositories,
) -> list[dict[str, Any]]:
    """Every object the rollout owns, in apply order: ConfigMaps (for the arms whose
    repository the operator copies), Deployments, Services."""
    baseline_replicas, candidate_replicas = arm_replicas(spec, status)
    candidate = ArmSource(spec.candidate, repositories.candidate)
    baseline = (
        candidate
        if status.stage is Stage.PROMOTED
        else ArmSource(spec.baseline, repositories.baseline)
    )
    arms: tuple[tuple[Arm, ArmSource], ...] = (("baseline", baseline), ("candidate", candidate))
    config_maps = [
        render_config_map(owner, arm, source.files, source=source.name)
        for arm, source in arms
        if source.in_config_map
    ]
    rendered = [
        *config_maps,
        render_deployment(
            owner,
            spec.model,
            "baseline",
            baseline,
            baseline_replicas,
            # Promoted, the baseline serves the candidate's model as it was tried.
            pod=arm_pod(spec, "candidate" if status.stage is Stage.PROMOTED else "baseline"),
        ),
        render_deployment(
            owner,
            spec.model,
            "candidate",
            candidate,
            candidate_replicas,
            pod=arm_pod(spec, "candidate"),
        ),
        *render_services(
            owner,
            replica_ratio=spec.traffic.mode == "ReplicaRatio",
            candidate_weight=candidate_traffic_weight(status),
        ),
    ]
    return [fingerprinted(obj) for obj in rendered]


def fingerprinted(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with its own fingerprint in the annotation ``gelu.dev/rendered``: a digest of
    the object as rendered without it.

    Applied with the object, it tells a later tick (of this process or of the next) whether
    the live object was applied from this very rendering: :func:`needs_apply` of a
    fingerprinted object is False only if the live one carries the same fingerprint and every
    field rendered (no drift by another hand). A field the operator stops rendering changes
    the fingerprint, so that apply, which drops the field, is not skipped.
    """
    digest = hashlib.blake2b(
        json.dumps(obj, sort_keys=True, default=dict).encode(), digest_size=12
    ).hexdigest()
    metadata = dict(obj.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION_RENDERED: digest}
    return {**obj, "metadata": metadata}


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = obj.get("metadata") or {}
    return (str(obj.get("apiVersion")), str(obj.get("kind")), str(metadata.get("name")))


def _controlled_by(obj: Mapping[str, Any], owner: OwnerRef) -> bool:
    metadata = obj.get("metadata") or {}
    references = metadata.get("ownerReferences") or []
    return any(
        isinstance(ref, Mapping) and ref.get("uid") == owner.uid and ref.get("controller") is True
        for ref in references
    )


def taken_by_another(obj: Mapping[str, Any], owner: OwnerRef) -> str | None:
    """Who ``obj`` (an object found under a name ``owner`` renders) belongs to, when that is
    not ``owner``: the controller it names, or "nobody" for an object nobody controls (the
    user's own). None when it is ``owner``'s. A server-side apply would take it over whole
    (every rollout applies as the same field manager), so it must not be applied."""
    if _controlled_by(obj, owner):
        return None
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    controller = next(
        (r for r in references if isinstance(r, Mapping) and r.get("controller") is True), None
    )
    if controller is None:
        return "nobody (not created by this rollout)"
    return f"{controller.get('kind')} {controller.get('name')}"


def stale_objects(
    owner: OwnerRef, existing: Iterable[Mapping[str, Any]], desired: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Objects in ``existing`` that ``owner`` controls but ``desired`` no longer has.

    ``existing`` objects need ``apiVersion`` and ``kind`` (list responses leave them out of
    their items). Objects another owner controls are never returned.
    """
    wanted = {_key(obj) for obj in desired}
    return [obj for obj in existing if _controlled_by(obj, owner) and _key(obj) not in wanted]


def _covers(live: object, desired: object) -> bool:
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and _covers(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(_covers(a, b) for a, b in zip(live, desired, strict=True))
        )
    return live == desired


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether ``live`` (as read from the API server) differs from ``desired``.

    Fields only ``live`` has (defaults, ``status``, server metadata, labels others added) do
    not count; a list counts as different unless it has the same length and every item covers
    the desired one. A missing object needs applying.
    """
    return live is None or not _covers(live, desired)


def guarded(patch: Mapping[str, Any], read: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` made conditional on the object being as it was ``read``: with its
    ``resourceVersion`` the API server refuses it (409) if anyone wrote the object since,
    where the patch would undo what they wrote (a merge patch replaces an HTTPRoute's rules
    whole; a decision taken on a status another replica has changed since)."""
    version = (read.get("metadata") or {}).get("resourceVersion")
    if not isinstance(version, str) or not version:
        return dict(patch)
    return {**patch, "metadata": {"resourceVersion": version}}
