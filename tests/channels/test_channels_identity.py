"""Channels and the handshake's identity: presence keys, a topic callback reaching its app."""

from __future__ import annotations

from typing import Any

import peregrine_rt as pr
from peregrine_rt._channels import Channels, Socket, topic
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt.testing import open_client

from .conftest import Phx


class Lobby(Channels):
    async def authenticate(self, request: pr.Request) -> pr.Identity | None:
        name = request.query.get("name")
        return None if not name else pr.Identity(name, claims={"role": "x" * 50})

    @topic("lobby", presence=True)
    class Room:
        async def join(self, socket: Socket, params: Any) -> dict[str, Any]:
            backlog = await socket.channels.history_of("lobby")
            return {"backlog": len(backlog)}

        async def on_say(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast("said", payload)


async def test_an_identity_is_present_under_its_name_and_callbacks_reach_the_app() -> None:
    app = Lobby(history=MemoryHistory())
    async with open_client(app) as client:
        async with client.websocket("/socket/websocket?name=ada") as first:
            phx = Phx(first)
            _, reply = await phx.join("lobby")
            assert (
                reply[4] == {"status": "ok", "response": {"backlog": 0}}
                or reply[4]["response"]["backlog"] == 0
            )
            state = await phx.receive_until("presence_state")
            assert list(state[4]) == ["ada"]  # the Identity's name, not its repr
            await phx.send(reply[0], "lobby", "say", {"text": "hi"})
            await phx.receive_until("said")
        async with client.websocket("/socket/websocket?name=bob") as second:
            _, reply = await Phx(second).join("lobby")
            assert (
                reply[4]["response"]["backlog"] == 1
            )  # the app's own history, via socket.channels


async def test_the_history_argument_gives_each_instance_its_own() -> None:
    one, two = Lobby(history=MemoryHistory()), Lobby(history=MemoryHistory())
    async with open_client(one) as client, client.websocket("/socket/websocket?name=ada") as ws:
        phx = Phx(ws)
        join_ref, _ = await phx.join("lobby")
        await phx.send(join_ref, "lobby", "say", {"text": "hi"})
        await phx.receive_until("said")
    assert len(await one.history_of("lobby")) == 1
    assert await two.history_of("lobby") == []
    assert Lobby.history is None  # the class's default is untouched
