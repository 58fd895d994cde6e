"""Handler mixins: JSON messages, rooms, presence, and the checks Server() makes of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt.mixins import JSONMixin, PresenceMixin, RoomsMixin, StaticMixin
from peregrine_rt.testing import WebSocketRejected, open_client


class Chat(PresenceMixin, JSONMixin):
    """``/ws?user=NAME``: messages are JSON commands (enter, exit, say, who)."""

    def __init__(self) -> None:
        self.closed: list[tuple[str, int]] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        ws = await pr.upgrade(request, response)
        ws.state["user"] = request.query.get("user", "anonymous")

    async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
        kind, room = data.get("type"), data.get("room", "lobby")
        if kind == "enter":
            await self.enter(ws, room, ws.state["user"])
        elif kind == "exit":
            await self.exit(ws, room)
        elif kind == "say":
            await self.broadcast_json(
                room, {"type": "said", "by": ws.state["user"], "text": data["text"]}
            )
        elif kind == "who":
            await self.send_json(
                ws,
                {
                    "type": "who",
                    "online": self.online(room),
                    "rooms": self.rooms(ws),
                    "members": len(self.members(room)),
                },
            )

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closed.append((ws.state["user"], code))
        await super().on_close(ws, code, reason)


async def test_json_messages_reach_on_json_and_send_json_answers() -> None:
    async with open_client(Chat) as client, client.websocket("/ws?user=ann") as ann:
        await ann.send_json({"type": "who"})
        assert await ann.receive_json() == {"type": "who", "online": [], "rooms": [], "members": 0}


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [("{not json", 1007, "invalid JSON"), (b"{}", 1003, "messages are JSON text")],
)
async def test_bad_json_closes_with_a_clear_code(
    message: str | bytes, code: int, reason: str
) -> None:
    async with open_client(Chat) as client:
        async with client.websocket("/ws?user=bob") as bob:
            await bob.send(message)
            close = await bob.receive_close()
            assert (close.code, close.reason) == (code, reason)
        assert client.app.closed == [("bob", code)]


async def test_presence_events_and_room_broadcast() -> None:
    async with open_client(Chat) as client:
        async with client.websocket("/ws?user=ann") as ann:
            await ann.send_json({"type": "enter", "room": "r"})
            assert await ann.receive_json() == {
                "type": "presence",
                "event": "join",
                "room": "r",
                "user": "ann",
                "online": ["ann"],
            }
            async with client.websocket("/ws?user=bob") as bob:
                await bob.send_json({"type": "enter", "room": "r"})
                joined = {
                    "type": "presence",
                    "event": "join",
                    "room": "r",
                    "user": "bob",
                    "online": ["ann", "bob"],
                }
                assert await ann.receive_json() == joined
                assert await bob.receive_json() == joined
                # A second tab of ann's: one presence, no new event.
                async with client.websocket("/ws?user=ann") as ann2:
                    await ann2.send_json({"type": "enter", "room": "r"})
                    await ann2.send_json({"type": "who", "room": "r"})
                    assert await ann2.receive_json() == {
                        "type": "who",
                        "online": ["ann", "bob"],
                        "rooms": ["r"],
                        "members": 3,
                    }
                await ann.assert_no_message()
                await bob.send_json({"type": "say", "room": "r", "text": "<b>hi</b>"})
                said = {"type": "said", "by": "bob", "text": "<b>hi</b>"}
                assert await ann.receive_json() == said
                assert await bob.receive_json() == said
            # bob closed: his last socket, so the room hears he left.
            assert await ann.receive_json() == {
                "type": "presence",
                "event": "leave",
                "room": "r",
                "user": "bob",
                "online": ["ann"],
            }
            await ann.send_json({"type": "exit", "room": "r"})
            await ann.send_json({"type": "who", "room": "r"})
            assert await ann.receive_json() == {
                "type": "who",
                "online": [],
                "rooms": [],
                "members": 0,
            }
        assert client.app._presence() == {}
        assert sorted(client.app.closed) == [("ann", 1000), ("ann", 1000), ("bob", 1000)]


def test_json_mixin_needs_on_json() -> None:
    class NoOnJSON(JSONMixin):
        async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

    with pytest.raises(
        pr.HandlerError,
        match=r"NoOnJSON has no 'on_json' method; a handler "
        r"needs async def on_json\(self, ws, data\)",
    ):
        pr.Server(NoOnJSON)

    class SyncOnJSON(JSONMixin):
        async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

        def on_json(self, ws: pr.WebSocket, data: Any) -> None: ...

    with pytest.raises(pr.HandlerError, match=r"SyncOnJSON.on_json must be async def on_json"):
        pr.Server(SyncOnJSON)


async def test_rooms_mixin_alone_and_the_hub_on_self() -> None:
    class Rooms(RoomsMixin):
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            ws = await pr.upgrade(request, response)
            await self.join(ws, request.path.strip("/"))

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
            for room in self.rooms(ws):
                await self.broadcast(room, message)

    async with open_client(Rooms) as client:
        assert client.app.hub is client.server.hub
        async with (
            client.websocket("/a") as a,
            client.websocket("/a") as a2,
            client.websocket("/b") as b,
        ):
            await a.send(b"\x01")
            assert await a2.receive() == b"\x01"
            assert await a.receive() == b"\x01"
            await b.assert_no_message()
            assert len(client.app.members("a")) == 2
        assert client.app.members("a") == []


async def test_static_mixin_serves_files_and_upgrades_its_paths(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>hello</h1>")

    class Site(StaticMixin, JSONMixin):
        static = pr.DirServer(tmp_path)

        async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
            await self.send_json(ws, {"echo": data})

    class FilesOnly(StaticMixin):
        static = pr.DirServer(tmp_path)

    async with open_client(Site) as client:
        page = await client.get("/")
        assert (page.status, page.text) == (200, "<h1>hello</h1>")
        assert (await client.get("/missing")).status == 404
        async with client.websocket("/ws") as ws:
            await ws.send_json([1])
            assert await ws.receive_json() == {"echo": [1]}
        with pytest.raises(WebSocketRejected):  # only websocket_paths upgrade
            async with client.websocket("/other"):
                pass
    # Without on_message the class is valid (it never upgrades): /ws is a path like any other.
    async with open_client(FilesOnly) as client:
        assert (await client.get("/")).text == "<h1>hello</h1>"
        with pytest.raises(WebSocketRejected):
            async with client.websocket("/ws"):
                pass


class DownHub(pr.Hub):
    """A hub whose link to other nodes is down: local delivery, then HubUnavailable."""

    async def publish(self, topic: str, message: str | bytes) -> int:
        delivered = self.publish_local(topic, message)
        raise pr.HubUnavailable("redis is down", topic, delivered)


async def test_mixins_carry_on_when_the_hub_cannot_reach_other_nodes() -> None:
    server = pr.Server(Chat)
    server.hub = DownHub()
    async with open_client(server) as client:
        async with client.websocket("/ws?user=ann") as ann:
            for room in ("a", "b", "c"):
                await ann.send_json({"type": "enter", "room": room})
                assert (await ann.receive_json())["event"] == "join"
            await ann.send_json({"type": "say", "room": "b", "text": "still here"})
            assert await ann.receive_json() == {"type": "said", "by": "ann", "text": "still here"}
        # Closing left every room, though each announcement met the outage.
        assert client.app._presence() == {}
        assert client.app.closed == [("ann", 1000)]
