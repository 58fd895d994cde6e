"""WebSockets: the :class:`WebSocket` a handler talks through (``upgrade()`` is in _upgrade.py).

Frames are wsproto's (``wsproto.connection.Connection``); the handshake runs on
our own parser, and everything around the frames is here: the lifecycle
(``on_open`` / ``on_message`` / ``on_close``, the last exactly once), message
size limits, close codes, the heartbeat and close timeouts (enforced by the
server's reaper task, not by a task per socket), and sending from any task.

Close codes the server uses:

======  ==============================================================
1000    normal closure (``ws.close()``)
1001    going away: the server is shutting down
1002    protocol error in the peer's frames
1007    invalid UTF-8 in a text message
1008    policy violation (``ws.close(1008)`` from a handler)
1009    message over ``Config.ws_max_message_size``
1011    a callback raised, or the peer did not answer a ping in time
1006    (reported, never sent) the connection dropped without a close frame
======  ==============================================================
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)

from ._connection import Disconnected, SocketTransport
from ._frames import encode_frame, parse_simple_frames
from .exceptions import ConnectionClosed

_SENDABLE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))

if TYPE_CHECKING:
    from ._connection import HTTPConnection
    from ._hub import Hub
    from ._request import Request

__all__ = ["WebSocket"]

error_log = logging.getLogger("peregrine_rt.error")


class WebSocket:
    """One WebSocket connection, as the handler's callbacks receive it.

    Attributes:
        request: the upgrade request (path, query, headers, cookies…).
        subprotocol: the negotiated subprotocol, or ``None``.
        state: a dict for per-connection data (user id, rooms…).
        latency: the round trip of the last answered ping, in seconds (``None`` before).
        close_code, close_reason: how it closed (``None`` while open).

    Sending works from any task (the handler's callbacks, a broadcast): sends
    are serialised, each message leaves whole, and ``send`` waits while the
    peer reads slowly (backpressure).  Once closed, ``send`` raises
    :class:`~peregrine_rt.ConnectionClosed` with the code and reason.
    """

    __slots__ = (
        "_backlog",
        "_broken",
        "_close_deadline",
        "_conn",
        "_corked",
        "_dropping",
        "_ended",
        "_fast",
        "_hubs",
        "_max_size",
        "_outbox",
        "_outbox_bytes",
        "_ping_counter",
        "_ping_sent_at",
        "_pong_waiters",
        "_reader",
        "_sock",
        "_writing",
        "_ws",
        "close_code",
        "close_reason",
        "last_seen",
        "latency",
        "request",
        "state",
        "subprotocol",
    )

    def __init__(
        self,
        conn: HTTPConnection,
        request: Request,
        ws: WSConnection,
        subprotocol: str | None,
        max_size: int | None,
    ) -> None:
        self._conn = conn
        self._ws = ws
        self.request = request
        self.subprotocol = subprotocol
        self.state: dict[str, Any] = {}
        self.latency: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._max_size = max_size
        # Sending.  One writer at a time (``_writing``); whatever is to be sent
        # while it writes waits in ``_outbox``, in order: hub deliveries
        # (``done`` None, counted in ``_outbox_bytes`` against
        # Config.ws_outbox_size) and the frames of ``send`` calls (``done`` an
        # Event their caller waits on).  ``droppable`` is False for a frame
        # partly written already, and for frames a ``send`` caller waits on.
        self._writing = False
        self._outbox: deque[tuple[bytes, trio.Event | None, bool]] = deque()
        self._outbox_bytes = 0
        self._dropping = False  # drop-oldest is dropping (logged once per episode)
        self._corked = False  # deliveries wait in the outbox for the server's flush
        self._ended = False  # its life (_run) is over: it can join no hub
        transport = conn.transport
        self._sock: socket.socket | None = (
            transport.sock if isinstance(transport, SocketTransport) else None
        )
        self._hubs: list[Hub] | None = None  # hubs this socket is subscribed on
        self._pong_waiters: dict[bytes, trio.Event] = {}
        self._ping_sent_at: float | None = None  # the heartbeat's outstanding ping
        self._close_deadline: float | None = None
        self.last_seen = trio.current_time()
        self._backlog: deque[Any] = deque()  # events read but not handled yet
        self._reader: trio.lowlevel.Task | None = None  # the task running the receive loop
        self._ping_counter = 0
        self._broken = False  # a send was interrupted mid-frame: the stream is unusable
        # The common-frame fast path (peregrine_rt._frames) needs frames as
        # RFC 6455 writes them with no extension in between.
        self._fast = not ws._proto.extensions

    @property
    def remote(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)`` (``None`` for Unix sockets and memory streams)."""
        return self.request.client

    @property
    def hub(self) -> Hub:
        """The server's hub (``ws.hub.subscribe(ws, "room.lobby")``)."""
        return self._conn.server.hub

    def _on_subscribe(self, hub: Hub) -> None:
        hubs = self._hubs
        if hubs is None:
            self._hubs = [hub]
        elif hub not in hubs:
            hubs.append(hub)

    @property
    def closed(self) -> bool:
        """Whether the close handshake started (no more sending)."""
        return self.close_code is not None or self._ws.state is not ConnectionState.OPEN

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed.for_code(self.close_code or 1006, self.close_reason or "")

    async def _send_bytes(self, data: bytes) -> None:
        """Send ``data`` after everything queued before it; wait until it is written.

        The caller waits while the peer reads slowly (backpressure).  Cancelled
        while its turn has not come, the frame still goes out in its turn (the
        frames after it, compressed ones included, are encoded after it).
        """
        if self._broken:
            raise self._closed_error()
        if self._writing or self._outbox:
            done = trio.Event()
            self._outbox.append((data, done, False))
            self._start_drain()
            await done.wait()
            if self._broken:
                raise self._closed_error()
            return
        self._writing = True
        try:
            await self._write(data)
        finally:
            self._writing = False
            # What was queued meanwhile goes to a writer task: the caller
            # returns once its own frame is written, not when the queue is.
            if self._outbox:
                self._start_drain()

    async def _write(self, data: bytes) -> None:
        try:
            await self._conn.transport.send_all(data)
        except Disconnected:
            self._fail(1006, "connection lost")
            raise self._closed_error() from None
        except BaseException:
            # Interrupted (cancelled) part-way through a frame: whatever
            # follows would be read as the rest of it.  The stream cannot be
            # framed any more, so the connection is dropped (1006).
            self._fail(1006, "a send was interrupted")
            with trio.CancelScope(shield=True):
                await self._conn.transport.abort()
            raise

    def _fail(self, code: int, reason: str) -> None:
        """The byte stream is unusable: release everyone waiting to send."""
        self._broken = True
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        for _, done, _ in self._outbox:
            if done is not None:
                done.set()
        self._outbox.clear()
        self._outbox_bytes = 0

    async def _flush(self) -> None:
        """Write the outbox in order (the caller is the writer)."""
        outbox = self._outbox
        self._dropping = False
        while outbox:
            data, done, _ = outbox.popleft()
            if done is None:
                self._outbox_bytes -= len(data)
            try:
                await self._write(data)
            except ConnectionClosed:
                return
            finally:
                # Its sender learns the outcome either way (``_broken`` on failure).
                if done is not None:
                    done.set()

    def _start_drain(self) -> None:
        """Make sure a writer will empty the outbox."""
        if self._writing:
            return  # the current writer flushes before it stops
        nursery = self._conn.server._nursery
        if nursery is None:  # pragma: no cover - the server is gone
            self._fail(1006, "server stopped")
            return
        self._writing = True
        nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        try:
            await self._flush()
        finally:
            self._writing = False

    def _deliver(self, frame: bytes) -> bool:
        """Queue one encoded frame without waiting (hub deliveries, broadcast).

        The frame joins the socket's outbox.  On a plain socket with nothing
        being written, the server's flush writes the outbox when the running
        task yields, in one ``send`` (a burst of publishes costs one system
        call per subscriber, not one per message); a burst past the server's
        cork limit is written at once.  A socket that cannot take it all gets
        a writer task.  When the outbox would pass ``Config.ws_outbox_size``
        the slow-consumer policy applies.  Returns False when the socket is
        closed or closing.
        """
        if self.close_code is not None or self._broken:
            return False
        if self._corked and self._outbox_bytes + len(frame) > self._conn.server._cork_limit:
            self._uncork()  # a big burst: write what it gathered so far now
        if (
            self._outbox
            and self._outbox_bytes + len(frame) > self._conn.server.config.ws_outbox_size
            and not self._overflow(len(frame))
        ):
            return False
        self._outbox.append((frame, None, True))
        self._outbox_bytes += len(frame)
        if self._writing or self._corked:
            return True  # the writer, or the coming flush, takes it
        if self._sock is None:
            self._start_drain()
        else:
            # Written by the server's flush once this task yields, together
            # with whatever else is delivered to this socket until then: a
            # burst of publishes costs one send() per subscriber, not one per
            # message per subscriber.
            self._corked = True
            self._conn.server._cork(self)
        return True

    def _uncork(self) -> None:
        """Write what deliveries queued since the last flush, in one ``send`` if it fits."""
        self._corked = False
        outbox = self._outbox
        if self._writing or not outbox or self._broken:
            return
        frames = []
        for item in outbox:
            if item[1] is not None:
                break  # a send() waits after these: the writer task keeps the order
            frames.append(item[0])
        if len(frames) < len(outbox):
            self._start_drain()
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            sent = self._sock.send(data)  # type: ignore[union-attr]  # corked: a socket
        except BlockingIOError:
            sent = 0
        except OSError:
            self._start_drain()  # the writer meets the error and ends the socket
            return
        if sent == len(data):
            outbox.clear()
            self._outbox_bytes = 0
            return
        if sent:
            # Drop what was written; the rest of a frame already begun cannot
            # be dropped any more, the whole frames after it still can.
            outbox.clear()
            for frame in frames:
                if sent >= len(frame):
                    sent -= len(frame)
                elif sent:
                    outbox.append((frame[sent:], None, False))
                    sent = 0
                else:
                    outbox.append((frame, None, True))
            self._outbox_bytes = sum(len(item[0]) for item in outbox)
        self._start_drain()

    def deliver(self, message: str | bytes) -> bool:
        """Send ``message`` without waiting: written now, or queued in the outbox.

        What :meth:`Hub.publish <peregrine_rt.Hub.publish>` does for each
        subscriber (the hub's :class:`~peregrine_rt.Subscriber` interface).
        A client that reads too slowly gets ``Config.ws_slow_policy`` instead
        of holding up the caller.

        Returns:
            False when the socket is closed or closing (or was just closed by
            the slow-consumer policy), True otherwise.
        """
        if self.close_code is not None or self._ws.state is not ConnectionState.OPEN:
            return False
        return self._deliver(self._encode(message))

    def _encode(self, message: str | bytes) -> bytes:
        """The frame of ``message`` for this socket (with its compression state, if any)."""
        if self._fast:  # no extension: the frame is the same bytes wsproto would write
            return encode_frame(message)
        event: Message[Any] = (
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        return self._ws.send(event)

    def _overflow(self, incoming: int) -> bool:
        """The outbox is full: apply Config.ws_slow_policy.  True: queue the frame."""
        config = self._conn.server.config
        outbox = self._outbox
        # Dropping a compressed frame would desynchronise the peer's inflater.
        if config.ws_slow_policy == "drop-oldest" and self._fast:
            kept: deque[tuple[bytes, trio.Event | None, bool]] = deque()
            dropped = 0
            limit = config.ws_outbox_size - incoming
            while outbox and self._outbox_bytes > limit:
                item = outbox.popleft()
                if item[2]:
                    self._outbox_bytes -= len(item[0])
                    dropped += 1
                else:
                    kept.append(item)
            outbox.extendleft(reversed(kept))  # in place: a writer may hold a reference
            if dropped and not self._dropping:  # one line per episode, not per message
                self._dropping = True
                error_log.warning("%r: slow consumer, dropping the oldest queued messages", self)
            return True
        error_log.warning(
            "%r: slow consumer, %d bytes queued; closing it with 1008",
            self,
            self._outbox_bytes,
        )
        # Keep what cannot be dropped (a frame begun, frames a sender waits
        # on), drop the rest, and queue the close frame behind them.
        undroppable = [item for item in outbox if not item[2]]
        outbox.clear()  # in place: a writer may hold a reference
        outbox.extend(undroppable)
        self._outbox_bytes = sum(len(item[0]) for item in undroppable if item[1] is None)
        reason = "slow consumer: outbox full"
        self.close_code, self.close_reason = 1008, reason
        if self._ws.state is ConnectionState.OPEN:
            data = self._ws.send(CloseConnection(code=1008, reason=reason))
            outbox.append((data, None, False))
            self._outbox_bytes += len(data)
            self._start_drain()
        self._close_deadline = trio.current_time() + config.ws_close_timeout
        return False

    async def send(self, message: str | bytes) -> None:
        """Send one message: ``str`` as a text message, ``bytes`` as a binary one.

        Raises:
            ConnectionClosed: the socket is closed or closing (``.code``, ``.reason``).
        """
        if self._ws.state is not ConnectionState.OPEN or self.close_code is not None:
            raise self._closed_error()
        await self._send_bytes(self._encode(message))

    def _wsproto_idle(self) -> bool:
        """Whether wsproto sits between frames with nothing buffered (fast path allowed)."""
        ws = self._ws
        try:
            proto = ws._proto
            decoder = proto._frame_decoder
            return (
                not ws._events
                and decoder.header is None
                and not len(decoder.buffer)
                and proto._message_decoder.opcode is None
            )
        except AttributeError:  # pragma: no cover - another wsproto: no fast path
            self._fast = False
            return False

    async def ping(self, payload: bytes | None = None) -> float:
        """Send a ping and wait for its pong; return the round trip in seconds.

        Works from any task, the socket's own callbacks included (messages that
        arrive meanwhile are kept, in order, for ``on_message``).
        """
        if self._ws.state is not ConnectionState.OPEN or self.close_code is not None:
            raise self._closed_error()
        if payload is None:
            self._ping_counter += 1
            payload = b"peregrine-%d" % self._ping_counter
        elif payload in self._pong_waiters:
            raise ValueError(f"a ping with payload {payload!r} is already waiting for its pong")
        event = self._pong_waiters[payload] = trio.Event()
        start = trio.current_time()
        try:
            await self._send_bytes(self._ws.send(Ping(payload=payload)))
            if trio.lowlevel.current_task() is self._reader:
                await self._read_until(event)  # inside a callback: nobody else reads
            else:
                await event.wait()
        finally:
            unanswered = self._pong_waiters.pop(payload, None) is not None
        if unanswered:
            raise self._closed_error()
        self.latency = trio.current_time() - start
        return self.latency

    async def _read_until(self, event: trio.Event) -> None:
        """Read frames until ``event`` is set, keeping other events for the receive loop."""
        ws = self._ws
        while not event.is_set():
            try:
                received = await self._conn.transport.receive_some()
            except Disconnected:
                received = b""
            if not received:
                if self.close_code is None:
                    self.close_code, self.close_reason = 1006, "connection lost"
                return
            ws.receive_data(received)
            for ev in ws.events():
                self.last_seen = trio.current_time()
                if isinstance(ev, Pong):
                    self._handle_pong(ev)
                elif isinstance(ev, Ping):
                    if ws.state is ConnectionState.OPEN:
                        await self._send_bytes(ws.send(ev.response()))
                else:
                    self._backlog.append(ev)
                    if isinstance(ev, CloseConnection):
                        return  # no pong will come; the receive loop answers the close

    def _handle_pong(self, event: Pong) -> None:
        waiter = self._pong_waiters.get(bytes(event.payload))
        if waiter is not None:
            del self._pong_waiters[bytes(event.payload)]
            waiter.set()
        if self._ping_sent_at is not None:
            self.latency = trio.current_time() - self._ping_sent_at
            self._ping_sent_at = None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (idempotent).

        The peer's close frame is awaited by the connection for up to
        ``Config.ws_close_timeout`` seconds; ``on_close`` then runs.

        Raises:
            ValueError: ``code`` may not be sent (RFC 6455 §7.4: use 1000-1003,
                1007-1014, or 3000-4999).
        """
        if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"close code {code} cannot be sent (RFC 6455 §7.4)")
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        data = self._ws.send(CloseConnection(code=code, reason=reason))
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._close_deadline = trio.current_time() + self._conn.server.config.ws_close_timeout
        try:
            await self._send_bytes(data)
        except ConnectionClosed:
            pass

    # -- driven by the connection ------------------------------------------------

    async def _run(self, handler: Any) -> None:
        """Run the socket's life: on_open, messages, on_close exactly once."""
        server = self._conn.server
        spec = server.spec
        server.websockets.add(self)
        try:
            try:
                if spec.has_on_open:
                    await handler.on_open(self)
                await self._receive_loop(handler)
            except ConnectionClosed:
                pass
            except Exception:
                error_log.exception("%s: a WebSocket callback raised", spec.name)
                with trio.move_on_after(server.config.ws_close_timeout):
                    await self.close(1011, "internal error")
            finally:
                if (
                    self._conn.timeout_reason == "ws-ping"
                    and self._ws.state is ConnectionState.OPEN  # no close() raced it
                ):
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        data = self._ws.send(CloseConnection(code=1011, reason="ping timeout"))
                        try:
                            await self._send_bytes(data)
                        except ConnectionClosed:
                            pass
                if self.close_code is None:
                    self.close_code, self.close_reason = 1006, "connection lost"
                self._release_waiters()
        finally:
            self._ended = True
            server.websockets.discard(self)
            if self._hubs:
                for hub in self._hubs:
                    hub.unsubscribe(self)
            if spec.has_on_close:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(server.config.shutdown_grace),
                ):
                    try:
                        await handler.on_close(self, self.close_code, self.close_reason or "")
                    except Exception:
                        error_log.exception("%s.on_close raised", spec.name)

    def _release_waiters(self) -> None:
        for event in list(self._pong_waiters.values()):
            event.set()

    async def _receive_loop(self, handler: Any) -> None:
        ws = self._ws
        transport = self._conn.transport
        on_message = handler.on_message
        max_size = self._max_size
        parts: list[Any] = []
        size = 0
        backlog = self._backlog
        self._reader = trio.lowlevel.current_task()
        wait_first = False
        # Bytes that arrived with the upgrade request are already in ws.  Events
        # are taken into the backlog before any callback runs, so that ping()
        # called from a callback can read on while they wait their turn.
        while True:
            if not backlog:
                backlog.extend(ws.events())
                if not backlog:
                    if ws.state is ConnectionState.CLOSED:
                        return
                    try:
                        # Everything read has been handled (and most likely
                        # answered): wait for the socket before trying recv().
                        received = await transport.receive_some(wait_first)
                    except Disconnected:
                        return
                    wait_first = True
                    if not received:
                        return
                    self.last_seen = trio.current_time()
                    if self._fast and ws.state is ConnectionState.OPEN and self._wsproto_idle():
                        messages, offset = parse_simple_frames(received, max_size)
                        backlog.extend(messages)
                        if offset < len(received):
                            ws.receive_data(received[offset:])
                    else:
                        ws.receive_data(received)
                    continue
            while backlog:
                event = backlog.popleft()
                if type(event) is str or type(event) is bytes:  # from the fast path
                    if self.close_code is None:
                        await on_message(self, event)
                    continue
                self.last_seen = trio.current_time()
                if isinstance(event, (TextMessage, BytesMessage)):
                    data = event.data
                    # Bytes, not characters (isascii() is O(1) on str).
                    if type(data) is str and not data.isascii():
                        size += len(data.encode())
                    else:
                        size += len(data)
                    if max_size is not None and size > max_size:
                        await self.close(1009, f"message over {max_size} bytes")
                        parts.clear()
                        size = 0
                        continue
                    if self.close_code is not None:
                        continue  # closing: drop messages still arriving
                    if not event.message_finished:
                        parts.append(event.data)
                        continue
                    if parts:
                        parts.append(event.data)
                        message: str | bytes = (
                            "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                        )
                        parts.clear()
                    else:
                        message = bytes(data) if isinstance(data, bytearray) else data
                    size = 0
                    await on_message(self, message)
                elif isinstance(event, Ping):
                    if ws.state is ConnectionState.OPEN:
                        await self._send_bytes(ws.send(event.response()))
                elif isinstance(event, Pong):
                    self._handle_pong(event)
                elif isinstance(event, CloseConnection):
                    if ws.state is ConnectionState.REMOTE_CLOSING:
                        # The peer started it (or the frames were invalid: wsproto
                        # reports that as a close with 1002/1007): answer, then end.
                        if self.close_code is None:
                            self.close_code = int(event.code)
                            self.close_reason = event.reason or ""
                        try:
                            await self._send_bytes(ws.send(event.response()))
                        except ConnectionClosed:
                            pass
                        return
                    if ws.state is ConnectionState.OPEN:
                        # The peer's frames were invalid (wsproto reports the close
                        # code to send): "fail the connection" (RFC 6455 §7.1.7):
                        # send the close frame and drop TCP without waiting.
                        await self.close(int(event.code), event.reason or "")
                        return
                    return  # our close was answered

    # -- the reaper's view --------------------------------------------------------

    def check_timeout(self, now: float, nursery: trio.Nursery) -> None:
        """Heartbeat and close timeout (called by the server's reaper)."""
        config = self._conn.server.config
        deadline = self._close_deadline
        if deadline is not None:
            if now > deadline:
                self._conn.timeout_reason = "ws-close"
                self._conn.scope.cancel()
            return
        sent = self._ping_sent_at
        if sent is not None:
            if now - sent > config.ws_ping_timeout:
                self.close_code, self.close_reason = 1011, "ping timeout"
                self._conn.timeout_reason = "ws-ping"
                self._conn.scope.cancel()
            return
        interval = config.ws_ping_interval
        if interval is not None and now - self.last_seen >= interval:
            self._ping_sent_at = now
            nursery.start_soon(self._heartbeat_ping)

    async def _heartbeat_ping(self) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            return
        try:
            await self._send_bytes(self._ws.send(Ping(payload=b"peregrine-hb")))
        except Exception:  # the socket is going away; its own task reports how
            pass

    def __repr__(self) -> str:
        status = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<WebSocket {self.request.path} {status}>"
