"""Live: hub topics reached by WebSockets, Server-Sent Events and plain HTTP.

* ``/ws``: a WebSocket speaking JSON (:class:`~peregrine_rt.mixins.JSONMixin`):
  ``{"subscribe": "prices"}``, ``{"unsubscribe": "prices"}`` and
  ``{"publish": "prices", "data": ...}``; what is published to a topic it
  subscribed to arrives as ``{"topic": ..., "data": ...}``.
* ``GET /events/<topic>``: the same feed as Server-Sent Events, for browsers
  and scripts that only listen (``curl -N``).
* ``POST /publish/<topic>``: publish the JSON body; answers how many local
  subscribers took it.

Every topic is a hub topic, so with ``--redis URL`` the feed crosses processes
and machines.

Run: ``peregrine-rt examples.live:Live --port 8000``.
"""

from __future__ import annotations

from typing import Any

import peregrine_rt as pr
from peregrine_rt.mixins import JSONMixin, dumps


class Live(JSONMixin):
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        kind, _, topic = request.path.strip("/").partition("/")
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
        elif isinstance(topic := data.get("subscribe"), str):
            self.hub.subscribe(ws, f"live:{topic}")
        elif isinstance(topic := data.get("unsubscribe"), str):
            self.hub.unsubscribe(ws, f"live:{topic}")
        elif isinstance(topic := data.get("publish"), str):
            await self.publish_json(f"live:{topic}", {"topic": topic, "data": data.get("data")})
        else:
            await ws.send(dumps({"error": "unknown command"}))
