"""What a handler fills in: :class:`Response`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._files import FILE_STATS
from ._http import check_headers, may_have_body
from ._json import dumps
from .exceptions import LocalProtocolError

if TYPE_CHECKING:
    from ._answers import ResponseHeads
    from ._connection import HTTPConnection
    from ._files import FileBody
    from ._request import Request
    from ._sse import EventStream
    from ._transport import Transport

__all__ = ["Response", "ResponseHeaders", "StreamEncoder", "send_file_response"]

_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


class ResponseHeaders:
    """Response header fields: names are case-insensitive and stored lower-cased.

    Every name and value is checked when it is set (a CR, LF or NUL raises
    :class:`~peregrine_rt.exceptions.LocalProtocolError` in the handler that set
    it).  ``Content-Length``, ``Transfer-Encoding`` and ``Connection`` belong to
    the server and cannot be set (use ``response.close_connection = True``).
    """

    __slots__ = ("raw",)

    def __init__(self) -> None:
        self.raw: list[tuple[bytes, bytes]] = []
        """The ``(name, value)`` pairs as they will be sent."""

    @staticmethod
    def _pair(name: str | bytes, value: str | bytes) -> tuple[bytes, bytes]:
        pair = (_to_bytes(name).lower(), _to_bytes(value))
        check_headers((pair,))
        return pair

    def __setitem__(self, name: str | bytes, value: str | bytes) -> None:
        pair = self._pair(name, value)
        self.raw = [p for p in self.raw if p[0] != pair[0]]
        self.raw.append(pair)

    def add(self, name: str | bytes, value: str | bytes) -> None:
        """Add a field, keeping those of the same name (e.g. several Set-Cookie)."""
        self.raw.append(self._pair(name, value))

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        values = [v.decode("latin-1") for n, v in self.raw if n == key]
        return ", ".join(values) if values else default

    def getlist(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.raw if n == key]

    def __delitem__(self, name: str) -> None:
        key = name.lower().encode("latin-1")
        self.raw = [p for p in self.raw if p[0] != key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower().encode("latin-1")
        return any(n == key for n, _ in self.raw)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"ResponseHeaders({self.raw!r})"


class StreamEncoder(Protocol):
    """What a :meth:`Response.on_stream` hook may return: a transform of a streamed body."""

    def encode(self, data: bytes) -> bytes:
        """The bytes to send for one piece of the body (may be empty)."""
        ...

    def finish(self) -> bytes:
        """The bytes that end the body (may be empty)."""
        ...


class Response:
    """The response a handler builds.

    Set :attr:`status`, :attr:`headers` and a body with :meth:`text`,
    :meth:`html`, :meth:`json` or :attr:`body`; the server sends it, in one
    write, when ``handle`` returns.  For a body produced over time (downloads,
    Server-Sent Events) use :meth:`stream` instead.

    Attributes:
        status: the status code (200 unless set).
        headers: :class:`ResponseHeaders`.
        body: the body bytes.
        close_connection: set True to close the connection after this response.
    """

    _stream_hooks: list[Callable[[Response], StreamEncoder | None]]

    __slots__ = (
        "_conn",
        "_file",
        "_held",
        "_stream_hooks",
        "body",
        "close_connection",
        "headers",
        "started",
        "status",
    )

    # What collaborators use (the connection, static files, SSE): ``connection``,
    # ``file_body``, ``attach_file`` and ``release_file``.

    def __init__(self, conn: HTTPConnection | None = None) -> None:
        self.status = 200
        self.headers = ResponseHeaders()
        self.body = b""
        self.close_connection = False
        self.started = False
        """Whether the head has been sent (by :meth:`stream`)."""
        self._conn = conn
        self._file: FileBody | None = None
        self._held = False  # hold(): finish() sends nothing early
        # _stream_hooks stays unset until on_stream(): nothing to do per response

    @property
    def connection(self) -> HTTPConnection | None:
        """The connection this response will be sent on, or None for one built by hand.

        For the server's own collaborators (static files, Server-Sent Events).
        """
        return self._conn

    @property
    def file_body(self) -> FileBody | None:
        """The open file to be sent as the body after the handler returns, if any."""
        return self._file

    def attach_file(self, body: FileBody | None) -> None:
        """Make ``body`` (an open file's bytes, sent after the handler returns) the body.

        A file attached before is closed; None just releases it.
        """
        if self._file is not None:
            self._file.close()
        self._file = body
        self.body = b""

    def release_file(self) -> None:
        """Close the attached file, if any (the connection calls it once the response is out)."""
        if self._file is not None:
            self.attach_file(None)

    def _set_body(self, body: bytes, content_type: bytes, status: int | None) -> None:
        if status is not None:
            self.status = status
        if self._file is not None:
            self.attach_file(None)
        self.body = body
        raw = self.headers.raw
        for name, _ in raw:
            if name == b"content-type":
                break
        else:
            raw.append((b"content-type", content_type))

    def text(self, text: str, *, status: int | None = None) -> None:
        """Send ``text`` as ``text/plain; charset=utf-8``."""
        self._set_body(text.encode(), _TEXT, status)

    def html(self, html: str, *, status: int | None = None) -> None:
        """Send ``html`` as ``text/html; charset=utf-8``."""
        self._set_body(html.encode(), _HTML, status)

    def json(self, data: Any, *, status: int | None = None) -> None:
        """Send ``data`` encoded as compact JSON (``application/json``)."""
        body = dumps(data).encode()
        self._set_body(body, _JSON, status)

    def file(
        self,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        filename: str | None = None,
        precompressed: bool = True,
    ) -> None:
        """Answer with the file at ``path``, as :class:`~peregrine_rt.DirServer` serves one.

        The request's ``If-None-Match``/``If-Modified-Since`` (304),
        ``If-Match``/``If-Unmodified-Since`` (412) and ``Range``/``If-Range``
        (206, 416) apply; ``ETag``, ``Last-Modified`` and the content type
        (from the name, unless ``content_type`` is given) are set; a
        ``path.br``/``path.gz`` sibling is sent to clients that accept it
        (unless ``precompressed=False``).  A small file is sent with its head
        in one write; a large one is streamed after ``handle`` returns, in
        bounded pieces (``sendfile`` on plain sockets).  A missing file is a
        404, a request other than GET/HEAD a 405.

        ``path`` is used as given: never build it from the request (use
        ``DirServer``, which keeps requests inside a directory).

        Args:
            path: the file.
            content_type: the ``Content-Type`` (default: from the file name).
            cache_control: a ``Cache-Control`` value to send.
            filename: send ``Content-Disposition: attachment`` with this name
                (the browser downloads the file instead of showing it).
            precompressed: look for ``.br``/``.gz`` siblings.
        """
        from ._static import serve_file  # noqa: PLC0415 - a plug-in: static files sit above Response

        serve_file(
            self,
            path,
            content_type=content_type,
            cache_control=cache_control,
            filename=filename,
            precompressed=precompressed,
        )

    def redirect(self, location: str, status: int = 307) -> None:
        """Redirect to ``location`` (307 keeps the method; use 303 after a POST)."""
        self.status = status
        self.headers["location"] = location

    def set_cookie(
        self,
        name: str,
        value: str = "",
        *,
        max_age: int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header (HttpOnly and SameSite=Lax unless told otherwise)."""
        if not name or any(c in name for c in '()<>@,;:\\"/[]?={} \t') or not name.isascii():
            raise LocalProtocolError(f"invalid cookie name {name!r}")
        if any(c in value for c in '",;\\ \t\r\n\x00') or not value.isascii():
            raise LocalProtocolError(f"invalid cookie value {value!r} (quote or encode it)")
        parts = [f"{name}={value}"]
        if max_age is not None:
            parts.append(f"Max-Age={int(max_age)}")
        if path is not None:
            parts.append(f"Path={path}")
        if domain is not None:
            parts.append(f"Domain={domain}")
        if secure or samesite == "none":
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        if samesite is not None:
            parts.append(f"SameSite={samesite.capitalize()}")
        self.headers.add("set-cookie", "; ".join(parts))

    def delete_cookie(
        self, name: str, *, path: str | None = "/", domain: str | None = None
    ) -> None:
        """Tell the client to forget cookie ``name``."""
        self.set_cookie(name, "", max_age=0, path=path, domain=domain)

    async def finish(self) -> None:
        """Send the response as it stands now, in one write; ``handle`` may then go on working.

        For work after the answer (what Starlette calls background tasks): the
        client has its response at once (under load, once ``handle`` next
        yields to the event loop, together with the other responses of that
        pass: ``Config.batch_writes``), and the connection's next request
        waits until ``handle`` returns.  The response cannot change afterwards,
        unless a middleware around the handler rewrites responses after
        ``handle`` (``Compress``, ``CORS``: they call :meth:`hold`), in which
        case the response goes out when ``handle`` returns, as usual.  Not for
        :meth:`file` bodies nor streams.
        """
        if self._conn is None:
            raise LocalProtocolError("this Response is not attached to a connection")
        if self._held:
            return  # a middleware rewrites it after handle: it goes out then
        await self._conn.finish(self)

    def hold(self) -> None:
        """Keep this response until ``handle`` returns: :meth:`finish` then sends nothing early.

        For middleware that changes a response after the app's ``handle``
        (``Compress``, ``CORS`` do): call it before running the app, and the
        response the middleware sees is the one sent.
        """
        self._held = True

    @asynccontextmanager
    async def stream(
        self, *, status: int | None = None, content_type: str | None = None
    ) -> AsyncIterator[Callable[[str | bytes], Awaitable[None]]]:
        """Send the head now and the body in pieces: ``async with response.stream() as send``.

        Each ``await send(piece)`` writes one chunk (``str`` is sent as UTF-8).
        HTTP/1.1 clients get ``Transfer-Encoding: chunked``; HTTP/1.0 clients a
        body ended by closing the connection.  ``send`` waits while the client
        reads slowly (backpressure).  Leaving the block ends the body.
        """
        if self._conn is None:
            raise LocalProtocolError("this Response is not attached to a connection")
        if status is not None:
            self.status = status
        if content_type is not None:
            self.headers["content-type"] = content_type
        conn = self._conn
        encoder: StreamEncoder | None = None
        for hook in getattr(self, "_stream_hooks", None) or ():
            encoder = hook(self) or encoder
        await conn.start_stream(self)

        if encoder is None:

            async def send(piece: str | bytes) -> None:
                await conn.send_chunk(piece.encode() if isinstance(piece, str) else piece)

        else:
            encode = encoder.encode

            async def send(piece: str | bytes) -> None:
                await conn.send_chunk(encode(piece.encode() if isinstance(piece, str) else piece))

        yield send
        if encoder is not None:
            await conn.send_chunk(encoder.finish())
        await conn.end_stream()

    def on_stream(self, hook: Callable[[Response], StreamEncoder | None]) -> None:
        """Call ``hook(response)`` when this response starts streaming, before its head is sent.

        For middleware that must see a streamed response (``stream()``,
        ``sse()``) the way it sees a fixed body after ``handle``: the hook may
        change the status and headers, and may return a
        :class:`~peregrine_rt.StreamEncoder`
        that every piece then goes through (``encode`` per piece, ``finish``
        once at the end), as :class:`~peregrine_rt.Compress` does with
        ``streams=True``.  Hooks run in the order they were added; the last
        encoder returned wins.
        """
        hooks = getattr(self, "_stream_hooks", None)
        if hooks is None:
            hooks = self._stream_hooks = []
        hooks.append(hook)

    def sse(
        self,
        *,
        ping_interval: float | None = 15.0,
        retry: float | None = None,
    ) -> AbstractAsyncContextManager[EventStream]:
        """Stream Server-Sent Events: ``async with response.sse() as events``.

        Sends ``text/event-stream`` with ``Cache-Control: no-cache``; inside the
        block, ``await events.send(data, event=..., id=...)`` sends an event and
        ``await events.forward(request.hub, "topic")`` relays a hub topic.
        ``events.last_event_id`` is the browser's ``Last-Event-ID`` on reconnection.

        Args:
            ping_interval: seconds of silence after which a comment line is
                sent, so proxies keep the connection and a gone client is
                noticed (None: no pings).
            retry: tell the browser how many seconds to wait before reconnecting.
        """
        if self._conn is None:
            raise LocalProtocolError("this Response is not attached to a connection")
        conn = self._conn
        request = conn.request
        last_id = request.headers.get("last-event-id") if request is not None else None
        config = conn.server.config
        from ._sse import open_event_stream  # noqa: PLC0415 - a plug-in: SSE sits above Response

        return open_event_stream(
            self,
            last_id,
            ping_interval=ping_interval,
            retry=retry,
            outbox_size=config.ws_outbox_size,
            policy=config.ws_slow_policy,
        )

    def __repr__(self) -> str:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = ""
        return f"<Response {self.status} {phrase}>"


async def send_file_response(
    transport: Transport,
    heads: ResponseHeads,
    request: Request,
    response: Response,
    body: FileBody,
    keep_alive: bool,
) -> bool:
    """Send ``response``, whose body is (ranges of) the file ``body``, once the handler returned.

    The head, then each part: ``transport.send_file`` for a range of the file
    (``os.sendfile`` on a socket, else ``os.pread``), the bytes between ranges
    (a multipart body) joined to what goes next.  The file is released in any
    case.  False when the file came short (it shrank while it was sent: the
    connection must close).  Raises OSError when the file cannot be read (EIO),
    ClientDisconnected when the peer is gone.
    """
    head = heads.head(
        response.status,
        response.headers.raw,
        version=request.http_version,
        keep_alive=keep_alive,
        content_length=body.length,
    )
    response.started = True
    try:
        if body.fd < 0 or not may_have_body(response.status, request.method):
            await transport.send_all(head)
            return True
        fd = body.fd
        for part in body.parts:
            if isinstance(part, bytes):
                head += part
                continue
            offset, count = part
            if await transport.send_file(fd, offset, count, head) < count:
                FILE_STATS.shortfalls += 1
                return False
            head = b""
        if head:
            await transport.send_all(head)
        return True
    finally:
        response.release_file()
