"""Manual requests (promote, abort, retry): when the operator acts on them, and sending one.

A request is an annotation on the rollout, acted on once by the operator's next tick; a GitOps
tool that re-applies the manifest does not revert it (docs/operator.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from gelu_rollout.adapters.kube import KubeError
from gelu_rollout.adapters.kube.kinds import ROLLOUT
from gelu_rollout.cli.kubectl.connection import CliError, Cluster, get_rollout, not_found
from gelu_rollout.cli.status_view import RolloutView, read_rollout
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, RequestKind
from gelu_rollout.spec import Stage, format_time

RESOURCE: Final = "gelumodelrollout"

WHAT_HAPPENS: Final[dict[tuple[RequestKind, Stage], str]] = {
    (RequestKind.PROMOTE, Stage.PROGRESSING): (
        "the operator promotes at its next analysis tick unless a critical gate "
        "(nonFinite, burnRate) fails"
    ),
    (RequestKind.PROMOTE, Stage.PAUSED): (
        "the operator promotes at its next analysis tick unless a critical gate "
        "(nonFinite, burnRate) fails"
    ),
    (RequestKind.ABORT, Stage.PENDING): (
        "the operator rolls back at its next tick: the candidate is scaled to 0 "
        "and the baseline keeps serving"
    ),
    (RequestKind.ABORT, Stage.PROGRESSING): (
        "the operator rolls back at its next tick: the candidate's weight goes to 0% "
        "and the baseline keeps serving"
    ),
    (RequestKind.ABORT, Stage.PAUSED): (
        "the operator rolls back at its next tick: the candidate's weight goes to 0% "
        "and the baseline keeps serving"
    ),
    (RequestKind.RETRY, Stage.PAUSED): (
        "the operator restarts the current step's analysis at its next tick"
    ),
    (RequestKind.RETRY, Stage.ROLLED_BACK): (
        "the operator starts the rollout again at its next tick: the probe (if enabled), "
        "then step 1"
    ),
}


def refusal(kind: RequestKind, name: str, stage: Stage) -> str | None:
    """Why a request cannot apply to a rollout in this stage, or None if it can."""
    if (kind, stage) in WHAT_HAPPENS:
        return None
    subject = f"{RESOURCE}/{name} is {stage.value}"
    if kind is RequestKind.RETRY:
        return f"{subject}: retry is ignored unless the rollout is Paused or RolledBack"
    if stage.terminal:
        hint = " (retry starts a rolled-back rollout again)" if stage is Stage.ROLLED_BACK else ""
        return f"{subject}: the rollout is finished, there is nothing to {kind.value}{hint}"
    return (
        f"{subject}: the operator ignores promote until the probe has passed "
        "and the rollout is Progressing or Paused"
    )


def request_id(now: datetime | None = None) -> str:
    """A fresh request id: the UTC time, to the microsecond."""
    return format_time((now or datetime.now(UTC)).astimezone(UTC))


async def send_request(cluster: Cluster, kind: RequestKind, name: str) -> tuple[str, RolloutView]:
    """Annotate the rollout with a new request; the annotation's value and the rollout as it
    was read. A request that cannot apply in the rollout's stage is refused, not sent."""
    view = read_rollout(await get_rollout(cluster, name))
    refused = refusal(kind, name, view.status.stage)
    if refused is not None:
        raise CliError(refused)
    value = f"{kind.value}/{request_id()}"
    patch: dict[str, Any] = {"metadata": {"annotations": {REQUEST_ANNOTATION: value}}}
    try:
        await cluster.client.merge_patch(ROLLOUT, cluster.namespace, name, patch)
    except KubeError as error:
        if error.status == 404:
            raise not_found(name) from None
        raise
    return value, view
