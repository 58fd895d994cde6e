"""The test client's WebSocket, and the failures every testing utility raises.

A :class:`ClientWebSocket` is a wsproto client over one connection to the app.
A reader task, started with the socket and stopped with it, reads frames as
they come, the way a browser does: it answers pings and the server's close
frame at once, queues messages for :meth:`~ClientWebSocket.receive`, and notes
everything else that arrives, so that a test that waits in vain can say what
came instead.

Failures are ``AssertionError`` subclasses, worded as "expected X; received
instead: Y" (or "waited N s for X; received instead: Y" after a timeout).
"""

from __future__ import annotations

import enum
import json
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from ..exceptions import ConnectionClosed

if TYPE_CHECKING:
    from ._client import ClientResponse

__all__ = [
    "DEFAULT_TIMEOUT",
    "UNSET",
    "ClientWebSocket",
    "Close",
    "ReceiveTimeout",
    "UnexpectedEvent",
    "WebSocketClosed",
    "describe_bytes",
    "describe_message",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
"""Seconds a client waits for a response, a message or a close unless told otherwise."""

_SHOWN = 60  # characters of a message quoted in a failure
_LOGGED = 5  # events listed in a failure before "and N more"


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = _Unset.UNSET
"""The default of ``timeout`` arguments: use the client's timeout."""

Timeout = float | None | _Unset


def resolve_timeout(timeout: Timeout, default: float | None) -> float | None:
    """``timeout``, or ``default`` when it was not given."""
    return default if isinstance(timeout, _Unset) else timeout


# -- failures ---------------------------------------------------------------------


class UnexpectedEvent(AssertionError):
    """A testing utility expected one thing and something else arrived.

    Attributes:
        expected: what was awaited, e.g. ``"a WebSocket message"``.
        received: what arrived instead, e.g. ``"close 1000 'bye'"`` or ``"nothing"``.
    """

    def __init__(self, expected: str, received: str) -> None:
        super().__init__(f"expected {expected}; received instead: {received}")
        self.expected = expected
        self.received = received


class ReceiveTimeout(UnexpectedEvent):
    """Nothing of what was awaited arrived in time.

    Attributes:
        timeout: the seconds waited.
    """

    def __init__(self, expected: str, received: str, timeout: float) -> None:
        AssertionError.__init__(
            self, f"waited {float(timeout)!r} s for {expected}; received instead: {received}"
        )
        self.expected = expected
        self.received = received
        self.timeout = timeout


class WebSocketClosed(UnexpectedEvent, ConnectionClosed):
    """A message was awaited, and the server closed the WebSocket instead.

    Also a :class:`~peregrine_rt.ConnectionClosed`, with its ``code`` and ``reason``.
    """

    def __init__(self, expected: str, code: int, reason: str) -> None:
        UnexpectedEvent.__init__(self, expected, describe_close(code, reason))
        self.code = code
        self.reason = reason


class Close(NamedTuple):
    """A close frame: ``code`` and ``reason`` (1006: the connection dropped without one)."""

    code: int
    reason: str


# -- descriptions -----------------------------------------------------------------


def describe_message(message: str | bytes) -> str:
    """``text 'hello'`` or ``binary b'\\x00'``, shortened, with the size if long."""
    kind = "text" if isinstance(message, str) else "binary"
    if len(message) <= _SHOWN:
        return f"{kind} {message!r}"
    unit = "characters" if isinstance(message, str) else "bytes"
    return f"{kind} {message[:_SHOWN]!r}… ({len(message)} {unit})"


def describe_bytes(data: bytes) -> str:
    """Received bytes for a failure message, shortened."""
    if not data:
        return "nothing"
    if len(data) <= 2 * _SHOWN:
        return f"{len(data)} bytes: {data!r}"
    return f"{len(data)} bytes: {data[: 2 * _SHOWN]!r}…"


def describe_close(code: int, reason: str) -> str:
    if code == 1006:
        return "the connection dropped without a close frame (1006)"
    return f"close {code} {reason!r}"


def describe_events(events: list[str]) -> str:
    """``"nothing"``, or the events joined with ``"; "``, repeats counted, the list cut short."""
    if not events:
        return "nothing"
    runs: list[list[Any]] = []
    for event in events:
        if runs and runs[-1][0] == event:
            runs[-1][1] += 1
        else:
            runs.append([event, 1])
    shown = [event if n == 1 else f"{event} ({n} times)" for event, n in runs[:_LOGGED]]
    if len(runs) > _LOGGED:
        shown.append(f"and {sum(n for _, n in runs[_LOGGED:])} more")
    return "; ".join(shown)


# -- the WebSocket ----------------------------------------------------------------


class ClientWebSocket:
    """A WebSocket to the app, as ``async with client.websocket(path) as ws`` gives it.

    Attributes:
        response: the ``101 Switching Protocols`` response
            (:class:`~peregrine_rt.testing.ClientResponse`).
        subprotocol: the subprotocol the server chose, or ``None``.
        close_code: the code of the server's close frame; ``1006`` if the
            connection dropped without one; ``None`` while neither happened.
        close_reason: the reason of the server's close frame (``None`` likewise).

    Every wait (``receive*``, ``ping``, ``close``) gives up after ``timeout``
    seconds — the client's unless given — with a :class:`ReceiveTimeout` that
    says what was awaited and what arrived instead.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        response: ClientResponse,
        *,
        target: str,
        timeout: float | None,
    ) -> None:
        self.response = response
        self.subprotocol: str | None = response.headers.get("sec-websocket-protocol")
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.target = target
        self._stream = stream
        self._conn = conn
        self._timeout = timeout
        self._messages: deque[str | bytes] = deque()
        self._parts: list[Any] = []
        self._log: list[str] = []  # what arrived besides messages, described, in order
        self._changed = trio.Event()
        self._eof = False
        self._error: Exception | None = None
        self._send_lock = trio.StrictFIFOLock()
        self._sent_close: Close | None = None
        self._pings = 0
        self._pong_waiters: dict[bytes, trio.Event] = {}
        self._reader_scope = trio.CancelScope()
        self._reader_done = trio.Event()

    def __repr__(self) -> str:
        if self.close_code is None:
            status = "open"
        else:
            status = describe_close(self.close_code, self.close_reason or "")
        return f"<ClientWebSocket {self.target} {status}>"

    @property
    def closed(self) -> bool:
        """Whether the server closed the WebSocket (or the connection dropped)."""
        return self.close_code is not None

    # -- sending ---------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send ``message``: ``str`` as a text message, ``bytes`` as a binary one.

        Raises:
            ConnectionClosed: the WebSocket is closed or closing.
        """
        self._check_open()
        if isinstance(message, str):
            data = self._conn.send(TextMessage(data=message))
        else:
            data = self._conn.send(BytesMessage(data=bytes(message)))
        await self._send(data)

    async def send_json(self, data: Any) -> None:
        """Send ``data`` encoded as JSON, in a text message."""
        await self.send(json.dumps(data))

    async def ping(self, payload: bytes | None = None, *, timeout: Timeout = UNSET) -> float:
        """Send a ping and wait for the server's pong; return the round trip in seconds."""
        self._check_open()
        if payload is None:
            self._pings += 1
            payload = b"client-%d" % self._pings
        answered = self._pong_waiters[payload] = trio.Event()
        start = trio.current_time()
        await self._send(self._conn.send(Ping(payload=payload)))

        def check() -> bool | None:
            if answered.is_set():
                return True
            self._raise_if_closed(f"the pong to ping {payload!r}")
            return None

        try:
            await self._wait_for(check, f"the pong to ping {payload!r}", timeout)
        finally:
            self._pong_waiters.pop(payload, None)
        return trio.current_time() - start

    async def close(self, code: int = 1000, reason: str = "", *, timeout: Timeout = UNSET) -> Close:
        """Close the WebSocket and wait until the server has closed the connection.

        Once this returns, the server has answered the close frame, closed the
        connection, and its handler's ``on_close`` has run.  Does nothing more
        than wait if the WebSocket is already closing.

        Returns:
            the server's close frame (it echoes ``code`` and ``reason``), or
            ``Close(1006, "")`` if the connection dropped without one.
        """
        if not self._eof and self._sent_close is None and self._conn.state is ConnectionState.OPEN:
            self._sent_close = Close(code, reason)
            try:
                await self._send(self._conn.send(CloseConnection(code=code, reason=reason)))
            except ConnectionClosed:
                pass

        def check() -> Close | None:
            return self._close_info() if self._eof else None

        def expected() -> str:
            if self.close_code is None:
                return f"the server to answer the close frame ({describe_close(code, reason)})"
            return "the server to close the connection after the close handshake"

        return await self._wait_for(check, expected, timeout)

    # -- receiving -------------------------------------------------------------

    async def receive(self, *, timeout: Timeout = UNSET) -> str | bytes:
        """The next message: ``str`` for a text message, ``bytes`` for a binary one.

        Raises:
            ReceiveTimeout: none arrived within ``timeout`` seconds.
            WebSocketClosed: the server closed the WebSocket instead.
        """
        expected = "a WebSocket message"

        def check() -> str | bytes | None:
            if self._messages:
                return self._messages.popleft()
            self._raise_if_closed(expected)
            return None

        return await self._wait_for(check, expected, timeout)

    async def receive_text(self, *, timeout: Timeout = UNSET) -> str:
        """The next message, which must be a text message."""
        message = await self.receive(timeout=timeout)
        if not isinstance(message, str):
            raise UnexpectedEvent("a text message", describe_message(message))
        return message

    async def receive_bytes(self, *, timeout: Timeout = UNSET) -> bytes:
        """The next message, which must be a binary message."""
        message = await self.receive(timeout=timeout)
        if not isinstance(message, bytes):
            raise UnexpectedEvent("a binary message", describe_message(message))
        return message

    async def receive_json(self, *, timeout: Timeout = UNSET) -> Any:
        """The next message, decoded as JSON."""
        message = await self.receive(timeout=timeout)
        try:
            return json.loads(message)
        except ValueError as exc:
            raise UnexpectedEvent(
                "a JSON message", f"{describe_message(message)}, which is not JSON ({exc})"
            ) from None

    async def receive_close(self, *, timeout: Timeout = UNSET) -> Close:
        """Wait for the server to close the WebSocket and the connection; return its close frame.

        The close frame is answered as soon as it arrives.  Once this returns,
        the server's handler has run ``on_close``.

        Raises:
            UnexpectedEvent: a message arrived first (it is consumed).
            ReceiveTimeout: the server did not close within ``timeout`` seconds.
        """

        def check() -> Close | None:
            if self._messages:
                raise UnexpectedEvent(
                    "the server to close the WebSocket",
                    describe_message(self._messages.popleft()),
                )
            return self._close_info() if self._eof else None

        def expected() -> str:
            if self.close_code is None:
                return "the server to close the WebSocket"
            return (
                "the server to close the connection after its close frame "
                f"({describe_close(self.close_code, self.close_reason or '')})"
            )

        return await self._wait_for(check, expected, timeout)

    async def assert_no_message(self, within: float = 0.1) -> None:
        """Wait ``within`` seconds and fail if a message arrived or the socket closed."""
        await trio.sleep(within)
        expected = f"no WebSocket message within {within!r} s"
        if self._messages:
            raise UnexpectedEvent(expected, describe_message(self._messages.popleft()))
        if self.close_code is not None:
            raise WebSocketClosed(expected, self.close_code, self.close_reason or "")

    # -- the machinery -----------------------------------------------------------

    def _close_info(self) -> Close:
        return Close(self.close_code or 1006, self.close_reason or "")

    def _check_open(self) -> None:
        if self._conn.state is not ConnectionState.OPEN or self._eof:
            if self.close_code is not None:
                raise ConnectionClosed.for_code(self.close_code, self.close_reason or "")
            sent = self._sent_close or Close(1006, "")
            raise ConnectionClosed.for_code(sent.code, sent.reason)

    def _raise_if_closed(self, expected: str) -> None:
        if self._error is not None:
            raise UnexpectedEvent(
                expected, f"an error in the test client's reader: {self._error!r}"
            ) from self._error
        if self.close_code is not None:
            raise WebSocketClosed(expected, self.close_code, self.close_reason or "")

    async def _wait_for(
        self,
        check: Callable[[], T | None],
        expected: str | Callable[[], str],
        timeout: Timeout,
    ) -> T:
        limit = resolve_timeout(timeout, self._timeout)
        mark = len(self._log)
        with trio.move_on_after(math.inf if limit is None else limit):
            while True:
                result = check()
                if result is not None:
                    return result
                await self._changed.wait()
        assert limit is not None
        events = self._log[mark:]
        if self._parts:
            kind = "text" if isinstance(self._parts[0], str) else "binary"
            size = sum(len(p) for p in self._parts)
            events = [*events, f"part of a {kind} message ({size} so far)"]
        what = expected() if callable(expected) else expected
        raise ReceiveTimeout(what, describe_events(events), limit)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                code, reason = self._close_info()
                raise ConnectionClosed.for_code(code, reason) from None

    async def _read_loop(self) -> None:
        """The reader task (see the module docstring); it never raises."""
        try:
            with self._reader_scope:
                await self._read_frames()
        except Exception as exc:
            self._error = exc
        finally:
            self._eof = True
            if self.close_code is None:
                self.close_code, self.close_reason = 1006, ""
            self._reader_done.set()
            self._notify()

    async def _read_frames(self) -> None:
        conn = self._conn
        while True:
            for event in conn.events():
                await self._handle(event)
            if self._eof:
                return
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._eof = True
                if conn.state is not ConnectionState.CLOSED:
                    conn.receive_data(None)  # a CloseConnection(1006) event
            elif conn.state is ConnectionState.CLOSED:
                self._log.append(f"{describe_bytes(bytes(data))} after the close handshake")
                self._notify()
            else:
                conn.receive_data(bytes(data))

    async def _handle(self, event: Any) -> None:
        conn = self._conn
        if isinstance(event, (TextMessage, BytesMessage)):
            self._parts.append(event.data)
            if event.message_finished:
                parts, self._parts = self._parts, []
                message: str | bytes = (
                    "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                )
                self._messages.append(message)
                self._notify()
        elif isinstance(event, Ping):
            self._log.append(f"ping {bytes(event.payload)!r}")
            if conn.state is ConnectionState.OPEN:
                try:
                    await self._send(conn.send(event.response()))
                except ConnectionClosed:
                    pass
            self._notify()
        elif isinstance(event, Pong):
            payload = bytes(event.payload)
            self._log.append(f"pong {payload!r}")
            waiter = self._pong_waiters.get(payload)
            if waiter is not None:
                waiter.set()
            self._notify()
        elif isinstance(event, CloseConnection):
            if conn.state is ConnectionState.OPEN:
                # wsproto's verdict on invalid frames from the server: answer it
                # with that close code, and remember why.
                reason = f"invalid frames from the server: {event.reason}"
                self._log.append(reason)
                if self.close_code is None:
                    self.close_code, self.close_reason = int(event.code), reason
                try:
                    await self._send(conn.send(CloseConnection(code=event.code)))
                except ConnectionClosed:
                    pass
            else:
                if self.close_code is None:
                    self.close_code, self.close_reason = int(event.code), event.reason or ""
                if conn.state is ConnectionState.REMOTE_CLOSING:
                    try:
                        await self._send(conn.send(event.response()))
                    except ConnectionClosed:
                        pass
            self._notify()
        else:  # pragma: no cover - wsproto has no other event after the handshake
            self._log.append(repr(event))
            self._notify()

    async def _finish(self, *, clean: bool) -> None:
        """End the socket when its block is left: a close handshake if ``clean``, then drop."""
        try:
            if clean and not self._eof and self._error is None:
                await self.close()
            elif not self._eof:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    try:
                        await self.close(1000)
                    except (ConnectionClosed, AssertionError):
                        pass
        finally:
            self._reader_scope.cancel()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)
                await self._reader_done.wait()
