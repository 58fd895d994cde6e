"""Static files over real sockets: large files, sendfile and its fallback, slow readers.

The server runs under ``peregrine_rt.testing.open_server`` in this process, so
the test can read the process-wide ``FILE_STATS`` counters and trace Python
memory while a client refuses to read.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt import _transport
from peregrine_rt._files import CHUNK_SIZE, FILE_STATS
from peregrine_rt.testing import open_client, open_server

BIG = 8 << 20


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB, not all one byte
    with open(root / "big.bin", "wb") as f:
        for i in range(BIG // len(block)):
            f.write(bytes([i % 251]) + block[1:])
    (root / "small.txt").write_bytes(b"small\n" * 1000)
    return root


@pytest.fixture(params=["sendfile", "reads"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(_transport, "USE_SENDFILE", request.param == "sendfile")
    FILE_STATS.reset()
    yield request.param


class App:
    def __init__(self, root: Path) -> None:
        self.static = pr.DirServer(root)

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await self.static.serve(request, response)


async def read_response(
    stream: trio.SocketStream, buf: bytearray, *, head_request: bool = False
) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response; what follows stays in ``buf``."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        assert data, f"EOF before the head: {bytes(buf[:200])!r}"
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    del buf[:]
    buf += rest
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if head.startswith(b"HTTP/1.1 304") or head_request:
        length = 0
    while len(buf) < length:
        data = await stream.receive_some(65536)
        assert data, f"EOF after {len(buf)} of {length} body bytes"
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return head, body


async def test_large_file_over_a_socket(root: Path, mode: str) -> None:
    expected = (root / "big.bin").read_bytes()
    async with open_server(App(root)) as live, open_client(live.url) as client:
        r = await client.get("/big.bin")
        assert r.status == 200
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(expected).digest()
        r = await client.get("/big.bin", headers={"range": "bytes=1000000-"})
        assert (r.status, r.content == expected[1000000:]) == (206, True)
        r = await client.get("/big.bin", headers={"range": "bytes=0-9, 5000000-5000009, -10"})
        assert r.status == 206
        boundary = r.headers["content-type"].split("boundary=")[1].encode()
        parts = [p.partition(b"\r\n\r\n")[2][:-2] for p in r.content.split(b"--" + boundary)]
        assert parts[1:-1] == [expected[:10], expected[5000000:5000010], expected[-10:]]
    if mode == "sendfile":
        assert FILE_STATS.read == 0  # the bytes never entered Python
    else:
        assert FILE_STATS.read >= BIG
        assert FILE_STATS.peak_in_flight <= CHUNK_SIZE


async def test_keep_alive_after_large_files_and_heads(root: Path, mode: str) -> None:
    """Head, file, head, file on one connection: every response is framed exactly."""
    expected = (root / "big.bin").read_bytes()
    async with open_server(App(root)) as live:
        stream = await trio.open_tcp_stream(live.host, live.port)
        async with stream:
            get = b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
            head_req = b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
            # Pipelined: all four at once.
            await stream.send_all(
                head_req + get + b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n" + get
            )
            buf = bytearray()
            head, body = await read_response(stream, buf, head_request=True)
            assert head.startswith(b"HTTP/1.1 200")
            assert body == b""
            assert f"content-length: {BIG}".encode() in head
            head, body = await read_response(stream, buf)
            assert body == expected
            head, body = await read_response(stream, buf)
            assert body == b"small\n" * 1000
            head, body = await read_response(stream, buf)
            assert body == expected
            assert buf == b""


async def test_slow_reader_costs_at_most_a_chunk(root: Path, mode: str) -> None:
    """A client that stops reading: the server stops reading the file too.

    The client's receive buffer is small, so the kernel's buffers fill after a
    few hundred KiB; then the server must wait (backpressure), holding no more
    than one chunk in Python memory, until the client reads again.
    """
    size = (root / "big.bin").stat().st_size
    async with open_server(App(root)) as live:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect((live.host, live.port))
        sock.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        async with stream:
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                await stream.send_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                # Wait until the server has stalled: nothing more accepted for a while.
                last = -1
                while FILE_STATS.sent != last:
                    last = FILE_STATS.sent
                    await trio.sleep(0.2)
                stalled_at = FILE_STATS.sent
                peak = tracemalloc.get_traced_memory()[1] - baseline
            finally:
                tracemalloc.stop()
            assert stalled_at < size // 2, "the server kept sending to a client that reads nothing"
            assert FILE_STATS.read <= stalled_at + CHUNK_SIZE
            assert FILE_STATS.peak_in_flight <= CHUNK_SIZE
            # Python memory: one chunk (and its copy with the head), plus noise.
            assert peak < 3 * CHUNK_SIZE + 64 * 1024, peak
            # Now read it all: nothing was lost or reordered.
            buf = bytearray()
            head, body = await read_response(stream, buf)
            assert head.startswith(b"HTTP/1.1 200")
            assert body == (root / "big.bin").read_bytes()


async def test_file_shrinking_mid_send_closes_the_connection(root: Path, mode: str) -> None:
    path = root / "big.bin"
    async with open_server(App(root)) as live:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect((live.host, live.port))
        sock.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        async with stream:
            await stream.send_all(
                b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            received = bytearray(await stream.receive_some(65536))
            os.truncate(path, 1 << 20)  # now shorter than the Content-Length being sent
            while True:
                with trio.fail_after(10):
                    data = await stream.receive_some(65536)
                if not data:
                    break
                received += data
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert f"content-length: {BIG}".encode() in head
    assert len(body) < BIG  # cut short, and then the connection closed:
    assert b"HTTP/1.1 200" not in body  # the pipelined request was never answered
    assert FILE_STATS.shortfalls == 1


async def test_browser_like_sequence(root: Path, mode: str) -> None:
    """GET, a conditional GET answered 304, then a download resumed with Range + If-Range."""
    expected = (root / "big.bin").read_bytes()
    async with (
        open_server(App(root)) as live,
        open_client(live.url) as client,
        client.connection() as conn,
    ):
        first = await conn.get("/big.bin", headers={"accept-encoding": "gzip, br"})
        assert first.status == 200
        etag = first.headers["etag"]
        modified = first.headers["last-modified"]
        again = await conn.get(
            "/big.bin", headers={"if-none-match": etag, "if-modified-since": modified}
        )
        assert (again.status, again.content) == (304, b"")
        resumed = await conn.get("/big.bin", headers={"range": "bytes=3000000-", "if-range": etag})
        assert resumed.status == 206
        assert resumed.headers["content-range"] == f"bytes 3000000-{BIG - 1}/{BIG}"
        assert first.content[:3000000] + resumed.content == expected
        (root / "big.bin").write_bytes(b"replaced")
        os.utime(root / "big.bin", (1, 1))
        await trio.sleep(1.1)  # past revalidate_after
        stale = await conn.get("/big.bin", headers={"range": "bytes=3-", "if-range": etag})
        assert (stale.status, stale.content) == (200, b"replaced")  # not a wrong splice
