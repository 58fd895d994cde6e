"""Tests of examples/echo.py: HTTP requests described, WebSocket messages echoed or broadcast."""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
import trio.testing

from examples.echo import BROADCAST_TOPIC, Echo
from peregrine_rt import Hub
from peregrine_rt.testing import Client, Close, open_client, open_server, wait_until


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


# -- /bcast: every message to every /bcast socket, through the hub ----------------------


def hub_of(client: Client) -> Hub:
    assert client.server is not None  # an in-memory client runs its server
    return client.server.hub


async def wait_subscribed(hub: Hub, n: int) -> None:
    """Until ``n`` sockets are subscribed to the broadcast topic (each subscribes in on_open)."""
    await wait_until(lambda: hub.count(BROADCAST_TOPIC) == n)


async def test_a_broadcast_reaches_every_socket_the_sender_included() -> None:
    with trio.fail_after(10):
        async with (
            open_client(Echo) as client,
            client.websocket("/bcast") as a,
            client.websocket("/bcast") as b,
            client.websocket("/bcast") as c,
            client.websocket("/ws") as echo_only,
        ):
            await wait_subscribed(hub_of(client), 3)
            await b.send("from b")
            await b.send(b"\x00binary")
            for ws in (a, b, c):
                assert await ws.receive() == "from b"
                assert await ws.receive() == b"\x00binary"
            # /ws still echoes, to its sender only, and got nothing of the broadcast.
            await echo_only.send("echo")
            assert await echo_only.receive() == "echo"
            # Exactly once: the next message each /bcast socket gets is the next one sent.
            await a.send("end")
            for ws in (a, b, c):
                assert await ws.receive() == "end"


async def test_broadcasts_keep_the_order_they_were_received_in() -> None:
    with trio.fail_after(10):
        async with (
            open_client(Echo) as client,
            client.websocket("/bcast") as sender,
            client.websocket("/bcast") as other,
        ):
            await wait_subscribed(hub_of(client), 2)
            for i in range(200):
                await sender.send(f"m{i}")
            expected = [f"m{i}" for i in range(200)]
            assert [await other.receive() for _ in range(200)] == expected
            assert [await sender.receive() for _ in range(200)] == expected


async def test_a_closed_socket_leaves_the_broadcast() -> None:
    with trio.fail_after(10):
        async with open_client(Echo) as client, client.websocket("/bcast") as stays:
            hub = hub_of(client)
            async with client.websocket("/bcast") as leaves:
                await wait_subscribed(hub, 2)
                await leaves.send("hello")
                assert await stays.receive() == "hello"
            await wait_subscribed(hub, 1)
            await stays.send("alone")
            assert await stays.receive() == "alone"
