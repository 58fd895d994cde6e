"""A middleware of one's own, and the order of a stack (docs/web/middleware.rst).

The page shows the parts between the ``# [own]`` and ``# [stack]`` markers;
the tests below serve them.
"""

from __future__ import annotations

import gzip
import time

import peregrine_rt as pr
from peregrine_rt.testing import open_client


class Api:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            await pr.upgrade(request, response)
        else:
            response.json({"items": [f"item {i}" for i in range(100)]})

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


# [own]
class ServerTiming(pr.Middleware):
    """Tells the browser's developer tools how long the app took."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        started = time.perf_counter()
        await self.app.handle(request, response)
        if not response.started:  # a streamed head is already sent
            elapsed = (time.perf_counter() - started) * 1000
            response.headers["server-timing"] = f"app;dur={elapsed:.1f}"


# [/own]

# [stack]
app = pr.Compress(  # outermost: compresses what the others left
    pr.CORS(  # answers preflights before anything below runs
        ServerTiming(Api),  # a class is instantiated once, here
        allow_origins=["http://localhost:5173"],
    ),
)
server = pr.Server(app)  # checked as Compress(CORS(ServerTiming(Api))): WebSockets included
# [/stack]


async def test_the_stack_answers_with_every_layer() -> None:
    async with open_client(app) as client:
        response = await client.get(
            "/", headers={"Origin": "http://localhost:5173", "Accept-Encoding": "gzip"}
        )
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert response.headers["server-timing"].startswith("app;dur=")
        assert gzip.decompress(response.content).startswith(b'{"items":["item 0"')


async def test_websockets_pass_through_the_stack() -> None:
    assert server.spec.name == "Compress(CORS(ServerTiming(Api)))"
    async with open_client(server) as client, client.websocket("/ws") as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"
