"""How far back a tick's observation reaches: to the last one, so no request goes uncounted.

Pure. An analysis tick asks Prometheus about the requests of a window that ends now. A window
of one fixed ``analysis.intervalSeconds`` drops every request between the last observation and
the start of that window whenever a tick comes late: the operator was restarted (an upgrade, a
drained node, a crash), a tick queued behind others, Prometheus answered slowly. Those requests
were served by the arms at the step's weight, and a pass needs a stated number of them (the
power plan), so losing them only makes the rollout wait longer after each restart. The window
therefore starts where the last observation ended, bounded:

- never before the current step started: what came before was served at another weight;
- never longer than ``MAX_WINDOW_INTERVALS`` intervals: one look must stay one look among many
  for the sequential tests (an hour of traffic judged as a single tick would be a fixed-sample
  test, whose error rate the per-tick cap and alpha spending do not cover), and a range query
  stays cheap;
- never shorter than one interval (the first observation of a rollout, or of a step), and
  one interval for a tick late by less than half an interval: its queries are those of a tick
  on time (shared with a burn-rate window as long as the interval), and what it leaves out is
  less than half an interval, as before; a tick later than that (a restart, a missed tick)
  observes all of it, in whole seconds.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Final

from gelu_rollout.rollout.decide import AnalysisState
from gelu_rollout.spec.model import RolloutSpec
from gelu_rollout.spec.status import RolloutStatus

LATE_INTERVALS: Final = 1.5
"""From how many intervals since the last observation on a tick observes all of them."""
MAX_WINDOW_INTERVALS: Final = 10
"""The longest window, in analysis intervals: ten ticks' worth of requests missed is made up
in full (a restart of the operator takes seconds); beyond that, the rest is left out."""


def observation_window_seconds(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> float:
    """The length of the window that ends at ``now`` and that this tick observes."""
    interval = float(spec.analysis.interval_seconds)
    observed = AnalysisState.observed_at_in(status.analysis)
    if observed is None:
        return interval
    start = observed
    if status.step_started_at is not None:
        start = max(start, status.step_started_at)
    seconds = (now - start).total_seconds()
    if seconds < LATE_INTERVALS * interval:
        # Late by less than half an interval (a busy operator): the interval itself, whose
        # queries a burn-rate window of the same length shares.
        return interval
    # Whole seconds, as Prometheus' ranges are.
    return min(float(math.floor(seconds)), MAX_WINDOW_INTERVALS * interval)
