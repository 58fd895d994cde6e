"""Handing memory Python freed back to the system: glibc's ``malloc_trim(0)`` on a schedule.

A long-running server's RSS crept up by 280-470 KiB a minute per worker in
the 10-minute soak (``bench/soak.py``), with descriptors and tasks flat and
no Python allocation site growing (tracemalloc).  The memory was free, kept by
glibc's allocator: freed chunks in the middle of its heaps are not returned
until something asks, and large buffers (1 MiB responses, compressed frames)
come and go there.  With ``malloc_trim(0)`` every 10 s the same soak's slope
fell to +78 KiB/min for a worker that ran the whole 10 minutes, flat over
its last four minutes (``bench/RESULTS.md``).

:class:`MallocTrim` calls it every ``Config.malloc_trim_interval`` seconds
in the event loop's thread: a trim of a server's 60-70 MiB heap is short, and
even a fragmented 2 GiB heap took 4-40 ms, less than one young garbage
collection of a large server.  (Not in a worker thread: a thread started
every few seconds makes trio's autojump clock, in an application's tests,
jump ahead while it runs.)
Where the C library is not glibc (musl, macOS) there is nothing to call and
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import trio

__all__ = ["MallocTrim", "find_malloc_trim"]


def find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MallocTrim:
    """Call ``trim(0)`` every ``interval`` seconds for the server's life (see the module docstring).

    Args:
        interval: seconds between two trims; None: never.
        trim: the function to call (default: glibc's, found once; tests pass their own).

    Attributes:
        trims: how many were done.
    """

    def __init__(
        self, interval: float | None, trim: Callable[[int], int] | bool | None = True
    ) -> None:
        self.interval = interval
        self.trim = find_malloc_trim() if trim is True else (trim or None)
        self.trims = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        trim = self.trim
        if self.interval is None or trim is None:
            return
        while True:
            await trio.sleep(self.interval)
            trim(0)
            self.trims += 1
