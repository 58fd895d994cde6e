"""One ASGI hello world for both ASGI peers.

``uvicorn bench.servers.hello_asgi:app --http httptools --loop uvloop`` and
``hypercorn --worker-class trio bench.servers.hello_asgi:app`` serve the same
callable, so the difference between them is the server alone.
"""

from __future__ import annotations

from typing import Any

BODY = b"Hello, World!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
BODY_EVENT = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send(START)
        await send(BODY_EVENT)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
