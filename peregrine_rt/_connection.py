"""One HTTP/1.x connection: read requests, call the handler, write responses.

The loop is written against a tiny transport interface so the same code
serves a raw non-blocking socket (the fast path: ``recv``/``send`` straight on
the socket, ``trio.lowlevel.wait_readable``/``wait_writable`` when they would
block) and any trio ``Stream`` (TLS, memory streams in tests).

A file body (``Response.file()``, ``DirServer``: a :class:`~._files.FileBody`)
is sent after the handler returns by ``transport.send_file``: ``os.sendfile``
on a socket (the file's bytes never enter Python), else pieces of
``CHUNK_SIZE`` read with ``os.pread``, each sent before the next is read, so a
slow reader costs at most one piece of memory.

Timeouts do not create a cancel scope per request: each connection has one
scope, notes what it is waiting for and since when, and the server's reaper
task cancels the scopes that waited too long (see ``Server._reaper``).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import socket
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

import trio

from ._files import CHUNK_SIZE, FILE_STATS, FileBody
from ._http import (
    CLOSED,
    LAST_CHUNK,
    NEED_DATA,
    Data,
    RequestParser,
    encode_chunk,
    encode_fixed_response,
    encode_response,
    encode_response_head,
    may_have_body,
)
from ._request import Request
from ._response import Response
from .exceptions import (
    ClientDisconnected,
    HandshakeError,
    LocalProtocolError,
    RemoteProtocolError,
)

if TYPE_CHECKING:
    from ._server import Server
    from .websocket import WebSocket

__all__ = [
    "Disconnected",
    "HTTPConnection",
    "SocketTransport",
    "StreamTransport",
    "Transport",
    "Waiting",
]

RECEIVE_SIZE = 65536
LINGER_SECONDS = 1.0  # how long a closing connection keeps reading what the peer still sends
LINGER_BYTES = 1 << 20
_CHECKPOINT_EVERY = 16  # requests served without blocking before yielding to other tasks
SENDFILE_MAX = 1 << 20  # bytes asked of one sendfile() call, so that one call stays short
USE_SENDFILE = hasattr(os, "sendfile")  # tests and bench/static.py turn it off to compare
_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # this file cannot be sendfile'd

error_log = logging.getLogger("peregrine_rt.error")
access_log = logging.getLogger("peregrine_rt.access")


Disconnected = ClientDisconnected  # the transports' name for it


async def send_file_by_reads(
    transport: Transport, fd: int, offset: int, count: int, head: bytes = b""
) -> int:
    """Send ``head``, then ``count`` bytes of ``fd`` from ``offset`` in CHUNK_SIZE pieces.

    Each piece is read only once the previous one is accepted (``send_all``
    returns), so memory in use is one piece whatever the client's speed.
    Returns the file bytes sent: fewer than ``count`` if the file is shorter.
    (``os.pread`` of a file in the page cache is a memory copy; a cold read
    from a slow disk blocks the loop for that piece, as ``sendfile`` would.)
    """
    stats = FILE_STATS
    sent = 0
    while sent < count:
        data = os.pread(fd, min(CHUNK_SIZE, count - sent), offset + sent)
        if not data:
            break
        size = len(data)
        stats.read += size
        stats.in_flight += size
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            await transport.send_all(head + data if head else data)
        finally:
            stats.in_flight -= size
        head = b""
        del data
        stats.sent += size
        sent += size
        await trio.lowlevel.checkpoint()  # a fast client must not starve the others
    if head:
        await transport.send_all(head)
    return sent


class Transport(Protocol):
    client: tuple[str, int] | None
    scheme: str
    # When a send began waiting for the peer to read (None: not waiting); the
    # reaper drops a connection whose send waited past Config.send_timeout.
    stalled: float | None

    async def receive_some(self, wait_first: bool = False) -> bytes: ...
    async def send_all(self, data: bytes) -> None: ...
    async def send_file(self, fd: int, offset: int, count: int, head: bytes = b"") -> int: ...
    async def aclose(self, linger: bool = False) -> None: ...
    async def abort(self) -> None: ...


class SocketTransport:
    """A connected non-blocking stdlib socket, driven with trio.lowlevel."""

    __slots__ = ("client", "scheme", "sock", "stalled")

    def __init__(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        self.sock = sock
        self.client = client
        self.scheme = "http"
        self.stalled: float | None = None

    async def _wait_writable(self) -> None:
        """Wait for room in the send buffer; ``stalled`` says since when, meanwhile."""
        self.stalled = trio.current_time()
        try:
            await trio.lowlevel.wait_writable(self.sock)
        except trio.ClosedResourceError as exc:
            raise Disconnected(str(exc)) from exc
        finally:
            self.stalled = None

    async def receive_some(self, wait_first: bool = False) -> bytes:
        """Receive up to RECEIVE_SIZE bytes (b"" at EOF).

        ``wait_first`` skips the first ``recv`` attempt: right after a response,
        the next request cannot be there yet on a ping-pong keep-alive
        connection, and a ``recv`` failing with EAGAIN is a wasted syscall.
        """
        sock = self.sock
        if wait_first:
            await trio.lowlevel.wait_readable(sock)
        while True:
            try:
                return sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError as exc:
                    raise Disconnected(str(exc)) from exc
            except OSError as exc:
                raise Disconnected(str(exc)) from exc

    async def send_all(self, data: bytes) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise Disconnected(str(exc)) from exc
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            await self._wait_writable()
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise Disconnected(str(exc)) from exc

    async def send_file(self, fd: int, offset: int, count: int, head: bytes = b"") -> int:
        """Send ``head`` and ``count`` bytes of ``fd`` with ``os.sendfile``; the file bytes sent.

        The head goes with ``MSG_MORE`` so that the kernel packs it with the
        file's first bytes.  Files ``sendfile`` cannot read fall back to reads.
        """
        if not USE_SENDFILE or count == 0:
            return await send_file_by_reads(self, fd, offset, count, head)
        sock = self.sock
        if head:
            try:
                done = sock.send(head, socket.MSG_MORE)
            except BlockingIOError:
                done = 0
            except OSError as exc:
                raise Disconnected(str(exc)) from exc
            if done < len(head):
                await self.send_all(head[done:])
        stats = FILE_STATS
        out = sock.fileno()
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, min(count - sent, SENDFILE_MAX))
            except BlockingIOError:
                await self._wait_writable()
                continue
            except OSError as exc:
                if exc.errno in _NO_SENDFILE and sent == 0:
                    return await send_file_by_reads(self, fd, offset, count)
                raise Disconnected(str(exc)) from exc
            if n == 0:
                break  # the end of the file came early: it shrank
            sent += n
            stats.sent += n
            await trio.lowlevel.checkpoint()  # a fast client must not starve the others
        return sent

    async def aclose(self, linger: bool = False) -> None:
        """Close; with ``linger``, first half-close and read what the peer still sends.

        Closing a socket with unread input makes the kernel send a reset, and
        the peer may then lose the response it has not read yet (a 413 to a
        client still uploading, say).  Lingering avoids that, bounded by
        LINGER_SECONDS and LINGER_BYTES.
        """
        sock = self.sock
        if sock.fileno() < 0:
            return
        if linger:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                with trio.move_on_after(LINGER_SECONDS):
                    received = 0
                    while received < LINGER_BYTES:
                        try:
                            data = sock.recv(RECEIVE_SIZE)
                        except BlockingIOError:
                            await trio.lowlevel.wait_readable(sock)
                            continue
                        except OSError:
                            break
                        if not data:
                            break
                        received += len(data)
        trio.lowlevel.notify_closing(sock)
        sock.close()

    async def abort(self) -> None:
        """Close at once (a task blocked on the socket gets Disconnected)."""
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class StreamTransport:
    """Any trio ``Stream``: TLS over TCP, or a memory stream in tests."""

    __slots__ = ("client", "scheme", "stalled", "stream")

    def __init__(
        self, stream: trio.abc.Stream, client: tuple[str, int] | None, scheme: str = "http"
    ) -> None:
        self.stream = stream
        self.client = client
        self.scheme = scheme
        self.stalled: float | None = None

    async def receive_some(self, wait_first: bool = False) -> bytes:
        try:
            return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Disconnected(str(exc)) from exc

    async def send_all(self, data: bytes) -> None:
        # A stream hides its partial progress: the whole call counts as waiting.
        self.stalled = trio.current_time()
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Disconnected(str(exc)) from exc
        finally:
            self.stalled = None

    async def send_file(self, fd: int, offset: int, count: int, head: bytes = b"") -> int:
        """Send ``head`` and ``count`` bytes of ``fd`` in pieces (TLS and memory streams)."""
        return await send_file_by_reads(self, fd, offset, count, head)

    async def aclose(self, linger: bool = False) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(self.stream)

    async def abort(self) -> None:
        await trio.aclose_forcefully(self.stream)


class Waiting(enum.Enum):
    """What a connection is doing, for the reaper's timeouts."""

    HEAD = enum.auto()  # waiting for (the rest of) a request head
    BODY = enum.auto()  # a handler waits for request body bytes
    HANDLER = enum.auto()  # the handler runs: no timeout applies
    WEBSOCKET = enum.auto()  # a WebSocket: its own heartbeat and close timeouts apply
    CLOSING = enum.auto()


