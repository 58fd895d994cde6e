"""Tests of examples/live.py: one hub feed reached by WebSockets, SSE and HTTP."""

from __future__ import annotations

from examples.live import Live
from peregrine_rt.testing import Client, open_client, wait_until


async def wait_subscribers(client: Client, topic: str, n: int) -> None:
    await wait_until(lambda: client.server.hub.count(f"live:{topic}") >= n)


async def test_websocket_subscribe_publish_unsubscribe() -> None:
    async with (
        open_client(Live) as client,
        client.websocket("/ws") as a,
        client.websocket("/ws") as b,
    ):
        await a.send_json({"subscribe": "prices"})
        await b.send_json({"subscribe": "prices"})
        await wait_subscribers(client, "prices", 2)
        await a.send_json({"publish": "prices", "data": {"eur": 1.08}})
        update = {"topic": "prices", "data": {"eur": 1.08}}
        assert await a.receive_json() == update
        assert await b.receive_json() == update
        await b.send_json({"unsubscribe": "prices"})
        await wait_subscribers(client, "prices", 1)
        await wait_until(lambda: client.server.hub.count("live:prices") == 1)
        reply = await client.post("/publish/prices", json=[1, 2])
        assert reply.json() == {"delivered": 1}
        assert await a.receive_json() == {"topic": "prices", "data": [1, 2]}
        await b.assert_no_message()


async def test_sse_gets_the_same_feed() -> None:
    async with open_client(Live) as client, client.stream("GET", "/events/news") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        await wait_subscribers(client, "news", 1)
        async with client.websocket("/ws") as ws:
            await ws.send_json({"publish": "news", "data": "hello"})
        chunk = await events.next_chunk()
        assert chunk == b'event: update\ndata: {"topic":"news","data":"hello"}\n\n'


async def test_bad_requests() -> None:
    async with open_client(Live) as client, client.websocket("/ws") as ws:
        assert (await client.post("/publish/x", content=b"{nope")).status == 400
        assert (await client.get("/publish/x")).status == 404
        assert (await client.get("/elsewhere")).status == 404
        await ws.send_json(["not", "an", "object"])
        assert await ws.receive_json() == {"error": "send a JSON object"}
        await ws.send_json({"subscribe": "*"})  # would be a pattern: every topic
        assert await ws.receive_json() == {"error": "invalid topic name"}
        assert client.server.hub.topics() == []
        assert (await client.get("/events/live*")).status == 400
        await ws.send_json({"shout": "x"})
        assert await ws.receive_json() == {"error": "unknown command"}
        await ws.send("not json")
        close = await ws.receive_close()
        assert close.code == 1007
