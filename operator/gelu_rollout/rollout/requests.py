"""Manual requests (promote, abort, retry) as inputs to ``decide``.

They reach the operator as an annotation, so GitOps tools never fight it over
``spec``. Each carries an id; ``decide`` records the id it acted on, so the same
annotation is acted on once however often it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

REQUEST_ANNOTATION = "gelu.dev/request"
"""The annotation that carries a manual request, ``KIND/ID``."""


class RequestKind(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True)
class ManualRequest:
    kind: RequestKind
    id: str


def parse_request(value: str) -> ManualRequest:
    """Read ``KIND`` or ``KIND/ID`` (the CLI writes ``promote/2026-11-25T20:00:00Z``)."""
    kind, _, request_id = value.strip().partition("/")
    try:
        parsed = RequestKind(kind.strip().lower())
    except ValueError:
        choices = ", ".join(k.value for k in RequestKind)
        raise ValueError(f"unknown request {kind!r}: must be one of {choices}") from None
    return ManualRequest(parsed, request_id.strip() or value.strip())
