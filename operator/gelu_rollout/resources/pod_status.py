"""Why an arm's pods are not running, read from their status as the kubelet writes it (pure).

A model repository that cannot be read (a missing bucket, bad credentials, a claim that does
not exist) never makes a pod ready: Triton exits when its model fails to load, and the
container crash-loops with the end of its log as the termination message (the Triton
container's ``terminationMessagePolicy: FallbackToLogsOnError``), or the container cannot
even be set up (a missing Secret or claim). The operator says so in its ``ResourcesReady``
condition and an Event instead of only "waiting for pods".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from gelu_rollout.resources.names import LABEL_ARM

FAILING_REASONS: Final = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "RunContainerError",
    }
)
MESSAGE_LIMIT: Final = 400


def _last_lines(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The error lines of a log tail, else its end, on one line, at most ``limit`` long."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E", "error")) or "rror" in line]
    chosen = " / ".join(errors[-2:] or lines[-2:])
    return chosen if len(chosen) <= limit else chosen[: limit - 3] + "..."


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why one pod's containers do not run, in a sentence, or None."""
    name = str((pod.get("metadata") or {}).get("name", ""))
    arm = str(((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_ARM, ""))
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason", ""))
        if reason not in FAILING_REASONS:
            continue
        terminated = (container.get("lastState") or {}).get("terminated") or {}
        detail = str(terminated.get("message") or waiting.get("message") or "")
        restarts = int(container.get("restartCount") or 0)
        said = f"{arm} pod {name}" if arm else f"pod {name}"
        after = f" after {restarts} restart(s)" if restarts else ""
        return f"{said}: {reason}{after}: {_last_lines(detail) or 'no message'}"
    return None


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why the pods that do not run do not, one sentence each, sorted."""
    return sorted({p for pod in pods if (p := pod_problem(pod)) is not None})
