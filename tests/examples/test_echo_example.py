"""Tests of examples/echo.py: HTTP requests are described, WebSocket messages echoed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
import trio.testing

from examples.echo import Echo
from peregrine_rt.testing import Close, open_client, open_server


async def test_a_request_is_described() -> None:
    async with open_client(Echo) as client:
        response = await client.post("/upload", params={"n": 1}, content=b"12345")
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "method=POST target=/upload?n=1 body_len=5"


async def test_a_streamed_body_is_read_whole() -> None:
    async def body() -> AsyncIterator[bytes]:  # sent chunked, piece by piece
        for piece in (b"ab", b"cde"):
            yield piece

    async with open_client(Echo) as client:
        response = await client.put("/", content=body())
    assert response.text == "method=PUT target=/ body_len=5"


async def test_text_and_binary_messages_come_back() -> None:
    async with open_client(Echo) as client, client.websocket("/ws") as ws:
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.send(b"\x00\xff")
        assert await ws.receive() == b"\x00\xff"


async def test_messages_come_back_in_order() -> None:
    async with open_client(Echo) as client, client.websocket("/ws") as ws:
        for i in range(100):
            await ws.send(f"message {i}")
        assert [await ws.receive() for _ in range(100)] == [f"message {i}" for i in range(100)]


async def test_a_large_message_comes_back() -> None:
    message = b"x" * (2 * 1024 * 1024)  # over the default 1 MiB limit: Echo allows 16 MiB
    async with open_client(Echo) as client, client.websocket("/ws") as ws:
        await ws.send(message)
        assert await ws.receive() == message


async def test_closing_is_answered() -> None:
    async with open_client(Echo) as client, client.websocket("/ws") as ws:
        assert await ws.close(1000, "bye") == Close(1000, "bye")


async def test_an_idle_socket_stays_open(autojump_clock: trio.testing.MockClock) -> None:
    # The clock jumps ahead whenever every task waits: ten minutes pass at once,
    # with the server's heartbeat pings (answered by the client) along the way.
    async with open_client(Echo) as client, client.websocket("/ws") as ws:
        await trio.sleep(600)
        await ws.send("still here")
        assert await ws.receive() == "still here"


async def test_over_a_real_socket() -> None:
    async with open_server(Echo) as server, open_client(server.url) as client:
        response = await client.get("/over-tcp")
        assert response.text == "method=GET target=/over-tcp body_len=0"
        async with client.websocket("/ws") as ws:
            await ws.send("over tcp")
            assert await ws.receive() == "over tcp"
