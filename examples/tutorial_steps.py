"""The first steps of the tutorial (``docs/tutorial.rst``), before ``app.py``.

Each is a complete handler: ``peregrine-rt examples.tutorial_steps:BareChat``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peregrine_rt as pr
from peregrine_rt.mixins import JSONMixin, RoomsMixin, StaticMixin

STATIC = Path(__file__).resolve().parent / "chat" / "static"


# start bare
class BareChat:
    """Step 1: every message goes to every connected socket, through the hub."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            await pr.upgrade(request, response)
        else:
            response.text("connect a WebSocket to /ws\n", status=404)

    async def on_open(self, ws: pr.WebSocket) -> None:
        ws.hub.subscribe(ws, "chat")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.hub.publish("chat", message)


# end bare


# start mixins
class RoomChat(RoomsMixin, JSONMixin, StaticMixin):
    """Step 2: JSON messages, a nick, rooms, and the page served from ``static/``."""

    static = pr.DirServer(STATIC)

    async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
        if data.get("type") == "hello":
            ws.state["nick"] = str(data["nick"])
            await self.join(ws, "lobby")
        elif data.get("type") == "say" and "nick" in ws.state:
            message = {"type": "message", "nick": ws.state["nick"], "text": str(data["text"])}
            await self.broadcast_json("lobby", message)


# end mixins
