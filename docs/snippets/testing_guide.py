"""The examples of docs/testing.rst, as tests of a small app.

The page shows the parts between the ``# [name]`` markers.
"""

from __future__ import annotations

import json

import pytest
import trio

import peregrine_rt as pr
from examples.counter import Counter
from examples.echo import Echo
from examples.rooms import Rooms
from peregrine_rt.testing import UnexpectedEvent, WebSocketRejected, open_client, open_server


class App:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/chat":
            await pr.upgrade(request, response, subprotocols=("v1",))
        elif request.path == "/events":
            async with response.stream(content_type="text/event-stream") as send:
                await send("data: hello\n\n")
                await send("data: again\n\n")
        elif request.path == "/items" and request.method == "POST":
            response.json(await request.json(), status=201)
        elif request.path in ("/login", "/me"):
            response.text(f"port {request.client[1]}")  # the connection's client port
        else:
            body = await request.body()
            response.json(
                {
                    "method": request.method,
                    "page": request.query.get("page"),
                    "token": request.headers.get("x-token"),
                    "body": len(body),
                }
            )

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if message == "hello":
            await ws.send(message)
        elif message == "bye":
            await ws.close(1000, "bye")
        elif json.loads(message) == {"op": "join"}:
            await ws.send(json.dumps({"ok": True}))


async def test_requests() -> None:
    # [requests]
    async with open_client(App, max_body_size=1024, ws_ping_interval=None) as client:
        response = await client.get("/items", params={"page": 2}, headers={"X-Token": "t"})
        response = await client.post("/items", json={"name": "x"})  # or data={...} for a form
        response = await client.put("/blob", content=b"...")  # bytes, str, or an
        response = await client.request("PROPFIND", "/")  # (async) iterable: chunked
        app = client.app  # your handler instance
    # [/requests]
    assert isinstance(app, App)
    assert response.json() == {"method": "PROPFIND", "page": None, "token": None, "body": 0}


async def test_connections() -> None:
    async with open_client(App) as client:
        # [connection]
        async with client.connection() as conn:
            login = await conn.get("/login")
            me = await conn.get("/me")  # same connection (a KeepAliveConnection)
        # [/connection]
        assert login.text == me.text  # one client port: one connection


async def test_streamed_response() -> None:
    async with open_client(App) as client:  # noqa: SIM117  (the page shows the inner block)
        # [stream]
        async with client.stream("GET", "/events") as response:
            assert response.headers["content-type"] == "text/event-stream"
            assert await response.next_chunk() == b"data: hello\n\n"
            async for line in response.aiter_lines():  # or aiter_bytes(), aiter_text(), aread()
                assert line in ("data: again", "")
        # [/stream]


async def test_websocket() -> None:
    async with open_client(App) as client:  # noqa: SIM117  (the page shows the inner block)
        # [websocket]
        async with client.websocket("/chat", subprotocols=["v1"]) as ws:
            assert ws.subprotocol == "v1"
            await ws.send("hello")  # str: text; bytes: binary
            assert await ws.receive() == "hello"
            await ws.send_json({"op": "join"})
            assert await ws.receive_json() == {"ok": True}
            await ws.send("bye")
            assert await ws.receive_close() == (1000, "bye")  # the server closed it
            assert (ws.close_code, ws.close_reason) == (1000, "bye")
        # [/websocket]


async def test_refused_handshake() -> None:
    async with open_client(App, ws_allowed_origins=("https://app.example",)) as client:
        # [rejected]
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/chat", headers={"Origin": "https://evil.example"}):
                pass
        assert refused.value.response.status == 403
        # [/rejected]


# [autojump]
async def test_idle_connections_are_closed(autojump_clock) -> None:
    async with open_client(App, keep_alive_timeout=5) as client, client.connection() as conn:
        await conn.get("/")
        await trio.sleep(10)
        with pytest.raises(UnexpectedEvent, match="closed the connection"):
            await conn.get("/")


# [/autojump]


async def test_real_sockets() -> None:
    # [server]
    async with open_server(Echo) as live:  # a LiveServer
        assert live.url == f"http://127.0.0.1:{live.port}"  # and live.ws_url: ws://...
        async with open_client(live.url) as client:  # the same client, over TCP
            assert (await client.get("/")).status == 200
        async with open_client(live.server) as client:  # in memory, to the same server
            assert (await client.get("/")).status == 200
    # [/server]


# [app-fixture]
@pytest.fixture
def peregrine_app():
    return Rooms


# [/app-fixture]


# [client-fixture]
async def test_rooms(peregrine_client):
    client = await peregrine_client()  # peregrine_app
    other = await peregrine_client(Counter, max_body_size=10)
    # [/client-fixture]
    assert isinstance(client.app, Rooms)
    assert (await other.get("/")).text == "1\n"
