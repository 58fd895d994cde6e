"""Fixtures and clients for the integration tests: a running server, raw and h11 clients.

A test opens a server with :func:`open_server` (``async with open_server(H) as
harness``), connects with ``await harness.connect()`` — a memory stream served
through :meth:`Server.handle_stream`, or a real loopback socket when the
harness was opened with ``transport="tcp"`` — and reads what comes back with a
:class:`Reader` (a small, strict HTTP/1.1 response parser of our own, so that
raw and malformed input can be sent) or an :class:`H11Client`.

On leaving the block every client stream is closed, the server is shut down
with ``aclose()``, and the nursery that ran it exits: nothing outlives a test.
A ``fail_after`` guard turns a hang into a failure.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt import Config, Server
from peregrine_rt.testing import Client, open_client, wait_until
from peregrine_rt.testing import open_server as open_live_server

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# Short timeouts keep the suite fast; tests that need others pass their own.
FAST_CONFIG: dict[str, Any] = {
    "header_timeout": 2.0,
    "body_timeout": 2.0,
    "keep_alive_timeout": 2.0,
    "shutdown_grace": 1.0,
}


@pytest.fixture(params=["memory", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    """Run a test over memory streams and over real loopback sockets."""
    return str(request.param)


@dataclass
class Harness:
    server: Server
    nursery: trio.Nursery
    transport: str
    streams: list[trio.abc.Stream] = field(default_factory=list)

    async def connect(self, client: tuple[str, int] | None = None) -> trio.abc.Stream:
        """A new client connection to the server."""
        stream: trio.abc.Stream
        if self.transport == "tcp":
            stream = await trio.open_tcp_stream("127.0.0.1", self.server.port)
        else:
            stream, server_side = trio.testing.memory_stream_pair()
            self.nursery.start_soon(self.server.handle_stream, server_side, client)
        self.streams.append(stream)
        return stream

    async def wait_connections(self, n: int) -> None:
        """Wait until the server counts exactly ``n`` open connections."""
        await wait_until(lambda: len(self.server.connections) == n)


@asynccontextmanager
async def open_server(
    handler: type | object, *, transport: str = "memory", guard: float = 15.0, **config: Any
) -> AsyncIterator[Harness]:
    """Serve ``handler``; ``config`` overrides :data:`FAST_CONFIG` (``port=0`` for tcp)."""
    options = {**FAST_CONFIG, **config}
    if transport == "tcp":
        options.setdefault("port", 0)
    server = Server(handler, Config(**options))
    with trio.fail_after(guard):
        async with trio.open_nursery() as nursery:
            if transport == "tcp":
                await nursery.start(server.serve)
            else:
                await nursery.start(server.serve_listeners, [])
            harness = Harness(server, nursery, transport)
            try:
                yield harness
            finally:
                with trio.CancelScope(shield=True):
                    for stream in harness.streams:
                        await trio.aclose_forcefully(stream)
                    with trio.move_on_after(guard):
                        await server.aclose()
                # Connections served through handle_stream() run in this nursery;
                # any the server failed to end must not hang the test as well.
                nursery.cancel_scope.cancel()


# -- reading responses ----------------------------------------------------------


@dataclass
class RawResponse:
    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool
    chunks: list[bytes]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (several joined with ', '), or None."""
        key = name.lower().encode()
        values = [v.decode("latin-1") for n, v in self.headers if n == key]
        return ", ".join(values) if values else None

    def header_list(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for n, v in self.headers if n == key]


