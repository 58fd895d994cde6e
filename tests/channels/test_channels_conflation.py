"""Conflation: a slow reader of a conflated topic gets the newest value per key, not a backlog.

A real TCP connection whose client does not read while the server
broadcasts 20,000 updates of 10 prices (about 20 MB): the kernel's buffers
fill, the socket's outbox holds one frame per key, the connection stays
open, and when the client reads at last the final price of every symbol is
there.  Without conflation the same run closes the socket with 1008 (the
outbox passes ``ws_outbox_size``).
"""

from __future__ import annotations

import json
import socket as stdsocket
from typing import Any

import trio
import trio.testing
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from peregrine_rt._channels import Channels, topic
from peregrine_rt.testing import open_server

PAD = "x" * 1000  # a kilobyte per update...
UPDATES = 20_000  # ...20 MB in all: more than loopback's kernel buffers take (4 MiB each way)


class Prices(Channels):
    @topic("prices", history=False, conflate=lambda payload: payload["sym"])
    class Feed:
        async def join(self, socket: Any, params: Any) -> None:
            return None


class Unconflated(Channels):
    @topic("prices", history=False)
    class Feed:
        async def join(self, socket: Any, params: Any) -> None:
            return None


async def _slow_reader(app: type[Channels]) -> tuple[dict[str, int], int | None, int]:
    """Join, stop reading while the updates go out, then read everything: last price per sym."""
    async with open_server(app, ws_outbox_size=256 * 1024) as server:
        sock = trio.socket.socket()
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.port))
        stream = trio.SocketStream(sock)
        async with stream:
            return await _exchange(server, stream)


async def _exchange(
    server: Any, stream: trio.SocketStream
) -> tuple[dict[str, int], int | None, int]:
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="x", target="/socket/websocket?vsn=2.0.0")))
    got: list[Any] = []
    closed: int | None = None
    parts: list[str] = []

    async def pump() -> None:
        nonlocal closed
        data = await stream.receive_some(65536)
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    got.append(json.loads("".join(parts)))
                    parts.clear()
            elif isinstance(event, CloseConnection):
                closed = event.code
            elif not isinstance(event, AcceptConnection):
                raise AssertionError(event)

    await pump()  # the 101
    join = ["1", "1", "prices", "phx_join", {}]
    await stream.send_all(ws.send(TextMessage(json.dumps(join))))
    while not got:
        await pump()
    assert got[0][4]["status"] == "ok"
    app_instance = server.server.handler_instance
    for i in range(UPDATES):
        sym = f"S{i % 10}"
        await app_instance.broadcast("prices", "tick", {"sym": sym, "n": i, "pad": PAD})
    await trio.testing.wait_all_tasks_blocked()  # the flush has written what fits
    with trio.move_on_after(10):
        while closed is None:
            await pump()
            last = {f[4]["sym"]: f[4]["n"] for f in got[1:] if f[3] == "tick"}
            if len(last) == 10 and all(n >= UPDATES - 10 for n in last.values()):
                break
    last = {f[4]["sym"]: f[4]["n"] for f in got[1:] if f[3] == "tick"}
    ticks = sum(1 for f in got[1:] if f[3] == "tick")
    return last, closed, ticks


async def test_a_slow_reader_gets_the_newest_price_of_each_symbol() -> None:
    last, closed, ticks = await _slow_reader(Prices)
    assert closed is None
    assert last == {f"S{k}": UPDATES - 10 + k for k in range(10)}
    assert ticks < UPDATES / 2  # the backlog was conflated, not sent


async def test_without_conflation_the_same_reader_is_closed_as_slow() -> None:
    _, closed, ticks = await _slow_reader(Unconflated)
    assert closed == 1008
    assert ticks < UPDATES
