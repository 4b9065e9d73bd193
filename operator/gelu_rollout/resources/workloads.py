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
from dataclasses import dataclass, field
from typing import Any, Final

from gelu_rollout.resources.names import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_SOURCE,
    Arm,
    OwnerRef,
    config_map_name,
    deployment_name,
    object_labels,
    selector_labels,
)
from gelu_rollout.spec.model import ArmSpec, ModelSpec, PodSpec
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

S3_SECRET_KEYS: Final = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_SESSION_TOKEN", True),
)
"""The keys of an S3 credentials Secret, and whether each may be absent."""
GCS_CREDENTIALS_DIR: Final = "/var/run/secrets/gcs"
GCS_CREDENTIALS_KEY: Final = "key.json"

_REPOSITORY_VOLUME: Final = "model-repository"
_CREDENTIALS_VOLUME: Final = "storage-credentials"
_TMP_VOLUME: Final = "tmp"
_SHM_VOLUME: Final = "dshm"


def source_of(arm: ArmSpec) -> str:
    """Where an arm's repository comes from: ``variant/<name>``, ``configMap/<name>`` or
    ``storage/<uri>@<revision>``."""
    if arm.storage_uri is not None:
        version = "" if arm.version is None else f" version {arm.version}"
        return f"storage/{arm.storage_uri}@{arm.revision}{version}"
    if arm.repository is not None:
        return f"configMap/{arm.repository.config_map_name}"
    return f"variant/{arm.variant}"


@dataclass(frozen=True)
class ArmSource:
    """What an arm's pods serve: repository ``files`` the operator copies into a ConfigMap,
    or a repository in object storage or on a volume that Triton reads itself (``arm``'s
    ``storageUri``, ``revision`` and ``storage``)."""

    spec: ArmSpec
    files: Mapping[str, str] = field(default_factory=dict)

    @property
    def in_config_map(self) -> bool:
        return self.spec.storage_uri is None

    @property
    def revision(self) -> str:
        """The content's revision: a hash of the files, or of the storage URI and the
        ``revision`` the spec gives for it (the operator does not read the store)."""
        if self.spec.storage_uri is None:
            return repository_revision(self.files)
        identity = {"storageUri": self.spec.storage_uri, "revision": str(self.spec.revision)}
        if self.spec.version is not None:
            identity["version"] = str(self.spec.version)
        return repository_revision(identity)

    @property
    def name(self) -> str:
        return source_of(self.spec)


def _split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket or claim, path) of a storage URI."""
    scheme, rest = uri.split("://", 1)
    head, _, path = rest.partition("/")
    return scheme, head, path.strip("/")


def storage_repository(source: ArmSource) -> str:
    """The ``--model-repository`` for a storage source, in Triton's own syntax: an
    S3-compatible endpoint goes inside the URI (``s3://http://host:port/bucket/prefix``)."""
    uri = str(source.spec.storage_uri)
    scheme, head, path = _split_uri(uri)
    if scheme == "pvc":
        return f"{MODEL_ROOT}/{path}".rstrip("/")
    endpoint = source.spec.storage.endpoint if source.spec.storage else None
    if scheme == "s3" and endpoint:
        return f"s3://{endpoint.rstrip('/')}/{head}/{path}".rstrip("/")
    return uri.rstrip("/")


def _storage_env(source: ArmSource) -> list[dict[str, Any]]:
    storage = source.spec.storage
    scheme = _split_uri(str(source.spec.storage_uri))[0]
    env: list[dict[str, Any]] = []
    if storage is None:
        return env
    if scheme == "s3":
        if storage.region:
            env.append({"name": "AWS_DEFAULT_REGION", "value": storage.region})
        if storage.credentials_secret_name:
            for key, optional in S3_SECRET_KEYS:
                ref: dict[str, Any] = {"name": storage.credentials_secret_name, "key": key}
                if optional:
                    ref["optional"] = True
                env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    elif scheme == "gs" and storage.credentials_secret_name:
        env.append(
            {
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}",
            }
        )
    return env


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


def _args(model: ModelSpec, source: ArmSource, pod: PodSpec) -> list[str]:
    if source.in_config_map:
        args = list(TRITON_ARGS)
    else:
        # A store may hold other models: load only this one.
        args = [
            f"--model-repository={storage_repository(source)}",
            "--metrics-config=summary_latencies=true",
            "--model-control-mode=explicit",
            f"--load-model={model.name}",
        ]
    return [*args, *(pod.triton_args or ())]


def _env(source: ArmSource, pod: PodSpec) -> list[dict[str, Any]]:
    own = [var.model_dump(mode="json", by_alias=True, exclude_none=True) for var in pod.env or ()]
    names = {var["name"] for var in own}
    # The user's variables win over the operator's storage settings of the same name.
    storage = [] if source.in_config_map else _storage_env(source)
    return [*(v for v in storage if v["name"] not in names), *own]


