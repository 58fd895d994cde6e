"""Server-Sent Events: the wire format, Last-Event-ID, keep-alive pings, hub topics."""

from __future__ import annotations

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt._sse import format_event
from peregrine_rt.testing import (
    ClientResponse,
    UnexpectedEvent,
    open_client,
    open_server,
    wait_until,
)


class Feed:
    """``/events`` streams three events; ``/topic/<name>`` relays a hub topic."""

    def __init__(self) -> None:
        self.ended = trio.Event()

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/events":
            async with response.sse(retry=2.5) as events:
                start = int(events.last_event_id or 0)
                for n in range(start + 1, start + 4):
                    await events.send({"n": n}, event="tick", id=str(n))
        elif request.path.startswith("/topic/"):
            try:
                async with response.sse(ping_interval=0.5) as events:
                    await events.comment("subscribed")
                    await events.forward(request.hub, request.path.removeprefix("/topic/"))
            finally:  # the client left: ending the body raises ClientDisconnected
                self.ended.set()
        elif request.path == "/publish":
            topic = request.query.get("topic", "news")
            delivered = await request.hub.publish(topic, (await request.body()).decode())
            response.json({"delivered": delivered})
        elif request.path == "/bad":
            async with response.sse() as events:
                await events.send("x", event="two\nlines")


async def read_events(response: ClientResponse, count: int) -> list[str]:
    """``count`` events (blocks ending in a blank line), comments included."""
    text = ""
    while text.count("\n\n") < count:
        chunk = await response.next_chunk()
        assert chunk is not None, f"the stream ended after {text!r}"
        text += chunk.decode()
    return text.split("\n\n")[:count]


def test_format_event_fields() -> None:
    assert format_event("a\nb\r\nc") == "data: a\ndata: b\ndata: c\n\n"
    assert format_event(event="e", id="1", retry=1.5) == "event: e\nid: 1\nretry: 1500\n\n"
    assert format_event([1, "é"]) == 'data: [1,"é"]\n\n'
    with pytest.raises(ValueError, match="line break"):
        format_event("x", id="1\n2")
    with pytest.raises(ValueError, match="NUL"):
        format_event("x", id="a\0")


async def test_events_stream_with_ids_and_retry() -> None:
    async with open_client(Feed) as client, client.stream("GET", "/events") as response:
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert await read_events(response, 4) == [
            "retry: 2500",
            'event: tick\nid: 1\ndata: {"n":1}',
            'event: tick\nid: 2\ndata: {"n":2}',
            'event: tick\nid: 3\ndata: {"n":3}',
        ]
        assert await response.next_chunk() is None  # leaving the block ended the stream


async def test_last_event_id_resumes() -> None:
    async with (
        open_client(Feed) as client,
        client.stream("GET", "/events", headers={"Last-Event-ID": "41"}) as response,
    ):
        events = await read_events(response, 4)
        assert events[1] == 'event: tick\nid: 42\ndata: {"n":42}'


async def test_hub_topic_reaches_sse_clients_and_pings_keep_it_alive() -> None:
    async with open_client(Feed) as client:
        async with client.stream("GET", "/topic/news") as response:
            assert await read_events(response, 1) == [": subscribed"]
            await wait_until(lambda: client.server.hub.count("news") >= 1)
            reply = await client.post("/publish?topic=news", content=b"line one\nline two")
            assert reply.json() == {"delivered": 1}
            assert await read_events(response, 1) == ["data: line one\ndata: line two"]
            # Quiet for longer than ping_interval: a comment line keeps it alive.
            assert await read_events(response, 1) == [": ping"]
        # The client left: the next ping fails, forward() returns, the topic is empty.
        with trio.fail_after(5):
            await client.app.ended.wait()
        assert client.server.hub.count("news") == 0


async def test_sse_and_websocket_subscribers_share_a_topic() -> None:
    class Both(Feed):
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            if request.path == "/ws":
                ws = await pr.upgrade(request, response)
                ws.hub.subscribe(ws, "news")
            else:
                await super().handle(request, response)

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
            await ws.hub.publish("news", message)

    async with (
        open_client(Both) as client,
        client.websocket("/ws") as ws,
        client.stream("GET", "/topic/news") as response,
    ):
        await read_events(response, 1)
        await wait_until(lambda: client.server.hub.count("news") >= 2)
        await ws.send("from the socket")
        assert await ws.receive() == "from the socket"
        assert await read_events(response, 1) == ["data: from the socket"]


async def test_an_invalid_field_ends_the_stream_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_client(Feed) as client, client.stream("GET", "/bad") as response:
        # The head is already sent: the error can only end the stream, early.
        assert response.status == 200
        with pytest.raises(UnexpectedEvent, match="incomplete chunked read"):
            await response.next_chunk()
    [record] = [r for r in caplog.records if r.name == "peregrine_rt.error"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)  # as itself, not in a group
    assert "cannot contain a line break" in str(record.exc_info[1])


def test_a_lone_cr_cannot_start_a_field() -> None:
    # Browsers end a line at a lone CR too: relayed text must not set event/id/retry.
    assert format_event("hi\revent: admin\rid: 999") == (
        "data: hi\ndata: event: admin\ndata: id: 999\n\n"
    )


class Cut:
    """``/sse`` is cut short by a cancel scope; ``/next`` is a plain request."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/sse":
            with trio.move_on_after(0.2):
                async with response.sse(ping_interval=None) as events:
                    await events.send("hello")
                    await trio.sleep(10)
        else:
            response.text("next\n")


async def raw_exchange(port: int, data: bytes, then: bytes = b"") -> bytes:
    """Send ``data`` (and ``then``), read until the server closes (bounded)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if then:
            try:
                await stream.send_all(then)
            except trio.BrokenResourceError:
                pass  # cut off while sending
        received = b""
        with trio.fail_after(10):
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass  # reset: the server closed with our bytes unread
    return received


async def test_a_stream_cut_short_closes_the_connection_instead_of_desyncing() -> None:
    server = pr.Server(Cut())
    async with open_server(server):
        pipelined = b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        received = await raw_exchange(server.port, pipelined)
    assert b"data: hello\n\n" in received
    # The body never got its last chunk, so the connection must end there: the
    # next response written inside the unfinished body would be read as events.
    assert b"next\n" not in received
    assert not received.endswith(b"0\r\n\r\n")


async def test_a_client_that_talks_while_it_listens_is_cut_off() -> None:
    server = pr.Server(Feed())
    async with open_server(server):
        flood = b"x" * 200_000
        received = await raw_exchange(
            server.port, b"GET /topic/t HTTP/1.1\r\nHost: x\r\n\r\n", flood
        )
    assert b": subscribed" in received
    assert server.hub.count("t") == 0
