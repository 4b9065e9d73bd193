"""The ConfigMap and Deployment of one arm: a stock ``tritonserver`` serving a model repository.

Each arm's model repository is copied into a ConfigMap owned by the rollout and named after its
content (``<rollout>-<arm>-<revision>``), including a repository the user keeps in a ConfigMap
of their own (``spec.<arm>.repository.configMapName``). The copy is immutable, so a pod always
serves exactly the content its revision label names, an edit of the user's ConfigMap becomes a
new revision (a new ReplicaSet) instead of silently changing files under running pods, and the
previous revision stays available for a rollback.

The pod runs the image from ``spec.model.image`` and mounts the ConfigMap at
``/models/<model name>/``, each key at its path in the model's directory
(:func:`gelu_rollout.variants.repository.repository_path`). Triton ignores the ``..data``
entries of a ConfigMap volume (they are not version numbers) and the model loads at startup
(``--model-control-mode=none``).

The container runs as a non-root user with a read-only root filesystem. Triton's Python backend
needs two writable places, both given as ``emptyDir`` volumes: ``/tmp`` (it creates a directory
for Python environments there at model load, and aborts when it cannot) and ``/dev/shm`` (its
shared memory with the model's stub process). Both were checked with Triton 2.51 running as
uid 1000 on a read-only root.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gelu_rollout.resources.names import (
    ANNOTATION_SOURCE,
    Arm,
    OwnerRef,
    config_map_name,
    deployment_name,
    object_labels,
    selector_labels,
)
from gelu_rollout.spec.model import ArmSpec, ModelSpec
from gelu_rollout.variants.repository import repository_path, repository_revision

HTTP_PORT: Final = 8000
GRPC_PORT: Final = 8001
METRICS_PORT: Final = 8002
CONTAINER_NAME: Final = "tritonserver"
MODEL_ROOT: Final = "/models"
RUN_AS_USER: Final = 1000
"""The NGC ``tritonserver`` image's ``triton-server`` user."""

TRITON_COMMAND: Final[tuple[str, ...]] = ("tritonserver",)
TRITON_ARGS: Final[tuple[str, ...]] = (
    f"--model-repository={MODEL_ROOT}",
    "--metrics-config=summary_latencies=true",
    "--model-control-mode=none",
)
"""Flags of Triton 2.51. Ports are Triton's defaults (8000, 8001, 8002)."""

SCRAPE_ANNOTATIONS: Final[Mapping[str, str]] = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}

CPU_REQUEST: Final = "500m"
MEMORY_REQUEST: Final = "1Gi"
MEMORY_LIMIT: Final = "2Gi"
TMP_SIZE: Final = "256Mi"
SHM_SIZE: Final = "256Mi"
TERMINATION_GRACE_SECONDS: Final = 40
"""Triton's own exit timeout (30 s, in-flight requests drain) plus a margin."""

_REPOSITORY_VOLUME: Final = "model-repository"
_TMP_VOLUME: Final = "tmp"
_SHM_VOLUME: Final = "dshm"


def source_of(arm: ArmSpec) -> str:
    """Where an arm's repository comes from: ``variant/<name>`` or ``configMap/<name>``."""
    if arm.repository is not None:
        return f"configMap/{arm.repository.config_map_name}"
    return f"variant/{arm.variant}"


def repository_items(files: Mapping[str, str]) -> list[dict[str, str]]:
    """ConfigMap volume ``items``: each key at its path in the model's directory, sorted."""
    return [{"key": key, "path": repository_path(key)} for key in sorted(files)]


def render_config_map(
    owner: OwnerRef, arm: Arm, files: Mapping[str, str], *, source: str
) -> dict[str, Any]:
    """The immutable ConfigMap holding one revision of an arm's model repository."""
    revision = repository_revision(files)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(
            config_map_name(owner.name, arm, revision),
            object_labels(owner.name, arm, revision),
            {ANNOTATION_SOURCE: source},
        ),
        "immutable": True,
        "data": {key: files[key] for key in sorted(files)},
    }


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(model: ModelSpec) -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": model.image,
        "command": list(TRITON_COMMAND),
        "args": list(TRITON_ARGS),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # The server answers /v2/health/live only once the startup model load is done: the
        # startup probe gives a slow load five minutes before liveness may restart the pod.
        "startupProbe": _probe("/v2/health/live", period=5, failures=60),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "readinessProbe": _probe(f"/v2/models/{model.name}/ready", period=5, failures=3),
        # No CPU limit: CFS throttling would show up as latency the latency gate then blames
        # on the variant.
        "resources": {
            "requests": {"cpu": CPU_REQUEST, "memory": MEMORY_REQUEST},
            "limits": {"memory": MEMORY_LIMIT},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {
                "name": _REPOSITORY_VOLUME,
                "mountPath": f"{MODEL_ROOT}/{model.name}",
                "readOnly": True,
            },
            {"name": _TMP_VOLUME, "mountPath": "/tmp"},
            {"name": _SHM_VOLUME, "mountPath": "/dev/shm"},
        ],
    }


def render_deployment(
    owner: OwnerRef,
    model: ModelSpec,
    arm: Arm,
    files: Mapping[str, str],
    replicas: int,
    *,
    source: str,
) -> dict[str, Any]:
    """An arm's Deployment, serving ``files`` (the ConfigMap :func:`render_config_map` gives).

    The pod template carries the repository's revision as the ``gelu.dev/revision`` label and
    mounts the revision's ConfigMap, so new content rolls the pods.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be at least 0, got {replicas}")
    revision = repository_revision(files)
    labels = object_labels(owner.name, arm, revision)
    annotations = {ANNOTATION_SOURCE: source}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(deployment_name(owner.name, arm), labels, annotations),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(owner.name, arm)},
            # Never fewer ready pods than asked for while a new revision rolls in.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        **SCRAPE_ANNOTATIONS,
                        **annotations,
                        "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(model)],
                    "volumes": [
                        {
                            "name": _REPOSITORY_VOLUME,
                            "configMap": {
                                "name": config_map_name(owner.name, arm, revision),
                                "items": repository_items(files),
                            },
                        },
                        {"name": _TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE}},
                        {
                            "name": _SHM_VOLUME,
                            "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE},
                        },
                    ],
                },
            },
        },
    }
