"""The examples of docs/realtime.rst, run as tests.

The page shows the parts between the ``# [name]`` markers.
"""

from __future__ import annotations

from typing import Any

import trio

import peregrine_rt as pr
from peregrine_rt.mixins import JSONMixin, PresenceMixin
from peregrine_rt.testing import open_client


# [topics]
class Ticker:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        ws = await pr.upgrade(request, response)
        ws.hub.subscribe(ws, "ticks")  # left automatically when the socket closes

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        # Every subscriber gets it, the sender included; nobody waits on a slow one.
        await ws.hub.publish("ticks", message)


# [/topics]


# [mixins]
class Room(PresenceMixin, JSONMixin):
    """``/ws?user=ann``: ``{"say": "hi"}`` goes to everyone in the lobby."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        ws = await pr.upgrade(request, response)
        ws.state["user"] = request.query.get("user", "guest")

    async def on_open(self, ws: pr.WebSocket) -> None:
        await self.enter(ws, "lobby", ws.state["user"])  # the lobby hears "join"

    async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("say"), str):
            await self.broadcast_json("lobby", {"from": ws.state["user"], "text": data["say"]})
        else:
            await self.send_json(ws, {"error": 'send {"say": "..."}'})


# [/mixins]


async def test_topics() -> None:
    async with open_client(Ticker) as client:
        async with client.websocket("/") as a, client.websocket("/") as b:
            await a.send("tick 1")
            assert await a.receive() == "tick 1"
            assert await b.receive() == "tick 1"
        assert client.server.hub.count("ticks") == 0


async def test_mixins() -> None:
    async with open_client(Room) as client, client.websocket("/ws?user=ann") as ann:
        first = await ann.receive_json()
        assert (first["event"], first["online"]) == ("join", ["ann"])
        async with client.websocket("/ws?user=bob") as bob:
            assert (await ann.receive_json())["online"] == ["ann", "bob"]
            await bob.receive_json()  # his own join
            await bob.send_json({"say": "hi"})
            assert await ann.receive_json() == {"from": "bob", "text": "hi"}
            assert await bob.receive_json() == {"from": "bob", "text": "hi"}
            await bob.send_json(["nope"])
            assert await bob.receive_json() == {"error": 'send {"say": "..."}'}
        with trio.fail_after(5):
            left = await ann.receive_json()
        assert (left["event"], left["user"], left["online"]) == ("leave", "bob", ["ann"])
