"""The test :class:`Client`: HTTP requests and WebSockets over any connection to the app.

:func:`~peregrine_rt.testing.open_client` (in ``_server.py``) gives it its
connections: memory streams served by the app's real server, or TCP.

Requests are encoded and responses parsed by h11 (an independent HTTP/1.1
implementation, strict about what the server sends); WebSocket frames by
wsproto.

Connections: every ``client.get()`` (and every other request) opens its own
connection and closes it once the response is read, so that concurrent
requests never wait for each other and no request depends on the keep-alive
state of an earlier one.  ``async with client.connection() as conn`` gives one
keep-alive connection for requests that must share it; ``client.websocket()``
opens one connection per WebSocket.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json as jsonlib
import math
import os
import re
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, Generic, TypedDict, TypeVar, Unpack
from urllib.parse import urlencode, urlsplit

import h11
import trio
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import client_extensions_handshake
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from .._http import Headers
from .._server import Server
from ..exceptions import HandshakeError
from ._websocket import (
    UNSET,
    ClientWebSocket,
    ReceiveTimeout,
    Timeout,
    UnexpectedEvent,
    describe_bytes,
    resolve_timeout,
)

__all__ = [
    "Client",
    "ClientResponse",
    "KeepAliveConnection",
    "RequestOptions",
    "WebSocketRejected",
]

T = TypeVar("T")

TEST_HOST = "testserver"
"""The ``Host`` of requests to an in-memory app."""

_RECEIVE_SIZE = 65536
_CLOSED = "the server closed the connection"
_KEPT = 4096  # bytes of a response kept to quote in failures
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

HeadersArg = Mapping[str, str] | Sequence[tuple[str | bytes, str | bytes]]
ParamsArg = Mapping[str, Any] | Sequence[tuple[str, Any]]
Content = str | bytes | Iterable[bytes] | AsyncIterable[bytes]


class RequestOptions(TypedDict, total=False):
    """What a request may carry besides its method and URL.

    Attributes:
        params: query parameters, added to those in the URL (a mapping, or
            ``(name, value)`` pairs; a list value repeats the name).
        headers: request headers (a mapping or ``(name, value)`` pairs).
        cookies: sent in one ``Cookie`` header.
        json: a body encoded as JSON (``application/json``).
        data: a body of form fields (``application/x-www-form-urlencoded``).
        content: a raw body: ``bytes``, ``str`` (UTF-8), or an iterable /
            async iterable of ``bytes`` sent as it is produced, chunked.
        timeout: seconds to wait for the whole response — with ``stream()``,
            for its head and then for each chunk (``None``: forever; default:
            the client's).
    """

    params: ParamsArg
    headers: HeadersArg
    cookies: Mapping[str, str]
    json: Any
    data: Mapping[str, Any]
    content: Content
    timeout: Timeout


# -- responses ----------------------------------------------------------------------


class ClientResponse:
    """A response as the test client received it.

    Attributes:
        status: the status code.
        reason: the reason phrase.
        http_version: ``"1.1"`` or ``"1.0"``.
        headers: a :class:`~peregrine_rt.Headers` (case-insensitive,
            ``getlist()`` for repeated fields, ``raw`` for the exact bytes).
        method, target: the request it answers.
        chunks: the body as it arrived: one item per chunk of a chunked body
            (one per ``send()`` of a streamed response), else per read.

    A response from ``client.get()`` and the like has its whole body; one
    from ``client.stream()`` has its head only: read the body with
    :meth:`aiter_bytes`, :meth:`aiter_lines`, :meth:`next_chunk` or :meth:`aread`.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        http_version: str,
        headers: Headers,
        *,
        method: str,
        target: str,
    ) -> None:
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.method = method
        self.target = target
        self.chunks: list[bytes] = []
        self._content: bytes | None = None
        self._conn: _H11Connection | None = None
        self._partial: list[bytes] = []
        self._timeout: float | None = None

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status} {self.reason} to {self.method} {self.target}>"

    @property
    def content(self) -> bytes:
        """The whole body (of a streamed response, once read to its end)."""
        if self._content is None:
            raise RuntimeError(
                "the body of this streamed response is not read yet: await response.aread()"
            )
        return self._content

    @property
    def charset(self) -> str:
        """The ``charset`` of the ``Content-Type``, or ``utf-8``."""
        content_type = self.headers.get("content-type") or ""
        match = re.search(r";\s*charset=\"?([\w.:-]+)", content_type, re.I)
        return match.group(1) if match else "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with :attr:`charset`."""
        return self.content.decode(self.charset, "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.content)

    @property
    def is_complete(self) -> bool:
        """Whether the whole body has been read."""
        return self._content is not None

    # -- streamed bodies ---------------------------------------------------------

    async def next_chunk(self, *, timeout: Timeout = UNSET) -> bytes | None:
        """The next chunk of the body as the server sent it, or ``None`` at its end.

        With chunked transfer coding (every streamed response to HTTP/1.1)
        one chunk is what one ``await send(piece)`` in the handler wrote.

        Raises:
            ReceiveTimeout: no whole chunk arrived within ``timeout`` seconds.
        """
        if self._content is not None:
            return None
        limit = resolve_timeout(timeout, self._timeout)
        with trio.move_on_after(math.inf if limit is None else limit):
            return await self._read_chunk()
        assert limit is not None
        received = "nothing"
        if self._partial:
            received = f"part of a chunk ({sum(map(len, self._partial))} bytes so far)"
        raise ReceiveTimeout(f"the next chunk of the response to {self._what}", received, limit)

    def aiter_bytes(self, *, timeout: Timeout = UNSET) -> AsyncIterator[bytes]:
        """Iterate over the rest of the body chunk by chunk (``timeout`` applies to each).

        Like the other ``aiter_*`` methods it returns a plain iterator, not an
        async generator: breaking out of ``async for`` needs no cleanup.
        """
        return _BodyIterator(self, timeout, lambda chunk: [] if chunk is None else [chunk])

    def aiter_text(self, *, timeout: Timeout = UNSET) -> AsyncIterator[str]:
        """Iterate over the rest of the body as text, decoded with :attr:`charset`."""
        decoder = codecs.getincrementaldecoder(self.charset)("replace")

        def decode(chunk: bytes | None) -> list[str]:
            text = decoder.decode(b"", final=True) if chunk is None else decoder.decode(chunk)
            return [text] if text else []

        return _BodyIterator(self, timeout, decode)

    def aiter_lines(self, *, timeout: Timeout = UNSET) -> AsyncIterator[str]:
        r"""Iterate over the rest of the body line by line, without line ends (``\n``, ``\r\n``)."""
        decoder = codecs.getincrementaldecoder(self.charset)("replace")
        pending = ""

        def split(chunk: bytes | None) -> list[str]:
            nonlocal pending
            if chunk is None:
                rest, pending = pending + decoder.decode(b"", final=True), ""
                return [rest] if rest else []
            *lines, pending = (pending + decoder.decode(chunk)).split("\n")
            return [line.removesuffix("\r") for line in lines]

        return _BodyIterator(self, timeout, split)

    async def aread(self, *, timeout: Timeout = UNSET) -> bytes:
        """Read the rest of the body and return the whole of it."""
        if self._content is not None:
            return self._content
        limit = resolve_timeout(timeout, self._timeout)
        with trio.move_on_after(math.inf if limit is None else limit):
            while await self._read_chunk() is not None:
                pass
            return self.content
        assert limit is not None
        raise ReceiveTimeout(f"the end of the response to {self._what}", self._progress(), limit)

    # -- the machinery -------------------------------------------------------------

    @property
    def _what(self) -> str:
        return f"{self.method} {self.target} ({self.status} {self.reason})"

    def _progress(self) -> str:
        size = sum(map(len, self.chunks)) + sum(map(len, self._partial))
        progress = f"{size} bytes of body in {len(self.chunks)} chunks so far"
        if self.headers.get("transfer-encoding"):
            progress += " (a streamed response: read it with client.stream())"
        return progress

    async def _read_chunk(self) -> bytes | None:
        conn = self._conn
        assert conn is not None
        chunked = "chunked" in (self.headers.get("transfer-encoding") or "").lower()
        while True:
            event = await conn.next_event("the rest of the response", self._what)
            if isinstance(event, h11.Data):
                self._partial.append(bytes(event.data))
                if chunked and not event.chunk_end:
                    continue
                chunk = b"".join(self._partial)
                self._partial.clear()
                self.chunks.append(chunk)
                return chunk
            if isinstance(event, h11.EndOfMessage):
                if self._partial:  # pragma: no cover - h11 ends chunks before the message
                    self.chunks.append(b"".join(self._partial))
                    self._partial.clear()
                self._content = b"".join(self.chunks)
                return None
            raise UnexpectedEvent(
                f"the body of the response to {self._what}", f"h11 event {event!r}"
            )


class _BodyIterator(Generic[T]):
    """Chunks of a response body turned into items by ``produce`` (``None``: the end)."""

    def __init__(
        self,
        response: ClientResponse,
        timeout: Timeout,
        produce: Callable[[bytes | None], list[T]],
    ) -> None:
        self._response = response
        self._timeout = timeout
        self._produce = produce
        self._items: deque[T] = deque()
        self._done = False

    def __aiter__(self) -> _BodyIterator[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._done:
                raise StopAsyncIteration
            chunk = await self._response.next_chunk(timeout=self._timeout)
            self._done = chunk is None
            self._items.extend(self._produce(chunk))
        return self._items.popleft()


class WebSocketRejected(HandshakeError):
    """The server answered a WebSocket handshake with something other than 101.

    Attributes:
        response: the :class:`ClientResponse` (status, headers, body).
        status: its status code.
    """

    def __init__(self, response: ClientResponse) -> None:
        body = response.content
        detail = f": {body[:200]!r}" if body else ""
        super().__init__(
            f"the server refused the WebSocket handshake for {response.target} with "
            f"{response.status} {response.reason}{detail}",
            response.status,
        )
        self.response = response


# -- one HTTP/1.1 connection ------------------------------------------------------------


class _H11Connection:
    """h11 over one stream: send a request, read its response."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.received = bytearray()  # the start of the current response, for failures
        self.send_failed = False
        self.eof = False

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data and not self.send_failed:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The server closed (e.g. it answered 413 early): read its answer.
                self.send_failed = True

    async def next_event(self, part: str, request: str) -> Any:
        """The next h11 event of ``part`` ("the response") of the response to ``request``."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                received = describe_bytes(bytes(self.received))
                if self.eof and not self.received:
                    raise UnexpectedEvent(
                        f"{part} to {request}",
                        "the server closed the connection (having sent nothing)",
                    ) from None
                closed = "the server closed the connection having sent " if self.eof else ""
                raise UnexpectedEvent(
                    f"a valid HTTP/1.1 response to {request}",
                    f"{closed}{received}, which h11 refuses: {exc}",
                ) from None
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.eof = True
                if len(self.received) < _KEPT:
                    self.received += data[: _KEPT - len(self.received)]
                self.h11.receive_data(bytes(data))
                continue
            if isinstance(event, h11.ConnectionClosed):  # pragma: no cover - h11 raises instead
                received = describe_bytes(bytes(self.received))
                raise UnexpectedEvent(
                    f"{part} to {request}",
                    f"the server closed the connection (having sent {received})",
                )
            return event

    async def send_request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: Any
    ) -> None:
        self.received.clear()
        await self.send(h11.Request(method=method, target=target, headers=headers))
        if isinstance(body, bytes):
            if body:
                await self.send(h11.Data(data=body))
        elif isinstance(body, AsyncIterable):
            async for piece in body:
                if piece and not self.send_failed:
                    await self.send(h11.Data(data=bytes(piece)))
        elif body is not None:
            for piece in body:
                if piece and not self.send_failed:
                    await self.send(h11.Data(data=bytes(piece)))
        if not self.send_failed:
            # (After an early answer and close the body stays short of its declared
            # length: ending it would be an h11 error; the answer is what counts.)
            await self.send(h11.EndOfMessage())

    async def receive_head(self, method: str, target: str) -> ClientResponse:
        """The next final response's head (1xx responses are skipped)."""
        request = f"{method} {target}"
        while True:
            event = await self.next_event("the response", request)
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return _make_response(event, method, target)
                continue
            raise UnexpectedEvent(  # pragma: no cover
                f"the response to {request}", f"h11 event {event!r}"
            )
        response = _make_response(event, method, target)
        response._conn = self
        return response


def _make_response(event: Any, method: str, target: str) -> ClientResponse:
    try:
        phrase = event.reason.decode("latin-1") or HTTPStatus(event.status_code).phrase
    except ValueError:
        phrase = ""
    return ClientResponse(
        event.status_code,
        phrase,
        event.http_version.decode("ascii"),
        Headers([(bytes(n), bytes(v)) for n, v in event.headers.raw_items()]),
        method=method,
        target=target,
    )


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def _build_request(
    method: str, url: str, host: str, options: RequestOptions
) -> tuple[str, list[tuple[bytes, bytes]], Any]:
    """The target, headers and body (bytes, an iterable, or None) of a request."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if not target.startswith("/"):
        raise ValueError(f"a request URL is a path (/...) or an absolute URL, not {url!r}")
    if parts.netloc:
        host = parts.netloc
    query = parts.query
    params = options.get("params")
    if params:
        extra = urlencode(list(params.items()) if isinstance(params, Mapping) else params, True)
        query = f"{query}&{extra}" if query else extra
    if query:
        target += "?" + query

    given = options.get("headers") or ()
    items = given.items() if isinstance(given, Mapping) else given
    pairs = [(_as_bytes(name).lower(), _as_bytes(value)) for name, value in items]
    names = {name for name, _ in pairs}
    headers: list[tuple[bytes, bytes]] = []
    if b"host" not in names:
        headers.append((b"host", host.encode("idna")))
    headers += pairs
    cookies = options.get("cookies")
    if cookies:
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        headers.append((b"cookie", cookie.encode("latin-1")))

    bodies = [k for k in ("json", "data", "content") if k in options]
    if len(bodies) > 1:
        raise TypeError(f"give one body, not {' and '.join(bodies)}")
    body: Any = None
    content_type: str | None = None
    if "json" in options:
        body = jsonlib.dumps(options["json"]).encode()
        content_type = "application/json"
    elif "data" in options:
        body = urlencode(list(options["data"].items()), True).encode()
        content_type = "application/x-www-form-urlencoded"
    elif "content" in options:
        content = options["content"]
        body = content.encode() if isinstance(content, str) else content
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
    if content_type is not None and b"content-type" not in names:
        headers.append((b"content-type", content_type.encode()))
    if body is not None and not names & {b"content-length", b"transfer-encoding"}:
        if isinstance(body, bytes):
            headers.append((b"content-length", b"%d" % len(body)))
        else:
            headers.append((b"transfer-encoding", b"chunked"))
    return target, headers, body


# -- the client ----------------------------------------------------------------------


class _RequestMethods:
    """``get``, ``post``… over :meth:`request`."""

    async def request(
        self, method: str, url: str, **options: Unpack[RequestOptions]
    ) -> ClientResponse:
        raise NotImplementedError  # pragma: no cover

    async def get(self, url: str, **options: Unpack[RequestOptions]) -> ClientResponse:
        """``GET url`` (see :meth:`request`)."""
        return await self.request("GET", url, **options)

    async def head(self, url: str, **options: Unpack[RequestOptions]) -> ClientResponse:
        """``HEAD url`` (see :meth:`request`)."""
        return await self.request("HEAD", url, **options)

    async def options(self, url: str, **options: Unpack[RequestOptions]) -> ClientResponse:
        """``OPTIONS url`` (see :meth:`request`)."""
        return await self.request("OPTIONS", url, **options)

    async def delete(self, url: str, **options: Unpack[RequestOptions]) -> ClientResponse:
        """``DELETE url`` (see :meth:`request`)."""
        return await self.request("DELETE", url, **options)

    async def post(self, url: str, **options: Unpack[RequestOptions]) -> ClientResponse:
        """``POST url`` with ``json=``, ``data=`` or ``content=`` (see :meth:`request`)."""
        return await self.request("POST", url, **options)

    async def put(self, url: str, **options: Unpack[RequestOptions]) -> ClientResponse:
        """``PUT url`` (see :meth:`request`)."""
        return await self.request("PUT", url, **options)

    async def patch(self, url: str, **options: Unpack[RequestOptions]) -> ClientResponse:
        """``PATCH url`` (see :meth:`request`)."""
        return await self.request("PATCH", url, **options)


async def _exchange(
    conn: _H11Connection,
    method: str,
    url: str,
    host: str,
    options: RequestOptions,
    default_timeout: float | None,
    *,
    read_body: bool,
) -> ClientResponse:
    """Send one request on ``conn`` and read its response (the head only unless ``read_body``)."""
    target, headers, body = _build_request(method, url, host, options)
    limit = resolve_timeout(options.get("timeout", UNSET), default_timeout)
    response: ClientResponse | None = None
    with trio.move_on_after(math.inf if limit is None else limit):
        await conn.send_request(method, target, headers, body)
        response = await conn.receive_head(method, target)
        response._timeout = limit  # for the chunks read later
        if read_body:
            while await response._read_chunk() is not None:
                pass
        return response
    assert limit is not None
    if response is None:
        received = describe_bytes(bytes(conn.received))
        if conn.received:
            received += " (an incomplete response head)"
        raise ReceiveTimeout(f"the response to {method} {target}", received, limit)
    raise ReceiveTimeout(
        f"the end of the response to {response._what}", response._progress(), limit
    )


class KeepAliveConnection(_RequestMethods):
    """One connection on which requests go one after the other (HTTP keep-alive).

    ``async with client.connection() as conn:`` then ``await conn.get(...)``
    as with the client.  When the server closes the connection (``Connection:
    close``, its keep-alive timeout, ``max_requests_per_connection``), the
    next request fails saying so.
    """

    def __init__(self, conn: _H11Connection, host: str, timeout: float | None) -> None:
        self._conn = conn
        self._host = host
        self._timeout = timeout
        self._lock = trio.StrictFIFOLock()

    async def request(
        self, method: str, url: str, **options: Unpack[RequestOptions]
    ) -> ClientResponse:
        """Send a request on this connection and read its whole response."""
        async with self._lock:
            h = self._conn.h11
            if h.our_state is h11.DONE and h.their_state is h11.DONE:
                h.start_next_cycle()
            elif h.our_state is not h11.IDLE:
                raise UnexpectedEvent(
                    f"a connection that can carry {method} {url}",
                    "a connection the server closed after the previous response "
                    f"(h11 states: ours {h.our_state}, theirs {h.their_state})",
                )
            return await _exchange(
                self._conn, method, url, self._host, options, self._timeout, read_body=True
            )


class Client(_RequestMethods):
    """The test client :func:`open_client` yields.

    Attributes:
        server: the :class:`~peregrine_rt.Server` (``None`` for a URL).
        timeout: the default wait for responses, messages and closes.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[trio.abc.Stream]],
        nursery: trio.Nursery,
        *,
        server: Server | None,
        host: str,
        timeout: float | None,
    ) -> None:
        self.server = server
        self.timeout = timeout
        self._connect_stream = connect
        self._nursery = nursery
        self._host = host
        self._streams: set[trio.abc.Stream] = set()

    def __repr__(self) -> str:
        name = self.server.spec.name if self.server is not None else self._host
        return f"<Client of {name}>"

    @property
    def app(self) -> Any:
        """The handler instance the server calls (to look at its state)."""
        if self.server is None:
            raise RuntimeError("a client of a URL does not see the app")
        return self.server.handler_instance

    @asynccontextmanager
    async def _open_stream(self) -> AsyncIterator[trio.abc.Stream]:
        stream = await self._connect_stream()
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def request(
        self, method: str, url: str, **options: Unpack[RequestOptions]
    ) -> ClientResponse:
        """Send a request on a new connection and read the whole response.

        Args:
            method: any method (``"GET"``, ``"PROPFIND"``…).
            url: a path with an optional query (``/items?page=2``), or an
                absolute URL (its host becomes the ``Host`` header).
            **options: see :class:`RequestOptions`: ``params``, ``headers``,
                ``cookies``, one of ``json`` / ``data`` / ``content``, ``timeout``.

        Raises:
            ReceiveTimeout: the whole response did not arrive within ``timeout``
                seconds (the message says how much did).
            UnexpectedEvent: the server closed the connection first, or sent
                a response h11 refuses.
        """
        async with self._open_stream() as stream:
            return await _exchange(
                _H11Connection(stream),
                method,
                url,
                self._host,
                options,
                self.timeout,
                read_body=True,
            )

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, **options: Unpack[RequestOptions]
    ) -> AsyncIterator[ClientResponse]:
        """Send a request and yield the response as soon as its head arrived.

        Read the body within the block, e.g. Server-Sent Events::

            async with client.stream("GET", "/events") as response:
                assert response.headers["content-type"] == "text/event-stream"
                assert await response.next_chunk() == b"data: hello\\n\\n"

        Leaving the block closes the connection, read or not.
        """
        async with self._open_stream() as stream:
            yield await _exchange(
                _H11Connection(stream),
                method,
                url,
                self._host,
                options,
                self.timeout,
                read_body=False,
            )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[KeepAliveConnection]:
        """One keep-alive connection, for requests that must share it (see the class)."""
        async with self._open_stream() as stream:
            yield KeepAliveConnection(_H11Connection(stream), self._host, self.timeout)

    @asynccontextmanager
    async def websocket(
        self,
        path: str,
        *,
        subprotocols: Sequence[str] = (),
        headers: HeadersArg | None = None,
        params: ParamsArg | None = None,
        cookies: Mapping[str, str] | None = None,
        compression: bool = False,
        timeout: Timeout = UNSET,
    ) -> AsyncIterator[ClientWebSocket]:
        """Open a WebSocket to ``path`` for the duration of the block.

        Args:
            path: the path (and query) to upgrade.
            subprotocols: offered in ``Sec-WebSocket-Protocol``, in order.
            headers: more request headers (``Origin``, ``Authorization``…).
            params: query parameters, as for requests.
            cookies: sent in one ``Cookie`` header.
            compression: offer permessage-deflate.
            timeout: the default wait of this socket's ``receive*``, ``ping``
                and ``close`` (default: the client's).

        Leaving the block closes the WebSocket with 1000 and waits until the
        server has closed the connection (so ``on_close`` has run); if the
        block raised, the socket is closed the same way, briefly, and dropped.

        Raises:
            WebSocketRejected: the server answered with another status than 101
                (``.response`` holds it).
            UnexpectedEvent: the server's 101 is not a valid handshake answer.
            ReceiveTimeout: no answer to the handshake within ``timeout`` seconds.
        """
        limit = resolve_timeout(timeout, self.timeout)
        async with self._open_stream() as stream:
            conn = _H11Connection(stream)
            with trio.move_on_after(math.inf if limit is None else limit) as scope:
                ws = await self._handshake(
                    conn, path, subprotocols, headers, params, cookies, compression, limit
                )
            if scope.cancelled_caught:
                assert limit is not None
                received = describe_bytes(bytes(conn.received))
                raise ReceiveTimeout(
                    f"the answer to the WebSocket handshake for {path}", received, limit
                )
            self._nursery.start_soon(ws._read_loop)
            clean = False
            try:
                yield ws
                clean = True
            finally:
                await ws._finish(clean=clean)

    async def _handshake(
        self,
        conn: _H11Connection,
        path: str,
        subprotocols: Sequence[str],
        headers: HeadersArg | None,
        params: ParamsArg | None,
        cookies: Mapping[str, str] | None,
        compression: bool,
        timeout: float | None,
    ) -> ClientWebSocket:
        key = base64.b64encode(os.urandom(16))
        given = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        extra: list[tuple[str | bytes, str | bytes]] = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", key),
            ("sec-websocket-version", "13"),
        ]
        if subprotocols:
            extra.append(("sec-websocket-protocol", ", ".join(subprotocols)))
        offered: list[Extension] = []
        if compression:
            deflate = PerMessageDeflate()
            offer = deflate.offer()
            extra.append(
                ("sec-websocket-extensions", deflate.name + (f"; {offer}" if offer else ""))
            )
            offered.append(deflate)
        options: RequestOptions = {"headers": [*extra, *given]}
        if params:
            options["params"] = params
        if cookies:
            options["cookies"] = cookies
        target, request_headers, _ = _build_request("GET", path, self._host, options)
        await conn.send_request("GET", target, request_headers, None)
        response = await conn.receive_head("GET", target)
        if response.status != 101:
            while await response._read_chunk() is not None:
                pass
            raise WebSocketRejected(response)
        response._content = b""
        expected_accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        accept = response.headers.get("sec-websocket-accept")
        what = f"a valid answer to the WebSocket handshake for {target}"
        if accept != expected_accept:
            raise UnexpectedEvent(
                what, f"Sec-WebSocket-Accept {accept!r} (the key calls for {expected_accept!r})"
            )
        chosen = response.headers.get("sec-websocket-protocol")
        if chosen is not None and chosen not in subprotocols:
            raise UnexpectedEvent(what, f"subprotocol {chosen!r}, which was not offered")
        try:
            extensions = client_extensions_handshake(
                response.headers.getlist("sec-websocket-extensions"), offered
            )
        except WSRemoteProtocolError as exc:
            raise UnexpectedEvent(what, str(exc)) from None
        trailing = conn.h11.trailing_data[0]
        ws_conn = WSConnection(ConnectionType.CLIENT, extensions, trailing)
        return ClientWebSocket(conn.stream, ws_conn, response, target=target, timeout=timeout)

    async def _abort_all(self) -> None:
        for stream in list(self._streams):
            await trio.aclose_forcefully(stream)
