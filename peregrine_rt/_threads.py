"""``run_sync``: blocking or CPU-heavy work on a bounded thread pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import trio

__all__ = ["run_sync", "thread_limiter"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

DEFAULT_THREADS = 40

_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("peregrine_rt_threads")


def thread_limiter() -> trio.CapacityLimiter:
    """The limiter bounding :func:`run_sync` in the current trio run (one per run)."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(DEFAULT_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_sync(fn: Callable[[*Ts], T], *args: *Ts, abandon_on_cancel: bool = False) -> T:
    """Run ``fn(*args)`` in a worker thread and return its result, keeping the event loop free.

    At most ``Config.thread_pool_size`` (default 40) calls run at once in a
    server; more wait for a free thread.  Exceptions propagate to the caller.
    With ``abandon_on_cancel=True`` a cancelled caller stops waiting (the
    thread still runs to completion in the background).
    """
    return await trio.to_thread.run_sync(
        fn, *args, limiter=thread_limiter(), abandon_on_cancel=abandon_on_cancel
    )