def _error_body(status: int, detail: str = "") -> bytes:
    text = f"{status} {HTTPStatus(status).phrase}\n"
    if detail:
        text += detail + "\n"
    return text.encode("utf-8", "replace")


class HTTPConnection:
    """Serves one connection until it closes (see the module docstring)."""

    __slots__ = (
        "_extra_headers",
        "_linger",
        "_sent_continue",
        "_stream_chunked",
        "_stream_state",
        "handled",
        "parser",
        "request",
        "response",
        "scope",
        "server",
        "since",
        "timeout_reason",
        "transport",
        "waiting",
        "websocket",
    )

    def __init__(self, server: Server, transport: Transport) -> None:
        config = server.config
        self.server = server
        self.transport = transport
        self.parser = RequestParser(
            max_request_line=config.max_request_line,
            max_header_line=config.max_header_line,
            max_headers_size=config.max_headers_size,
            max_header_count=config.max_header_count,
            max_body_size=config.max_body_size,
            head_class=Request,
        )
        self.scope = trio.CancelScope()
        self.waiting = Waiting.HEAD
        self.since = trio.current_time()
        self.timeout_reason: str | None = None
        self.handled = 0
        self.request: Request | None = None
        self.response: Response | None = None
        self._sent_continue = False
        self._stream_chunked = False
        # A streamed body: "open", "ended" (its last chunk written) or "broken"
        # (a write was interrupted part-way).  Only an ended one lets the
        # connection carry another request.
        self._stream_state = "open"
        self._linger = False
        self.websocket: WebSocket | None = None
        self._extra_headers: list[tuple[bytes, bytes]] = (
            [(b"server", config.server_header.encode("latin-1"))] if config.server_header else []
        )

    # -- the reaper's view ----------------------------------------------------

    def check_timeout(self, now: float) -> None:
        """Cancel this connection if it waited longer than its current timeout."""
        waiting = self.waiting
        config = self.server.config
        stalled = self.transport.stalled
        if (
            stalled is not None
            and waiting is not Waiting.WEBSOCKET  # its heartbeat notices a reader that stopped
            and now - stalled > config.send_timeout
        ):
            self.timeout_reason = "send"
            self.scope.cancel()
            return
        if waiting is Waiting.HEAD:
            if self.handled and not self.parser.has_pending_data:
                limit, reason = config.keep_alive_timeout, "idle"
            else:
                limit, reason = config.header_timeout, "head"
        elif waiting is Waiting.BODY:
            limit, reason = config.body_timeout, "body"
        else:
            return
        if now - self.since > limit:
            self.timeout_reason = reason
            self.scope.cancel()

    @property
    def idle(self) -> bool:
        """Between requests with nothing received: safe to close at shutdown."""
        return self.waiting is Waiting.HEAD and not self.parser.has_pending_data

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                try:
                    await self._serve()
                except Disconnected:
                    pass
                except RemoteProtocolError as exc:
                    self._linger = True
                    if self.response is None or not self.response.started:
                        await self._send_error(exc.status_hint, str(exc))
            if self.timeout_reason in ("head", "body"):
                # 408 only where a request was under way and nothing was sent.
                response = self.response
                if (self.timeout_reason == "body" or self.parser.has_pending_data) and not (
                    response is not None and response.started
                ):
                    with trio.move_on_after(1):
                        await self._send_error(408, "request timed out")
        finally:
            self.waiting = Waiting.CLOSING
            if self.response is not None:
                self.response._set_file(None)
            with trio.CancelScope(shield=True):
                await self.transport.aclose(self._linger)

    async def _send_error(self, status: int, detail: str) -> None:
        request = self.request
        version = request.http_version if request is not None else "1.1"
        data = encode_response(
            status,
            [(b"content-type", b"text/plain; charset=utf-8"), *self._extra_headers],
            _error_body(status, detail),
            method=request.method if request is not None else "GET",
            version=version,
            keep_alive=False,
            check=False,
        )
        try:
            await self.transport.send_all(data)
        except Disconnected:
            pass

    async def _serve(self) -> None:
        server = self.server
        config = server.config
        parser = self.parser
        transport = self.transport
        handle = server.handler_instance.handle
        client = transport.client
        scheme = transport.scheme
        while True:
            if server.shutting_down and self.handled:
                return  # a response ended during shutdown: no next request
            self.waiting = Waiting.HEAD
            self.since = trio.current_time()
            self.request = None
            if self.response is not None:
                self.response._set_file(None)  # closes a file the handler opened and left
            self.response = None
            if parser.has_pending_data or parser.their_eof:
                event = parser.next_event()
                wait_first = False
            else:
                event = NEED_DATA
                wait_first = self.handled > 0
            while event is NEED_DATA:
                had_data = parser.has_pending_data
                data = await transport.receive_some(wait_first)
                wait_first = False
                if data:
                    if not had_data:  # the head's first byte: header_timeout counts from here
                        self.since = trio.current_time()
                    parser.feed(data)
                else:
                    parser.feed_eof()
                event = parser.next_event()
            if event is CLOSED:
                return
            assert isinstance(event, Request)
            request = event
            request._conn = self
            request.client = client
            request.scheme = scheme
            response = Response(self)
            self.request = request
            self.response = response
            self._sent_continue = False
            self.waiting = Waiting.HANDLER
            self.handled += 1
            try:
                await handle(request, response)
            except RemoteProtocolError:
                raise  # a bad body, met while the handler read it: answer and close
            except HandshakeError:
                pass  # upgrade() refused it and set the response (400/403/426)
            except ClientDisconnected:
                return  # the client left mid-request: nothing to answer, nothing to log
            except Exception:
                if self.websocket is not None:
                    # After the 101: the socket never opened; close it as an error.
                    error_log.exception("handler %s raised after upgrade()", server.spec.name)
                    with trio.move_on_after(config.ws_close_timeout):
                        await self.websocket.close(1011, "internal error")
                    return
                error_log.exception(
                    "handler %s raised on %s %s",
                    server.spec.name,
                    request.method,
                    request.target.decode("ascii", "replace"),
                )
                if response.started:
                    return  # mid-stream: all we can do is close
                response._set_file(None)
                response = Response(self)
                response.text("500 Internal Server Error\n", status=500)
                self.response = response
            if self.websocket is not None:
                self.waiting = Waiting.WEBSOCKET
                await self.websocket._run(server.handler_instance)
                return
            if response.started:
                if not self._stream_chunked or self._stream_state != "ended":
                    # An HTTP/1.0 stream ends by closing; so does one the
                    # handler left early (an exception, a cancel scope) or
                    # whose write was interrupted: its framing is incomplete.
                    return
                keep_alive = not response.close_connection  # decided by start_stream
            elif response._file is not None:
                keep_alive = self._keep_alive(request, response)
                if not await self._send_file(request, response, response._file, keep_alive):
                    return
            else:
                keep_alive = self._keep_alive(request, response)
                status = response.status
                headers = response.headers.raw
                if self._extra_headers:
                    headers = headers + self._extra_headers
                try:
                    data = encode_fixed_response(
                        status,
                        headers,
                        response.body,
                        request.method,
                        request.http_version,
                        keep_alive,
                    )
                except LocalProtocolError as exc:
                    # A handler mistake only the writer can see (a body on a 204,
                    # status 1000): the client gets a 500, the log says why.
                    error_log.error(
                        "handler %s built an invalid response to %s %s: %s",
                        server.spec.name,
                        request.method,
                        request.target.decode("ascii", "replace"),
                        exc,
                    )
                    status = 500
                    data = encode_response(
                        500,
                        [(b"content-type", b"text/plain; charset=utf-8")],
                        _error_body(500),
                        method=request.method,
                        version=request.http_version,
                        keep_alive=keep_alive,
                        check=False,
                    )
                response.started = True
                await transport.send_all(data)
                if config.access_log:
                    self._log_access(request, status, len(response.body))
            remaining = parser.body_remaining
            if not keep_alive:
                self._linger = remaining != 0
                return
            if remaining != 0 and not await self._drain():
                return
            parser.start_next_cycle()
            if self.handled % _CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()

    async def _send_file(
        self, request: Request, response: Response, body: FileBody, keep_alive: bool
    ) -> bool:
        """Send a response whose body is (ranges of) a file; False if the connection must close."""
        headers = response.headers.raw
        if self._extra_headers:
            headers = headers + self._extra_headers
        head = encode_response_head(
            response.status,
            headers,
            version=request.http_version,
            keep_alive=keep_alive,
            content_length=body.length,
            check=False,
        )
        response.started = True
        transport = self.transport
        complete = True
        try:
            if body.fd < 0 or not may_have_body(response.status, request.method):
                await transport.send_all(head)
            else:
                fd = body.fd
                for part in body.parts:
                    if isinstance(part, bytes):
                        head += part
                        continue
                    offset, count = part
                    if await transport.send_file(fd, offset, count, head) < count:
                        complete = False
                        break
                    head = b""
                if head and complete:
                    await transport.send_all(head)
        except OSError:  # EIO and the like: the body cannot be completed
            error_log.exception("reading a file for %r failed", request.target[:200])
            return False
        finally:
            response._set_file(None)
        if not complete:
            FILE_STATS.shortfalls += 1
            error_log.warning(
                "a file shrank while %r was sent: connection closed", request.target[:200]
            )
            return False
        if self.server.config.access_log:
            self._log_access(request, response.status, body.length)
        return True

    def _keep_alive(self, request: Request, response: Response) -> bool:
        """Whether the connection can serve another request after this response."""
        max_requests = self.server.config.max_requests_per_connection
        return (
            request.keep_alive
            and not response.close_connection
            and not self.server.shutting_down
            and (max_requests is None or self.handled < max_requests)
            and self._body_can_be_drained(request)
        )

    def _body_can_be_drained(self, request: Request) -> bool:
        remaining = self.parser.body_remaining
        if remaining == 0:
            return True
        if request.expect_continue and not self._sent_continue:
            return False  # the client holds the body back: closing is simpler than guessing
        return remaining is not None and remaining <= self.server.config.max_drain

    async def _drain(self) -> bool:
        """Read and drop the rest of a body the handler did not read."""
        request = self.request
        assert request is not None
        try:
            while await self.read_body_chunk(request) is not None:
                pass
        except (RemoteProtocolError, Disconnected):
            return False
        return True

    def _log_access(self, request: Request, status: int, size: int) -> None:
        client = request.client
        access_log.info(
            '%s - "%s %s HTTP/%s" %d %d',
            f"{client[0]}:{client[1]}" if client else "-",
            request.method,
            request.target.decode("ascii", "replace"),
            request.http_version,
            status,
            size,
        )

    # -- what Request and Response call -----------------------------------------

    async def read_body_chunk(self, request: Request) -> bytes | None:
        """The next piece of ``request``'s body, or None at its end."""
        if request is not self.request:
            raise LocalProtocolError("this request's connection has moved on")
        parser = self.parser
        event = parser.next_event()
        if event is NEED_DATA:
            if request.expect_continue and not self._sent_continue:
                self._sent_continue = True
                response = self.response
                if response is None or not response.started:
                    await self.transport.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            previous = self.waiting
            self.waiting = Waiting.BODY
            try:
                while event is NEED_DATA:
                    self.since = trio.current_time()
                    data = await self.transport.receive_some()
                    if data:
                        parser.feed(data)
                    else:
                        parser.feed_eof()
                    event = parser.next_event()
            finally:
                self.waiting = previous
        if type(event) is Data:
            return event.data
        return None  # EndOfMessage, or PAUSED when it was already taken

    async def start_stream(self, response: Response) -> None:
        """Send the head of a streamed response."""
        request = self.request
        if request is None or response is not self.response:
            raise LocalProtocolError("this response's connection has moved on")
        if response.started:
            raise LocalProtocolError("the response has already started")
        response.started = True
        body_allowed = may_have_body(response.status, request.method)
        chunked = request.http_version == "1.1" and body_allowed
        self._stream_chunked = chunked or not body_allowed
        self._stream_state = "open"
        keep_alive = self._stream_chunked and self._keep_alive(request, response)
        response.close_connection = not keep_alive
        headers = response.headers.raw
        if self._extra_headers:
            headers = headers + self._extra_headers
        head = encode_response_head(
            response.status,
            headers,
            version=request.http_version,
            keep_alive=keep_alive,
            chunked=chunked,
            check=False,
        )
        self.waiting = Waiting.HANDLER
        await self.transport.send_all(head)

    async def send_chunk(self, data: bytes) -> None:
        request = self.request
        if request is None or not data:
            return
        if request.method == "HEAD" or not may_have_body(self.response.status, "GET"):  # type: ignore[union-attr]
            return
        await self._stream_write(encode_chunk(data) if self._stream_chunked else data)

    async def _stream_write(self, data: bytes) -> None:
        if self._stream_state != "open":
            raise LocalProtocolError(f"this streamed response is {self._stream_state}")
        try:
            await self.transport.send_all(data)
        except BaseException:
            self._stream_state = "broken"  # part of it may be on the wire
            raise

    async def end_stream(self) -> None:
        request = self.request
        response = self.response
        if request is None or response is None or self._stream_state == "broken":
            return  # broken: the connection closes, which is all that can end it
        if self._stream_chunked and may_have_body(response.status, request.method):
            await self._stream_write(LAST_CHUNK)
        self._stream_state = "ended"
        if self.server.config.access_log:
            self._log_access(request, response.status, -1)
