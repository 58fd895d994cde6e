"""A batched response left to drain_rest (a slow reader) arrives whole.

Once a batched flush cannot write everything, the connection goes back to
reading its next request while a drain task sends the rest.  The keep-alive
idle timeout, graceful shutdown's idle check and a client's half-close must not
end the connection meanwhile (found in review: each truncated the response).
Every case runs with batch_writes off too, where the same client gets all.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt.testing import open_server, wait_until

BODY = 30_000  # two responses: ~60 KB, under BATCH_MAX, queued together (pipelined)
REQ = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"


class Big:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        # Stands for a WAN peer whose send buffer is full (loopback autotunes
        # SO_SNDBUF to megabytes, so nothing would ever be left to drain).
        sock = request.connection.transport.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        response.body = b"x" * BODY


async def connect(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow, small-window client
    await sock.connect(("127.0.0.1", port))
    return sock


async def read_slowly(
    sock: trio.socket.SocketType,
    start_after: float,
    rate_pause: float,
    autojump_clock: trio.testing.MockClock,
) -> int:
    """Read in 1 KiB pieces with a pause between them; bytes read until EOF/reset.

    On the autojump clock (the caller's): the pauses, like the server's
    timeouts, pass without real waiting.
    """
    await trio.sleep(start_after)
    got = 0
    with trio.fail_after(30):
        while True:
            try:
                data = await sock.recv(1024)
            except ConnectionResetError:
                break
            if not data:
                break
            got += len(data)
            await trio.sleep(rate_pause)
    return got


async def read_all(sock: trio.socket.SocketType) -> int:
    """Bytes read until EOF or reset."""
    got = 0
    with trio.fail_after(30):
        while data := await sock.recv(65536):
            got += len(data)
    return got


@pytest.mark.parametrize("batch", [False, True])
async def test_the_keep_alive_timeout_waits_for_a_draining_response(
    batch: bool, autojump_clock: trio.testing.MockClock
) -> None:
    server = pr.Server(Big, batch_writes=batch, keep_alive_timeout=0.3)
    async with open_server(server):
        sock = await connect(server.port)
        await sock.send(REQ + REQ)  # pipelined: the first goes with more=True
        got = await read_slowly(sock, 0.0, 0.05, autojump_clock)  # ~20 KB/s: well above min_rate
        sock.close()
    assert got > 2 * BODY, f"truncated: {got} bytes of two {BODY}-byte bodies"


@pytest.mark.parametrize("batch", [False, True])
async def test_a_half_closed_client_gets_its_whole_responses(
    batch: bool, autojump_clock: trio.testing.MockClock
) -> None:
    server = pr.Server(Big, batch_writes=batch)
    async with open_server(server):
        sock = await connect(server.port)
        await sock.send(REQ + REQ)
        sock.shutdown(socket.SHUT_WR)  # nc -N, pipelining scripts: "that's all I'll ask"
        got = await read_slowly(sock, 0.0, 0.05, autojump_clock)
        sock.close()
    assert got > 2 * BODY, f"truncated: {got} bytes of two {BODY}-byte bodies"


@pytest.mark.parametrize("batch", [False, True])
async def test_graceful_shutdown_waits_for_a_draining_response(batch: bool) -> None:
    server = pr.Server(Big, batch_writes=batch, shutdown_grace=5.0)
    result: list[int] = []
    async with trio.open_nursery() as nursery, open_server(server):
        sock = await connect(server.port)
        await sock.send(REQ + REQ)
        # written as far as they go: the rest waits for the reader
        await wait_until(lambda: any(c.transport.stalled for c in server.connections))
        # A response still going out: the connection is not idle, so the
        # shutdown does not cancel it at once (it did, and aclose then gave
        # the rest one second).
        assert not any(c.idle for c in server.connections)

        async def reader() -> None:
            await wait_until(lambda: server.shutting_down)
            result.append(await read_all(sock))

        nursery.start_soon(reader)
        # leaving open_server: graceful shutdown (grace 5 s)
    sock.close()
    # Shutdown answers no further pipelined request (as before), but the response
    # under way arrives whole: without batching the client gets 30079 bytes.
    assert result[0] >= BODY + 79, f"truncated: {result[0]} bytes, not one whole response"
