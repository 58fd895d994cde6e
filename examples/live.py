"""Live: hub topics reached by WebSockets, Server-Sent Events and plain HTTP.

* ``/ws``: a WebSocket speaking JSON (:class:`~peregrine_rt.mixins.JSONMixin`):
  ``{"subscribe": "prices"}``, ``{"unsubscribe": "prices"}`` and
  ``{"publish": "prices", "data": ...}``; what is published to a topic it
  subscribed to arrives as ``{"topic": ..., "data": ...}``.
* ``GET /events/<topic>``: the same feed as Server-Sent Events, for browsers
  and scripts that only listen (``curl -N``).
* ``POST /publish/<topic>``: publish the JSON body; answers how many local
  subscribers took it.

Every topic is a hub topic (``live:<name>``), so with ``--redis URL`` the feed
crosses processes and machines.  Names are letters, digits, ``.``, ``_`` and
``-``: a ``*`` from a client would subscribe to a pattern (every topic).

Run: ``peregrine-rt examples.live:Live --port 8000``.
"""

from __future__ import annotations

import re
from typing import Any

import peregrine_rt as pr
from peregrine_rt.mixins import JSONMixin, dumps

_NAME = re.compile(r"[A-Za-z0-9._-]+")


def valid(topic: object) -> bool:
    """A topic name a client may use: no pattern characters, not empty, short."""
    return isinstance(topic, str) and 0 < len(topic) <= 64 and _NAME.fullmatch(topic) is not None


class Live(JSONMixin):
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        kind, _, topic = request.path.strip("/").partition("/")
        if topic and not valid(topic):
            response.text("invalid topic name\n", status=400)
            return
        if kind == "ws" and not topic:
            await pr.upgrade(request, response)
        elif kind == "events" and topic:
            # Server-Sent Events: a comment every 15 s keeps proxies from closing it.
            async with response.sse() as events:
                await events.forward(self.hub, f"live:{topic}", event="update")
        elif kind == "publish" and topic and request.method == "POST":
            try:
                data = await request.json()
            except ValueError:
                response.text("the body must be JSON\n", status=400)
                return
            delivered = await self.publish_json(f"live:{topic}", {"topic": topic, "data": data})
            response.json({"delivered": delivered})
        else:
            response.text("404 Not Found\n", status=404)

    async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
        if not isinstance(data, dict):
            await ws.send(dumps({"error": "send a JSON object"}))
        elif any(k in data and not valid(data[k]) for k in ("subscribe", "unsubscribe", "publish")):
            await ws.send(dumps({"error": "invalid topic name"}))
        elif "subscribe" in data:
            self.hub.subscribe(ws, f"live:{data['subscribe']}")
        elif "unsubscribe" in data:
            self.hub.unsubscribe(ws, f"live:{data['unsubscribe']}")
        elif isinstance(topic := data.get("publish"), str):
            await self.publish_json(f"live:{topic}", {"topic": topic, "data": data.get("data")})
        else:
            await ws.send(dumps({"error": "unknown command"}))
