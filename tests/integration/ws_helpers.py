"""WebSocket clients and frame builders for the WebSocket integration tests.

:class:`WSClient` is a wsproto client over any trio stream (a memory stream
served through ``Server.handle_stream``, a lockstep stream pair, or a real
socket): the handshake is built by hand (so that it can be malformed on
purpose), the frames are wsproto's, and :func:`frame` builds raw frame bytes
for the malformed frames wsproto refuses to send.

:class:`Recorder` is a handler that records every callback with its arguments,
so that tests can check the lifecycle order and that ``on_close`` ran once.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

import peregrine_rt as pr

from .conftest import Harness, RawResponse, Reader

# RFC 6455 §1.3: the example key and the accept value it must produce.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_for(key: str) -> str:
    digest = hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def handshake(
    path: str = "/ws",
    *extra: str,
    method: str = "GET",
    http: str = "1.1",
    key: str | None = RFC_KEY,
    version: str | None = "13",
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
    protocols: str | None = None,
    extensions: str | None = None,
    origin: str | None = None,
) -> bytes:
    """The bytes of an opening handshake; ``None`` leaves a header out."""
    lines = [f"{method} {path} HTTP/{http}", "Host: example.com"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One raw frame; ``length`` declares a payload length other than ``len(payload)``."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    head += key
    return bytes(head) + masked(payload, key)


def masked(payload: bytes, key: bytes, offset: int = 0) -> bytes:
    """``payload`` XORed with the masking ``key``, starting ``offset`` bytes into the frame."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def valid_close_code(code: int) -> bool:
    """Whether RFC 6455 §7.4 lets an endpoint send ``code`` in a close frame."""
    return code in (1000, 1001, 1002, 1003, *range(1007, 1015)) or 3000 <= code <= 4999


async def read_server_frame(stream: trio.abc.Stream) -> tuple[int, bool, bytes]:
    """One raw frame from the server: ``(opcode, fin, payload)`` (the server never masks)."""
    buf = bytearray()

    async def need(n: int) -> None:
        while len(buf) < n:
            data = await stream.receive_some(65536)
            assert data, f"EOF inside a frame: {bytes(buf)!r}"
            buf.extend(data)

    await need(2)
    assert not buf[1] & 0x80, "a masked frame from the server"
    n, offset = buf[1] & 0x7F, 2
    if n == 126:
        await need(4)
        n, offset = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        await need(10)
        n, offset = struct.unpack("!Q", buf[2:10])[0], 10
    await need(offset + n)
    assert len(buf) == offset + n, "more than one frame read"
    return buf[0] & 0x0F, bool(buf[0] & 0x80), bytes(buf[offset:])


@dataclass
class Close:
    """A close frame the client received (``code`` 1006: the connection ended without one)."""

    code: int
    reason: str


