"""The in-memory hub and the per-socket outbox: fan-out, order, unsubscribe, slow subscribers."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt import _hub
from peregrine_rt.testing import Client, open_client, open_server, wait_until

from .ws_helpers import OP_CLOSE, OP_TEXT, handshake, new_key


class Topics:
    """``/ws/<topic>`` subscribes; a message on it is published to its topic.

    ``POST /publish/<topic>`` publishes the body; ``GET /count/<topic>`` counts.
    ``/ws-mixed/<topic>`` answers each message with a direct ``send`` around a
    publish, to check that both keep their order.
    """

    def __init__(self) -> None:
        self.closes: list[tuple[str, int]] = []
        self.opened = 0

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        kind, _, topic = request.path.strip("/").partition("/")
        if kind in ("ws", "ws-mixed"):
            ws = await pr.upgrade(request, response)
            ws.state["topic"] = topic
            ws.state["mixed"] = kind == "ws-mixed"
            ws.hub.subscribe(ws, topic)
        elif kind == "publish":
            body = (await request.body()).decode()
            response.json({"delivered": await request.hub.publish(topic, body)})
        elif kind == "count":
            response.json({"count": request.hub.count(topic), "topics": request.hub.topics()})
        else:
            response.status = 404

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.opened += 1

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if ws.state["mixed"]:
            await ws.send(f"before {message!s}")
            await ws.hub.publish(ws.state["topic"], f"published {message!s}")
            await ws.send(f"after {message!s}")
        else:
            await ws.hub.publish(ws.state["topic"], message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closes.append((ws.state["topic"], code))


async def count(client: Client, topic: str) -> int:
    return int((await client.get(f"/count/{topic}")).json()["count"])


async def test_a_publish_reaches_every_subscriber_once() -> None:
    async with (
        open_client(Topics) as client,
        client.websocket("/ws/news") as a,
        client.websocket("/ws/news") as b,
        client.websocket("/ws/sport") as c,
    ):
        reply = await client.post("/publish/news", content=b"extra!")
        assert reply.json() == {"delivered": 2}
        assert await a.receive() == "extra!"
        assert await b.receive() == "extra!"
        await a.assert_no_message()
        await b.assert_no_message()
        await c.assert_no_message()


async def test_binary_and_text_keep_their_type() -> None:
    async with (
        open_client(Topics) as client,
        client.websocket("/ws/t") as a,
        client.websocket("/ws/t") as b,
    ):
        await a.send(b"\x00\xffbytes")
        assert await b.receive() == b"\x00\xffbytes"
        await a.send("héllo")
        assert await b.receive() == "héllo"


async def test_order_per_publisher_is_kept() -> None:
    async with (
        open_client(Topics) as client,
        client.websocket("/ws/o") as a,
        client.websocket("/ws/o") as b,
    ):
        for i in range(300):
            await a.send(str(i))
        expected = [str(i) for i in range(300)]
        assert [await b.receive() for _ in range(300)] == expected
        assert [await a.receive() for _ in range(300)] == expected


async def test_direct_sends_and_deliveries_keep_call_order() -> None:
    async with open_client(Topics) as client, client.websocket("/ws-mixed/m") as a:
        for i in range(20):
            await a.send(str(i))
        got = [await a.receive() for _ in range(60)]
        assert got == [f"{k} {i}" for i in range(20) for k in ("before", "published", "after")]


async def test_subscribers_leave_when_they_close() -> None:
    async with open_client(Topics) as client:
        async with client.websocket("/ws/room"):
            async with client.websocket("/ws/room"):
                assert await count(client, "room") == 2
            assert await count(client, "room") == 1
        assert await count(client, "room") == 0
        assert (await client.get("/count/room")).json()["topics"] == []
        assert (await client.post("/publish/room", content=b"x")).json() == {"delivered": 0}


async def test_patterns_receive_matching_topics() -> None:
    async with (
        open_client(Topics) as client,
        client.websocket("/ws/room.*") as every_room,
        client.websocket("/ws/room.lobby") as lobby,
        client.websocket("/ws/other") as other,
    ):
        assert (await client.post("/publish/room.lobby", content=b"1")).json()["delivered"] == 2
        assert (await client.post("/publish/room.42", content=b"2")).json()["delivered"] == 1
        assert [await every_room.receive(), await every_room.receive()] == ["1", "2"]
        assert await lobby.receive() == "1"
        await other.assert_no_message()
        await lobby.assert_no_message()


def test_hub_api_without_a_server() -> None:
    hub = pr.Hub()

    class Sink:
        def __init__(self) -> None:
            self.got: list[str | bytes] = []

        def deliver(self, message: str | bytes) -> bool:
            self.got.append(message)
            return True

    a, b = Sink(), Sink()
    hub.subscribe(a, "x")
    hub.subscribe(a, "x")  # twice is once
    hub.subscribe(b, "x")
    hub.subscribe(b, "y")
    assert hub.count("x") == 2
    assert hub.topics() == ["x", "y"]
    assert hub.topics(b) == ["x", "y"]
    assert hub.publish_local("x", "m") == 2
    assert a.got == ["m"] and b.got == ["m"]
    hub.unsubscribe(b)
    assert hub.topics() == ["x"]
    assert hub.publish_local("y", "gone") == 0
    with pytest.raises(TypeError, match="messages are str or bytes"):
        hub.publish_local("x", {"not": "encoded"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topics are str"):
        hub.subscribe(a, b"x")  # type: ignore[arg-type]


async def test_a_publish_encodes_the_frame_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = _hub.encode_frame

    def counting(message: str | bytes) -> bytes:
        calls.append(message)
        return real(message)

    monkeypatch.setattr(_hub, "encode_frame", counting)
    async with (
        open_client(Topics) as client,
        client.websocket("/ws/e") as a,
        client.websocket("/ws/e") as b,
        client.websocket("/ws/e") as c,
    ):
        assert (await client.post("/publish/e", content=b"once")).json()["delivered"] == 3
        assert [await ws.receive() for ws in (a, b, c)] == ["once"] * 3
    assert calls == ["once"]


async def test_compressed_subscribers_get_their_own_frames() -> None:
    async with (
        open_client(Topics, ws_compression=True) as client,
        client.websocket("/ws/z", compression=True) as deflated,
        client.websocket("/ws/z") as plain,
    ):
        for i in range(50):
            text = f"{i} " + "compressible " * 20
            assert (await client.post("/publish/z", content=text.encode())).json() == {
                "delivered": 2
            }
            assert await deflated.receive() == text
            assert await plain.receive() == text


async def test_broadcast_skips_closed_sockets() -> None:
    class Room:
        def __init__(self) -> None:
            self.members: list[pr.WebSocket] = []
            self.counts: list[int] = []

        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await pr.upgrade(request, response)

        async def on_open(self, ws: pr.WebSocket) -> None:
            self.members.append(ws)

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
            self.counts.append(pr.broadcast(self.members, message))

    async with open_client(Room) as client:
        async with client.websocket("/") as a:
            async with client.websocket("/") as b:
                await a.send("both")
                assert await b.receive() == "both"
            await a.send("one")
            assert [await a.receive(), await a.receive()] == ["both", "one"]
        assert client.app.counts == [2, 1]


# -- slow subscribers, over real sockets --------------------------------------------------


async def open_silent_subscriber(port: int, path: str) -> trio.SocketStream:
    """A WebSocket client that completes the handshake, then never reads."""
    sock = trio.socket.socket()
    # Small from the start (before connect), so that the window is negotiated small.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(handshake(path, key=new_key()))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return stream


class FrameReader:
    """Reads the server's frames one by one from a stream (several may come in one read)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _need(self, n: int) -> None:
        while len(self.buf) < n:
            data = await self.stream.receive_some(65536)
            assert data, "EOF inside a frame"
            self.buf += data

    async def frame(self) -> tuple[int, bytes]:
        await self._need(2)
        n, offset = self.buf[1] & 0x7F, 2
        if n == 126:
            await self._need(4)
            n, offset = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            await self._need(10)
            n, offset = int.from_bytes(self.buf[2:10], "big"), 10
        await self._need(offset + n)
        opcode, payload = self.buf[0] & 0x0F, bytes(self.buf[offset : offset + n])
        del self.buf[: offset + n]
        return opcode, payload


