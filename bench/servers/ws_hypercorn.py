"""An ASGI WebSocket echo for hypercorn's trio worker, the peer in ``bench/ws.py``.

Run: ``hypercorn --worker-class trio --workers 0 --backlog 1024
bench.servers.ws_hypercorn:app``

Every WebSocket is accepted and every message, text or binary, sent back as it
came; plain HTTP gets 404.  Hypercorn negotiates permessage-deflate only when
the client offers it, and the benchmark's client does not.
"""

from __future__ import annotations

from typing import Any

ACCEPT = {"type": "websocket.accept"}
NOT_FOUND = {
    "type": "http.response.start",
    "status": 404,
    "headers": [(b"content-length", b"0")],
}
EMPTY_BODY = {"type": "http.response.body", "body": b""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "websocket":
        while True:
            event = await receive()
            name = event["type"]
            if name == "websocket.receive":
                text = event.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": event.get("bytes")})
            elif name == "websocket.connect":
                await send(ACCEPT)
            else:  # websocket.disconnect
                return
    elif kind == "http":
        await send(NOT_FOUND)
        await send(EMPTY_BODY)
    elif kind == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
