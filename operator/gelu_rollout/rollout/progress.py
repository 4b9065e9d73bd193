"""The progress deadline: an unfinished rollout whose pods stay not ready is rolled back.

Pure. The controller records what each tick's apply found (:func:`not_ready_since`, kept in
``status.notReadySince``); ``decide`` reads that record and rolls the rollout back once its
pods have been not ready for longer than ``spec.progressDeadlineSeconds``
(:func:`deadline_exceeded`), as a Kubernetes Deployment reports ``ProgressDeadlineExceeded``
and a Flagger canary rolls back.

The clock runs from the first tick that found an arm's pods not ready (``WaitingForPods`` or
``PodsFailing``) since they were last ready, or since the rollout (or its latest spec
generation) started: a candidate that was ready and then crash-loops mid-step is measured from
the tick that saw it stop. A finished rollout has no deadline (after a promotion the baseline
rolls to the candidate's model and there is nothing left to roll back to).
"""

from __future__ import annotations

import math
from datetime import datetime

from gelu_rollout.rollout.conditions import PODS_NOT_READY, ConditionType, Resources
from gelu_rollout.spec.model import RolloutSpec
from gelu_rollout.spec.status import RolloutStatus


def not_ready_since(status: RolloutStatus, resources: Resources, now: datetime) -> datetime | None:
    """``status.notReadySince`` after a tick whose apply found ``resources``.

    Set at the first tick that finds pods not ready and kept while they stay so; cleared once
    they are ready, and once the rollout is finished. Anything else the apply found (a route
    deleted under it) says nothing about the pods: the record stays as it was.
    """
    if status.stage.terminal or resources.ready:
        return None
    if resources.reason in PODS_NOT_READY:
        return status.not_ready_since or now
    return status.not_ready_since


def deadline_exceeded(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> str | None:
    """Why the rollout is past its progress deadline (how long, and what is not ready), or
    None while it is not: finished, its pods ready, or not ready for at most the deadline."""
    since = status.not_ready_since
    if since is None or status.stage.terminal:
        return None
    waited = (now - since).total_seconds()
    limit = spec.progress_deadline_seconds
    if waited <= limit:
        return None
    # What the last apply found: the pod and what its server logged last, or the Deployments
    # still waiting.
    found = status.condition(ConditionType.RESOURCES_READY.value)
    what = found.message if found is not None and found.message else "the arms' pods"
    # Whole seconds, rounded up: the time said is always past the deadline.
    return (
        f"not ready for {math.ceil(waited)}s, past spec.progressDeadlineSeconds ({limit}s): {what}"
    )
