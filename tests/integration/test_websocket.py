"""WebSockets through a running server: handshake, lifecycle, heartbeat, shutdown, sending.

The frame-level protocol (fragmentation, limits, malformed frames, compression)
is in ``test_websocket_protocol.py``.  The clients are in ``ws_helpers.py``.
"""

from __future__ import annotations

import logging
import socket
import struct
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import Ping, Pong

import peregrine_rt as pr
from examples.echo import Echo
from peregrine_rt.testing import ClientWebSocket, WebSocketRejected, open_client, wait_until
from peregrine_rt.testing import open_server as open_live_server

from .conftest import FAST_CONFIG, Reader, client_over, exchange, open_server
from .ws_helpers import (
    OP_TEXT,
    RFC_ACCEPT,
    RFC_KEY,
    Close,
    Recorder,
    WSClient,
    accept_for,
    connect_ws,
    frame,
    handshake,
    lockstep_connection,
    new_key,
    read_server_frame,
    valid_close_code,
)

# -- lifecycle ---------------------------------------------------------------------


async def test_peer_close_runs_callbacks_in_order_and_on_close_once(transport: str) -> None:
    rec = Recorder()
    async with client_over(rec, transport) as (client, _), client.websocket("/ws") as ws:
        for text in ("one", "two", "three"):
            await ws.send(text)
        await ws.send(b"\x00four")
        assert [await ws.receive() for _ in range(4)] == [
            "one",
            "two",
            "three",
            b"\x00four",
        ]
        answer = await ws.close(1000, "bye")
        assert answer == (1000, "bye")  # the server echoes the peer's close
        assert rec.closed.is_set()  # on_close has run when close() returns
        await trio.testing.wait_all_tasks_blocked()  # and nothing else follows
        (sock,) = rec.sockets
        assert rec.events == [
            ("open", sock),
            ("message", sock, "one"),
            ("message", sock, "two"),
            ("message", sock, "three"),
            ("message", sock, b"\x00four"),
            ("close", sock, 1000, "bye"),
        ]
        assert sock.close_code == 1000
        assert sock.close_reason == "bye"
        # Sending once closed: ConnectionClosedOK with the code and reason.
        (exc,) = rec.send_errors
        assert type(exc) is pr.ConnectionClosedOK
        assert (exc.code, exc.reason) == (1000, "bye")


# frame-level: a close frame without a status code
async def test_peer_close_with_error_code_and_no_code() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        assert await ws.close(4001, "custom") == Close(4001, "custom")
        ws2 = await connect_ws(h)
        await ws2.send_raw(frame(0x8, b""))  # a close frame without a status code
        assert await ws2.expect_close() == Close(1005, "")
        await wait_until(lambda: len(rec.closes()) >= 2)
    assert rec.closes() == [(4001, "custom"), (1005, "")]
    assert type(rec.send_errors[0]) is pr.ConnectionClosedError
    assert (rec.send_errors[0].code, rec.send_errors[0].reason) == (4001, "custom")


async def test_handler_close_completes_the_handshake(transport: str) -> None:
    rec = Recorder()
    async with client_over(rec, transport) as (client, _), client.websocket("/ws") as ws:
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.send("close 1008 go away")
        # The client answers the close; the server then ends the connection.
        assert await ws.receive_close() == (1008, "go away")
        with trio.fail_after(2):
            await rec.closed.wait()
        (sock,) = rec.sockets
        assert rec.names() == ["open", "message", "message", "close"]
        assert rec.closes() == [(1008, "go away")]
        assert sock.closed
        exc = rec.send_errors[0]
        assert type(exc) is pr.ConnectionClosedError
        assert (exc.code, exc.reason) == (1008, "go away")


async def test_handler_close_from_outside_a_callback() -> None:
    rec = Recorder()
    async with open_client(rec) as client, client.websocket("/ws") as ws:
        await rec.opened.wait()
        (sock,) = rec.sockets
        await sock.close()
        assert sock.closed
        with pytest.raises(pr.ConnectionClosedOK) as info:
            await sock.send("too late")
        assert info.value.code == 1000
        await sock.close()  # idempotent
        assert await ws.receive_close() == (1000, "")
        with trio.fail_after(2):
            await rec.closed.wait()
        assert rec.closes() == [(1000, "")]


