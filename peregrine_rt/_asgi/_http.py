"""One HTTP request as an ASGI call, on the connection's own reads and writes.

The app runs in the connection's task, inside ``handle()``: no task per
request.  ``receive()`` reads the body with ``Request``'s connection
(``read_body_chunk``: the body limit, the body timeout and ``100 Continue``
apply as for any handler) and ``send()`` fills the :class:`~peregrine_rt.Response`:

* ``http.response.start`` is kept until the first body message;
* a first ``http.response.body`` with ``more_body`` false is the whole body:
  ``send()`` writes head and body in one write, with ``Content-Length``
  (``response.finish()``), and returns.  Whatever the app does after that
  (Starlette's background tasks) no longer delays the client (under load
  the write happens when the app next yields, with the other responses of
  the event loop's pass: ``Config.batch_writes``); the connection's next
  request waits until the app returns.  (A HEAD answer
  that only announces a ``Content-Length`` is sent when the app returns.)
* ``http.response.pathsend`` (the extension the scope offers; Starlette's
  ``FileResponse`` uses it) attaches the file: the connection sends it after
  the app returns, with ``Content-Length`` and ``sendfile``, as
  ``response.file()`` bodies;
* a body with ``more_body`` true opens ``response.stream()`` (chunked on
  HTTP/1.1, ended by closing on HTTP/1.0); each later message is one chunk.

Once the request body is read and while the response is not complete,
``receive()`` watches the socket: end of file (the client left) is
``http.disconnect``; bytes of a pipelined request are handed to the parser
and the watch stops.  When the response completes, a waiting ``receive()``
returns ``http.disconnect`` too.

A body the client breaks (over ``max_body_size``, bad chunked framing) is
``http.disconnect`` to the app; after the app returns, the error goes on to
the connection, which answers 413 or 400 and closes.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, NamedTuple

import trio

from .._files import FileBody
from .._http import check_headers
from ..exceptions import ClientDisconnected, RemoteProtocolError
from ._scope import ClientGone

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from .._request import Request
    from .._response import Response

    Send = Any

__all__ = ["HTTPCycle", "ResponseHead", "response_headers"]

error_log = logging.getLogger("peregrine_rt.error")

_FRAMING = (b"content-length", b"transfer-encoding", b"connection")

# Header lists seen before, checked: most apps send the same few on every
# response (Starlette: content-type and content-length), and checking them
# is the adapter's largest cost on a small response.  Keyed by the exact
# pairs (bytes); lists with unhashable pairs are checked every time.
_CHECKED: dict[tuple[Any, ...], tuple[tuple[tuple[bytes, bytes], ...], int | None, bool]] = {}
_CHECKED_MAX = 256  # distinct header lists kept (the dict is emptied when full)
_CHECKED_BYTES = 4096  # a list whose pairs sum to more is not kept


def keep_headers(response: Response, headers: list[tuple[bytes, bytes]]) -> None:
    """The app's headers, after any a middleware around the adapter set first (CORS)."""
    raw = response.headers.raw
    response.headers.raw = [*raw, *headers] if raw else headers


