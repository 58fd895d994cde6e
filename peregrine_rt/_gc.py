"""Keeping Python's cyclic garbage collector from walking every open connection.

Measured with 19,800 idle WebSockets (``bench/scale.py``, CPython 3.11): the
server's worst stalls were full (generation-2) collections, 0.6-1.2 s each,
every few seconds.  Each idle socket holds about 68 objects the collector
tracks, 1.36 million in all, and a full collection walks every one of them.
Nothing per socket was garbage: a heartbeat's pong wakes the socket's reader
task, whose suspended call chain (about 16 objects: coroutines, trio's wait
records, the event) is made anew each time and lives until the next wake-up,
so it survives the young collections into generation 2.  CPython starts a full
collection once the objects promoted so since the last one reach a quarter of
those it found alive then: 20,000 sockets pinging every 5 s promote that many
in a few seconds, although the heap does not grow at all.  ``gc.freeze()``
once after the sockets open does not help for long: the call chains made
after it fill generation 2 again.

:class:`GCPolicy` counts growth instead of promotions.  Every ``interval``
seconds it collects what is not frozen yet (what was allocated since the
last step, so that no garbage cycle among it is kept) and freezes what
survived (``gc.freeze()``: a list splice, O(1)); a collection of any
generation then walks only what was allocated since the last step.  Frozen
objects are still freed by reference counting the moment they are no longer
used (a woken socket's old call chain, a closed connection's objects); only a
reference *cycle* among them would never be found.  So the heap is watched:
once its allocated blocks (``sys.getallocatedblocks()``, O(arenas), about
0.5 ms for two million blocks, once a second) have grown by ``growth`` (half)
since the last full collection, everything is thawed, collected once, and
frozen again.  (``gc.get_freeze_count()`` would be the natural measure, but it
walks the whole frozen list: 23 ms for 800,000 objects.)  With the
connections steady the heap stays flat and no full collection runs; while it
grows (connections opening) full collections run at 1.5x, 2.25x... its size,
a bounded total cost, as a growing list reallocates; a leak of cycles (in an
application, say) is still reclaimed, at the latest when it has grown the heap
by half.

Engaged only once ``Config.gc_freeze_above`` connections are open at once: a
small server's full collections are short, and Python's collector is left
alone.  It is process-wide state: the server thaws everything when it stops.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Callable

import trio

__all__ = ["GCPolicy"]

log = logging.getLogger("peregrine_rt.server")

# Seconds between two steps once engaged.  A step's cost is what was
# allocated since the last one and still lives (mostly the call chains of
# readers woken by pongs, ~16 objects each, about 1 us per object on a heap
# of 20,000 sockets, where every reference out of them is a cache miss):
# 10-20 ms of CPU every 0.1 s during broadcasts to 20,000 sockets, one piece
# of work no other task could run beside.  Every 0.05 s halves each step for
# the same total.
GC_INTERVAL = 0.05
GC_GROWTH = 0.5  # a full collection once the heap grew by this share since the last one
GC_CHECK_EVERY = 20  # steps between two looks at the heap's size (once a second)
# While engaged, Python's own young collections wait for this many container
# allocations (net) instead of 700: the steps collect, and the automatic ones
# stay only as a safety net for a loop held up by blocking code.  At 700, with
# 1,000 busy WebSockets (echo, bench/ws.py), they ran every ~500 messages and
# walked every call chain made since (each lives until its socket's next
# message): 10-14 % of the server's time, against ~3 % for the steps.
ENGAGED_THRESHOLD = 100_000
# Python's thresholds before the first policy engaged, and how many are engaged
# (servers in one process, tests mostly): the last one out thaws the frozen
# objects and puts the thresholds back (both are the process's, not a policy's).
_saved_thresholds: tuple[int, int, int] | None = None
_engaged = 0


def _raise_threshold() -> None:
    global _saved_thresholds, _engaged
    if not _engaged:
        _saved_thresholds = gc.get_threshold()
        first = _saved_thresholds[0]  # 0: the application turned them off
        gc.set_threshold(first and max(first, ENGAGED_THRESHOLD), *_saved_thresholds[1:])
    _engaged += 1


def _hand_back() -> None:
    global _saved_thresholds, _engaged
    _engaged -= 1
    if not _engaged:
        gc.unfreeze()
        if _saved_thresholds is not None:
            gc.set_threshold(*_saved_thresholds)
            _saved_thresholds = None


class GCPolicy:
    """Young collections and freezes on a schedule (see the module docstring).

    Args:
        open_connections: how many connections are open now.
        engage_above: engage once this many are open at once (None: never).
        interval: seconds between two steps.
        growth: thaw and collect fully once the heap's allocated blocks grew by
            this share since the last full collection.

    Attributes:
        engaged: whether it has taken over (it stays so until :meth:`run` ends).
        steps: young collections and freezes done.
        full: full collections done (thaw, collect, freeze).
        baseline: the heap's allocated blocks after the last full collection.
    """

    def __init__(
        self,
        open_connections: Callable[[], int],
        engage_above: int | None,
        *,
        interval: float = GC_INTERVAL,
        growth: float = GC_GROWTH,
    ) -> None:
        self.open_connections = open_connections
        self.engage_above = engage_above
        self.interval = interval
        self.growth = growth
        self.engaged = False
        self.steps = 0
        self.full = 0
        self.baseline = 0

    def step(self) -> None:
        """Engage if due; then collect what is not frozen and freeze the survivors."""
        if not self.engaged:
            if self.engage_above is None or self.open_connections() < self.engage_above:
                return
            self.engaged = True
            _raise_threshold()
            self._full_collection()  # start from a heap without garbage
            log.info(
                "%d connections open: long-lived objects are frozen out of Python's "
                "garbage collections from now on (Config.gc_freeze_above)",
                self.open_connections(),
            )
            return
        # Every generation, which holds only what was allocated since the last
        # step: the garbage among it is freed, and what survives is frozen.
        gc.collect()
        gc.freeze()
        self.steps += 1
        if not self.steps % GC_CHECK_EVERY and sys.getallocatedblocks() > self.baseline * (
            1 + self.growth
        ):
            self._full_collection()

    def _full_collection(self) -> None:
        start = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.full += 1
        before, self.baseline = self.baseline, sys.getallocatedblocks()
        log.debug(
            "full collection: heap grew from %d to %d blocks, %.0f ms",
            before,
            self.baseline,
            (time.perf_counter() - start) * 1000,
        )

    def release(self) -> None:
        """Give the frozen objects back to Python's collector (when the server stops)."""
        if self.engaged:
            self.engaged = False
            _hand_back()  # the last engaged policy out thaws

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Step every ``interval`` seconds until cancelled; then :meth:`release`."""
        task_status.started()
        if self.engage_above is None:
            return
        try:
            while True:
                await trio.sleep(self.interval)
                self.step()
        finally:
            self.release()

    def __repr__(self) -> str:
        state = "engaged" if self.engaged else "idle"
        return f"<GCPolicy {state}, {self.steps} steps, {self.full} full collections>"
