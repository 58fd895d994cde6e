"""MallocTrim: glibc's malloc_trim(0) on a schedule (``Config.malloc_trim_interval``)."""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt._trim import MallocTrim, find_malloc_trim
from peregrine_rt.testing import open_client


async def test_it_trims_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[tuple[float, int]] = []

    def trim(pad: int) -> int:
        calls.append((trio.current_time(), pad))
        return 1

    trimmer = MallocTrim(10.0, trim)  # in the loop's thread: the autojump clock is safe
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(trimmer.run)
        await trio.sleep(35)
        nursery.cancel_scope.cancel()
    assert [round(at - start) for at, _ in calls] == [10, 20, 30]
    assert {pad for _, pad in calls} == {0}
    assert trimmer.trims == 3


@pytest.mark.parametrize("interval, trim", [(None, lambda pad: 1), (10.0, None)])
async def test_never_without_an_interval_or_a_function(
    interval: float | None, trim: object, autojump_clock: trio.testing.MockClock
) -> None:
    trimmer = MallocTrim(interval, trim)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(trimmer.run)
        await trio.sleep(100)
        assert trimmer.trims == 0
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc is Linux's C library")
def test_glibc_has_it() -> None:
    trim = find_malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)  # 1: some memory was released


async def test_the_server_takes_the_interval_and_refuses_a_bad_one() -> None:
    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.text("ok")

    async with open_client(App, malloc_trim_interval=2.5) as client:
        assert client.server is not None
        assert client.server.malloc_trim.interval == 2.5
        assert (await client.get("/")).text == "ok"
    with pytest.raises(ValueError, match="malloc_trim_interval"):
        pr.Config(malloc_trim_interval=0)