class Reader:
    """Reads responses from a client stream (strict about the framing the server sends)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.eof = False

    async def _fill(self) -> None:
        if self.eof:
            raise AssertionError(f"EOF in the middle of a response; have {bytes(self.buf)!r}")
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError as exc:
            raise AssertionError(f"connection broken: {exc!r}; have {bytes(self.buf)!r}") from exc
        if not data:
            self.eof = True
        self.buf += data

    async def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def response(self, method: str = "GET") -> RawResponse:
        """The next response (a 1xx one included) to a request with ``method``."""
        status_line = await self._line()
        version, status, reason = status_line.split(b" ", 2)
        assert version in (b"HTTP/1.1", b"HTTP/1.0"), status_line
        headers = []
        while line := await self._line():
            name, sep, value = line.partition(b":")
            assert sep and name and name == name.strip(), line
            headers.append((name.lower(), value.strip(b" \t")))
        resp = RawResponse(version, int(status), reason, headers, b"", False, [])
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if resp.status < 200 or resp.status in (204, 304) or method == "HEAD":
            assert te is None or method == "HEAD", "chunked framing on a bodiless response"
            return resp
        if te is not None:
            assert te.lower() == "chunked", te
            assert cl is None, "both Content-Length and Transfer-Encoding"
            resp.chunked = True
            while True:
                size_line = await self._line()
                size = int(size_line, 16)
                if size == 0:
                    assert await self._line() == b"", "trailers in a response"
                    break
                chunk = await self._exactly(size)
                assert await self._line() == b"", "chunk not followed by CRLF"
                resp.chunks.append(chunk)
            resp.body = b"".join(resp.chunks)
        elif cl is not None:
            resp.body = await self._exactly(int(cl))
        else:
            resp.body = await self.read_to_eof()
        return resp

    async def read_to_eof(self) -> bytes:
        """Everything until the server closes."""
        while not self.eof:
            await self._fill()
        data = bytes(self.buf)
        self.buf.clear()
        return data

    async def expect_eof(self) -> None:
        """Assert the server closes with nothing more sent."""
        rest = await self.read_to_eof()
        assert rest == b"", f"unexpected bytes before EOF: {rest!r}"

    async def responses_until_eof(self, methods: Iterable[str] = ()) -> list[RawResponse]:
        """Every response until EOF (the i-th parsed as an answer to ``methods[i]``, else GET)."""
        methods = list(methods)
        out: list[RawResponse] = []
        while True:
            while not self.buf and not self.eof:
                await self._fill()
            if not self.buf:
                return out
            method = methods[len(out)] if len(out) < len(methods) else "GET"
            out.append(await self.response(method))


async def exchange(stream: trio.abc.Stream, data: bytes, method: str = "GET") -> RawResponse:
    """Send ``data`` and read one response."""
    await stream.send_all(data)
    return await Reader(stream).response(method)


def get(target: str = "/", *headers: str, version: str = "1.1", body: bytes = b"") -> bytes:
    """A raw request: ``get("/x", "Connection: close")``."""
    method = "GET"
    if " " in target:
        method, target = target.split(" ", 1)
    lines = [f"{method} {target} HTTP/{version}"]
    if version == "1.1" and not any(h.lower().startswith("host:") for h in headers):
        lines.append("Host: example.com")
    lines += headers
    if body and not any(
        h.lower().startswith(("content-length", "transfer-encoding")) for h in headers
    ):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class H11Client:
    """An ``h11.Connection(CLIENT)`` over a stream: the strict oracle for responses."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, *events: Any) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
                continue
            return event

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> tuple[h11.Response, bytes]:
        """Send a request and read its whole response (starting a new cycle if possible)."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        headers = [("Host", "example.com"), *(headers or [])]
        if body and not any(n.lower() == "transfer-encoding" for n, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        await self.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        return await self.response()

    async def response(self) -> tuple[h11.Response, bytes]:
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        assert isinstance(event, h11.Response), event
        body = b""
        while True:
            part = await self.next_event()
            if isinstance(part, h11.EndOfMessage):
                return event, body
            assert isinstance(part, h11.Data), part
            body += part.data


def h11_header(response: h11.Response, name: str) -> str | None:
    key = name.lower().encode()
    values = [v.decode("latin-1") for n, v in response.headers if n == key]
    return ", ".join(values) if values else None


# -- subprocesses -----------------------------------------------------------------


class ServerProcess:
    """``python -m peregrine_rt ...`` as a child; ``port`` is read from its log."""

    def __init__(
        self,
        *args: str,
        cwd: Path = REPO,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.argv = [*(command or [PYTHON, "-m", "peregrine_rt"]), *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = ""

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        """The first stderr line containing ``needle``, reading more until it appears.

        Reads the pipe with ``os.read`` on its descriptor: a buffered
        ``readline`` can take two lines at once and leave the second in its
        buffer, where ``select`` does not see it.
        """
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                for line in self.log.splitlines(keepends=True):
                    if needle in line and line.endswith("\n"):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{needle!r} not logged in {timeout} s: {self.log!r}")
                if not sel.select(remaining):
                    continue
                data = os.read(fd, 65536)
                if not data:
                    raise AssertionError(f"exited before logging {needle!r}: {self.log!r}")
                self.log += data.decode("utf-8", "replace")

    @property
    def port(self) -> int:
        line = self.wait_for_log("serving ")
        return int(line.rsplit(":", 1)[1])

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for exit; the return code and all of stderr."""
        _, err = self.proc.communicate(timeout=timeout)
        self.log += err
        return self.proc.returncode, self.log

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def spawn() -> Iterable[Any]:
    """Start ``ServerProcess``es that are killed at the end of the test if still running."""
    procs: list[ServerProcess] = []

    def start(*args: str, **kwargs: Any) -> ServerProcess:
        proc = ServerProcess(*args, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


@asynccontextmanager
async def client_over(
    app: Any, transport: str, **config: Any
) -> AsyncIterator[tuple[Client, pr.Server]]:
    """A test client of ``app`` and its server: in memory, or over a loopback socket."""
    options = {**FAST_CONFIG, **config}
    if transport == "tcp":
        async with open_live_server(app, **options) as live, open_client(live.url) as client:
            yield client, live.server
    else:
        async with open_client(app, **options) as client:
            assert client.server is not None  # open_client(app) always builds one
            yield client, client.server
