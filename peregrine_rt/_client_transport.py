"""The client's WebSocket: wsproto over one trio stream (TCP, TLS, or any stream).

:func:`open_link` resolves a ``ws://`` or ``wss://`` URL, opens the stream
(``trio.open_tcp_stream``, or ``trio.open_ssl_over_tcp_stream`` for ``wss``;
a caller may pass its own ``connect`` function instead, as the testing helpers
do to reach an app over memory streams), and runs the opening handshake with
wsproto's client :class:`~wsproto.WSConnection` (h11 underneath).  A refusal
raises :class:`~peregrine_rt.HandshakeError` with the HTTP status.

A :class:`Link` is then read by one task (:meth:`Link.receive`, text messages
only: Phoenix V2 JSON never sends binary frames) and written by any task
(:meth:`Link.send`, serialised by a lock).  Pings are answered as they are
read; the server's close frame is answered, and then ``receive`` returns
``None``.  Nothing here knows about Channels.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from .exceptions import ConnectionClosed, HandshakeError

__all__ = ["Connect", "Endpoint", "Link", "open_link"]

Connect = Callable[[], Awaitable[trio.abc.Stream]]
"""An async function that opens the stream a link runs over."""

_RECEIVE_SIZE = 65536
_MAX_REJECTION = 4096  # bytes of a refusal's body kept for the error message


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a URL points: ``host``, ``port``, ``tls``, request ``target``, ``Host`` header."""

    host: str
    port: int
    tls: bool
    target: str
    authority: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Read a ``ws://``/``wss://`` URL (``http``/``https`` are taken as the same).

        Raises:
            ValueError: another scheme, or no host.
        """
        parts = urlsplit(url)
        scheme = {"ws": "ws", "http": "ws", "wss": "wss", "https": "wss"}.get(parts.scheme)
        if scheme is None or not parts.hostname:
            raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
        tls = scheme == "wss"
        port = parts.port or (443 if tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, port, tls, target, parts.netloc)


class Link:
    """One open WebSocket: send text, receive text, close.

    Attributes:
        subprotocol: the subprotocol the server chose, or ``None``.
        headers: the headers of the server's 101 answer (names in lower case).
        close_code: the code of the close frame received (1006: the
            connection dropped without one); ``None`` while open.
        close_reason: its reason.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: WSConnection,
        subprotocol: str | None,
        max_message_size: int,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.subprotocol = subprotocol
        self.headers = headers or []
        self.close_code: int | None = None
        self.close_reason = ""
        self._stream = stream
        self._conn = conn
        self._max = max_message_size
        self._parts: list[str] = []
        self._size = 0
        self._lock = trio.StrictFIFOLock()

    async def send(self, text: str) -> None:
        """Send one text message.

        Raises:
            ConnectionClosed: the WebSocket is closed or the connection broke.
        """
        if self._conn.state is not ConnectionState.OPEN:
            raise ConnectionClosed.for_code(self.close_code or 1006, self.close_reason)
        await self._write(self._conn.send(TextMessage(data=text)))

    async def receive(self) -> str | None:
        """The next text message, or ``None`` once the WebSocket has closed."""
        while True:
            for event in self._conn.events():
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    self._size += len(event.data)
                    if self._size > self._max:
                        await self.close(1009, "message too big")
                        return None
                    if event.message_finished:
                        text = "".join(self._parts)
                        self._parts, self._size = [], 0
                        return text
                elif isinstance(event, BytesMessage):
                    continue  # not part of the JSON serializer: ignored, as phoenix.js would
                elif isinstance(event, Ping):
                    await self._write_quietly(self._conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.close_code is None:
                        self.close_code, self.close_reason = int(event.code), event.reason or ""
                    if self._conn.state is ConnectionState.REMOTE_CLOSING:
                        await self._write_quietly(self._conn.send(event.response()))
                    await trio.aclose_forcefully(self._stream)
                    return None
            if self.close_code is not None and self._conn.state is ConnectionState.CLOSED:
                return None
            try:
                data = await self._stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            try:
                self._conn.receive_data(bytes(data) if data else None)
            except WSRemoteProtocolError:
                self.close_code, self.close_reason = 1002, "invalid frames from the server"
                await trio.aclose_forcefully(self._stream)
                return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if still open); the reader sees the server's answer."""
        if self._conn.state is ConnectionState.OPEN:
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason
            await self._write_quietly(self._conn.send(CloseConnection(code=code, reason=reason)))

    async def aclose(self) -> None:
        """Drop the connection at once."""
        if self.close_code is None:
            self.close_code = 1006
        await trio.aclose_forcefully(self._stream)

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionClosed.for_code(
                    self.close_code or 1006, self.close_reason
                ) from None

    async def _write_quietly(self, data: bytes) -> None:
        try:
            await self._write(data)
        except ConnectionClosed:
            pass


async def _open_stream(endpoint: Endpoint, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    if endpoint.tls:
        return await trio.open_ssl_over_tcp_stream(
            endpoint.host,
            endpoint.port,
            ssl_context=ssl_context or ssl.create_default_context(),
            https_compatible=True,
        )
    return await trio.open_tcp_stream(endpoint.host, endpoint.port)


async def open_link(
    endpoint: Endpoint,
    target: str,
    *,
    headers: Mapping[str, str],
    subprotocols: list[str],
    connect: Connect | None,
    ssl_context: ssl.SSLContext | None,
    max_message_size: int,
) -> Link:
    """Open the stream and run the opening handshake for ``target``.

    Raises:
        OSError: the connection could not be made (refused, unreachable, TLS).
        HandshakeError: the server refused the upgrade (``.status``) or broke
            off during it (status 0).
    """
    stream = await connect() if connect is not None else await _open_stream(endpoint, ssl_context)
    try:
        conn = WSConnection(ConnectionType.CLIENT)
        extra = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
        ]
        request = Request(
            host=endpoint.authority,
            target=target,
            subprotocols=subprotocols,
            extra_headers=extra,
        )
        await stream.send_all(conn.send(request))
        status = 0
        body = b""
        while True:
            for event in conn.events():
                if isinstance(event, AcceptConnection):
                    answer = [
                        (name.decode("latin-1").lower(), value.decode("latin-1"))
                        for name, value in event.extra_headers
                    ]
                    return Link(stream, conn, event.subprotocol, max_message_size, answer)
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise HandshakeError(f"the server refused the WebSocket: {status}", status)
                elif isinstance(event, RejectData):
                    body += event.data[: _MAX_REJECTION - len(body)]
                    if event.body_finished:
                        detail = body.decode("utf-8", "replace").strip()
                        raise HandshakeError(
                            f"the server refused the WebSocket: {status} {detail}".rstrip(),
                            status,
                        )
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise HandshakeError("the server closed the connection during the handshake", 0)
            try:
                conn.receive_data(bytes(data))
            except WSRemoteProtocolError as exc:
                raise HandshakeError(f"bad handshake response: {exc}", 0) from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
