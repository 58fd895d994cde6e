"""Regressions found by a review of the send path, the receive path and the limits.

Each test failed before its fix:

* min_rate dropped a steady reader of a StreamTransport (TLS, memory streams):
  a whole send_all counted as one stall, its bytes credited only at the end;
* a WebSocket send cancelled mid-frame made the socket's own reader raise
  ClosedResourceError, logged as the user's callback failing;
* a message over the limit while a callback waited in ws.ping() was read on
  without bound (the reader stopped only at a close);
* the close policy on a compressed socket dropped deliveries that a kept
  send() frame was deflated against: the peer inflated garbage;
* a publish cancelled between fan-out batches reached only the first batches;
* max_connections_per_ip did not apply to serve_listeners() and handle_stream().
"""

from __future__ import annotations

import logging
import os
import struct

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt import Hub
from peregrine_rt.testing import wait_until
from tests.integration.conftest import Reader, get, open_server
from tests.integration.ws_helpers import (
    OP_CLOSE,
    OP_PING,
    Close,
    WSClient,
    close_payload,
    frame,
    read_server_frame,
)

BODY = 40_000


class Big:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.body = b"b" * BODY


class Throttled(trio.abc.Stream):
    """A link that carries 10 KB/s steadily (1 KiB every 0.1 s), as TLS over a modest line."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        for i in range(0, len(data), 1024):
            await self.inner.send_all(data[i : i + 1024])
            await trio.sleep(0.1)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_steady_reader_is_not_dropped_by_min_rate(autojump_clock: trio.abc.Clock) -> None:
    # 40 kB at 10 kB/s takes 4 s; min_rate=1000 B/s with 1 s grace allows 1 + 40 = 41 s.
    async with open_server(Big, min_rate=1000, min_rate_grace=1.0, guard=60) as h:
        client, server_side = trio.testing.memory_stream_pair()
        h.streams.append(client)
        h.nursery.start_soon(h.server.handle_stream, Throttled(server_side), None)
        await client.send_all(get("/"))
        response = await Reader(client).response()
        assert len(response.body) == BODY


class KeepAll:
    def __init__(self) -> None:
        self.sockets: list[pr.WebSocket] = []
        self.messages: list[object] = []
        self.closed: list[tuple[int, str]] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.sockets.append(ws)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        self.messages.append(message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closed.append((code, reason))


async def test_an_interrupted_send_is_not_reported_as_a_callback_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = KeepAll()
    async with open_server(app, transport="tcp") as h:
        stream = await h.connect()
        client = await WSClient.open(stream)
        await client.send("hello")  # the reader's next wait is receive_some(wait_first=True)
        await wait_until(lambda: app.messages)
        await trio.testing.wait_all_tasks_blocked()
        ws = app.sockets[0]
        with caplog.at_level(logging.ERROR, logger="peregrine_rt.error"):
            with trio.move_on_after(0.5):
                await ws.send(b"x" * (32 << 20))  # the client never reads: cancelled mid-frame
            await wait_until(lambda: app.closed)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert app.closed == [(1006, "a send was interrupted")]
        assert not errors, [(r.getMessage(), r.exc_info and r.exc_info[0]) for r in errors]


class Keep:
    def __init__(self) -> None:
        self.sockets: list[pr.WebSocket] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        self.sockets.append(await pr.upgrade(request, response))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass


async def test_close_policy_on_a_compressed_socket_keeps_the_stream_inflatable() -> None:
    app = Keep()
    async with open_server(
        app, transport="tcp", ws_compression=True, ws_outbox_size=256 << 10, ws_ping_interval=None
    ) as h:
        stream = await h.connect()
        client = await WSClient.open(stream, compression=True)
        await wait_until(lambda: app.sockets)
        ws = app.sockets[0]
        sent: list[bytes] = []
        # The client does not read: fill the kernel's buffers, then the outbox.
        last = b""
        while ws.buffered_amount == 0:
            last = os.urandom(8192)
            assert ws.deliver(last)
            sent.append(last)
            await trio.testing.wait_all_tasks_blocked()  # the writer wrote all it could
        for _ in range(3):  # whole deliveries queued behind the frame begun: droppable
            last = os.urandom(8192)
            assert ws.deliver(last)
        echo = b"SEND:" + last  # deflated as back-references to `last`
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                try:
                    await ws.send(echo)
                except pr.ConnectionClosed:
                    pass

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            while ws.deliver(os.urandom(8192)):  # until the policy closes it (1008)
                pass
            assert ws.close_code == 1008
            # Now read everything the server wrote.
            received: list[bytes | str] = []
            with trio.fail_after(10):
                while True:
                    item = await client.receive()
                    if isinstance(item, Close):
                        break
                    received.append(item)
            nursery.cancel_scope.cancel()
        assert item.code == 1008, (item, len(received))
        tail = received[-1]
        assert echo in received, (
            f"last message before the close: {len(tail)} bytes {tail[:12]!r}, want {echo[:12]!r}"
        )


class Sink:
    def __init__(self) -> None:
        self.got: list[str | bytes] = []

    def deliver(self, message: str | bytes) -> bool:
        self.got.append(message)
        return True


async def test_a_cancelled_publish_is_all_or_nothing() -> None:
    hub = Hub()
    sinks = [Sink() for _ in range(1500)]
    for sink in sinks:
        hub.subscribe(sink, "room")
    with trio.CancelScope() as scope:
        scope.cancel()  # e.g. the publisher's connection timed out
        await hub.publish("room", "hello")
    got = sum(1 for sink in sinks if sink.got)
    assert got in (0, len(sinks)), f"{got} of {len(sinks)} subscribers got the message"


class Hold:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("ok\n")


async def test_per_ip_cap_applies_to_serve_listeners() -> None:
    server = pr.Server(Hold, max_connections_per_ip=1)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve_listeners, listeners)
            first = await trio.open_tcp_stream("127.0.0.1", port)
            await wait_until(lambda: len(server.connections) == 1)
            second = await trio.open_tcp_stream("127.0.0.1", port)
            await second.send_all(get("/"))
            response = await Reader(second).response()
            await first.aclose()
            await second.aclose()
            await server.aclose()
    assert response.status == 503


class Pinger:
    def __init__(self) -> None:
        self.sockets: list[pr.WebSocket] = []
        self.closed: list[tuple[int, str]] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        self.sockets.append(await pr.upgrade(request, response, max_message_size=1000))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.ping()  # from the callback: the reader task reads on inside ping()

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closed.append((code, reason))


async def test_an_oversized_frame_fails_the_socket_while_a_callback_pings() -> None:
    app = Pinger()
    async with open_server(app, ws_ping_interval=None) as h:
        stream = await h.connect()
        client = await WSClient.open(stream, auto_pong=False)
        await client.send("go")
        opcode, _, _ = await read_server_frame(stream)
        assert opcode == OP_PING  # the callback is now inside ping()
        key = os.urandom(4)
        # a 100 MB binary frame, far over max_message_size=1000; up to 2 MB of it is sent
        try:
            await stream.send_all(struct.pack("!BBQ", 0x82, 0x80 | 127, 100 << 20) + key)
            for _ in range(32):
                await stream.send_all(b"\0" * 65536)
        except trio.BrokenResourceError:
            pass  # the server failed the connection: it does not read the rest
        await wait_until(lambda: app.closed)
        assert app.closed == [(1009, "message over 1000 bytes")]


class PingOnce:
    """Pings from on_message (the reader reads on inside ping()) and notes how that ended."""

    def __init__(self) -> None:
        self.pings: list[str] = []
        self.closed: list[tuple[int, str]] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response, max_message_size=1000, compression=False)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        try:
            await ws.ping(b"p1")
            self.pings.append("answered")
        except pr.ConnectionClosed as exc:
            self.pings.append(f"closed {exc.code}")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closed.append((code, reason))


@pytest.mark.parametrize(
    ("behind", "code"),
    [
        (frame(0x3, b"zz"), 1002),  # a reserved opcode: a protocol error
        (frame(OP_CLOSE, close_payload(1000, "bye")), 1000),  # the peer's close
        (frame(0x2, length=5000), 1009),  # over max_message_size (its header alone)
    ],
    ids=["protocol-error", "close", "too-big"],
)
async def test_a_ping_in_a_callback_does_not_read_past_what_ends_the_socket(
    behind: bytes, code: int
) -> None:
    """What came behind the message in the same read ends the socket at once.

    Before, ping() read on past a protocol error (or the peer's close) that
    waited in the backlog, and waited for a pong that could not come: the
    socket hung in its callback until the peer left.
    """
    app = PingOnce()
    async with open_server(app, ws_ping_interval=None) as h:
        stream = await h.connect()
        client = await WSClient.open(stream, auto_pong=False)
        await stream.send_all(frame(0x1, b"a") + behind)
        with trio.fail_after(5):
            await wait_until(lambda: app.closed)
            close = await client.receive_close_unanswered()
    assert app.pings == [f"closed {code}"]
    assert [c for c, _ in app.closed] == [code]
    assert close.code == code


class PingOnOpen:
    def __init__(self) -> None:
        self.rtts: list[float] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.rtts.append(await ws.ping())  # the reader task: nobody else reads yet

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


async def test_a_ping_in_on_open_reads_its_pong() -> None:
    """Before, ping() in on_open waited for a pong nobody read (the reader was not noted yet)."""
    app = PingOnOpen()
    async with open_server(app, ws_ping_interval=None) as h:
        stream = await h.connect()
        client = await WSClient.open(stream)  # answers pings
        with trio.fail_after(5):
            await client.send("after the ping")
            assert await client.receive_message() == "after the ping"
    assert len(app.rtts) == 1


async def test_an_end_a_callback_s_ping_reads_itself_ends_the_connection_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A protocol error read inside ping() (in on_message) is answered, and the connection
    is dropped then, not after ``ws_close_timeout`` (wsproto reads nothing after it)."""
    app = PingOnce()
    async with open_server(app, ws_ping_interval=None, ws_close_timeout=30.0) as h:
        stream = await h.connect()
        client = await WSClient.open(stream, auto_pong=False)
        await client.send("go")
        opcode, _, _ = await read_server_frame(stream)
        assert opcode == OP_PING  # the callback is now inside ping(), reading
        began = trio.current_time()
        await stream.send_all(frame(0x3, b"zz"))  # a reserved opcode: a protocol error
        await wait_until(lambda: app.closed)
        assert trio.current_time() - began < 1.0  # not the 30 s close timeout
    assert app.pings == ["closed 1002"]
    assert [c for c, _ in app.closed] == [1002]
