"""Echo: the app the project's conformance and load tests run against.

* Every HTTP request gets ``200`` with ``method=<METHOD> target=<TARGET> body_len=<N>``,
  N the number of body bytes read.
* Any request that asks to upgrade becomes a WebSocket that echoes every
  message, text or binary, up to 16 MiB.
* Except on ``/bcast``: there every message a socket sends is published through
  the hub to every socket connected to ``/bcast`` — the sender included — in
  the order received.  With ``--redis URL`` the hub is a Redis one and the
  broadcast crosses processes and machines.

Run: ``peregrine-rt examples.echo:Echo --port 8080`` (or ``python examples/echo.py``);
several nodes sharing ``/bcast``:
``peregrine-rt examples.echo:Echo --port 8081 --redis redis://127.0.0.1:6379`` (and 8082).
"""

from __future__ import annotations

import peregrine_rt as pr

MAX_MESSAGE = 16 * 1024 * 1024
BROADCAST_PATH = "/bcast"
BROADCAST_TOPIC = "bcast"


class Echo:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None:
            await pr.upgrade(request, response, max_message_size=MAX_MESSAGE)
            return
        body = await request.body()
        target = request.target.decode("ascii")
        response.text(f"method={request.method} target={target} body_len={len(body)}")

    async def on_open(self, ws: pr.WebSocket) -> None:
        if ws.request.path == BROADCAST_PATH:
            ws.hub.subscribe(ws, BROADCAST_TOPIC)  # unsubscribed when it closes

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if ws.request.path != BROADCAST_PATH:
            await ws.send(message)
            return
        try:
            await ws.hub.publish(BROADCAST_TOPIC, message)
        except pr.HubUnavailable:
            pass  # Redis is down: this node's sockets have it; the hub logged and counted it


if __name__ == "__main__":
    pr.run(Echo, port=8080)
