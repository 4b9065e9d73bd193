"""Kopf registration: a timer per GeluModelRollout that runs one controller tick, and a
delete handler that gives an HTTPRoute its backends back before the owned objects go.

Glue only: the tick itself lives in :mod:`gelu_rollout.controller`, and so does the error
policy (:meth:`Controller.reconcile`). The status goes to the status subresource through
Kopf's patch, Events through Kopf's poster. Spec changes and manual-request annotations are
picked up by the next tick. A tick to retry is a :class:`kopf.TemporaryError` whose delay
doubles from ``tick_seconds`` up to a minute: Kopf logs it in one line and waits that long.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import kopf

from gelu_rollout.adapters.errors import FailureKind, classify, retry_delay_seconds
from gelu_rollout.adapters.kube import Login
from gelu_rollout.controller import PERMANENT_RECHECK_SECONDS, Controller
from gelu_rollout.spec.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)


def first_tick_delay_seconds(uid: str, period_seconds: float) -> float:
    """How long the timer of the rollout with ``uid`` waits before its first firing in this
    process: a fraction of ``period_seconds``, in [0, period_seconds), fixed by the uid.

    Rollouts created (or found at start-up) together would otherwise fire together on every
    tick, and queue behind each other; spread over one period, their ticks come one after
    another. A hash of the uid, not a random draw nor Python's salted ``hash``: the same
    rollout keeps its place in the period across restarts and replicas, and a tick stays what
    it is (idempotent, reading the world afresh), only its moment moves.
    """
    digest = hashlib.blake2b(uid.encode(), digest_size=8).digest()
    return period_seconds * int.from_bytes(digest, "big") / 2**64


def build_registry(
    controller: Controller, *, tick_seconds: float, login: Login | None = None
) -> kopf.OperatorRegistry:
    """The operator's handlers, bound to ``controller``; Kopf logs in with ``login`` (the
    controller's client does too) instead of its own guess at the cluster."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.INFO
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.watching.server_timeout = 60
        # Status is owned by the controller; Kopf's own progress goes to annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)

    if login is not None:

        @kopf.on.login(registry=registry)
        def credentials(**_: Any) -> kopf.ConnectionInfo:
            return login()

    def spread(*, uid: str | None, name: str, **_: Any) -> float:
        return first_tick_delay_seconds(uid or name, tick_seconds)

    # Kopf counts each interval from the end of the last firing; only the first is spread.
    @kopf.timer(
        GROUP, VERSION, PLURAL, interval=tick_seconds, initial_delay=spread, registry=registry
    )
    async def tick(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        result = await controller.reconcile(body)
        # An empty patch is no request: a resting rollout's firing costs the API server nothing.
        if result.status:
            patch.status.update(result.status)
        for event in result.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if result.retry is not None:
            failure, attempt = result.retry.failure, result.retry.attempt
            delay = retry_delay_seconds(attempt, tick_seconds)
            # Kopf logs this in one line, no traceback, and sleeps ``delay`` instead of the
            # interval before the next attempt.
            raise kopf.TemporaryError(
                f"{failure.kind} failure #{attempt}, retrying in {delay:g}s: {failure.message}",
                delay=delay,
            )

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def release(body: kopf.Body, logger: kopf.Logger, retry: int, **_: Any) -> None:
        # Kopf's finalizer holds the deletion until this returns: the route first, then
        # garbage collection takes the owned objects. Deleting the rollout while its route
        # cannot be given back would strand the route's traffic on deleted Services, so a
        # failure holds the deletion and says why.
        try:
            logger.info(await controller.release(body))
        except Exception as error:
            failure = classify(error)
            metadata = body.get("metadata") or {}
            namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
            controller.metrics.reconcile_failed(namespace, name, failure.kind.counted_as)
            if failure.kind is FailureKind.PERMANENT and failure.reason is not None:
                message = (
                    f"the deletion waits: the HTTPRoute cannot be given back its backends: "
                    f"{failure.message}"
                )
                if controller.first_report(namespace, name, message):
                    kopf.event(body, type="Warning", reason=failure.reason.value, message=message)
                delay = PERMANENT_RECHECK_SECONDS
            else:
                if failure.kind is FailureKind.UNEXPECTED and retry == 0:
                    log.error("releasing the rollout failed unexpectedly", exc_info=error)
                delay = retry_delay_seconds(retry + 1, tick_seconds)
            raise kopf.TemporaryError(
                f"{failure.kind} failure #{retry + 1} releasing the route, retrying in "
                f"{delay:g}s: {failure.message}",
                delay=delay,
            ) from None

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def forget(type: str, namespace: str | None, name: str, **_: Any) -> None:
        # Owned objects go with the rollout through owner references; only the operator's
        # metrics remember it.
        if type == "DELETED" and namespace is not None:
            controller.metrics.forget(namespace, name)
            controller.forget(namespace, name)

    return registry
