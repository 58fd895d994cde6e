"""docs/channels/server.rst: a chat on Channels, with history and presence."""

from __future__ import annotations

from typing import Any

from peregrine_rt._channels import Channels, Refuse, Socket, topic
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt.testing import open_client


class Chat(Channels):
    history = MemoryHistory(max_count=500)  # topics keep their last 500 messages

    @topic("room:{name}", presence=True)
    class Room:
        async def join(self, socket: Socket, params: dict[str, Any]) -> dict[str, Any]:
            if socket.params["name"].startswith("admin") and socket.user != "root":
                raise Refuse("unauthorized")
            socket.assigns["nick"] = params.get("nick", "anon")
            return {"welcome": socket.params["name"]}

        async def on_new_msg(self, socket: Socket, payload: Any) -> dict[str, Any]:
            body = str(payload.get("body", ""))[:500]
            await socket.broadcast("new_msg", {"nick": socket.assigns["nick"], "body": body})
            return {"ok": True}  # the reply to the client's push

        async def on_typing(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast_from("typing", {"nick": socket.assigns["nick"]})

        async def presence_key(self, socket: Socket) -> str:
            return str(socket.assigns["nick"])


async def test_chat() -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket?vsn=2.0.0") as ws:
        await ws.send_json(["1", "1", "room:lobby", "phx_join", {"nick": "ann"}])
        reply = await ws.receive_json()
        assert reply[4]["status"] == "ok"
        assert reply[4]["response"]["welcome"] == "lobby"
        assert reply[4]["response"]["offset"] == 0
        await ws.send_json(["1", "2", "room:lobby", "new_msg", {"body": "hi"}])
        seen = [await ws.receive_json() for _ in range(4)]
        events = [frame[3] for frame in seen]
        assert "presence_state" in events
        assert [None, "p:1", "room:lobby", "new_msg", {"nick": "ann", "body": "hi"}] in seen
        assert [
            "1",
            "2",
            "room:lobby",
            "phx_reply",
            {"status": "ok", "response": {"ok": True}},
        ] in seen
        history = await client.app.history_of("room:lobby")
        assert [p.payload["body"] for p in history] == ["hi"]
