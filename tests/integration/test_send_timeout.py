"""Config.send_timeout: a client that stops reading a response is dropped, not kept for ever."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.testing import open_server, wait_until


class Big:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.outcomes: list[str] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/file":
            response.file(self.path)
        elif request.path == "/fixed":
            response.body = b"f" * (8 << 20)
        else:
            try:
                async with response.stream() as send:
                    for _ in range(1000):
                        await send(b"s" * 65536)
                self.outcomes.append("finished")
            except BaseException as exc:
                self.outcomes.append(type(exc).__name__)
                raise


async def silent_request(port: int, path: str) -> socket.socket:
    """Send a request on a socket with a small receive buffer, and never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize("path", ["/file", "/fixed", "/stream"])
async def test_a_reader_that_stops_is_dropped_after_send_timeout(path: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * (16 << 20))
    app = Big(big)
    server = pr.Server(app, send_timeout=0.5)
    async with open_server(server):
        sock = await silent_request(server.port, path)
        try:
            await wait_until(lambda: server.connections)  # stuck writing to it
            # dropped by the reaper, not ended by the client
            await wait_until(lambda: not server.connections)
        finally:
            sock.close()
    if path == "/stream":
        assert app.outcomes == ["Cancelled"]


async def test_a_slow_but_steady_reader_is_not_dropped(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * (2 << 20))
    server = pr.Server(Big(big), send_timeout=0.5)
    async with open_server(server):
        sock = await silent_request(server.port, "/file")
        sock.setblocking(False)
        got = 0
        with trio.fail_after(30):
            while got < 2 << 20:
                await trio.sleep(0.01)  # reads a little, often: progress every time
                try:
                    got += len(sock.recv(16384))
                except BlockingIOError:
                    pass
        sock.close()
        assert got >= 2 << 20
