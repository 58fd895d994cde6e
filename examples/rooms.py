"""Rooms: a WebSocket to ``/rooms/<name>`` joins room <name>; every message goes to all in it.

* ``GET /rooms/<name>`` (no upgrade) answers ``{"room": name, "members": n}``.
* A message, text or binary, is sent to every member of the sender's room,
  the sender included, in the order the room received them.
* Any other path is 404.

The rooms are a plain dict of sets on the handler (one instance per server
process: no lock needed); there is no hub yet, so the rooms of one process are
not shared with another.

Run: ``peregrine-rt examples.rooms:Rooms --port 8080`` (or ``python examples/rooms.py``).
"""

from __future__ import annotations

import peregrine_rt as pr


class Rooms:
    def __init__(self) -> None:
        self.rooms: dict[str, set[pr.WebSocket]] = {}

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        name = request.path.removeprefix("/rooms/")
        if name == request.path or not name or "/" in name:
            response.text("404 Not Found\n", status=404)
            return
        if request.upgrade is None:
            response.json({"room": name, "members": len(self.rooms.get(name, ()))})
            return
        ws = await pr.upgrade(request, response)
        ws.state["room"] = name

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.rooms.setdefault(ws.state["room"], set()).add(ws)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        for member in list(self.rooms[ws.state["room"]]):
            try:
                await member.send(message)
            except pr.ConnectionClosed:
                pass  # it is leaving: on_close removes it

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        members = self.rooms[ws.state["room"]]
        members.discard(ws)
        if not members:
            del self.rooms[ws.state["room"]]


if __name__ == "__main__":
    pr.run(Rooms, port=8080)
