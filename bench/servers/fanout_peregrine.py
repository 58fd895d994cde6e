"""peregrine_rt's chat room for ``bench/fanout.py``.

Run: ``peregrine-rt bench.servers.fanout_peregrine:Room --port N --log-level warning``
(and ``bench.servers.fanout_peregrine:Broadcast`` for the row without the hub)

Every request is upgraded (compression off) and every socket joins one room;
each message a socket sends goes to every member, the sender included:

* ``Room``: the hub, ``ws.hub.subscribe(ws, "room")`` when the socket opens and
  ``await ws.hub.publish("room", message)`` for each message (with
  ``Config.redis_url`` set, the same code crosses processes);
* ``Broadcast``: the handler keeps the members itself and calls
  ``peregrine_rt.broadcast(members, message)``, as websockets' ``broadcast()``.
"""

from __future__ import annotations

import peregrine_rt as pr


class Room:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response, compression=False)

    async def on_open(self, ws: pr.WebSocket) -> None:
        ws.hub.subscribe(ws, "room")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.hub.publish("room", message)


class Broadcast:
    def __init__(self) -> None:
        self.members: dict[pr.WebSocket, None] = {}

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response, compression=False)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.members[ws] = None

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pr.broadcast(self.members, message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.members.pop(ws, None)
