"""What an open, idle WebSocket keeps between messages: no wsproto Connection, no backlog.

The fast path reads and writes the common frames; wsproto is made for a control
frame or a close and let go once it holds nothing again (``_wsconn``), and the
receive backlog's deque exists only while it holds events (``_receiver``).  A
compressed socket keeps its Connection: the deflate state lives there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt import _outbox
from peregrine_rt._receiver import NO_BACKLOG

from .conftest import open_server
from .ws_helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Close,
    Recorder,
    WSClient,
    close_payload,
    connect_ws,
    frame,
)


def _holds(ws: pr.WebSocket) -> tuple[bool, bool]:
    """(a wsproto Connection, a backlog deque of its own) held by the server's socket."""
    return ws._ws.held, ws._receiver.backlog is not NO_BACKLOG


@asynccontextmanager
async def _one_socket(transport: str) -> AsyncIterator[tuple[Recorder, WSClient, pr.WebSocket]]:
    """A server (no heartbeat) with one open socket: the recorder, the client, the server's side."""
    rec = Recorder()
    async with open_server(rec, transport=transport, ws_ping_interval=None) as h:
        client = await connect_ws(h)
        await rec.opened.wait()
        (server_ws,) = rec.sockets
        yield rec, client, server_ws


def _outbox_queue(ws: pr.WebSocket) -> bool:
    """Whether the socket's outbox holds a deque of its own (it should not while idle)."""
    return ws._outbox._items is not _outbox._NONE_QUEUED


async def test_idle_socket_holds_no_wsproto_and_no_backlog(transport: str) -> None:
    async with _one_socket(transport) as (rec, client, server_ws):
        await trio.testing.wait_all_tasks_blocked()
        assert _holds(server_ws) == (False, False)

        await client.send("hello")
        assert await client.receive_message() == "hello"
        await trio.testing.wait_all_tasks_blocked()
        assert _holds(server_ws) == (False, False)

        # A control frame goes through wsproto, which is let go again after it.
        await client.send_raw(frame(OP_PING, b"p1") + frame(OP_TEXT, b"after"))
        assert await client.receive_message() == "after"
        assert client.pongs == [b"p1"]
        await trio.testing.wait_all_tasks_blocked()
        assert _holds(server_ws) == (False, False)

        # The server's own ping: written, answered, and nothing kept.
        rtts: list[float] = []

        async def ping() -> None:
            rtts.append(await server_ws.ping())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping)
            await trio.testing.wait_all_tasks_blocked()
            await client.send("pump")  # the client answers the ping while reading the echo
            assert await client.receive_message() == "pump"
        assert len(rtts) == 1
        assert client.pings == [b"peregrine-1"]
        await trio.testing.wait_all_tasks_blocked()
        assert _holds(server_ws) == (False, False)

        assert not _outbox_queue(server_ws)

        # A close is a state: wsproto is made and kept through the handshake.
        await client.close()
        await rec.closed.wait()
        assert rec.closes() == [(1000, "")]
        assert server_ws._ws.held


async def test_compressed_socket_keeps_its_connection() -> None:
    rec = Recorder(compression=True)
    async with open_server(rec, ws_ping_interval=None) as h:
        client = await connect_ws(h, compression=True)
        assert (client.response.header("sec-websocket-extensions") or "").startswith("permessage")
        await rec.opened.wait()
        (server_ws,) = rec.sockets
        await client.send("squeeze me " * 20)
        assert await client.receive_message() == "squeeze me " * 20
        await trio.testing.wait_all_tasks_blocked()
        assert _holds(server_ws) == (True, False)


async def test_after_a_heartbeat_nothing_is_kept(autojump_clock: trio.testing.MockClock) -> None:
    """The heartbeat's ping is queued in the outbox and answered through wsproto:
    once written and answered, the socket holds neither a deque nor a Connection."""
    rec = Recorder()
    async with open_server(rec, ws_ping_interval=1.0, ws_ping_timeout=30.0) as h:
        client = await connect_ws(h)
        await rec.opened.wait()
        (server_ws,) = rec.sockets
        await trio.sleep(5)  # a heartbeat is due (virtual time)
        await client.send("pump")  # the client answers the pings it reads first
        assert await client.receive_message() == "pump"
        assert b"peregrine-hb" in client.pings
        await trio.testing.wait_all_tasks_blocked()
        assert server_ws.latency is not None  # the pong came back
        assert _holds(server_ws) == (False, False)
        assert not _outbox_queue(server_ws)


async def test_frames_after_the_answered_close_are_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The peer's close answer and more bytes in one read: the handshake is over,
    the rest is dropped, nothing is logged as an error."""
    rec = Recorder()
    async with open_server(rec, ws_ping_interval=None) as h:
        client = await connect_ws(h)
        await client.send("close 1000 bye")  # the Recorder closes from on_message
        assert await client.receive_close_unanswered() == Close(1000, "bye")
        await client.send_raw(frame(OP_CLOSE, close_payload(1000)) + frame(OP_TEXT, b"late"))
        await rec.closed.wait()
        assert rec.closes() == [(1000, "bye")]
    assert not [r for r in caplog.records if r.name == "peregrine_rt.error"]


async def test_a_message_cut_short_by_the_end_is_not_kept(transport: str) -> None:
    """Half a 20 KB frame, then the peer goes: the socket object keeps none of it."""
    async with _one_socket(transport) as (rec, client, server_ws):
        whole = frame(OP_BINARY, b"x" * 20_000)
        await client.send_raw(whole[:10_000])
        await trio.testing.wait_all_tasks_blocked()
        assert server_ws._receiver.assembled  # wsproto's first piece, joined so far
        await client.stream.aclose()
        with trio.fail_after(5):
            await rec.closed.wait()
        assert server_ws._receiver.assembled is None
        assert server_ws._receiver.backlog is NO_BACKLOG
