"""One HTTP/1.x connection: read requests, call the handler, write responses.

The loop is written against the small :class:`~._transport.Transport`
interface, so the same code serves a raw non-blocking socket (the fast path)
and any trio ``Stream`` (TLS, memory streams in tests); the transports are in
``_transport.py``.  Each turn of the loop reads a request head (``_serve``),
then runs the handler and writes the response (``_respond``, one coroutine
for both).  Every head, error answers included, is built by
:class:`~._answers.ResponseHeads`.

A file body (:class:`~._files.FileBody`) is sent after the handler returns
by ``transport.send_file`` (``os.sendfile`` on a socket, else ``os.pread``;
``_response.send_file_response``).

No cancel scope per request: each connection has one, notes what it waits
for and since when, and the server's reaper cancels it when too long.
"""

from __future__ import annotations

import enum
import logging
from time import perf_counter
from typing import TYPE_CHECKING

import trio

from ._access import log_response, request_fields
from ._answers import ResponseHeads, error_body
from ._files import FileBody
from ._http import (
    CLOSED,
    LAST_CHUNK,
    NEED_DATA,
    SPENT_PARSER,
    Data,
    RequestParser,
    encode_chunk,
    may_have_body,
)
from ._metrics import endpoint_for
from ._request import Request
from ._response import Response, send_file_response
from .exceptions import (
    ClientDisconnected,
    HandshakeError,
    HTTPError,
    LocalProtocolError,
    RemoteProtocolError,
)

if TYPE_CHECKING:
    from ._server import Server
    from ._transport import Transport
    from .websocket import WebSocket

__all__ = ["NEW_CONNECTION_IDLE", "HTTPConnection", "Waiting"]

_CHECKPOINT_EVERY = 16  # requests served without blocking before yielding to other tasks
NEW_CONNECTION_IDLE = 1.0  # seconds before a connection without a request counts as idle

error_log = logging.getLogger("peregrine_rt.error")


class Waiting(enum.Enum):
    """What a connection is doing, for the reaper's timeouts."""

    HEAD = enum.auto()  # waiting for (the rest of) a request head
    BODY = enum.auto()  # a handler waits for request body bytes
    HANDLER = enum.auto()  # the handler runs: no timeout applies
    WEBSOCKET = enum.auto()  # a WebSocket: its own heartbeat and close timeouts apply
    CLOSING = enum.auto()