@dataclass
class WSClient:
    """A wsproto client over ``stream``, after a successful handshake."""

    stream: trio.abc.Stream
    response: RawResponse
    conn: Connection
    auto_pong: bool = True
    pings: list[bytes] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    received_bytes: int = 0
    eof: bool = False
    _parts: list[Any] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        stream: trio.abc.Stream,
        request: bytes | None = None,
        *,
        compression: bool = False,
        auto_pong: bool = True,
        **handshake_args: Any,
    ) -> WSClient:
        """Send the handshake (default: :func:`handshake` with ``handshake_args``), expect 101."""
        extension: PerMessageDeflate | None = None
        if compression:
            extension = PerMessageDeflate()
            offer = extension.offer()
            assert isinstance(offer, str)
            handshake_args.setdefault("extensions", f"{extension.name}; {offer}")
        if request is None:
            handshake_args.setdefault("key", new_key())
            request = handshake(**handshake_args)
        await stream.send_all(request)
        reader = Reader(stream)
        response = await reader.response()
        assert response.status == 101, (response.status, response.body)
        accepted = response.header("sec-websocket-extensions")
        extensions = []
        if accepted is not None:
            assert extension is not None, f"extension {accepted!r} not offered"
            extension.finalize(accepted)
            extensions.append(extension)
        conn = Connection(ConnectionType.CLIENT, extensions, trailing_data=bytes(reader.buf))
        return cls(stream, response, conn, auto_pong=auto_pong)

    async def send(self, message: str | bytes) -> None:
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(message)
        await self.stream.send_all(self.conn.send(event))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _pump(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        self.received_bytes += len(data)
        if not data:
            self.eof = True
            if self.conn.state is not ConnectionState.CLOSED:
                self.conn.receive_data(None)
            return
        if self.conn.state is ConnectionState.CLOSED:
            raise AssertionError(f"data after the close handshake: {data!r}")
        self.conn.receive_data(data)

    async def receive(self) -> str | bytes | Close:
        """The next whole message, or the close frame (answered) / Close(1006) at EOF."""
        while True:
            for event in self.conn.events():
                if isinstance(event, Ping):
                    self.pings.append(bytes(event.payload))
                    if self.auto_pong and self.conn.state is ConnectionState.OPEN:
                        # Shielded: a ping taken from wsproto must be answered even
                        # if a timeout around receive() fires right here.
                        with trio.CancelScope(shield=True):
                            await self.stream.send_all(self.conn.send(event.response()))
                elif isinstance(event, Pong):
                    self.pongs.append(bytes(event.payload))
                elif isinstance(event, (TextMessage, BytesMessage)):
                    self._parts.append(event.data)
                    if event.message_finished:
                        parts, self._parts = self._parts, []
                        if isinstance(event, TextMessage):
                            return "".join(parts)
                        return b"".join(parts)
                elif isinstance(event, CloseConnection):
                    if self.conn.state is ConnectionState.REMOTE_CLOSING:
                        try:
                            await self.stream.send_all(self.conn.send(event.response()))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                    return Close(event.code, event.reason or "")
            if self.eof:
                return Close(1006, "")
            await self._pump()

    async def receive_close_unanswered(self) -> Close:
        """Read until the server's close frame and do not answer it (other frames are dropped)."""
        while True:
            for event in self.conn.events():
                if isinstance(event, CloseConnection):
                    return Close(event.code, event.reason or "")
            if self.eof:
                return Close(1006, "")
            await self._pump()

    async def receive_message(self) -> str | bytes:
        message = await self.receive()
        assert not isinstance(message, Close), f"closed instead of a message: {message}"
        return message

    async def expect_close(self) -> Close:
        """Read until the server's close frame (answering it) and then EOF."""
        while True:
            event = await self.receive()
            if isinstance(event, Close):
                break
        await self.expect_eof()
        return event

    async def expect_eof(self) -> None:
        while not self.eof:
            await self._pump()
            for event in self.conn.events():
                assert isinstance(event, CloseConnection), f"unexpected {event!r} before EOF"

    async def close(self, code: int = 1000, reason: str = "") -> Close:
        """Start the close handshake; the server's answer once it has closed the connection."""
        await self.stream.send_all(self.conn.send(CloseConnection(code=code, reason=reason)))
        return await self.expect_close()

    async def abort(self) -> None:
        """Drop the connection without a close frame."""
        await trio.aclose_forcefully(self.stream)


async def connect_ws(h: Harness, **kwargs: Any) -> WSClient:
    """A new connection through the harness, upgraded (``kwargs`` go to :meth:`WSClient.open`)."""
    return await WSClient.open(await h.connect(), **kwargs)


async def lockstep_connection(h: Harness) -> trio.abc.Stream:
    """A connection whose sends complete only as the client reads (no buffering at all)."""
    client, server_side = trio.testing.lockstep_stream_pair()
    h.nursery.start_soon(h.server.handle_stream, server_side, None)
    h.streams.append(client)
    return client


class Recorder:
    """Records every callback: ``events`` holds ``(name, ws, *args)`` tuples in order.

    ``handle`` upgrades any request to ``/ws...`` (with ``self.upgrade_args``) and
    answers 404 otherwise.  Messages steer ``on_message``: ``"close <code> <reason>"``
    closes, ``"raise"`` raises, anything else is echoed.
    """

    def __init__(self, **upgrade_args: Any) -> None:
        self.upgrade_args = upgrade_args
        self.events: list[tuple[Any, ...]] = []
        self.sockets: list[pr.WebSocket] = []
        self.opened = trio.Event()
        self.closed = trio.Event()
        self.send_errors: list[pr.ConnectionClosed] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if not request.path.startswith("/ws"):
            response.status = 404
            return
        ws = await pr.upgrade(request, response, **self.upgrade_args)
        self.sockets.append(ws)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.events.append(("open", ws))
        self.opened.set()

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        self.events.append(("message", ws, message))
        if isinstance(message, str) and message.startswith("close "):
            _, code, *reason = message.split(" ", 2)
            await ws.close(int(code), reason[0] if reason else "")
        elif message == "raise":
            raise RuntimeError("boom from on_message")
        else:
            await ws.send(message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.events.append(("close", ws, code, reason))
        try:
            await ws.send("after close")
        except pr.ConnectionClosed as exc:
            self.send_errors.append(exc)
        self.closed.set()

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    def closes(self) -> list[tuple[int, str]]:
        return [(e[2], e[3]) for e in self.events if e[0] == "close"]
