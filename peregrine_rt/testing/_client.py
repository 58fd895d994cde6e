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
import difflib
import hashlib
import json as jsonlib
import math
import os
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
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import urlencode, urlsplit

import h11
import trio
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import client_extensions_handshake
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from .._server import Server
from ._multipart import FileArg, encode_multipart
from ._response import ClientResponse, H11Connection, WebSocketRejected
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
        data: a body of form fields (``application/x-www-form-urlencoded``,
            or multipart with ``files``).
        files: uploads, sent as ``multipart/form-data`` with the ``data``
            fields: ``{"file": ("notes.txt", b"...", "text/plain")}`` (or
            just the bytes, or ``(filename, bytes)``).
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
    files: Mapping[str, FileArg]
    content: Content
    timeout: Timeout


_OPTION_NAMES = tuple(RequestOptions.__annotations__)


def check_options(method: str, options: Mapping[str, object]) -> None:
    """Refuse keyword arguments a request does not take, as a Python function would.

    ``Unpack[RequestOptions]`` tells a type checker, but nothing checks at run
    time: without this, ``jsn={...}`` would send a request without a body and
    the test could pass.

    Raises:
        TypeError: naming the argument and the closest option.
    """
    for name in options:
        if name in _OPTION_NAMES:
            continue
        close = difflib.get_close_matches(name, _OPTION_NAMES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TypeError(
            f"a {method} request got an unexpected keyword argument {name!r}{hint} "
            f"(a request takes {', '.join(_OPTION_NAMES)})"
        )


# -- responses ----------------------------------------------------------------------


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def _build_request(
    method: str, url: str, host: str, options: RequestOptions
) -> tuple[str, list[tuple[bytes, bytes]], Any]:
    """The target, headers and body (bytes, an iterable, or None) of a request."""
    check_options(method, options)
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

    bodies: list[str] = [k for k in ("json", "data", "content") if k in options]
    if "files" in options and "data" not in options:
        bodies.append("files")
    if len(bodies) > 1:
        raise TypeError(f"give one body, not {' and '.join(bodies)}")
    body: Any = None
    content_type: str | None = None
    if "files" in options:
        body, content_type = encode_multipart(options.get("data"), options["files"])
    elif "json" in options:
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
    conn: H11Connection,
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

    def __init__(self, conn: H11Connection, host: str, timeout: float | None) -> None:
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
                H11Connection(stream),
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
                H11Connection(stream),
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
            yield KeepAliveConnection(H11Connection(stream), self._host, self.timeout)

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
            conn = H11Connection(stream)
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
        conn: H11Connection,
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
