"""A scripted stand-in for ``PrometheusObserver`` in the tests of other layers.

Each ``observe`` call takes the next item of the script: an ``Observations`` (returned
with the call's ``at`` and ``interval_seconds``, so that a scripted tick is never stale),
or a function of the call. An exhausted script reports missing data, like a Prometheus
with nothing to say. Every call is recorded in ``calls``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gelu_rollout.analysis.observations import ArmObservation
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.spec.model import LatencyHistogramSource


@dataclass(frozen=True)
class ObserverCall:
    """The arguments of one ``observe`` call."""

    namespace: str
    rollout: str
    model: str
    interval_seconds: float
    burn_windows_seconds: tuple[float, ...]
    at: datetime
    latency_histogram: LatencyHistogramSource | None = None
    rollout_name: str | None = None


ScriptItem = Observations | Callable[[ObserverCall], Observations]
EXHAUSTED = "fake observer: script exhausted"


def observed(baseline: ArmObservation, candidate: ArmObservation) -> Observations:
    """A scripted tick with both arms (``at`` and the interval come from the call)."""
    return Observations(datetime.min, 0.0, baseline, candidate)


def unavailable(reason: str) -> Observations:
    """A scripted tick without metrics (``at`` and the interval come from the call)."""
    return Observations(datetime.min, 0.0, None, None, missing_reason=reason)


class FakeObserver:
    """Plays ``script`` back, one item per ``observe`` call; thread-safe."""

    def __init__(self, script: Iterable[ScriptItem] = ()) -> None:
        self._script: deque[ScriptItem] = deque(script)
        self._lock = threading.Lock()
        self.calls: list[ObserverCall] = []

    def push(self, *items: ScriptItem) -> None:
        """Append to the script."""
        with self._lock:
            self._script.extend(items)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def observe(
        self,
        namespace: str,
        rollout: str,
        model: str,
        interval_seconds: float,
        burn_windows_seconds: Sequence[float],
        at: datetime,
        *,
        latency_histogram: LatencyHistogramSource | None = None,
        rollout_name: str | None = None,
    ) -> Observations:
        call = ObserverCall(
            namespace,
            rollout,
            model,
            interval_seconds,
            tuple(burn_windows_seconds),
            at,
            latency_histogram,
            rollout_name,
        )
        with self._lock:
            self.calls.append(call)
            item = self._script.popleft() if self._script else None
        if item is None:
            return Observations(at, interval_seconds, None, None, missing_reason=EXHAUSTED)
        if isinstance(item, Observations):
            return replace(item, at=at, interval_seconds=interval_seconds)
        return item(call)