class ResponseHead(NamedTuple):
    """What ``http.response.start`` and its headers say, checked (see :func:`response_headers`)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    close: bool


def response_headers(message: dict[str, Any]) -> ResponseHead:
    """The status and headers of a ``*.response.start`` message, framing headers taken out.

    ``Content-Length``, ``Transfer-Encoding`` and ``Connection`` are the
    server's: the length is kept (a HEAD answer announces it), ``Connection:
    close`` closes the connection after the response, the rest is dropped.

    Raises:
        LocalProtocolError: a header name or value that could not be sent.
        TypeError, KeyError: a message that is not ASGI.
    """
    status = message["status"]
    if type(status) is not int:
        raise TypeError(f"http.response.start: status must be an int, not {status!r}")
    given = message.get("headers", ())
    try:
        key: tuple[Any, ...] | None = tuple(given)
        seen = _CHECKED.get(key)  # type: ignore[arg-type]
    except TypeError:  # pairs as lists, bytearray values: checked below, not kept
        key = seen = None
    if seen is not None:
        return ResponseHead(status, list(seen[0]), seen[1], seen[2])
    head = _checked_head(status, given)
    if key is not None and sum(len(n) + len(v) for n, v in head.headers) <= _CHECKED_BYTES:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = (tuple(head.headers), head.content_length, head.close)
    return head


def _checked_head(status: int, given: Any) -> ResponseHead:
    raw: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    close = False
    for name_given, value in given:
        name = bytes(name_given).lower()
        if name in _FRAMING:
            if name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
            elif name == b"connection":
                close = b"close" in bytes(value).lower()
            continue
        raw.append((name, bytes(value)))
    if raw:
        check_headers(raw)
    return ResponseHead(status, raw, content_length, close)


class HTTPCycle:
    """The ``receive`` and ``send`` of one HTTP request (see the module docstring).

    One per request: its state starts as the class's defaults, so making one
    sets two attributes (no ``__slots__``: a slot has no class default).
    """

    _body_open = True  # the app has not had the whole body yet
    _complete = False
    _gone = False  # the client left (or broke its body)
    _head: ResponseHead | None = None
    _stream: AbstractAsyncContextManager[Any] | None = None
    _stream_send: Send = None
    _body_error: RemoteProtocolError | None = None
    _done: trio.Event | None = None  # made when a receive() waits for the end
    _watcher: trio.CancelScope | None = None
    _watched = False

    def __init__(self, request: Request, response: Response) -> None:
        self._request = request
        self._response = response

    # -- receive ------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self._body_open:
            request = self._request
            if not request.has_body:
                self._body_open = False
                return {"type": "http.request", "body": b"", "more_body": False}
            conn = request.connection
            try:
                chunk = await conn.read_body_chunk(request)
            except ClientDisconnected:
                self._gone = True
                self._body_open = False
                return {"type": "http.disconnect"}
            except RemoteProtocolError as exc:
                self._body_error = exc
                self._gone = True
                self._body_open = False
                return {"type": "http.disconnect"}
            if chunk is None:
                self._body_open = False
                return {"type": "http.request", "body": b"", "more_body": False}
            more = conn.parser.body_remaining != 0
            self._body_open = more
            return {"type": "http.request", "body": chunk, "more_body": more}
        if self._gone or self._complete:
            return {"type": "http.disconnect"}
        await self._wait_for_end()
        return {"type": "http.disconnect"}

    async def _wait_for_end(self) -> None:
        """Until the client leaves or the response completes."""
        if not self._watched:
            self._watched = True
            conn = self._request.connection
            with trio.CancelScope() as scope:
                self._watcher = scope
                try:
                    data = await conn.transport.receive_some(True)
                except ClientDisconnected:
                    data = b""
                if data:
                    conn.parser.feed(data)  # the next request: still alive
                else:
                    conn.parser.feed_eof()
                    self._gone = True
                    return
            self._watcher = None
            if self._complete:
                return
        if self._done is None:
            self._done = trio.Event()
        await self._done.wait()

    def _end(self) -> None:
        self._complete = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self._done is not None:
            self._done.set()

    # -- send -------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            head = self._head
            if head is None or self._complete:
                raise RuntimeError(
                    "http.response.body "
                    + ("after the response ended" if head else "before http.response.start")
                )
            if self._gone:
                raise ClientGone("the client disconnected")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            stream = self._stream
            if stream is None:
                if not more:
                    try:
                        await self._finish_fixed(head, body)
                    finally:
                        self._end()
                    return
                stream = await self._open_stream(head)
            if body:
                try:
                    await self._stream_send(body)
                except ClientDisconnected as exc:
                    self._gone = True
                    raise ClientGone(str(exc)) from exc
            if not more:
                self._end()
                try:
                    await stream.__aexit__(None, None, None)
                except ClientDisconnected as exc:
                    raise ClientGone(str(exc)) from exc
        elif kind == "http.response.start":
            if self._head is not None:
                raise RuntimeError("http.response.start sent twice")
            if message.get("trailers"):
                raise RuntimeError(
                    "http.response.trailers is not supported by peregrine_rt "
                    "(the scope has no 'http.response.trailers' extension)"
                )
            if self._gone:
                raise ClientGone("the client disconnected")
            self._head = response_headers(message)
        elif kind == "http.response.pathsend":
            head = self._head
            if head is None or self._complete or self._stream is not None:
                raise RuntimeError(
                    "http.response.pathsend "
                    + ("before http.response.start" if head is None else "after a body")
                )
            if self._gone:
                raise ClientGone("the client disconnected")
            self._send_path(head, message["path"])
            self._end()
        elif kind == "http.response.trailers":
            raise RuntimeError("http.response.trailers is not supported by peregrine_rt")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an http scope")

    async def _finish_fixed(self, head: ResponseHead, body: bytes) -> None:
        """Send the whole response now, head and body in one write (``response.finish()``)."""
        response = self._response
        response.status = head.status
        keep_headers(response, head.headers)
        if head.close:
            response.close_connection = True
        if not body and head.content_length and self._request.method == "HEAD":
            # A HEAD answer without its body (FileResponse): announce the length
            # it gave; FileBody without a file sends nothing after the head.  The
            # connection sends that head when handle() returns.
            response.attach_file(FileBody(-1, [(0, head.content_length)]))
            return
        response.body = bytes(body)
        try:
            await response.finish()
        except ClientDisconnected as exc:
            self._gone = True
            raise ClientGone(str(exc)) from exc

    def _send_path(self, head: ResponseHead, path: str) -> None:
        """The file at ``path`` is the body: the connection sends it (sendfile) after the app.

        With ``Content-Length``, as the connection sends ``response.file()``;
        the app's other headers (Starlette's ``ETag``, ``Last-Modified``) as
        they are.  Raises ``OSError`` when the file cannot be opened (a 500).
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        response = self._response
        response.status = head.status
        keep_headers(response, head.headers)
        if head.close:
            response.close_connection = True
        response.attach_file(FileBody(fd, [(0, size)]))

    async def _open_stream(self, head: ResponseHead) -> AbstractAsyncContextManager[Any]:
        response = self._response
        response.status = head.status
        keep_headers(response, head.headers)
        if head.close:
            response.close_connection = True
        stream = response.stream()
        try:
            self._stream_send = await stream.__aenter__()
        except ClientDisconnected as exc:
            self._gone = True
            raise ClientGone(str(exc)) from exc
        self._stream = stream
        return stream

    # -- after the app --------------------------------------------------------------------

    def close(self, error: BaseException | None) -> None:
        """End the cycle once the app returned (or raised ``error``): what the connection sees.

        Raises:
            RemoteProtocolError: the client broke its body (the connection answers it).
            ClientDisconnected: the client left (the connection ends quietly; an
                error the app raised then is logged at debug level only).
            RuntimeError: the app returned without a complete response (500, or a
                close when it was streaming).
        """
        if self._watcher is not None:
            self._watcher.cancel()
        if self._body_error is not None:
            raise self._body_error from error
        if error is not None:
            if self._gone and not isinstance(error, ClientDisconnected):
                error_log.debug("the ASGI app raised after the client left", exc_info=error)
                raise ClientDisconnected("the client disconnected") from error
            return  # the caller re-raises it: a 500, or a close once the response started
        if self._complete:
            return
        if self._gone:
            raise ClientDisconnected("the client disconnected")
        if self._stream is not None:
            raise RuntimeError("the ASGI app returned without ending its streamed response")
        raise RuntimeError("the ASGI app returned without sending a response")
