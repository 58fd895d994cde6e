"""wait_until: returns as soon as the predicate holds, fails naming it after the timeout."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import trio
import trio.testing

from peregrine_rt.testing import wait_until


async def test_returns_at_once_when_the_predicate_already_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    def predicate() -> bool:
        nonlocal calls
        calls += 1
        return True

    start = trio.current_time()
    await wait_until(predicate)
    assert calls == 1
    assert trio.current_time() == start  # not even one interval slept


async def test_returns_once_another_task_makes_the_predicate_true(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done = False

    async def finish_later() -> None:
        nonlocal done
        await trio.sleep(3)
        done = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish_later)
        start = trio.current_time()
        await wait_until(lambda: done, interval=0.5)
        # at the first try after the flag was set: between 3 s and 3 s + one interval
        assert 3 <= trio.current_time() - start <= 3.5


async def test_polls_with_the_interval(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []

    def predicate() -> bool:
        times.append(trio.current_time())
        return len(times) == 4

    await wait_until(predicate, interval=0.25)
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [0.25] * 3


async def test_fails_after_the_timeout_naming_the_predicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def never() -> bool:
        return False

    start = trio.current_time()
    with pytest.raises(AssertionError, match=r"waited 2\.5 s for <function .*never") as info:
        await wait_until(never, timeout=2.5)
    assert trio.current_time() - start == pytest.approx(2.5)
    assert "still false" in str(info.value)


async def test_the_message_says_what_was_awaited(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(AssertionError, match=r"^waited 1 s for the server to close; it is"):
        await wait_until(lambda: False, timeout=1, message="the server to close")


async def test_a_condition_met_during_the_last_sleep_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadline = trio.current_time() + 1.0
    # true only from the end of the timeout on: the last look after the timeout sees it
    await wait_until(lambda: trio.current_time() >= deadline, timeout=1.0, interval=0.3)


async def test_works_on_the_real_clock() -> None:
    done = trio.Event()

    async def finish_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish_soon)
            await wait_until(done.is_set, interval=0.001)
    with pytest.raises(AssertionError, match="never set"):
        await wait_until(trio.Event().is_set, timeout=0.05, message="an event never set")


async def test_an_exception_of_the_predicate_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken() -> bool:
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        await wait_until(broken)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"interval": 0}, "interval must be positive"),
        ({"interval": -1.0}, "interval must be positive"),
        ({"interval": math.nan}, "interval must be positive"),
        ({"timeout": -1.0}, "timeout must not be negative"),
        ({"timeout": math.nan}, "timeout must not be negative"),
    ],
)
async def test_refuses_bad_arguments(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        await wait_until(lambda: True, **options)


async def test_waits_forever_with_an_infinite_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    with trio.move_on_after(10_000) as scope:
        await wait_until(lambda: False, timeout=math.inf, interval=100)
    assert scope.cancelled_caught  # still waiting after 10,000 s
    assert trio.current_time() - start == pytest.approx(10_000)


def test_wait_until_blocking_returns_once_true() -> None:
    from peregrine_rt.testing import wait_until_blocking

    calls = []

    def ready() -> bool:
        calls.append(1)
        return len(calls) >= 3

    wait_until_blocking(ready, interval=0.001)
    assert len(calls) == 3


def test_wait_until_blocking_names_what_it_waited_for() -> None:
    from peregrine_rt.testing import wait_until_blocking

    with pytest.raises(AssertionError, match=r"waited 0\.01 s for the moon; it is still false"):
        wait_until_blocking(lambda: False, timeout=0.01, interval=0.001, message="the moon")
    with pytest.raises(ValueError, match="interval"):
        wait_until_blocking(lambda: True, interval=0)