def server_socket(server: pr.Server, topic: str, index: int = 0) -> pr.WebSocket:
    return server.hub.subscribers(topic)[index]  # type: ignore[no-any-return]


@pytest.mark.parametrize("policy", ["close", "drop-oldest"])
async def test_a_slow_subscriber_never_delays_the_others(policy: str) -> None:
    limit = 256 * 1024
    server = pr.Server(Topics(), ws_outbox_size=limit, ws_slow_policy=policy, ws_close_timeout=0.5)
    piece = "x" * 60_000
    async with open_server(server) as live, open_client(live.url) as client:
        slow = await open_silent_subscriber(server.port, "/ws/feed")
        await wait_until(lambda: server.hub.count("feed") >= 1)
        async with client.websocket("/ws/feed") as fast:
            slow_ws = server_socket(server, "feed", 0)
            worst = 0
            with trio.fail_after(60):
                for i in range(200):
                    await server.hub.publish("feed", f"{i:04d} {piece}")
                    worst = max(worst, slow_ws.buffered_amount)
                    # Every message reaches the fast reader, whatever the slow one does.
                    assert (await fast.receive()).startswith(f"{i:04d} ")
            # The outbox never held more than its bound (one frame past it at most,
            # the one that found it full, for drop-oldest).
            assert worst <= limit + len(piece) + 16
            if policy == "close":
                assert slow_ws.close_code == 1008
                assert slow_ws.close_reason == "slow consumer: outbox full"
                # It is dropped after ws_close_timeout; the fast one carries on.
                await wait_until(lambda: ("feed", 1008) in server.handler_instance.closes)
                assert server.hub.count("feed") == 1
                await server.hub.publish("feed", "still here")
                assert await fast.receive() == "still here"
            else:
                assert slow_ws.close_code is None
                await server.hub.publish("feed", "last")
                assert await fast.receive() == "last"
                # The slow reader now reads: some messages were dropped, the rest
                # arrive whole and in order, and the newest is there.
                seen: list[int] = []
                reader = FrameReader(slow)
                with trio.fail_after(30):
                    while True:
                        opcode, payload = await reader.frame()
                        assert opcode == OP_TEXT
                        text = payload.decode()
                        if text == "last":
                            break
                        seen.append(int(text[:4]))
                assert seen == sorted(seen)
                assert len(seen) < 200
                assert seen[-1] == 199
        await slow.aclose()


