"""Kopf registration: a timer per GeluModelRollout that runs one controller tick, and a
delete handler that gives an HTTPRoute its backends back before the owned objects go.

Glue only: the tick itself lives in :mod:`gelu_rollout.controller`. The status goes to the
status subresource through Kopf's patch, Events through Kopf's poster. Spec changes and
manual-request annotations are picked up by the next tick.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gelu_rollout.adapters.kube import Login
from gelu_rollout.controller import Controller
from gelu_rollout.spec.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)


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

    @kopf.timer(GROUP, VERSION, PLURAL, interval=tick_seconds, initial_delay=0, registry=registry)
    async def tick(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        try:
            result = await controller.tick(body)
        except Exception as error:
            controller.metrics.reconcile_errors.inc()
            logger.exception("reconcile failed; retrying next tick")
            raise kopf.TemporaryError(f"reconcile failed: {error}", delay=tick_seconds) from None
        patch.status.update(result.status)
        for event in result.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def release(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        # Kopf's finalizer holds the deletion until this returns: the route first, then
        # garbage collection takes the owned objects.
        logger.info(await controller.release(body))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def forget(type: str, namespace: str | None, name: str, **_: Any) -> None:
        # Owned objects go with the rollout through owner references; only the operator's
        # metrics remember it.
        if type == "DELETED" and namespace is not None:
            controller.metrics.forget(namespace, name)

    return registry
