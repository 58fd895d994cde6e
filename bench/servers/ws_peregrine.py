"""peregrine_rt's WebSocket echo for ``bench/ws.py``.

Run: ``peregrine-rt bench.servers.ws_peregrine:Echo --port N --log-level warning``

Every request is upgraded (compression off, as ``Config.ws_compression``'s
default) and every message, text or binary, is sent back as it came.
"""

from __future__ import annotations

import peregrine_rt as pr


class Echo:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response, compression=False)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)
