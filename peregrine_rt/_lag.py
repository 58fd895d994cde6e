"""How late the event loop runs: a task that measures its own wake-up delay.

Everything in one trio run shares one thread, so any piece of work that does
not yield — a handler's CPU-heavy loop, a burst of housekeeping — delays every
other task.  :class:`LagMonitor` sleeps a short interval again and again and
notes how much later than asked it woke: that delay is what every other task
waited too.  The server runs one (``Server.lag``); ``bench/scale.py`` reads it
to show that heartbeats and broadcasts to 20,000 sockets do not stall the loop.
"""

from __future__ import annotations

import logging
import math

import trio

__all__ = ["LagMonitor"]

log = logging.getLogger("peregrine_rt.server")


class LagMonitor:
    """Measures the event loop's lag (see the module docstring).

    Args:
        interval: seconds between two measurements.
        warn_after: a lag above this many seconds is logged (a warning, at most
            one per ``warn_every`` seconds, with the worst lag meanwhile).
        warn_every: seconds between two such warnings.

    Attributes:
        worst: the largest lag seen since the start, in seconds.
        stalls: how many measurements were over ``warn_after``.
        samples: how many measurements were taken.
    """

    def __init__(
        self, interval: float = 0.05, warn_after: float = 0.25, warn_every: float = 10.0
    ) -> None:
        self.interval = interval
        self.warn_after = warn_after
        self.warn_every = warn_every
        self.worst = 0.0
        self.stalls = 0
        self.samples = 0
        self._window_worst = 0.0
        self._unreported = 0.0  # the worst stall not logged yet
        self._logged_at = -math.inf

    def take_worst(self) -> float:
        """The largest lag since the last call (or the start), in seconds; resets it."""
        worst, self._window_worst = self._window_worst, 0.0
        return worst

    def record(self, lag: float, now: float) -> None:
        """Account one measurement (``lag`` seconds late, at time ``now``)."""
        self.samples += 1
        self.worst = max(self.worst, lag)
        self._window_worst = max(self._window_worst, lag)
        if lag > self.warn_after:
            self.stalls += 1
            self._unreported = max(self._unreported, lag)
            if now - self._logged_at >= self.warn_every:
                log.warning(
                    "the event loop stalled for %.0f ms (%d stalls over %.0f ms so far): "
                    "something ran without yielding",
                    self._unreported * 1000,
                    self.stalls,
                    self.warn_after * 1000,
                )
                self._logged_at = now
                self._unreported = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure until cancelled."""
        task_status.started()
        interval = self.interval
        while True:
            asked = trio.current_time() + interval
            await trio.sleep_until(asked)
            now = trio.current_time()
            self.record(max(0.0, now - asked), now)

    def __repr__(self) -> str:
        return f"<LagMonitor worst {self.worst * 1000:.1f} ms, {self.stalls} stalls>"