# frame-level: reads the raw close frame the server sends, then drops the connection
async def test_handler_close_never_sends_a_forbidden_code() -> None:
    """RFC 6455 §7.4: 999, 1004, 1005, 1006, 1015, 2999, 5000… never go on the wire.

    ``ws.close()`` may refuse such a code (an exception: the server then closes
    with 1011) or replace it, but the close frame the peer gets must be valid,
    and ``on_close`` must report the code that was actually sent.
    """
    bad: list[str] = []
    for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
        rec = Recorder()
        async with open_server(rec, ws_ping_interval=None) as h:
            ws = await connect_ws(h)
            await ws.send(f"close {code} r")
            opcode, _, payload = await read_server_frame(ws.stream)
            assert opcode == 0x8
            sent = struct.unpack("!H", payload[:2])[0] if payload else None
            if sent is not None and not valid_close_code(sent):
                bad.append(f"close({code}) sent {sent}")
            await ws.abort()
            await rec.closed.wait()
            reported = rec.closes()[0][0]
            if sent is not None and reported != sent:
                bad.append(f"close({code}) sent {sent} but on_close got {reported}")
    assert not bad, bad


# frame-level: a peer that never answers the server's close frame
async def test_close_timeout_drops_a_peer_that_never_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    async with open_server(rec, ws_close_timeout=3.0, ws_ping_interval=None) as h:
        ws = await connect_ws(h)
        await ws.send("close 1000 done")
        assert await ws.receive_close_unanswered() == Close(1000, "done")
        start = trio.current_time()
        while not ws.eof:
            await ws._pump()
        waited = trio.current_time() - start
        assert 2.5 <= waited <= 4.5, waited
        with trio.fail_after(1):
            await rec.closed.wait()
        assert rec.closes() == [(1000, "done")]


# drops the connection without a close frame (the client always sends one)
async def test_dropped_connection_is_1006(transport: str) -> None:
    rec = Recorder()
    async with open_server(rec, transport=transport) as h:
        ws = await connect_ws(h)
        await ws.send("x")
        assert await ws.receive_message() == "x"
        await ws.abort()
        with trio.fail_after(2):
            await rec.closed.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert rec.names() == ["open", "message", "close"]
        assert rec.closes()[0][0] == 1006
        exc = rec.send_errors[0]
        assert type(exc) is pr.ConnectionClosedError
        assert exc.code == 1006
        assert rec.sockets[0].close_code == 1006


async def test_server_shutdown_sends_1001_and_runs_on_close(transport: str) -> None:
    rec = Recorder()
    async with (
        client_over(rec, transport, shutdown_grace=3.0) as (client, server),
        AsyncExitStack() as sockets,
    ):
        clients = [await sockets.enter_async_context(client.websocket("/ws")) for _ in range(3)]
        for ws in clients:
            await ws.send("hi")
            assert await ws.receive() == "hi"
        got: list[tuple[int, str]] = []

        async def client_side(ws: ClientWebSocket) -> None:
            got.append(await ws.receive_close())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for ws in clients:
                nursery.start_soon(client_side, ws)
            await server.aclose()
        # The clients answered at once: no need to wait for the grace.
        assert trio.current_time() - start < 2.0
        assert got == [(1001, "server shutting down")] * 3
        assert sorted(rec.closes()) == [(1001, "server shutting down")] * 3
        assert all(type(e) is pr.ConnectionClosedOK for e in rec.send_errors)


# frame-level: a peer that never answers the server's close frame
async def test_shutdown_with_a_peer_that_does_not_answer_the_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    async with open_server(rec, shutdown_grace=2.0, ws_ping_interval=None) as h:
        ws = await connect_ws(h)
        await rec.opened.wait()
        start = trio.current_time()
        await h.server.aclose()
        # The grace is given in full, and no more.
        assert 1.9 <= trio.current_time() - start <= 3.0
        assert rec.closes() == [(1001, "server shutting down")]
        # The close frame arrived, and then the connection ended.
        assert await ws.receive_close_unanswered() == Close(1001, "server shutting down")
        await ws.expect_eof()


