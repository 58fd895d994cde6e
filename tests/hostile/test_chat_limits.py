"""The chat's own limits: rooms per hello, every message type rate-limited, idle rooms removed.

Before: one ``hello`` naming 100 rooms created 96 of them (the server's room
cap filled, and rooms were never removed); unknown message types, ``say``
before ``hello`` and ``typing`` skipped the rate limit (20,000 of each were
accepted).  Now a hello names at most ``MAX_HELLO_ROOMS`` rooms, every message
takes a token, refused requests in a row close the connection with 1008, and
a room nobody is in is removed after ``Chat.room_idle`` seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from examples.chat import app as chat_app
from examples.chat.app import Chat
from peregrine_rt import ConnectionClosed
from peregrine_rt.testing import Client, ClientWebSocket, WebSocketClosed, open_client, wait_until


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with open_client(Chat) as client:
        yield client


async def next_of(ws: ClientWebSocket, kind: str) -> dict[str, Any]:
    while True:
        data = await ws.receive_json()
        if data["type"] == kind:
            return data  # type: ignore[no-any-return]


async def hello(ws: ClientWebSocket, nick: str, **fields: Any) -> None:
    await ws.send_json({"type": "hello", "nick": nick, **fields})
    await next_of(ws, "welcome")


async def closed_with(ws: ClientWebSocket) -> tuple[int, str]:
    with pytest.raises(WebSocketClosed) as closed:
        while True:
            await ws.receive()
    return closed.value.code, closed.value.reason


async def test_a_hello_names_a_few_rooms_at_most(client: Client) -> None:
    many = [f"r{i}" for i in range(chat_app.MAX_HELLO_ROOMS + 1)]
    async with client.websocket("/ws") as ws:
        await ws.send_json({"type": "hello", "nick": "ada", "rooms": many})
        error = await ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "too_many_rooms")
        assert await client.app.store.rooms() == ["lobby"]  # none was created
        await hello(ws, "ada", rooms=many[: chat_app.MAX_HELLO_ROOMS])  # still open


async def test_a_connection_is_in_a_few_rooms_at_most(client: Client, autojump_clock: Any) -> None:
    async with client.websocket("/ws") as ws:
        await hello(ws, "ada")
        for i in range(chat_app.MAX_JOINED):
            await trio.sleep(1)  # within the rate limit
            await ws.send_json({"type": "create", "room": f"r{i}"})
        error = await next_of(ws, "error")
        assert error["code"] == "too_many_rooms"
        assert len(await client.app.store.rooms()) == chat_app.MAX_JOINED + 1


@pytest.mark.parametrize(
    ("first", "flood"),
    [
        ({"type": "hello", "nick": "ada"}, {"type": "dance"}),  # unknown type
        (None, {"type": "say", "room": "lobby", "text": "hi"}),  # before hello
        ({"type": "hello", "nick": "ada"}, {"type": "typing", "room": "lobby"}),
        ({"type": "hello", "nick": "ada"}, [1, 2]),  # not an object
    ],
)
async def test_every_message_counts_toward_the_rate_limit(
    client: Client, first: Any, flood: Any
) -> None:
    async with client.websocket("/ws") as ws:
        if first is not None:
            await ws.send_json(first)
        with trio.fail_after(10):
            for _ in range(1000):  # was: 20,000 accepted
                try:
                    await ws.send_json(flood)
                except ConnectionClosed:
                    break
            code, reason = await closed_with(ws)
        assert code == 1008 and reason.startswith("too many")


async def test_refused_requests_close_1008_even_when_slow(
    client: Client, autojump_clock: Any
) -> None:
    async with client.websocket("/ws") as ws:
        await hello(ws, "ada")
        for _ in range(chat_app.MAX_REFUSED - 1):
            await trio.sleep(0.5)  # a token each time: never rate-limited
            await ws.send_json({"type": "join", "room": "nope"})
            assert (await next_of(ws, "error"))["code"] == "no_such_room"
        await trio.sleep(0.5)
        await ws.send_json({"type": "dance"})
        assert (await next_of(ws, "error"))["code"] == "unknown_type"
        assert await closed_with(ws) == (1008, "too many refused requests")


async def test_a_few_refusals_spread_out_are_fine(client: Client, autojump_clock: Any) -> None:
    async with client.websocket("/ws") as ws:
        await hello(ws, "ada")
        for _ in range(3 * chat_app.MAX_REFUSED):
            await trio.sleep(chat_app.STRIKE_WINDOW / (chat_app.MAX_REFUSED - 2))
            await ws.send_json({"type": "join", "room": "nope"})
            assert (await next_of(ws, "error"))["code"] == "no_such_room"


async def test_empty_rooms_expire(client: Client, autojump_clock: Any) -> None:
    store = client.app.store
    async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
        await hello(ada, "ada")
        await hello(bob, "bob")
        for room in ("dev", "ops", "kept"):
            await trio.sleep(1)
            await ada.send_json({"type": "create", "room": room})
            await next_of(ada, "history")
        await bob.send_json({"type": "join", "room": "kept"})
        await next_of(bob, "history")
        for room in ("dev", "ops", "kept"):
            await trio.sleep(1)
            await ada.send_json({"type": "leave", "room": room})
            await next_of(ada, "left")
        assert await store.rooms() == ["dev", "kept", "lobby", "ops"]
        await trio.sleep(Chat.room_idle / 2)
        assert "dev" in await store.rooms()  # not idle long enough
        await trio.sleep(Chat.room_idle)
        assert await store.rooms() == ["kept", "lobby"]  # bob is in "kept"; lobby stays
        assert (await next_of(ada, "rooms"))["rooms"] == ["kept", "lobby"]
        # A removed room can be created again.
        await ada.send_json({"type": "create", "room": "dev"})
        assert (await next_of(ada, "history"))["messages"] == []


class QuickChat(Chat):
    room_idle = 0.3


async def test_empty_rooms_expire_with_redis(redis_url: str) -> None:
    async with open_client(QuickChat, redis_url=redis_url) as client:
        store = client.app.store
        async with client.websocket("/ws") as ada:
            await hello(ada, "ada")
            await ada.send_json({"type": "create", "room": "dev"})
            await next_of(ada, "history")
            await ada.send_json({"type": "say", "room": "dev", "text": "hi"})
            await next_of(ada, "sent")
            assert await store.rooms() == ["dev", "lobby"]
            await ada.send_json({"type": "leave", "room": "dev"})
            await next_of(ada, "left")
            await wait_until(lambda: client.app.feeds.keys() == {"lobby"})
            with trio.fail_after(10):
                while await store.rooms() != ["lobby"]:
                    await next_of(ada, "rooms")
            assert await store.history("dev", None) == []  # its messages went with it
