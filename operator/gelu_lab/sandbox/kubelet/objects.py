"""The Pod objects the sandbox's kubelet shows in the API, as pure functions of its pods.

One Pod object per pod, labelled as its template says (plus ``pod-template-hash``) and owned
by its Deployment; ``Pending`` while the server starts, then ``Running`` with
``podIP: 127.0.0.1``, the ``Ready`` condition, and annotations saying where the server listens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gelu_lab.sandbox.kubelet.fields import mapping, metadata
from gelu_lab.sandbox.kubelet.lifecycle import Pod
from gelu_lab.sandbox.triton import LOOPBACK
from gelu_rollout.adapters.kube import Object
from gelu_rollout.adapters.kube.kinds import DEPLOYMENT, POD
from gelu_rollout.resources.workloads import CONTAINER_NAME

ANNOTATION_HTTP: Final = "sandbox.gelu.dev/http"
ANNOTATION_METRICS: Final = "sandbox.gelu.dev/metrics"
ANNOTATION_PID: Final = "sandbox.gelu.dev/pid"
NODE_NAME: Final = "sandbox"


def pod_object(pod: Pod, template: Mapping[str, Any]) -> Object:
    """The Pod object of ``pod``, a pod of ``template``, as created (its status comes after)."""
    return {
        "apiVersion": POD.api_version,
        "kind": POD.kind,
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": dict(pod.labels),
            "annotations": dict(mapping(metadata(template).get("annotations"))),
            "ownerReferences": [
                {
                    "apiVersion": DEPLOYMENT.api_version,
                    "kind": DEPLOYMENT.kind,
                    "name": pod.deployment,
                    "uid": pod.deployment_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {**mapping(template.get("spec")), "nodeName": NODE_NAME},
    }


def server_annotations(pod: Pod) -> dict[str, str]:
    """Where a running pod's server listens: HTTP and metrics ``host:port``, and its pid."""
    return {
        ANNOTATION_HTTP: pod.server.http_url,
        ANNOTATION_METRICS: pod.server.metrics_address,
        ANNOTATION_PID: str(pod.server.pid),
    }


def pod_status(pod: Pod, now: str) -> Object:
    """The Pod object's status at ``now`` (an RFC 3339 time)."""
    ready = "True" if pod.running and pod.ready else "False"
    status: Object = {
        "phase": "Running" if pod.running else "Pending",
        "hostIP": LOOPBACK,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
            {"type": "Ready", "status": ready, "lastTransitionTime": now},
        ],
    }
    if pod.running:
        status.update(
            podIP=LOOPBACK,
            podIPs=[{"ip": LOOPBACK}],
            containerStatuses=[
                {
                    "name": CONTAINER_NAME,
                    "ready": pod.ready,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {}},
                }
            ],
        )
    return status


def crashed_status(reason: str, message: str, restarts: int, now: str) -> Object:
    """A pod whose server could not start, as the kubelet shows a crash loop: the container
    waits with ``reason`` (``CrashLoopBackOff``, ``CreateContainerConfigError``) and, for a
    server that ran and exited, its last termination carries the end of its log (the
    container's ``FallbackToLogsOnError`` message)."""
    container: Object = {
        "name": CONTAINER_NAME,
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, "message": message[:1024]}},
    }
    if reason == "CrashLoopBackOff":
        container["lastState"] = {
            "terminated": {"exitCode": 1, "reason": "Error", "message": message[-4096:]}
        }
    return {
        "phase": "Pending" if reason != "CrashLoopBackOff" else "Running",
        "hostIP": LOOPBACK,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "lastTransitionTime": now},
        ],
        "containerStatuses": [container],
    }