async def test_callback_exception_closes_1011_and_is_logged(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    caplog.set_level(logging.ERROR, logger="peregrine_rt.error")
    async with (
        client_over(rec, transport) as (client, _),
        client.websocket("/ws") as ws,
        client.websocket("/ws") as other,
    ):
        await ws.send("raise")
        assert await ws.receive_close() == (1011, "internal error")
        with trio.fail_after(2):
            await rec.closed.wait()
        assert rec.closes() == [(1011, "internal error")]
        assert rec.names() == ["open", "open", "message", "close"]
        # Other connections are unharmed.
        await other.send("still here")
        assert await other.receive() == "still here"
    records = [r for r in caplog.records if r.name == "peregrine_rt.error"]
    assert records
    assert any("boom from on_message" in str(r.exc_info[1]) for r in records if r.exc_info)


class OpenRaises:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.events.append("open")
        raise ValueError("no")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        self.events.append("message")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.events.append(("close", code))


async def test_on_open_exception_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    handler = OpenRaises()
    caplog.set_level(logging.ERROR, logger="peregrine_rt.error")
    async with open_client(handler) as client, client.websocket("/ws") as ws:
        assert await ws.receive_close() == (1011, "internal error")
        await wait_until(lambda: len(handler.events) >= 2)
    assert handler.events == ["open", ("close", 1011)]
    assert any(r.name == "peregrine_rt.error" for r in caplog.records)


# -- heartbeat -----------------------------------------------------------------------


# frame-level: a peer that does not answer pings (the client always does)
async def test_heartbeat_timeout_closes_1011(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder()
    async with open_server(rec, ws_ping_interval=1.0, ws_ping_timeout=1.0) as h:
        ws = await connect_ws(h, auto_pong=False)
        start = trio.current_time()
        event = await ws.receive()
        elapsed = trio.current_time() - start
        assert event == Close(1011, "ping timeout")
        assert ws.pings, "the server never pinged"
        # A ping after ~1 s of silence, a close ~1 s later.
        assert 1.5 <= elapsed <= 3.0, elapsed
        await ws.expect_eof()
        with trio.fail_after(2):
            await rec.closed.wait()
        assert rec.closes() == [(1011, "ping timeout")]
        assert rec.names() == ["open", "close"]


# counts the pings received, which the client does not expose
async def test_heartbeat_answered_stays_open(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder()
    async with open_server(rec, ws_ping_interval=1.0, ws_ping_timeout=1.0) as h:
        ws = await connect_ws(h)
        await rec.opened.wait()
        (sock,) = rec.sockets
        assert sock.latency is None
        with trio.move_on_after(10):
            event = await ws.receive()  # answers pings while waiting
            raise AssertionError(f"unexpected {event!r}")
        assert len(ws.pings) >= 4, ws.pings
        assert sock.close_code is None
        assert sock.latency is not None
        assert sock.latency >= 0
        await ws.send("alive")
        assert await ws.receive_message() == "alive"
        assert await ws.close() == Close(1000, "")
        await rec.closed.wait()
        assert rec.closes() == [(1000, "")]


# frame-level: counts the pings received, which the client does not expose
async def test_no_heartbeat_while_the_peer_talks(autojump_clock: trio.testing.MockClock) -> None:
    """The heartbeat counts from the last bytes received (to the reaper's tick):
    a socket that talks every 0.25 s is never pinged, the earliest ping being
    due after 1 s of silence (half of ws_ping_interval, the jitter's least)."""
    rec = Recorder()
    async with open_server(rec, ws_ping_interval=2.0, ws_ping_timeout=1.0) as h:
        ws = await connect_ws(h, auto_pong=False)
        for i in range(40):  # 10 s of the autojump clock
            await ws.send(f"tick {i}")
            assert await ws.receive_message() == f"tick {i}"
            await trio.sleep(0.25)
        assert ws.pings == []
        assert rec.sockets[0].close_code is None
        with trio.move_on_after(4):  # silent now: the ping comes (unanswered: a close)
            while not ws.pings:
                await ws.receive()
        assert ws.pings, "a silent socket was not pinged"


# checks that no ping arrives, which the client does not expose
async def test_no_heartbeat_when_disabled(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder()
    async with open_server(rec, ws_ping_interval=None, ws_ping_timeout=0.5) as h:
        ws = await connect_ws(h, auto_pong=False)
        with trio.move_on_after(10):
            await ws.receive()
            raise AssertionError("the server sent something")
        assert ws.pings == []
        assert rec.sockets[0].close_code is None
        await ws.close()


# -- ping() ----------------------------------------------------------------------------


# checks the payload of the ping received, which the client does not expose
async def test_ping_from_another_task_returns_the_round_trip() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        await rec.opened.wait()
        (sock,) = rec.sockets
        rtts: list[float] = []

        async def pinger() -> None:
            rtts.append(await sock.ping())
            rtts.append(await sock.ping(b"custom"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pinger)
            with trio.fail_after(2):
                while len(rtts) < 2:
                    with trio.move_on_after(0.05):
                        await ws.receive()
        assert all(rtt >= 0 for rtt in rtts)
        assert sock.latency == rtts[-1]
        assert ws.pings[-1] == b"custom"
        await ws.close()


class PingInCallback:
    def __init__(self) -> None:
        self.results: list[Any] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        try:
            rtt = await ws.ping()
        except pr.ConnectionClosed as exc:
            self.results.append(exc)
            raise
        self.results.append(rtt)
        await ws.send(f"rtt {rtt:.3f}")


async def test_ping_from_on_message_returns_the_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The natural place to call ping() is a callback; it must not wait for itself."""
    handler = PingInCallback()
    async with (
        open_client(handler, ws_ping_interval=None) as client,
        client.websocket("/ws") as ws,
    ):
        await ws.send("ping please")
        # a ReceiveTimeout here: ws.ping() in on_message never returned (no pong was read)
        reply = await ws.receive_text(timeout=3)
        assert reply.startswith("rtt ")
        await ws.close()


class PingInCallbackClosed(PingInCallback):
    def __init__(self) -> None:
        super().__init__()
        self.closes: list[tuple[int, str]] = []

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closes.append((code, reason))


# frame-level: the client closes instead of answering the ping
async def test_a_close_while_ping_waits_in_a_callback_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ping() in on_message raises with the peer's code, and the peer's close is answered."""
    handler = PingInCallbackClosed()
    async with open_server(handler, ws_ping_interval=None) as h:
        ws = await connect_ws(h, auto_pong=False)
        await ws.send("ping please")
        pinged = False
        while not pinged:  # the server's ping, left unanswered
            pinged = any(isinstance(event, Ping) for event in ws.conn.events())
            if not pinged:
                await ws._pump()
        assert await ws.close(1000, "bye") == Close(1000, "bye")
        await ws.expect_eof()
    (raised,) = handler.results
    assert isinstance(raised, pr.ConnectionClosed)
    assert raised.code == 1000
    assert handler.closes == [(1000, "bye")]


# frame-level: answers each ping by hand, one at a time
async def test_concurrent_pings_all_return(mock_clock: trio.testing.MockClock) -> None:
    """Pings from several tasks each get their own pong, even while the clock stands still.

    Three pings are kept outstanding; the client answers them one at a time, in
    the order they arrive, and a new ping starts as each one returns.
    """
    mock_clock.autojump_threshold = 1.0  # only to let the guards fire on a hang
    rec = Recorder()
    total = 8
    async with open_server(rec, ws_ping_interval=None) as h:
        ws = await connect_ws(h, auto_pong=False)
        await rec.opened.wait()
        (sock,) = rec.sockets
        results: list[float] = []

        async def ping() -> None:
            results.append(await sock.ping())

        async def next_ping() -> bytes:
            while True:
                for event in ws.conn.events():
                    assert isinstance(event, Ping), event
                    return bytes(event.payload)
                await ws._pump()

        payloads: list[bytes] = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(ping)
            started = 3
            for _ in range(total):
                with trio.fail_after(5):
                    payload = await next_ping()
                payloads.append(payload)
                await ws.send_raw(ws.conn.send(Pong(payload)))
                await trio.testing.wait_all_tasks_blocked()
                if started < total:
                    nursery.start_soon(ping)
                    started += 1
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert len(results) == total, f"{total - len(results)} pings never returned: {payloads}"
        assert await ws.close() == Close(1000, "")


async def test_many_outstanding_pings_all_return() -> None:
    rec = Recorder()
    n = 300
    async with (
        open_client(rec, ws_ping_interval=None) as client,
        client.websocket("/ws") as ws,
    ):
        await rec.opened.wait()
        (sock,) = rec.sockets
        results: list[Any] = []

        async def ping() -> None:
            try:
                results.append(await sock.ping())
            except Exception as exc:
                results.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(ping)
            with trio.move_on_after(2):  # the client answers the pings as they come
                await wait_until(lambda: len(results) >= n)
            nursery.cancel_scope.cancel()
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, f"{len(errors)} of {n} pings failed: {errors[0]!r}"
        assert len(results) == n
        assert await ws.close() == (1000, "")


async def test_ping_on_a_closed_socket_raises() -> None:
    rec = Recorder()
    async with open_client(rec) as client, client.websocket("/ws") as ws:
        await ws.close(1000, "bye")
        assert rec.closed.is_set()  # on_close has run when close() returns
        with pytest.raises(pr.ConnectionClosedOK):
            await rec.sockets[0].ping()


# -- handshake -------------------------------------------------------------------------


# needs the exact handshake: the RFC key, and one with spaces around it
async def test_handshake_accept_key_and_headers() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        stream = await h.connect()
        ws = await WSClient.open(stream, handshake(key=RFC_KEY))
        response = ws.response
        assert response.status == 101
        assert response.version == b"HTTP/1.1"
        assert response.header("sec-websocket-accept") == RFC_ACCEPT
        assert (response.header("upgrade") or "").lower() == "websocket"
        assert (response.header("connection") or "").lower() == "upgrade"
        assert response.header("sec-websocket-protocol") is None
        assert response.header("sec-websocket-extensions") is None
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
        await ws.send("hi")
        assert await ws.receive_message() == "hi"
        await ws.close()
        key = new_key()
        ws = await WSClient.open(await h.connect(), handshake(key=f"  {key} "))
        assert ws.response.header("sec-websocket-accept") == accept_for(key)
        await ws.close()


class CookieUpgrade:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.headers["set-cookie"] = "session=abc"
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


async def test_handler_headers_go_out_with_the_101() -> None:
    async with open_client(CookieUpgrade) as client, client.websocket("/ws") as ws:
        assert ws.response.headers.get("set-cookie") == "session=abc"
        await ws.close()


# raw bytes: a frame in the same write as the handshake
async def test_frames_sent_with_the_handshake_are_not_lost() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        stream = await h.connect()
        request = handshake() + frame(OP_TEXT, b"early")
        ws = await WSClient.open(stream, request)
        assert await ws.receive_message() == "early"
        await ws.close()


REFUSALS = {
    "post": (handshake(method="POST"), 400, {}),
    "http10": (handshake(http="1.0"), 400, {}),
    "no-upgrade": (handshake(upgrade=None), 426, {"upgrade": "websocket"}),
    "no-connection-upgrade": (handshake(connection="keep-alive"), 426, {"upgrade": "websocket"}),
    "upgrade-h2c": (handshake(upgrade="h2c"), 426, {"upgrade": "websocket"}),
    "version-8": (handshake(version="8"), 426, {"sec-websocket-version": "13"}),
    "no-version": (handshake(version=None), 426, {"sec-websocket-version": "13"}),
    "no-key": (handshake(key=None), 400, {}),
    "key-not-base64": (handshake(key="not base64!!"), 400, {}),
    "key-too-short": (handshake(key="c2hvcnQ="), 400, {}),
    "key-too-long": (handshake(key="AAAAAAAAAAAAAAAAAAAAAAAA"), 400, {}),
    "with-body": (handshake("/ws", "Content-Length: 4") + b"body", 400, {}),
}


# raw bytes: malformed handshakes
@pytest.mark.parametrize("name", list(REFUSALS))
async def test_handshake_refusals(name: str) -> None:
    request, status, headers = REFUSALS[name]
    rec = Recorder()
    async with open_server(rec) as h:
        stream = await h.connect()
        response = await exchange(stream, request, "POST" if name == "post" else "GET")
        assert response.status == status, response
        for header, value in headers.items():
            assert response.header(header) == value
        assert response.header("sec-websocket-accept") is None
        await trio.testing.wait_all_tasks_blocked()
        assert rec.events == []
        assert rec.sockets == []
        assert h.server.websockets == set()


# raw bytes: a malformed handshake, then a good one on the same connection
async def test_refused_handshake_keeps_the_connection_for_http() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        stream = await h.connect()
        response = await exchange(stream, handshake(version="8"))
        assert response.status == 426
        # The connection goes on as HTTP, and can still be upgraded properly.
        ws = await WSClient.open(stream, handshake())
        await ws.send("ok")
        assert await ws.receive_message() == "ok"
        await ws.close()


async def test_origin_allow_list() -> None:
    rec = Recorder()
    allowed = ("https://app.example",)
    async with open_client(rec, ws_allowed_origins=allowed) as client:
        for origin in ("https://evil.example", None, "https://app.example.evil"):
            headers = {} if origin is None else {"Origin": origin}
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket("/ws", headers=headers):
                    pass
            assert refused.value.response.status == 403, origin
        async with client.websocket("/ws", headers={"Origin": "https://app.example"}) as ws:
            await ws.send("in")
            assert await ws.receive() == "in"
            await ws.close()
        assert len(rec.sockets) == 1


async def test_origin_override_per_upgrade() -> None:
    rec = Recorder(allowed_origins=("https://a.example",))
    async with open_client(rec) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/ws", headers={"Origin": "https://b.example"}):
                pass
        assert refused.value.response.status == 403
        async with client.websocket("/ws", headers={"Origin": "https://a.example"}) as ws:
            await ws.close()


# -- subprotocols -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("chat.v1, chat.v2", "chat.v2"),  # the server's preference, not the client's order
        ("chat.v2, chat.v1", "chat.v2"),
        ("other, chat.v1", "chat.v1"),
        ("other", None),
        (None, None),
    ],
)
async def test_subprotocol_selection(offered: str | None, chosen: str | None) -> None:
    rec = Recorder(subprotocols=("chat.v2", "chat.v1"))
    subprotocols = offered.split(", ") if offered else []  # sent as one header line
    async with open_client(rec) as client, client.websocket("/ws", subprotocols=subprotocols) as ws:
        assert ws.response.headers.get("sec-websocket-protocol") == chosen
        assert ws.subprotocol == chosen
        await rec.opened.wait()
        assert rec.sockets[0].subprotocol == chosen
        await ws.close()


# needs two Sec-WebSocket-Protocol lines (the client offers its subprotocols in one)
async def test_subprotocol_offered_over_several_header_lines() -> None:
    rec = Recorder(subprotocols=("b", "a"))
    async with open_server(rec) as h:
        request = handshake("/ws", "Sec-WebSocket-Protocol: x, a", "Sec-WebSocket-Protocol: b")
        ws = await WSClient.open(await h.connect(), request)
        assert ws.response.header_list("sec-websocket-protocol") == ["b"]
        await ws.close()


async def test_no_subprotocols_configured_ignores_offers() -> None:
    rec = Recorder()
    async with open_client(rec) as client, client.websocket("/ws", subprotocols=["chat.v1"]) as ws:
        assert ws.response.headers.get("sec-websocket-protocol") is None
        await rec.opened.wait()
        assert rec.sockets[0].subprotocol is None
        await ws.close()


# -- the handler contract ---------------------------------------------------------------


class OpenWithoutMessage:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_open(self, ws: pr.WebSocket) -> None:
        pass


class UpgradeWithoutCallbacks:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)


def test_on_open_without_on_message_is_refused_at_server() -> None:
    with pytest.raises(pr.HandlerError) as info:
        pr.Server(OpenWithoutMessage)
    message = str(info.value)
    assert "OpenWithoutMessage" in message
    assert "on_message" in message
    assert "async def on_message(self, ws, message)" in message


def test_upgrade_without_on_message_fails_when_the_server_is_built() -> None:
    with pytest.raises(pr.HandlerError, match=r"calls upgrade\(\) but .* has no on_message"):
        pr.Server(UpgradeWithoutCallbacks)


def _sourceless_upgrade_handler() -> type:
    """A handler whose source cannot be read (built with exec): only a request shows it."""
    namespace: dict[str, Any] = {"pr": pr}
    exec(  # deliberately sourceless
        "class Sourceless:\n"
        "    async def handle(self, request, response):\n"
        "        await pr.upgrade(request, response)\n",
        namespace,
    )
    cls: type = namespace["Sourceless"]
    return cls


async def test_upgrade_without_on_message_fails_at_request_time_when_unseen(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="peregrine_rt.error")
    async with open_client(_sourceless_upgrade_handler()) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/ws"):
                pass
        response = refused.value.response
        assert response.status == 500
        assert response.headers.get("sec-websocket-accept") is None
        assert client.server.websockets == set()
    assert any("on_message" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


class PrepareState:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        ws = await pr.upgrade(request, response)
        ws.state["user"] = request.query.get("user")
        if request.query.get("fail"):
            raise RuntimeError("after upgrade")

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.seen.append(("open", dict(ws.state)))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        self.seen.append(("message", ws.state["user"], message))
        await ws.send(f"{ws.state['user']}: {message}")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.seen.append(("close", code))


async def test_handle_prepares_state_before_on_open() -> None:
    handler = PrepareState()
    async with open_client(handler) as client:
        async with client.websocket("/chat", params={"user": "ann"}) as ws:
            await ws.send("hi")
            assert await ws.receive() == "ann: hi"
        # leaving the block closed the WebSocket, and on_close has run
        assert handler.seen == [
            ("open", {"user": "ann"}),
            ("message", "ann", "hi"),
            ("close", 1000),
        ]


async def test_exception_in_handle_after_upgrade_closes_1011_without_callbacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = PrepareState()
    caplog.set_level(logging.ERROR, logger="peregrine_rt.error")
    async with (
        open_client(handler) as client,
        client.websocket("/chat?user=bob&fail=1") as ws,
    ):
        assert await ws.receive_close() == (1011, "internal error")  # and the connection ended
        await trio.testing.wait_all_tasks_blocked()
        assert handler.seen == []
        assert client.server.websockets == set()
    assert any("after upgrade" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


# -- the WebSocket object -----------------------------------------------------------------


class Inspect:
    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_open(self, ws: pr.WebSocket) -> None:
        req = ws.request
        self.info = {
            "path": req.path,
            "query": dict(req.query),
            "tags": req.query.getlist("tag"),
            "header": req.headers.get("x-client"),
            "cookies": dict(req.cookies),
            "remote": ws.remote,
            "state": ws.state,
            "latency": ws.latency,
            "close_code": ws.close_code,
            "closed": ws.closed,
            "repr": repr(ws),
        }

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


# needs the exact peer address: the one given to handle_stream, or the socket's
async def test_websocket_exposes_the_upgrade_request(transport: str) -> None:
    handler = Inspect()
    async with open_server(handler, transport=transport) as h:
        stream = await h.connect(client=("203.0.113.7", 4242))
        request = handshake(
            "/room/7?tag=a&tag=b&x=1", "X-Client: test", "Cookie: sid=s1; theme=dark"
        )
        ws = await WSClient.open(stream, request)
        await ws.send("x")
        await ws.receive_message()
        info = handler.info
        assert info["path"] == "/room/7"
        assert info["query"] == {"tag": "a", "x": "1"}
        assert info["tags"] == ["a", "b"]
        assert info["header"] == "test"
        assert info["cookies"] == {"sid": "s1", "theme": "dark"}
        if transport == "tcp":
            assert info["remote"][0] == "127.0.0.1"
            assert isinstance(info["remote"][1], int)
        else:
            assert info["remote"] == ("203.0.113.7", 4242)
        assert info["state"] == {}
        assert info["latency"] is None
        assert info["close_code"] is None
        assert info["closed"] is False
        assert "/room/7" in info["repr"]
        await ws.close()


# -- backpressure ---------------------------------------------------------------------------


class Flood:
    """``on_open`` sends ``count`` messages of ``size`` bytes, counting the sends that returned."""

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.size = size
        self.sent = 0
        self.done = trio.Event()
        self.error: BaseException | None = None

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_open(self, ws: pr.WebSocket) -> None:
        try:
            for i in range(self.count):
                await ws.send(bytes([i % 256]) * self.size)
                self.sent += 1
        except pr.ConnectionClosed as exc:
            self.error = exc
        finally:
            self.done.set()

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass


async def _small_buffer_client(h: Any, path: str = "/ws") -> WSClient:
    """A real socket whose receive buffer is tiny, upgraded."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", h.server.port))
    stream = trio.SocketStream(sock)
    h.streams.append(stream)
    return await WSClient.open(stream, handshake(path))


# a lockstep stream: the client must not read ahead
async def test_send_waits_for_a_client_that_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Flood(count=8, size=64 * 1024)
    async with open_server(handler, ws_ping_interval=None) as h:
        stream = await lockstep_connection(h)
        ws = await WSClient.open(stream, handshake())
        await trio.sleep(0.3)
        assert handler.sent == 0, "send returned although the client read nothing"
        first = await ws.receive_message()
        assert first == b"\x00" * (64 * 1024)
        await trio.sleep(0.1)
        assert handler.sent <= 2
        for i in range(1, 8):
            assert await ws.receive_message() == bytes([i]) * (64 * 1024)
        with trio.fail_after(2):
            await handler.done.wait()
        assert handler.sent == 8
        assert handler.error is None
        await ws.close()


# a real socket with a tiny receive buffer, read only later
async def test_send_waits_over_a_real_socket() -> None:
    size = 1 << 20
    handler = Flood(count=32, size=size)
    async with open_server(handler, transport="tcp", ws_ping_interval=None) as h:
        ws = await _small_buffer_client(h)
        # Every task blocked: the server waits for the socket to become writable.
        await trio.testing.wait_all_tasks_blocked()
        stalled_at = handler.sent
        assert stalled_at < 32, "32 MiB buffered for a client that reads nothing"
        await trio.testing.wait_all_tasks_blocked()
        assert handler.sent == stalled_at
        for i in range(32):
            assert await ws.receive_message() == bytes([i]) * size
        with trio.fail_after(5):
            await handler.done.wait()
        assert handler.sent == 32
        await ws.close()


class FloodAndRecord(Flood):
    """Floods sockets opened on ``/flood``, echoes on the others."""

    def __init__(self, count: int, size: int) -> None:
        super().__init__(count, size)
        self.closes: list[tuple[int, str]] = []

    async def on_open(self, ws: pr.WebSocket) -> None:
        if ws.request.path == "/flood":
            await super().on_open(ws)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closes.append((code, reason))


# a real socket with a tiny receive buffer that neither reads nor answers pings
async def test_heartbeat_timeout_while_blocked_sending() -> None:
    """A peer that neither reads nor answers pings is closed with 1011; the server lives on."""
    handler = FloodAndRecord(count=64, size=1 << 20)
    config = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.3}
    async with open_server(handler, transport="tcp", **config) as h:
        await _small_buffer_client(h, "/flood")
        await wait_until(lambda: handler.closes)
        assert handler.closes == [(1011, "ping timeout")]
        assert handler.sent < 64
        await wait_until(lambda: h.server.websockets == set())
        # The server still serves others.
        other = await connect_ws(h)
        await other.send(b"fine")
        assert await other.receive_message() == b"fine"
        assert await other.close() == Close(1000, "")


class CancelledSend:
    """A send cut short by the handler's own timeout, then more messages."""

    big = b"A" * (8 << 20)

    def __init__(self) -> None:
        self.first_send_over = False

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        with trio.move_on_after(0.1):
            await ws.send(self.big)
        self.first_send_over = True
        try:
            for i in range(len(self.big) // 8000 + 10):
                await ws.send(f"after {i:05d} " + "x" * 8000)
            await ws.send("end")
        except pr.ConnectionClosed:
            pass


# a real socket with a tiny receive buffer, read only later
async def test_a_cancelled_send_never_corrupts_the_stream() -> None:
    """Each message leaves whole (the WebSocket docstring), even when a send is cancelled.

    Either the rest of the cut frame is still sent, or the connection is closed;
    the client must never receive a message built from pieces of several frames.
    """
    async with open_server(CancelledSend, transport="tcp", ws_ping_interval=None) as h:
        ws = await _small_buffer_client(h)
        await ws.send("go")
        # The client reads only once the handler's first send was cut short (or done).
        await wait_until(lambda: h.server.handler_instance.first_send_over)
        received: list[Any] = []
        with trio.fail_after(10):
            while True:
                event = await ws.receive()
                received.append(event)
                if isinstance(event, Close) or event == "end":
                    break
        for event in received:
            if isinstance(event, bytes):
                assert event == CancelledSend.big, (
                    f"a {len(event)}-byte message with {event.count(b'A')} bytes of the "
                    f"original, then {event[-40:]!r}"
                )
            elif isinstance(event, str):
                assert event == "end" or event.startswith("after "), event[:40]
            else:
                assert event.code != 1002, f"the client saw broken framing: {event}"


# -- many connections -------------------------------------------------------------------------


# frame-level: one peer sends a reserved opcode
async def test_many_connections_one_failing() -> None:
    rec = Recorder()
    n = 200
    async with open_server(rec, guard=20) as h:
        clients = [await connect_ws(h) for _ in range(n)]
        bad = clients[57]
        failures: list[Any] = []

        async def talk(i: int, ws: WSClient) -> None:
            if ws is bad:
                await ws.send_raw(frame(0x3, b"reserved opcode"))
                failures.append(await ws.receive())
                await ws.abort()
                return
            for j in range(5):
                await ws.send(f"{i}:{j}")
                await trio.sleep(0)
            for j in range(5):
                assert await ws.receive_message() == f"{i}:{j}"
            assert await ws.close() == Close(1000, "")

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                for i, ws in enumerate(clients):
                    nursery.start_soon(talk, i, ws)
        assert [f.code for f in failures] == [1002]
        await wait_until(lambda: len(rec.closes()) >= n)
        codes = [code for code, _ in rec.closes()]
        assert codes.count(1000) == n - 1
        assert codes.count(1002) == 1
        assert len(rec.names()) == n * 2 + (n - 1) * 5


async def test_echo_example_over_memory_and_tcp(transport: str) -> None:
    async with client_over(Echo, transport) as (client, _), client.websocket("/anything") as ws:
        await ws.send("héllo")
        assert await ws.receive() == "héllo"
        await ws.send(b"\x00\xff" * 5000)
        assert await ws.receive() == b"\x00\xff" * 5000
        big = "x" * (2 << 20)  # over the 1 MiB default: Echo allows 16 MiB
        await ws.send(big)
        assert await ws.receive() == big
        await ws.close()


# -- a third-party client ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", [False, True])
async def test_websockets_library_client(compression: bool) -> None:
    from websockets.sync.client import connect

    rec = Recorder(subprotocols=("chat",))
    async with open_live_server(rec, **FAST_CONFIG, ws_compression=compression) as live:
        url = f"{live.ws_url}/ws"
        long_text = "compress me " * 5000

        def client() -> list[Any]:
            out: list[Any] = []
            with connect(url, subprotocols=["chat"], open_timeout=5, close_timeout=5) as conn:
                assert conn.response is not None
                out.append(conn.response.headers.get("Sec-WebSocket-Extensions"))
                out.append(conn.subprotocol)
                conn.send("text")
                out.append(conn.recv(timeout=5))
                conn.send(b"bin")
                out.append(conn.recv(timeout=5))
                conn.send(long_text)
                out.append(conn.recv(timeout=5) == long_text)
                out.append(conn.ping().wait(5))
                conn.close(1000, "done")
            return out

        out = await trio.to_thread.run_sync(client)
        extensions = out.pop(0)
        if compression:
            assert extensions is not None
            assert extensions.startswith("permessage-deflate")
        else:
            assert extensions is None
        assert out == ["chat", "text", b"bin", True, True]
        with trio.fail_after(2):
            await rec.closed.wait()
        assert rec.closes() == [(1000, "done")]


# frame-level: invalid UTF-8 in a text frame
async def test_send_after_a_peer_error_raises_connection_closed_error() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        await ws.send_raw(frame(OP_TEXT, b"\xff"))
        event = await ws.receive()
        assert isinstance(event, Close)
        assert event.code == 1007
        await ws.abort()
        with trio.fail_after(2):
            await rec.closed.wait()
        exc = rec.send_errors[0]
        assert type(exc) is pr.ConnectionClosedError
        assert exc.code == 1007
        assert isinstance(exc, pr.ConnectionClosed)


# raw bytes: pipelined malformed handshakes
async def test_pipelined_refusals() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        stream = await h.connect()
        await stream.send_all(handshake(version="8") + handshake(key="x"))
        reader = Reader(stream)
        assert (await reader.response()).status == 426
        assert (await reader.response()).status == 400
        assert rec.events == []
