"""The app of tests/e2e/test_status_browser.py: rooms to make traffic for the status page to show.

Served in a child process (``python -m peregrine_rt tests.e2e.status_app:Rooms
--status-page ...``, the status page's settings from the environment):

* ``/ws/NAME``: a WebSocket in the room ``room.NAME``; what it sends is
  published to the room (hub deliveries, messages sent);
* any other path: a short text (HTTP requests).
"""

from __future__ import annotations

import peregrine_rt as pr


class Rooms:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None and request.path.startswith("/ws/"):
            ws = await pr.upgrade(request, response)
            ws.state["room"] = "room." + request.path.removeprefix("/ws/")
        else:
            response.text(f"hello from {request.path}\n")

    async def on_open(self, ws: pr.WebSocket) -> None:
        ws.hub.subscribe(ws, ws.state["room"])

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.hub.publish(ws.state["room"], message)