async def test_a_subscriber_that_closes_mid_delivery_is_skipped() -> None:
    server = pr.Server(Topics())
    async with open_server(server) as live, open_client(live.url) as client:
        gone = await open_silent_subscriber(server.port, "/ws/t")
        async with client.websocket("/ws/t") as stays:
            await wait_until(lambda: server.hub.count("t") >= 2)
            await gone.aclose()
            for i in range(50):
                await server.hub.publish("t", json.dumps(i))
                assert await stays.receive_json() == i
            await wait_until(lambda: server.hub.count("t") == 1)
        assert ("t", 1006) in server.handler_instance.closes


async def test_close_frame_follows_queued_deliveries() -> None:
    """A close started while deliveries are queued is sent after them."""
    server = pr.Server(Topics(), ws_outbox_size=64 << 20)
    async with open_server(server):
        stream = await open_silent_subscriber(server.port, "/ws/q")
        await wait_until(lambda: server.hub.count("q") >= 1)
        ws = server_socket(server, "q")
        for i in range(200):  # more than the kernel's socket buffers hold
            await server.hub.publish("q", f"{i} " + "y" * 60_000)
        assert ws._outbox  # the reader is silent: deliveries are queued
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.close, 1000, "bye")
            got: list[int] = []
            reader = FrameReader(stream)
            with trio.fail_after(30):
                while True:
                    opcode, payload = await reader.frame()
                    if opcode == OP_CLOSE:
                        break
                    got.append(int(payload.split(b" ")[0]))
            assert got == list(range(200))
        await stream.aclose()


# -- a sender waiting behind queued deliveries -------------------------------------------


def _reset_after_first_frame(port: int, size: int, events: list[str]) -> None:
    """A blocking client: handshake, one message, read the first frame, then reset."""
    import struct as struct_

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.connect(("127.0.0.1", port))
    sock.sendall(handshake("/ws/x", key=new_key()))
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    got = len(buf.split(b"\r\n\r\n", 1)[1])
    sock.sendall(b"\x81\x81\x00\x00\x00\x00x")  # a masked text message "x"
    sock.settimeout(10)
    need = 10 + size + 1000  # the first frame and a bit of the second
    while got < need:
        data = sock.recv(min(65536, need - got))
        assert data, "EOF"
        got += len(data)
    events.append("client reset")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct_.pack("ii", 1, 0))
    sock.close()


async def test_a_sender_queued_behind_a_delivery_learns_that_the_peer_left() -> None:
    size = 4 << 20
    events: list[str] = []

    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await pr.upgrade(request, response)

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
            sock = ws._conn.transport.sock  # type: ignore[attr-defined]  # a plain socket here
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
            ws.deliver(b"a" * size)  # partly written: the rest goes to a writer task
            try:
                await ws.send(b"b" * size)  # queued behind it
                events.append("send returned")
            except pr.ConnectionClosed as exc:
                events.append(f"send raised {exc.code}")

        async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
            events.append(f"on_close {code}")

    server = pr.Server(App(), ws_ping_interval=None)  # no heartbeat to end it otherwise
    async with open_server(server):
        await trio.to_thread.run_sync(_reset_after_first_frame, server.port, size, events)
        await wait_until(lambda: "on_close 1006" in events)
        assert events == ["client reset", "send raised 1006", "on_close 1006"]
        assert not server.websockets


