"""The ASGI page (docs/asgi.rst): a plain ASGI app served by peregrine_rt.

The page shows the parts between the ``# [name]`` markers; the tests below
run them through peregrine_rt.testing.
"""

from __future__ import annotations

from typing import Any

import peregrine_rt as pr
from peregrine_rt.asgi import ASGI
from peregrine_rt.testing import open_client

Scope = dict[str, Any]


# [app]
async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Any ASGI 3 app: Starlette(...), FastAPI(), or one written by hand like this."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            scope["state"]["greeting"] = "hello"  # open pools and clients here
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        text = f"{scope['state']['greeting']} from {scope['path']}"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": text.encode()})
    else:  # "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"][::-1]})


# pr.run(ASGI(app), port=8000)  # or: peregrine-rt --asgi main:app --port 8000
# [/app]


# [mount]
class Live:
    """A peregrine_rt handler next to the ASGI app."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


router = pr.Router()
router.websocket("/live", Live)
router.mount("/api", ASGI(app))  # scope["root_path"] == "/api"
# [/mount]


# [tests]
async def test_the_app_alone() -> None:
    async with open_client(ASGI(app)) as client:
        assert (await client.get("/x")).text == "hello from /x"
        async with client.websocket("/ws") as ws:
            await ws.send("abc")
            assert await ws.receive() == "cba"


async def test_the_app_mounted() -> None:
    async with open_client(router) as client:
        assert (await client.get("/api/items")).text == "hello from /api/items"
        async with client.websocket("/live") as ws:
            await ws.send("echo")
            assert await ws.receive() == "echo"


# [/tests]