def _resources(pod: PodSpec) -> dict[str, Any]:
    if pod.resources is None:
        # No CPU limit: CFS throttling would show up as latency the latency gate then blames
        # on the variant.
        return {
            "requests": {"cpu": CPU_REQUEST, "memory": MEMORY_REQUEST},
            "limits": {"memory": MEMORY_LIMIT},
        }
    return pod.resources.model_dump(mode="json", exclude_none=True)


def _mounts(model: ModelSpec, source: ArmSource) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    if source.in_config_map:
        mounts.append(
            {
                "name": _REPOSITORY_VOLUME,
                "mountPath": f"{MODEL_ROOT}/{model.name}",
                "readOnly": True,
            }
        )
    elif str(source.spec.storage_uri).startswith("pvc://"):
        mounts.append({"name": _REPOSITORY_VOLUME, "mountPath": MODEL_ROOT, "readOnly": True})
    elif _credentials_volume(source) is not None:
        mounts.append(
            {"name": _CREDENTIALS_VOLUME, "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
        )
    return [
        *mounts,
        {"name": _TMP_VOLUME, "mountPath": "/tmp"},
        {"name": _SHM_VOLUME, "mountPath": "/dev/shm"},
    ]


def _credentials_volume(source: ArmSource) -> dict[str, Any] | None:
    storage = source.spec.storage
    uri = str(source.spec.storage_uri)
    if uri.startswith("gs://") and storage is not None and storage.credentials_secret_name:
        return {
            "name": _CREDENTIALS_VOLUME,
            "secret": {"secretName": storage.credentials_secret_name},
        }
    return None


def _volumes(owner: OwnerRef, arm: Arm, source: ArmSource) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    if source.in_config_map:
        volumes.append(
            {
                "name": _REPOSITORY_VOLUME,
                "configMap": {
                    "name": config_map_name(owner.name, arm, source.revision),
                    "items": repository_items(source.files),
                },
            }
        )
    elif str(source.spec.storage_uri).startswith("pvc://"):
        claim = _split_uri(str(source.spec.storage_uri))[1]
        volumes.append(
            {
                "name": _REPOSITORY_VOLUME,
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
    elif (credentials := _credentials_volume(source)) is not None:
        volumes.append(credentials)
    return [
        *volumes,
        {"name": _TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE}},
        {"name": _SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
    ]


def ready_path(model: str, version: int | None) -> str:
    """Triton's readiness endpoint of the model, or of the one version the arm must serve: a
    pod is ready only once that version is loaded (:mod:`gelu_rollout.resources.model_versions`)."""
    if version is None:
        return f"/v2/models/{model}/ready"
    return f"/v2/models/{model}/versions/{version}/ready"


def _container(model: ModelSpec, source: ArmSource, pod: PodSpec) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": pod.image or model.image,
        "command": list(TRITON_COMMAND),
        "args": _args(model, source, pod),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # The server answers /v2/health/live only once the startup model load is done: the
        # startup probe gives a slow load five minutes before liveness may restart the pod.
        "startupProbe": _probe("/v2/health/live", period=5, failures=60),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "readinessProbe": _probe(ready_path(model.name, source.spec.version), period=5, failures=3),
        "resources": _resources(pod),
        # A model that fails to load (a missing bucket, bad credentials) ends the server:
        # the last lines of its log become the container's termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": _mounts(model, source),
    }
    env = _env(source, pod)
    if env:
        container["env"] = env
    return container


def _placement(pod: PodSpec) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        spec["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in pod.tolerations
        ]
    if pod.affinity:
        spec["affinity"] = dict(pod.affinity)
    if pod.service_account_name:
        spec["serviceAccountName"] = pod.service_account_name
    if pod.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": ref.name} for ref in pod.image_pull_secrets]
    return spec


def render_deployment(
    owner: OwnerRef,
    model: ModelSpec,
    arm: Arm,
    source: ArmSource,
    replicas: int,
    *,
    pod: PodSpec | None = None,
) -> dict[str, Any]:
    """An arm's Deployment, serving ``source`` with the pod settings ``pod``.

    The pod template carries the source's revision as the ``gelu.dev/revision`` label (and,
    for files, mounts the revision's ConfigMap from :func:`render_config_map`), so new content
    rolls the pods.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be at least 0, got {replicas}")
    pod = pod or PodSpec()
    labels = object_labels(owner.name, arm, source.revision)
    annotations = {ANNOTATION_SOURCE: source.name}
    if source.spec.version is not None:
        annotations[ANNOTATION_MODEL_VERSION] = str(source.spec.version)
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
                    # A service account the user names may carry cloud identity for storage.
                    "automountServiceAccountToken": pod.service_account_name is not None,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **_placement(pod),
                    "containers": [_container(model, source, pod)],
                    "volumes": _volumes(owner, arm, source),
                },
            },
        },
    }
