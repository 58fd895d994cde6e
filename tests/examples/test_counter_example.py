"""Tests of examples/counter.py: every request increments the count and gets it back."""

from __future__ import annotations

import trio

from examples.counter import Counter
from peregrine_rt.testing import open_client


async def test_each_request_gets_the_next_count() -> None:
    async with open_client(Counter) as client:
        assert (await client.get("/")).text == "1\n"
        assert (await client.post("/anything", json={"ignored": True})).text == "2\n"
        assert (await client.head("/")).content == b""  # counted, no body
        assert (await client.get("/")).text == "4\n"
        assert client.app.count == 4


async def test_concurrent_requests_are_each_counted_once() -> None:
    counts: list[int] = []
    async with open_client(Counter) as client:

        async def one() -> None:
            counts.append(int((await client.get("/")).text))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
    assert sorted(counts) == list(range(1, 51))


async def test_requests_on_one_keep_alive_connection() -> None:
    async with open_client(Counter) as client, client.connection() as conn:
        responses = [await conn.get("/") for _ in range(3)]
    assert [r.text for r in responses] == ["1\n", "2\n", "3\n"]
    assert all(r.headers.get("connection") is None for r in responses)  # kept alive


async def test_each_client_has_its_own_counter() -> None:
    async with open_client(Counter) as first, open_client(Counter) as second:
        await first.get("/")
        await first.get("/")
        assert (await second.get("/")).text == "1\n"
