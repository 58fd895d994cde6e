"""Wait for a condition instead of sleeping a fixed time.

A test that sleeps "long enough" and then looks measures the machine, not the
code: too short on a loaded machine, wasted time everywhere else.
:func:`wait_until` polls a condition and returns as soon as it holds, giving up
with an ``AssertionError`` that names the condition after a generous timeout.

It sleeps with :func:`trio.sleep` between tries, so under pytest-trio's
``autojump_clock`` the polling costs no real time (the clock jumps to the next
try whenever every task waits).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

__all__ = ["WAIT_INTERVAL", "WAIT_TIMEOUT", "wait_until", "wait_until_blocking"]

WAIT_TIMEOUT = 10.0
"""How long :func:`wait_until` waits by default, in seconds: generous, for loaded machines."""

WAIT_INTERVAL = 0.01
"""How long :func:`wait_until` sleeps between two tries by default, in seconds."""


async def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float = WAIT_TIMEOUT,
    interval: float = WAIT_INTERVAL,
    message: str | None = None,
) -> None:
    """Wait until ``predicate()`` is true, trying again every ``interval`` seconds.

    The predicate is called at once, then after each ``trio.sleep(interval)``,
    until it returns a truthy value. It should be cheap and must not block::

        await wait_until(lambda: len(server.connections) == 0)

    Args:
        predicate: a synchronous callable without arguments; its return value
            is judged by truth.
        timeout: seconds (of the trio clock) to keep trying; ``math.inf``
            waits forever.
        interval: seconds to sleep between two tries; must be positive.
        message: what was awaited, for the failure; the predicate's ``repr``
            by default.

    Raises:
        AssertionError: ``predicate()`` was still false after ``timeout``
            seconds, naming what was awaited (``message`` or the predicate).
            An exception raised by the predicate propagates as itself.
        ValueError: ``interval`` is not positive or ``timeout`` is negative.
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive, not {interval!r}")
    if not timeout >= 0:
        raise ValueError(f"timeout must not be negative, not {timeout!r}")
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(interval)
        return
    # Time is up: one last look, so that a condition met during the final
    # sleep does not fail the test.
    if predicate():
        return
    what = message if message is not None else repr(predicate)
    raise AssertionError(f"waited {timeout} s for {what}; it is still false")


def wait_until_blocking(
    predicate: Callable[[], object],
    *,
    timeout: float = WAIT_TIMEOUT,
    interval: float = 0.05,
    message: str | None = None,
) -> None:
    """:func:`wait_until` for code outside trio (threads, subprocess tests, Playwright's sync API).

    Polls ``predicate`` every ``interval`` seconds of the real clock, blocking
    the calling thread, until it is true or ``timeout`` seconds have passed.

    Raises:
        AssertionError: still false after ``timeout`` seconds, naming what was
            awaited (``message`` or the predicate).
        ValueError: ``interval`` is not positive or ``timeout`` is negative.
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive, not {interval!r}")
    if not timeout >= 0:
        raise ValueError(f"timeout must not be negative, not {timeout!r}")
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            if predicate():  # one last look, as wait_until does
                return
            what = message if message is not None else repr(predicate)
            raise AssertionError(f"waited {timeout} s for {what}; it is still false")
        time.sleep(interval)
