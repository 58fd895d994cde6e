"""peregrine_rt.testing's WebSocket client: messages, closes, handshakes, failures."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt.testing import (
    Close,
    ReceiveTimeout,
    UnexpectedEvent,
    WebSocketClosed,
    WebSocketRejected,
    open_client,
    open_server,
)


class Chat:
    """Upgrades ``/ws``; messages steer it: ``close <code> <reason>``, ``raise``, ``twice``…"""

    def __init__(self) -> None:
        self.closes: list[tuple[int, str]] = []
        self.sockets: list[pr.WebSocket] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/hang":
            await trio.sleep_forever()
        if request.path != "/ws":
            response.text("no WebSocket here\n", status=404)
            return
        ws = await pr.upgrade(request, response, subprotocols=["v2", "v1"])
        ws.state["greet"] = request.query.get("greet")

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.sockets.append(ws)
        if ws.state["greet"]:
            await ws.send(ws.state["greet"])  # leaves with the 101

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("close "):
            _, code, *reason = message.split(" ", 2)
            await ws.close(int(code), reason[0] if reason else "")
        elif message == "raise":
            raise RuntimeError("boom from on_message")
        elif message == "twice":
            await ws.send("one")
            await ws.send("two")
            await ws.close(1000, "done")
        elif message == "bytes":
            await ws.send(b"\x00\x01")
        elif message == "json":
            await ws.send('{"a": [1, 2]}')
        else:
            await ws.send(message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closes.append((code, reason))


async def test_echo_text_binary_and_json() -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.send(b"\x00\xff")
        assert await ws.receive_bytes() == b"\x00\xff"
        await ws.send_json({"n": 1})
        assert await ws.receive_json() == {"n": 1}
        await ws.send("é" * 70_000)  # several frames and reads
        assert await ws.receive_text() == "é" * 70_000
        assert repr(ws) == "<ClientWebSocket /ws open>"


async def test_the_handshake_response_and_subprotocol() -> None:
    async with open_client(Chat) as client:
        async with client.websocket("/ws", subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"  # the server's preference wins
            assert ws.response.status == 101
            assert ws.response.headers["upgrade"] == "websocket"
            assert ws.response.content == b""
        async with client.websocket("/ws") as ws:
            assert ws.subprotocol is None


async def test_messages_sent_with_the_101_arrive() -> None:
    async with (
        open_client(Chat) as client,
        client.websocket("/ws", params={"greet": "welcome"}) as ws,
    ):
        assert await ws.receive() == "welcome"


async def test_wrong_kinds_of_message_fail_clearly() -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        await ws.send("bytes")
        with pytest.raises(UnexpectedEvent) as info:
            await ws.receive_text()
        assert str(info.value) == (
            "expected a text message; received instead: binary b'\\x00\\x01'"
        )
        await ws.send("text")
        with pytest.raises(UnexpectedEvent, match="expected a binary message; received instead: "):
            await ws.receive_bytes()
        await ws.send("not json")
        with pytest.raises(UnexpectedEvent) as info:
            await ws.receive_json()
        assert str(info.value).startswith(
            "expected a JSON message; received instead: text 'not json', which is not JSON"
        )
        await ws.send("x" * 100)
        with pytest.raises(UnexpectedEvent) as info:
            await ws.receive_bytes()
        assert str(info.value) == (
            f"expected a binary message; received instead: text '{'x' * 60}'… (100 characters)"
        )


async def test_a_message_that_never_comes(autojump_clock: trio.testing.MockClock) -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        with pytest.raises(ReceiveTimeout) as info:
            await ws.receive()
        assert str(info.value) == (
            "waited 5.0 s for a WebSocket message; received instead: nothing"
        )
        with pytest.raises(ReceiveTimeout, match=r"waited 0\.5 s for a WebSocket message"):
            await ws.receive_json(timeout=0.5)


async def test_what_arrived_instead_is_listed(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_client(Chat, ws_ping_interval=1, timeout=2.5) as client,
        client.websocket("/ws") as ws,
    ):
        with pytest.raises(ReceiveTimeout) as info:
            await ws.receive()
        # Heartbeats come every 0.5-1.5 s (each socket's own jitter): 1 to 4 of them.
        assert re.fullmatch(
            r"waited 2\.5 s for a WebSocket message; "
            r"received instead: ping b'peregrine-hb'( \([234] times\))?",
            str(info.value),
        ), str(info.value)


async def test_the_server_closing(autojump_clock: trio.testing.MockClock) -> None:
    app = Chat()
    async with open_client(app) as client, client.websocket("/ws") as ws:
        await ws.send("twice")
        assert await ws.receive() == "one"
        assert await ws.receive() == "two"
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert (
            str(info.value) == "expected a WebSocket message; received instead: close 1000 'done'"
        )
        assert isinstance(info.value, pr.ConnectionClosed)
        assert isinstance(info.value, AssertionError)
        assert (info.value.code, info.value.reason) == (1000, "done")
        assert await ws.receive_close() == Close(1000, "done")
        assert (ws.close_code, ws.close_reason, ws.closed) == (1000, "done", True)
        assert app.closes == [(1000, "done")]  # on_close has run
        with pytest.raises(pr.ConnectionClosedOK):
            await ws.send("too late")
        assert repr(ws) == "<ClientWebSocket /ws close 1000 'done'>"


async def test_receive_close_with_a_message_first() -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        await ws.send("hi")
        with pytest.raises(UnexpectedEvent) as info:
            await ws.receive_close()
        assert str(info.value) == (
            "expected the server to close the WebSocket; received instead: text 'hi'"
        )


async def test_receive_close_waits_in_vain(autojump_clock: trio.testing.MockClock) -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        with pytest.raises(ReceiveTimeout) as info:
            await ws.receive_close(timeout=1)
        assert str(info.value) == (
            "waited 1.0 s for the server to close the WebSocket; received instead: nothing"
        )


async def test_the_client_closing_is_seen_by_on_close() -> None:
    app = Chat()
    async with open_client(app) as client:
        async with client.websocket("/ws") as ws:
            assert await ws.close(4001, "finished") == Close(4001, "finished")
            assert app.closes == [(4001, "finished")]
            assert await ws.close() == Close(4001, "finished")  # again: nothing to do
            with pytest.raises(pr.ConnectionClosedError) as info:
                await ws.send("x")
            assert info.value.code == 4001
        async with client.websocket("/ws"):
            pass  # leaving the block closes with 1000 and waits for on_close
        assert app.closes == [(4001, "finished"), (1000, "")]


async def test_an_error_in_the_block_still_closes_the_socket() -> None:
    app = Chat()
    with pytest.raises(KeyError):
        async with open_client(app) as client, client.websocket("/ws"):
            raise KeyError("oops")
    assert app.closes == [(1000, "")]


async def test_callback_error_is_1011() -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        await ws.send("raise")
        assert await ws.receive_close() == Close(1011, "internal error")


async def test_message_size_limit_is_the_servers() -> None:
    async with open_client(Chat, ws_max_message_size=100) as client, client.websocket("/ws") as ws:
        await ws.send("x" * 100)
        assert await ws.receive() == "x" * 100
        await ws.send("x" * 101)
        assert await ws.receive_close() == Close(1009, "message over 100 bytes")


async def test_server_shutdown_is_1001() -> None:
    async with (
        open_client(Chat) as client,
        client.websocket("/ws") as ws,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(client.server.aclose)  # type: ignore[union-attr]
        assert await ws.receive_close() == Close(1001, "server shutting down")


async def test_heartbeats_are_answered(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_client(Chat, ws_ping_interval=5, ws_ping_timeout=5) as client,
        client.websocket("/ws") as ws,
    ):
        await trio.sleep(60)  # a dozen pings, answered by the client's reader
        await ws.send("still here")
        assert await ws.receive() == "still here"
        assert client.app.sockets[0].latency is not None


async def test_ping_returns_the_round_trip() -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        assert await ws.ping() >= 0
        assert await ws.ping(b"custom") >= 0


async def test_ping_on_a_closed_socket(autojump_clock: trio.testing.MockClock) -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        await ws.send("close 1000")
        await ws.receive_close()
        with pytest.raises(pr.ConnectionClosedOK):
            await ws.ping()


async def test_assert_no_message() -> None:
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        await ws.assert_no_message(within=0.01)
        await ws.send("hi")
        with pytest.raises(UnexpectedEvent) as info:
            await ws.assert_no_message(within=0.01)
        assert str(info.value) == (
            "expected no WebSocket message within 0.01 s; received instead: text 'hi'"
        )
        await ws.send("close 1000 bye")
        with pytest.raises(WebSocketClosed, match="received instead: close 1000 'bye'"):
            await ws.assert_no_message(within=0.01)


async def test_several_sockets_at_once() -> None:
    async with open_client(Chat) as client:
        async with client.websocket("/ws") as a, client.websocket("/ws") as b:
            await a.send("from a")
            await b.send("from b")
            assert await b.receive() == "from b"
            assert await a.receive() == "from a"
        assert len(client.app.closes) == 2


async def test_refused_handshakes_carry_the_response() -> None:
    async with open_client(Chat, ws_allowed_origins=("https://good.example",)) as client:
        with pytest.raises(WebSocketRejected) as info:
            async with client.websocket("/nope"):
                raise AssertionError("not reached")
        assert info.value.response.status == 404
        assert info.value.response.text == "no WebSocket here\n"
        assert info.value.status == 404
        assert isinstance(info.value, pr.HandshakeError)
        assert str(info.value) == (
            "the server refused the WebSocket handshake for /nope with 404 Not Found: "
            "b'no WebSocket here\\n'"
        )
        with pytest.raises(WebSocketRejected) as info:
            async with client.websocket("/ws", headers={"origin": "https://evil.example"}):
                raise AssertionError("not reached")
        assert info.value.response.status == 403
        async with client.websocket("/ws", headers={"Origin": "https://good.example"}) as ws:
            await ws.send("ok")
            assert await ws.receive() == "ok"


async def test_a_handshake_that_is_never_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_client(Chat) as client:
        with pytest.raises(ReceiveTimeout) as info:
            async with client.websocket("/hang", timeout=1):
                raise AssertionError("not reached")
    assert str(info.value) == (
        "waited 1.0 s for the answer to the WebSocket handshake for /hang; "
        "received instead: nothing"
    )


async def test_compression() -> None:
    async with open_client(Chat, ws_compression=True) as client:
        async with client.websocket("/ws", compression=True) as ws:
            assert ws.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            await ws.send("z" * 10_000)
            assert await ws.receive() == "z" * 10_000
        async with client.websocket("/ws") as ws:
            assert "sec-websocket-extensions" not in ws.response.headers


async def test_over_a_real_socket() -> None:
    async with open_server(Chat) as live, open_client(live.url) as client:
        async with client.websocket("/ws", params={"greet": "hi"}) as ws:
            assert await ws.receive() == "hi"
            await ws.send(b"tcp")
            assert await ws.receive() == b"tcp"
        with pytest.raises(WebSocketRejected):
            async with client.websocket("/nope"):
                pass


def test_long_lists_of_events_are_cut_short() -> None:
    from peregrine_rt.testing._websocket import describe_bytes, describe_events

    events = ["ping b'a'", "ping b'a'", "pong b'b'", "x", "y", "z", "ping b'a'", "ping b'a'"]
    assert describe_events(events) == ("ping b'a' (2 times); pong b'b'; x; y; z; and 2 more")
    assert describe_bytes(b"") == "nothing"
    assert describe_bytes(b"x" * 200) == f"200 bytes: {b'x' * 120!r}…"