async def test_deliveries_queued_before_a_send_leave_first() -> None:
    """A send waits its turn behind queued deliveries, then returns with the queue empty."""
    done: list[int] = []

    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await pr.upgrade(request, response)

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
            ws.deliver("queued 1")
            ws.deliver("queued 2")
            await ws.send("direct")
            done.append(len(ws._outbox))

    async with open_client(App) as client, client.websocket("/") as ws:
        await ws.send("go")
        assert [await ws.receive() for _ in range(3)] == ["queued 1", "queued 2", "direct"]
        await wait_until(lambda: done)  # the send returns once its frame is written
        assert done == [0]


def test_a_subscriber_may_unsubscribe_during_delivery() -> None:
    hub = pr.Hub()

    class Once:
        def __init__(self) -> None:
            self.got: list[str | bytes] = []

        def deliver(self, message: str | bytes) -> bool:
            self.got.append(message)
            hub.unsubscribe(self)  # one message is enough
            return True

    subscribers = [Once() for _ in range(5)]
    for sub in subscribers:
        hub.subscribe(sub, "t")
    assert hub.publish_local("t", "first") == 5
    assert hub.publish_local("t", "second") == 0
    assert [s.got for s in subscribers] == [["first"]] * 5
    assert hub.topics() == []


async def test_a_closed_socket_cannot_subscribe() -> None:
    kept: list[pr.WebSocket] = []

    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await pr.upgrade(request, response)

        async def on_open(self, ws: pr.WebSocket) -> None:
            kept.append(ws)

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None: ...

    async with open_client(App) as client:
        async with client.websocket("/"):
            pass
        with pytest.raises(pr.ConnectionClosed):
            client.server.hub.subscribe(kept[0], "late")
        assert client.server.hub.topics() == []


# -- a burst of publishes: one send() per subscriber ---------------------------------------


class CountingSocket:
    """Wraps a server-side socket and counts the send() calls deliveries make."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends: list[int] = []

    def send(self, data: bytes, *flags: int) -> int:
        sent = self._sock.send(data, *flags)
        self.sends.append(len(data))
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Burst:
    """``/sub`` subscribes (its socket's sends are counted); a message "SIZE COUNT"
    on ``/pub`` publishes COUNT numbered messages of SIZE bytes in a row."""

    def __init__(self) -> None:
        self.counters: list[CountingSocket] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        ws = await pr.upgrade(request, response)
        if request.path == "/sub":
            transport = ws._conn.transport  # a SocketTransport: wrap its socket
            counter = CountingSocket(transport.sock)  # type: ignore[attr-defined]
            transport.sock = counter  # type: ignore[attr-defined]
            self.counters.append(counter)
            ws.hub.subscribe(ws, "burst")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        size, count = (int(x) for x in str(message).split())
        for i in range(count):
            await ws.hub.publish("burst", f"{i:05d}".ljust(size, "."))


async def read_messages(reader: FrameReader, count: int) -> list[str]:
    got = []
    with trio.fail_after(20):
        while len(got) < count:
            opcode, payload = await reader.frame()
            assert opcode == OP_TEXT
            got.append(payload.decode())
    return got


async def test_a_burst_of_publishes_is_one_send_per_subscriber() -> None:
    server = pr.Server(Burst())
    async with open_server(server), open_client(server.url) as client:
        sub = await open_silent_subscriber(server.port, "/sub")
        await wait_until(lambda: server.hub.count("burst") >= 1)
        async with client.websocket("/pub") as pub:
            await pub.send("32 16")  # 16 (PUBLISH_BURST) messages of 32 bytes: no yield between
            got = await read_messages(FrameReader(sub), 16)
        assert [m[:5] for m in got] == [f"{i:05d}" for i in range(16)]
        [counter] = server.handler_instance.counters
        assert counter.sends == [16 * (2 + 32)]  # sixteen frames, one send()
        await sub.aclose()


async def test_a_burst_past_the_cork_limit_is_written_as_it_grows() -> None:
    # ws_outbox_size 64 KiB: the cork limit is 32 KiB, and a reader that keeps up
    # must never meet the slow-consumer policy however long the burst.
    server = pr.Server(Burst(), ws_outbox_size=64 * 1024)
    async with (
        open_server(server),
        open_client(server.url) as client,
        client.websocket("/pub") as pub,
        client.websocket("/sub") as fast,
    ):
        await wait_until(lambda: server.hub.count("burst") >= 1)
        await pub.send("4000 100")  # 16 messages between yields: 64 KB, past the limit
        got = [await fast.receive() for _ in range(100)]
        assert [str(m)[:5] for m in got] == [f"{i:05d}" for i in range(100)]
        [counter] = server.handler_instance.counters
        assert 1 < len(counter.sends) < 100
        assert max(counter.sends) <= 32 * 1024
        assert max(counter.sends) > 4004  # frames were gathered, up to the limit
