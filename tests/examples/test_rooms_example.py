"""Tests of examples/rooms.py: a message reaches everyone in its room, and no one else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from examples.rooms import Rooms
from peregrine_rt.testing import Client, WebSocketRejected, open_client


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with open_client(Rooms) as client:
        yield client


async def test_a_message_reaches_everyone_in_the_room(client: Client) -> None:
    async with client.websocket("/rooms/lobby") as alice, client.websocket("/rooms/lobby") as bob:
        await alice.send("hi all")
        assert await alice.receive() == "hi all"  # the sender too
        assert await bob.receive() == "hi all"
        await bob.send(b"\x01binary")
        assert await alice.receive() == b"\x01binary"


async def test_other_rooms_hear_nothing(client: Client) -> None:
    async with (
        client.websocket("/rooms/lobby") as alice,
        client.websocket("/rooms/kitchen") as carol,
    ):
        await alice.send("lobby only")
        assert await alice.receive() == "lobby only"
        await carol.assert_no_message()


async def test_messages_keep_their_order(client: Client) -> None:
    async with client.websocket("/rooms/a") as alice, client.websocket("/rooms/a") as bob:
        for i in range(20):
            await alice.send(str(i))
        assert [await bob.receive() for _ in range(20)] == [str(i) for i in range(20)]


async def test_members_are_counted_and_leave(client: Client) -> None:
    assert (await client.get("/rooms/lobby")).json() == {"room": "lobby", "members": 0}
    async with client.websocket("/rooms/lobby"):
        async with client.websocket("/rooms/lobby"):
            assert (await client.get("/rooms/lobby")).json()["members"] == 2
        # Leaving the block closed the socket and waited for on_close.
        assert (await client.get("/rooms/lobby")).json()["members"] == 1
    assert (await client.get("/rooms/lobby")).json()["members"] == 0
    assert client.app.rooms == {}


async def test_a_message_after_someone_left(client: Client) -> None:
    async with client.websocket("/rooms/lobby") as alice:
        async with client.websocket("/rooms/lobby") as bob:
            await bob.send("bye")
            assert await alice.receive() == "bye"
        await alice.send("anyone?")
        assert await alice.receive() == "anyone?"


@pytest.mark.parametrize("path", ["/", "/rooms/", "/rooms/a/b", "/lobby"])
async def test_other_paths_are_not_found(client: Client, path: str) -> None:
    assert (await client.get(path)).status == 404
    with pytest.raises(WebSocketRejected) as refused:
        async with client.websocket(path):
            pass
    assert refused.value.response.status == 404
