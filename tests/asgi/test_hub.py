"""peregrine_rt.asgi.hub(scope): the serving server's hub, from any ASGI endpoint."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.asgi import ASGI, hub
from peregrine_rt.testing import open_client, wait_until

Scope = dict[str, Any]


class Queue:
    """A hub subscriber that an ASGI WebSocket endpoint reads from (a bounded channel)."""

    def __init__(self) -> None:
        self.inbox, self.outlet = trio.open_memory_channel[str | bytes](16)

    def deliver(self, message: str | bytes) -> bool:
        try:
            self.inbox.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True


class NewsApp:
    """``POST /publish`` publishes its body on "news"; the WebSocket at ``/news`` relays it."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await self._relay(scope, receive, send)
            return
        message = await receive()
        delivered = 0
        if scope["path"] == "/publish":
            delivered = await hub(scope).publish("news", message["body"].decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(delivered).encode()})

    async def _relay(self, scope: Scope, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        queue = Queue()
        the_hub = hub(scope)
        the_hub.subscribe(queue, "news")
        await send({"type": "websocket.accept"})
        try:
            async with trio.open_nursery() as nursery:

                async def until_disconnect() -> None:
                    while (await receive())["type"] != "websocket.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_disconnect)
                async for news in queue.outlet:
                    await send({"type": "websocket.send", "text": news})
        finally:
            the_hub.unsubscribe(queue)


async def test_an_http_endpoint_publishes_to_a_websocket_endpoint() -> None:
    app = NewsApp()
    async with open_client(ASGI(app, lifespan="off")) as client:
        assert client.server is not None
        server_hub = client.server.hub
        async with client.websocket("/news") as ws:
            await wait_until(lambda: server_hub.count("news") == 1)
            response = await client.post("/publish", content=b"extra, extra")
            assert response.text == "1"
            assert await ws.receive() == "extra, extra"
        await wait_until(lambda: server_hub.count("news") == 0)
    http_scope, ws_scope = app.scopes[1], app.scopes[0]
    assert hub(http_scope) is server_hub
    assert hub(ws_scope) is server_hub
    assert "websocket.http.response" in ws_scope["extensions"]
    assert "websocket.http.response" not in http_scope["extensions"]


async def test_the_extensions_are_made_once_per_server() -> None:
    app = NewsApp()
    adapter = ASGI(app, lifespan="off")
    async with open_client(adapter) as client:
        await client.get("/a")
        await client.get("/b")
    async with open_client(adapter) as other:  # the same ASGI object, another server
        await other.get("/c")
    assert other.server is not None
    first, second, third = (scope["extensions"] for scope in app.scopes)
    assert first is second
    assert third is not first
    assert hub(app.scopes[2]) is other.server.hub
    assert hub(app.scopes[0]) is not hub(app.scopes[2])


async def test_a_mounted_app_reaches_the_servers_hub() -> None:
    app = NewsApp()
    router = pr.Router()
    router.mount("/api", ASGI(app, lifespan="off"))
    async with open_client(router) as client:
        await client.get("/api/x")
        assert client.server is not None
        assert hub(app.scopes[0]) is client.server.hub


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http"},
        {"type": "http", "extensions": None},
        {"type": "http", "extensions": {}},
        {"type": "http", "extensions": {"peregrine_rt": {}}},
    ],
)
def test_a_scope_from_another_server_is_a_lookup_error(scope: Scope) -> None:
    with pytest.raises(LookupError, match="not served by peregrine_rt"):
        hub(scope)