class HTTPConnection:
    """Serves one connection until it closes (see the module docstring)."""

    __slots__ = (
        "_began",
        "_body_bytes",
        "_body_waited",
        "_now",
        "_send_mark",
        "_sent_continue",
        "_stream_chunked",
        "_stream_state",
        "handled",
        "heads",
        "linger",
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
        # trio.current_time() minus two calls and a thread-local (twice a request):
        self._now = trio.lowlevel.current_clock().current_time
        self.since = self._now()
        self._began = 0.0  # perf_counter() when the response under way began (log, metrics)
        self.timeout_reason: str | None = None
        self.handled = 0
        self.request: Request | None = None
        self.response: Response | None = None
        self._sent_continue = False
        # Config.min_rate: seconds waited for the body, its bytes, the send meters.
        self._body_waited = 0.0
        self._body_bytes = 0
        self._send_mark = (0.0, 0)
        self._stream_chunked = False
        # A streamed body: "open", "ended" (its last chunk written; only then may
        # another request follow) or "broken" (a write interrupted part-way).
        self._stream_state = "open"
        # Half-close and read what the peer still sends before closing: a last
        # answer (a 413, a WebSocket's 1009) is not lost to a reset.
        self.linger = False
        self.websocket: WebSocket | None = None
        self.heads: ResponseHeads = server.heads

    # -- the reaper's view ----------------------------------------------------

    def check_timeout(self, now: float) -> bool:
        """Cancel this connection if it waited longer than its current timeout (True then)."""
        waiting = self.waiting
        config = self.server.config
        transport = self.transport
        stalled = transport.stalled
        # A WebSocket's heartbeat and outbox bound notice a reader that stopped.
        if stalled is not None and waiting is not Waiting.WEBSOCKET:
            if now - stalled > config.send_timeout:
                self.timeout_reason = "send"
                self.scope.cancel()
                return True
            rate = config.min_rate
            if rate is not None:
                waited_before, sent_before = self._send_mark
                waited = transport.send_waited - waited_before + (now - stalled)
                if waited > config.min_rate_grace + (transport.bytes_sent - sent_before) / rate:
                    self.timeout_reason = "send-rate"
                    self.scope.cancel()
                    return True
        if waiting is Waiting.HEAD:
            if transport.sending:  # a batched response is still going out (stalled: above)
                return False
            if self.handled and not self.parser.has_pending_data:
                limit, reason = config.keep_alive_timeout, "idle"
            else:
                limit, reason = config.header_timeout, "head"
        elif waiting is Waiting.BODY:
            rate = config.min_rate
            if rate is not None:
                # mod_reqtimeout's MinRate: after the grace, each byte buys 1/rate s.
                waited = self._body_waited + (now - self.since)
                if waited > config.min_rate_grace + self._body_bytes / rate:
                    self.timeout_reason = "body-rate"
                    self.scope.cancel()
                    return True
            limit, reason = config.body_timeout, "body"
        else:
            return False
        if now - self.since > limit:
            self.timeout_reason = reason
            self.scope.cancel()
            return True
        return False

    @property
    def idle(self) -> bool:
        """Between requests with nothing received: safe to close at shutdown.

        A new connection only after NEW_CONNECTION_IDLE seconds (its first
        request may be on its way, and a client cannot retry on it).
        """
        busy = self.parser.has_pending_data or self.transport.sending  # a response going out
        if self.waiting is not Waiting.HEAD or busy:
            return False
        return self.handled > 0 or trio.current_time() - self.since >= NEW_CONNECTION_IDLE

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                try:
                    await self._serve()
                    ws = self.websocket
                    if ws is not None and self.waiting is Waiting.WEBSOCKET:
                        # Run here, not in _respond: an idle socket keeps no HTTP frames.
                        self.response = None  # the 101 went out
                        self.parser = SPENT_PARSER  # (what it had left went to the WebSocket)
                        await ws.run(ws.hooks or self.server.handler_instance)
                    await self.transport.flush()  # the last batched response, under the reaper
                except ClientDisconnected:
                    pass
                except RemoteProtocolError as exc:
                    self.linger = True
                    if self.response is None or not self.response.started:
                        await self._send_error(exc.status_hint, str(exc))
            if self.timeout_reason in ("head", "body", "body-rate"):
                # 408 only where a request was under way and nothing was sent.
                response = self.response
                if (self.timeout_reason != "head" or self.parser.has_pending_data) and not (
                    response is not None and response.started
                ):
                    with trio.move_on_after(1):
                        await self._send_error(408, "request timed out")
        finally:
            self.waiting = Waiting.CLOSING
            if self.response is not None:
                self.response.release_file()
            with trio.CancelScope(shield=True):
                await self.transport.aclose(self.linger)

    async def _send_error(self, status: int, detail: str) -> None:
        request = self.request
        version = request.http_version if request is not None else "1.1"
        data = self.heads.error(
            status,
            detail,
            method=request.method if request is not None else "GET",
            version=version,
        )
        try:
            await self.transport.send_all(data)
        except ClientDisconnected:
            return
        if self.server.observed:  # every answer is logged and counted, the server's own too
            self._log_access(request, status, len(data))

    async def _serve(self) -> None:
        """Serve requests until the connection must close: read a head, respond, repeat.

        The read step is inline (no call on every request).
        """
        server = self.server
        transport = self.transport
        parser = self.parser
        client, scheme = transport.client, transport.scheme
        while True:
            handled = self.handled
            if handled and server.shutting_down:
                return  # a response ended during shutdown: no next request
            # Between requests: reset the per-request state.
            self.waiting = Waiting.HEAD
            if handled:  # the keep-alive idle time counts from the last response
                self.since = self._now()
            self.request = None
            response = self.response
            if response is not None:
                response.release_file()  # closes a file the handler opened and left
                self.response = None
            event: object
            if parser.has_pending_data or parser.their_eof:
                event = parser.next_event()
                wait_first = False
                had_data = event is NEED_DATA and parser.has_pending_data
            else:
                # On a keep-alive connection the next request cannot be there
                # yet: wait for the socket before the first recv.
                event = NEED_DATA
                had_data, wait_first = False, handled > 0
            while event is NEED_DATA:
                data = await transport.receive_some(wait_first)
                wait_first = False
                if data:
                    parser.feed(data)
                else:
                    parser.feed_eof()
                # A keep-alive request's first bytes: the idle timeout ends and
                # header_timeout counts from here (the first request's counts from
                # the connection's start).  Unless the head is whole: it goes to the
                # handler with no wait in between, and no clock read is needed.
                try:
                    event = parser.next_event()
                except RemoteProtocolError:  # the error answer may wait for the peer
                    if data and handled and not had_data:
                        self.since = self._now()
                    raise
                if event is NEED_DATA:
                    if data and handled and not had_data:
                        self.since = self._now()
                    had_data = parser.has_pending_data
            if event is CLOSED:
                return
            assert isinstance(event, Request)
            event.bind(self, client, scheme)
            if not await self._respond(event):
                return
            if self.handled % _CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()

    async def _respond(self, request: Request) -> bool:
        """Run the handler on ``request`` and send its response; whether another may follow.

        A handler's exception becomes a 500 (logged with the request); after
        ``upgrade()``, False: ``run()`` runs the WebSocket.  One coroutine for
        both halves: it runs on every request.
        """
        server = self.server
        response = Response(self)
        self.request = request
        self.response = response
        self._sent_continue = False
        self._body_waited = 0.0
        self._body_bytes = 0
        self.waiting = Waiting.HANDLER
        self.handled += 1
        handle = server.dispatch
        endpoints = server.endpoints  # None unless responses are timed (log, metrics)
        if endpoints is not None:
            self._began = perf_counter()
            target = request.target  # the server's own (/metrics...), on the app's port:
            if endpoints and (target in endpoints or target.find(b"?") >= 0):
                handle = endpoint_for(endpoints, target, handle)
        try:
            await handle(request, response)
        except RemoteProtocolError as exc:
            if exc.close or response.started or self.websocket is not None:
                raise  # a bad body, met while the handler read it: answer and close
            # The framing is sound (bad JSON in a whole body, logged where it
            # was found): answer the client's mistake like any response, and
            # the connection goes on (ProtocolError.close is False).
            response = self._answer_instead(response, exc.status_hint, str(exc))
        except HandshakeError:
            pass  # upgrade() refused it and set the response (400/401/403/426)
        except HTTPError as exc:
            if response.started or self.websocket is not None:  # too late to answer instead
                failed = await self._handler_failed(request, response)
                if failed is None:
                    return False
                response = failed
            else:
                cookies = response.headers.getlist("set-cookie")
                response = self._answer_instead(response, exc.status, exc.detail)
                for name, value in exc.headers.items():
                    response.headers[name] = value
                for cookie in cookies:  # a login that clears a stale session, say
                    response.headers.add("set-cookie", cookie)
        except ClientDisconnected:
            return False  # the client left mid-request: nothing to answer, nothing to log
        except Exception:
            failed = await self._handler_failed(request, response)
            if failed is None:
                return False
            response = failed
        if self.websocket is not None:
            if server.observed:
                self._log_access(request, 101, 0)
            self.waiting = Waiting.WEBSOCKET  # run() runs it once _serve has returned
            return False
        # Send what the handler left (unless it streamed).
        transport = self.transport
        self._send_mark = (transport.send_waited, transport.bytes_sent)
        parser = self.parser
        remaining = parser.body_remaining  # fixed now: no read until _drain
        if response.started:
            if not self._stream_chunked or self._stream_state != "ended":
                # An HTTP/1.0 stream ends by closing; so does one the
                # handler left early (an exception, a cancel scope) or
                # whose write was interrupted: its framing is incomplete.
                return False
            keep_alive = not response.close_connection  # decided by start_stream
        else:
            keep_alive = self._keep_alive(request, response, remaining)
            file_body = response.file_body
            if file_body is not None:
                if not await self._send_file(request, response, file_body, keep_alive):
                    return False
            else:
                status = response.status
                try:
                    data = self.heads.fixed(
                        status,
                        response.headers.raw,
                        response.body,
                        request.method,
                        request.http_version,
                        keep_alive,
                    )
                except LocalProtocolError as exc:
                    status, data = 500, self._invalid_response(request, exc, keep_alive)
                response.started = True
                if keep_alive:  # batched with the next pipelined request's, if any
                    more = parser.has_pending_data
                    if not transport.queue(data, more):
                        await transport.send_unqueued(data)
                else:
                    await transport.send_all(data)
                if server.observed:
                    tally = server.tally  # metrics without the access log: counted here
                    if tally is not None:
                        tally((request.method, status, perf_counter() - self._began))
                    else:
                        self._log_access(request, status, len(response.body))
        if not keep_alive:
            self.linger = remaining != 0
            return False
        if remaining != 0 and not await self._drain():
            return False
        parser.start_next_cycle()
        return True

    def _invalid_response(
        self, request: Request, exc: LocalProtocolError, keep_alive: bool
    ) -> bytes:
        """The 500 sent for a response only the writer can see is invalid (logged)."""
        # A handler mistake (a body on a 204, status 1000): the client gets a
        # 500, the log says why.
        target, extra = request_fields(self.transport.client, request)
        error_log.error(
            "handler %s built an invalid response to %s %s: %s",
            self.server.spec.name,
            request.method,
            target,
            exc,
            extra=extra,
        )
        return self.heads.error(
            500, method=request.method, version=request.http_version, keep_alive=keep_alive
        )

    async def _handler_failed(self, request: Request, response: Response) -> Response | None:
        """The handler raised (called in its ``except``): log it; a 500, or None to close."""
        server = self.server
        target, extra = request_fields(self.transport.client, request)
        if self.websocket is not None:
            # After the 101: the socket never opened; close it as an error.
            error_log.exception("handler %s raised after upgrade()", server.spec.name, extra=extra)
            self.websocket.abandon()  # subscribed already, perhaps: it never runs
            with trio.move_on_after(server.config.ws_close_timeout):
                await self.websocket.close(1011, "internal error")
            return None
        error_log.exception(
            "handler %s raised on %s %s",
            server.spec.name,
            request.method,
            target,
            extra=extra,
        )
        if response.started:
            return None  # mid-stream: all we can do is close
        return self._answer_instead(response, 500)

    def _answer_instead(self, response: Response, status: int, detail: str = "") -> Response:
        """Drop what the handler set (closing any file) for a short error answer of ours."""
        response.release_file()
        response = self.response = Response(self)
        response.text(error_body(status, detail).decode(), status=status)
        return response

    async def _send_file(
        self, request: Request, response: Response, body: FileBody, keep_alive: bool
    ) -> bool:
        """Send a response whose body is (ranges of) a file; False if the connection must close."""
        transport = self.transport
        try:
            args = (transport, self.heads, request, response, body, keep_alive)
            complete = await send_file_response(*args)
        except OSError:  # EIO and the like: the body cannot be completed
            target, extra = request_fields(transport.client, request)
            error_log.exception("reading a file for %s failed", target, extra=extra)
            return False
        if not complete:
            target, extra = request_fields(transport.client, request)
            error_log.warning(
                "a file shrank while %s was sent: connection closed", target, extra=extra
            )
            return False
        if self.server.observed:
            self._log_access(request, response.status, body.length)
        return True

    def _keep_alive(self, request: Request, response: Response, remaining: int | None) -> bool:
        """Whether the connection can serve another request after this response.

        ``remaining``: the parser's ``body_remaining``.
        """
        server = self.server
        max_requests = server.config.max_requests_per_connection
        return (
            request.keep_alive
            and not response.close_connection
            and not server.shutting_down
            and (max_requests is None or self.handled < max_requests)
            and (remaining == 0 or self._body_can_be_drained(request, remaining))
        )

    def _body_can_be_drained(self, request: Request, remaining: int | None) -> bool:
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
        except (RemoteProtocolError, ClientDisconnected):
            return False
        return True

    def _log_access(self, request: Request | None, status: int, size: int) -> None:
        """Count the response (``Config.metrics``) and log it (``Config.access_log``)."""
        server = self.server
        # The server's own answers before a head was read count as taking no time.
        seconds = perf_counter() - self._began if request is not None else 0.0
        if server.counting:
            server.stats.request_done(
                request.method if request is not None else "-", status, seconds
            )
        if server.config.access_log:
            log_response(self.transport.client, request, status, size, seconds)

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
                    began = self.since = trio.current_time()
                    data = await self.transport.receive_some()
                    self._body_waited += trio.current_time() - began
                    self._body_bytes += len(data)
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

    async def finish(self, response: Response) -> None:
        """Send ``response`` (a fixed body) now, in one write; the handler may go on working."""
        request = self.request
        if request is None or response is not self.response:
            raise LocalProtocolError("this response's connection has moved on")
        if response.started:
            raise LocalProtocolError("the response has already started")
        if response.file_body is not None:
            raise LocalProtocolError("finish() sends a body, not a file: return from handle")
        keep_alive = self._keep_alive(request, response, self.parser.body_remaining)
        response.close_connection = not keep_alive
        status = response.status
        try:
            data = self.heads.fixed(
                status, response.headers.raw, response.body, request.method,
                request.http_version, keep_alive,
            )  # fmt: skip
        except LocalProtocolError as exc:
            status, data = 500, self._invalid_response(request, exc, keep_alive)
        response.started = True
        self._stream_chunked, self._stream_state = True, "broken"  # until it is all written
        transport = self.transport
        self._send_mark = (transport.send_waited, transport.bytes_sent)
        await (transport.send_batched if keep_alive else transport.send_all)(data)
        self._stream_state = "ended"  # _respond: complete, the connection may go on
        if self.server.observed:
            self._log_access(request, status, len(response.body))

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
        keep_alive = self._stream_chunked and self._keep_alive(
            request, response, self.parser.body_remaining
        )
        response.close_connection = not keep_alive
        head = self.heads.head(
            response.status,
            response.headers.raw,
            version=request.http_version,
            keep_alive=keep_alive,
            chunked=chunked,
        )
        self.waiting = Waiting.HANDLER
        self._send_mark = (self.transport.send_waited, self.transport.bytes_sent)
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
        if self.server.observed:
            self._log_access(request, response.status, -1)
