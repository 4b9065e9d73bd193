"""Which failures of a reconcile tick a retry can mend, and how long to wait before one.

The error policy (docs/operator.md, "When a tick fails"), as a pure reading of the
exception a tick raised:

- **permanent**: the API server refused the request for a reason the same request will meet
  again (403; 400 or 422 on a write; 404 on a write; any other 4xx but 401, 408, 409 and
  429). The rollout says so in a condition and an Event, then waits for a change.
- **transient**: the API server was unreachable, timed out, was busy or conflicting (5xx,
  408, 409, 429, 401 while a token is renewed), or a Prometheus or Triton connection failed.
  The tick is retried with a growing delay.
- **unexpected**: anything else is a bug of the operator's: its traceback is logged once, and
  it is retried like a transient failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import aiohttp
import requests

from gelu_rollout.adapters.kube.client import KubeError
from gelu_rollout.rollout.conditions import Reason

WRITE_VERBS: Final = frozenset({"create", "patch", "apply", "delete"})

RETRY_CAP_SECONDS: Final = 60.0
"""The longest wait between two attempts of a failing tick: a recovered API server is found
within a minute."""

_TRANSIENT_STATUSES: Final = frozenset({401, 408, 409, 429})
"""4xx answers a later attempt may not meet: 401 (the client logs in again; a rotated token
may need a moment), 408 (timeout), 409 (a conflicting write), 429 (throttled)."""


class FailureKind(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    UNEXPECTED = "unexpected"

    @property
    def counted_as(self) -> str:
        """The ``kind`` label of the operator's failure counter: an unexpected failure is
        retried, so it counts as transient."""
        return "permanent" if self is FailureKind.PERMANENT else "transient"


@dataclass(frozen=True)
class Failure:
    """One failed tick, classified. ``reason`` is the condition reason of a permanent one."""

    kind: FailureKind
    message: str
    reason: Reason | None = None


def classify(error: BaseException) -> Failure:
    """The policy's reading of ``error``, the exception a tick raised."""
    message = str(error) or type(error).__name__
    if isinstance(error, KubeError):
        return _classify_kube(error, message)
    if isinstance(
        error, TimeoutError | ConnectionError | aiohttp.ClientError | requests.RequestException
    ):
        # Prometheus (requests) or Triton (aiohttp) could not be reached or did not answer.
        return Failure(FailureKind.TRANSIENT, f"{type(error).__name__}: {message}")
    return Failure(FailureKind.UNEXPECTED, f"{type(error).__name__}: {message}")


def _classify_kube(error: KubeError, message: str) -> Failure:
    status = error.status
    if status is None or status >= 500 or status in _TRANSIENT_STATUSES:
        return Failure(FailureKind.TRANSIENT, message)
    if status == 403:
        return Failure(FailureKind.PERMANENT, message, Reason.FORBIDDEN)
    if status in (400, 422) and error.verb in WRITE_VERBS:
        return Failure(FailureKind.PERMANENT, message, Reason.APPLY_REJECTED)
    if status == 404:
        # A read's 404 is None, not an error: this one is a write to what is not there.
        return Failure(FailureKind.PERMANENT, message, Reason.NOT_FOUND)
    if 400 <= status < 500:
        return Failure(FailureKind.PERMANENT, message, Reason.REQUEST_REJECTED)
    # 1xx and 3xx: the client follows no redirects; nothing retrying would change.
    return Failure(FailureKind.PERMANENT, message, Reason.REQUEST_REJECTED)


def retry_delay_seconds(
    attempt: int, first_seconds: float, cap: float = RETRY_CAP_SECONDS
) -> float:
    """The wait before retry ``attempt`` (1 for the first): ``first_seconds``, doubling each
    time, never more than ``cap``."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    # Bounded exponent: 2**64 of anything is past every cap.
    return float(min(cap, first_seconds * 2 ** min(attempt - 1, 64)))
