"""Which pods must still be told which model version to serve (pure).

Triton has no command-line flag for a model's version policy: it comes from the model's
``config.pbtxt``, which a store the operator does not write (``storageUri``) decides. An arm
with ``spec.<arm>.version`` therefore runs its pods as usual (``--model-control-mode=explicit
--load-model=<model>``, so the model's own policy loads first) with the wanted version in the
pod annotation ``gelu.dev/model-version``, and a readiness probe on that version's own
endpoint. The operator then reloads the model on each such pod whose server is up but not yet
ready, with the model's own configuration and the version policy set to that one version
(Triton's load API with a ``config`` parameter). Until that is done the pod is not ready, so
no traffic reaches a version nobody asked for; after a container restart the probe fails
again and the next tick loads the version again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gelu_rollout.resources.names import ANNOTATION_MODEL_VERSION, LABEL_ARM
from gelu_rollout.resources.workloads import CONTAINER_NAME


@dataclass(frozen=True)
class VersionLoad:
    """One pod whose server is up but does not yet serve ``version`` of the model."""

    pod: Mapping[str, Any]
    name: str
    arm: str
    version: int


def _server_started(pod: Mapping[str, Any]) -> bool:
    """The Triton container runs and has passed its startup probe, and is not ready."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    for container in status.get("containerStatuses") or []:
        if container.get("name") == CONTAINER_NAME:
            running = "running" in (container.get("state") or {})
            return running and bool(container.get("started")) and not container.get("ready")
    return False


def versions_to_load(pods: Iterable[Mapping[str, Any]]) -> list[VersionLoad]:
    """The pods that ask for a model version (by annotation) and are up but not ready, sorted
    by name. A pod being deleted is left alone."""
    loads = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        wanted = (metadata.get("annotations") or {}).get(ANNOTATION_MODEL_VERSION)
        if wanted is None or metadata.get("deletionTimestamp") or not _server_started(pod):
            continue
        try:
            version = int(wanted)
        except ValueError:
            continue
        arm = str((metadata.get("labels") or {}).get(LABEL_ARM, ""))
        loads.append(VersionLoad(pod, str(metadata.get("name", "")), arm, version))
    return sorted(loads, key=lambda load: load.name)


def version_policy_config(config: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The model's configuration as the server reports it, serving only ``version``."""
    return {**config, "version_policy": {"specific": {"versions": [version]}}}
