"""A tiny ASGI app (no framework) for the ``peregrine-rt --asgi`` tests.

It supports lifespan (``state["greeting"]``) and answers every request with
the greeting, the path and the worker's process id.
"""

from __future__ import annotations

import os
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hello"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"{scope['state']['greeting']} {scope['path']} pid={os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


not_an_app = 42


async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app whose lifespan startup fails."""
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})
