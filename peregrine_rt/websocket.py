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
import random
import time
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage

from ._frames import encode_frame
from ._outbox import Outbox
from ._receiver import NO_BACKLOG, TOO_BIG, Receiver
from ._wsconn import LazyConnection
from .exceptions import ClientDisconnected, ConnectionClosed

# Each socket pings after between 50% and 150% of ws_ping_interval idle (its own
# share, drawn once): sockets that opened together ping spread over a whole
# interval, and on average once per interval.
HEARTBEAT_JITTER = 0.5
_SENDABLE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))
# The close code of a socket whose identity expired: 3000 is "Unauthorized"
# in IANA's WebSocket close code registry.
CLOSE_EXPIRED = 3000

if TYPE_CHECKING:
    from ._connection import HTTPConnection
    from ._hub import Hub
    from ._outbox import SendScheduler
    from ._request import Request
    from .handlers import WebSocketHandler

__all__ = ["WebSocket"]

error_log = logging.getLogger("peregrine_rt.error")
_OPEN, _CLOSED = ConnectionState.OPEN, ConnectionState.CLOSED  # read per message


class WebSocket:
    """One WebSocket connection, as the handler's callbacks receive it.

    Attributes:
        request: the upgrade request (path, query, headers, cookies…).
        subprotocol: the negotiated subprotocol, or ``None``.
        state: a dict for per-connection data (user id, rooms…).
        user: the identity the handshake's ``authenticate`` hook returned
            (``None`` without one); :meth:`set_user` replaces it.
        latency: the round trip of the last answered ping, in seconds (``None`` before).
        close_code, close_reason: how it closed (``None`` while open).

    Sending works from any task (the handler's callbacks, a broadcast): sends
    are serialised, each message leaves whole, and ``send`` waits while the
    peer reads slowly (backpressure).  Once closed, ``send`` raises
    :class:`~peregrine_rt.ConnectionClosed` with the code and reason.

    The hub and :func:`~peregrine_rt.broadcast` use :attr:`shares_frames`,
    :meth:`deliver_frame` and :meth:`track_hub`; the send path (``_outbox``)
    uses :meth:`closed_error`, :meth:`send_failed` and :meth:`slow_consumer`.
    Handlers do not need them.
    """

    __slots__ = (
        "_close_deadline",
        "_conn",
        "_ended",
        "_expires",
        "_expires_at",
        "_fast",
        "_heard",
        "_hubs",
        "_initial",
        "_max_size",
        "_outbox",
        "_ping_counter",
        "_ping_sent_at",
        "_ping_share",
        "_pong_waiters",
        "_reader",
        "_receiver",
        "_stats",
        "_ws",
        "close_code",
        "close_reason",
        "hooks",
        "last_seen",
        "latency",
        "request",
        "shares_frames",
        "state",
        "subprotocol",
        "user",
    )

    def __init__(
        self,
        conn: HTTPConnection,
        request: Request,
        ws: LazyConnection,
        subprotocol: str | None,
        max_size: int | None,
        *,
        scheduler: SendScheduler,
        compressed: bool = False,
        initial: bytes = b"",
    ) -> None:
        self._conn = conn
        self._ws = ws
        self.request = request
        self.subprotocol = subprotocol
        self.state: dict[str, Any] = {}
        self.user: Any = None
        self.hooks: Any = None  # upgrade(hooks=...): who serves it instead of the handler
        self._expires_at: float | None = None  # UNIX time
        self._expires: float | None = None  # the same, on trio's clock
        self.set_user(request.user)
        self.latency: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._max_size = max_size
        config = conn.server.config
        self._stats = conn.server.stats
        # The common-frame fast path (peregrine_rt._frames) needs frames as
        # RFC 6455 writes them with no extension in between.
        self._fast = not compressed
        self.shares_frames = self._fast
        """Whether a message's frame is the same bytes for this socket as for any other.

        True without compression (server frames are unmasked): the hub encodes
        a message once and hands the frame to :meth:`deliver_frame` of every
        such socket.  (A plain attribute: the hub reads it once per subscriber.)
        """
        self._outbox = Outbox(
            self,
            conn.transport,
            scheduler,
            limit=config.ws_outbox_size,
            policy=config.ws_slow_policy,
            droppable=self._fast,
            stats=self._stats,
        )
        self._initial = initial  # bytes that came with the upgrade request
        self._ended = False  # its life (run) is over: it can join no hub
        self._hubs: list[Hub] | None = None  # hubs this socket is subscribed on
        self._pong_waiters: dict[bytes, trio.Event] = {}
        self._ping_sent_at: float | None = None  # the heartbeat's outstanding ping
        self._close_deadline: float | None = None
        self.last_seen = trio.current_time()
        self._heard = False  # bytes came since the reaper last looked (it moves last_seen)
        self._receiver = Receiver(ws, fast=self._fast, max_size=max_size, compressed=compressed)
        self._reader: trio.lowlevel.Task | None = None  # the task running the receive loop
        self._ping_counter = 0
        # The share of ws_ping_interval after which this socket pings (its jitter).
        self._ping_share = 1.0 + (random.random() * 2 - 1) * HEARTBEAT_JITTER

    @property
    def expires_at(self) -> float | None:
        """When the socket's identity expires, in UNIX time (``None``: never).

        At that time the server closes the socket with code 3000 and the
        reason ``identity expired``, unless :meth:`set_user` was given a
        fresher identity first.
        """
        return self._expires_at

    def set_user(self, user: Any, *, expires_at: float | None = None) -> None:
        """Make ``user`` the socket's identity, and re-arm its expiry.

        The expiry is ``expires_at`` if given, else ``user.expires_at`` if the
        identity has one (:class:`~peregrine_rt.Identity`, made from a
        token's ``exp``), else none.  Call it when the client sends a
        refreshed token over the socket, after checking the token.
        """
        if expires_at is None:
            expires_at = getattr(user, "expires_at", None)
        self.user = user
        self._expires_at = expires_at
        self._expires = (
            None if expires_at is None else trio.current_time() + (expires_at - time.time())
        )

    @property
    def remote(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)`` (``None`` for Unix sockets and memory streams)."""
        return self.request.client

    @property
    def hub(self) -> Hub:
        """The server's hub (``ws.hub.subscribe(ws, "room.lobby")``)."""
        return self._conn.server.hub

    @property
    def closed(self) -> bool:
        """Whether the close handshake started (no more sending)."""
        return self.close_code is not None or self._ws.state is not _OPEN

    @property
    def buffered_amount(self) -> int:
        """Bytes of hub deliveries queued for this socket and not written yet.

        What the browser's ``WebSocket.bufferedAmount`` says on the other side:
        it grows while the peer reads slower than messages are published, up to
        ``Config.ws_outbox_size``, where the slow-consumer policy applies.
        """
        return self._outbox.buffered

    async def send(self, message: str | bytes) -> None:
        """Send one message: ``str`` as a text message, ``bytes`` as a binary one.

        Raises:
            ConnectionClosed: the socket is closed or closing (``.code``, ``.reason``).
        """
        if self._ws.state is not _OPEN or self.close_code is not None:
            raise self.closed_error()
        self._stats.ws_sent += 1
        frame = encode_frame(message) if self._fast else self._encode(message)
        if not self._outbox.queue(frame):
            await self._outbox.send_unqueued(frame)

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
        if self.close_code is not None or self._ws.state is not _OPEN:
            return False
        ok = self._outbox.deliver(self._encode(message))
        self._stats.ws_sent += ok
        return ok

    # -- for the hub and broadcast() ------------------------------------------------

    def deliver_frame(self, frame: bytes) -> bool:
        """:meth:`deliver` for a frame already encoded (only where :attr:`shares_frames`)."""
        if self.close_code is not None:
            return False
        ok = self._outbox.deliver(frame)
        self._stats.ws_sent += ok
        return ok

    def deliver_keyed(self, frame: bytes, key: object) -> bool:
        """:meth:`deliver_frame`, conflated: a queued, unsent delivery with the same ``key``
        is replaced by this frame, so a slow reader gets the newest value per key
        (prices, cursors, scores) instead of a backlog."""
        if self.close_code is not None:
            return False
        ok = self._outbox.deliver_keyed(frame, key)
        self._stats.ws_sent += ok
        return ok

    def track_hub(self, hub: Hub) -> None:
        """Note that ``hub`` has subscribed this socket: it leaves ``hub`` when it closes.

        Raises:
            ConnectionClosed: the socket's life is over (it could never leave).
        """
        if self._ended:
            raise self.closed_error()
        hubs = self._hubs
        if hubs is None:
            self._hubs = [hub]
        elif hub not in hubs:
            hubs.append(hub)

    def abandon(self) -> None:
        """The socket will never run (``handle`` failed after ``upgrade()``): leave its hubs.

        Called by the connection; ``on_open`` and ``on_close`` are not called
        for a socket that never opened.
        """
        self._ended = True
        if self._hubs:
            for hub in self._hubs:
                hub.unsubscribe(self)

    # -- for the send path (peregrine_rt._outbox.OutboxOwner) ------------------------

    def closed_error(self) -> ConnectionClosed:
        """The :class:`~peregrine_rt.ConnectionClosed` a sender gets now that it is closed
        (with the peer's code when its close is read but not handled yet)."""
        end = None if self.close_code is not None else self._receiver.pending_end()
        if type(end) is CloseConnection:
            return ConnectionClosed.for_code(int(end.code), end.reason or "")
        return ConnectionClosed.for_code(self.close_code or 1006, self.close_reason or "")

    def send_failed(self, code: int, reason: str) -> None:
        """The byte stream broke (peer gone, or a write interrupted): record how it ended."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def slow_consumer(self) -> bytes | None:
        """The outbox overflowed under the ``close`` policy: close with 1008; the close
        frame for the outbox to queue (None if one was sent already)."""
        reason = "slow consumer: outbox full"
        self.close_code, self.close_reason = 1008, reason
        self._stats.slow_closed += 1
        self._close_deadline = trio.current_time() + self._conn.server.config.ws_close_timeout
        if self._ws.state is not _OPEN:
            return None
        return self._ws.send(CloseConnection(code=1008, reason=reason))

    def _encode(self, message: str | bytes) -> bytes:
        """The frame of ``message`` for this socket (with its compression state, if any)."""
        if self._fast:  # no extension: the frame is the same bytes wsproto would write
            return encode_frame(message)
        event: Message[Any] = (
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        return self._ws.send(event)

    # -- receiving --------------------------------------------------------------------

    async def ping(self, payload: bytes | None = None) -> float:
        """Send a ping and wait for its pong; return the round trip in seconds.

        Works from any task, the socket's own callbacks included (messages that
        arrive meanwhile are kept, in order, for ``on_message``).
        """
        if self._ws.state is not _OPEN or self.close_code is not None:
            raise self.closed_error()
        if payload is None:
            self._ping_counter += 1
            payload = b"peregrine-%d" % self._ping_counter
        elif payload in self._pong_waiters:
            raise ValueError(f"a ping with payload {payload!r} is already waiting for its pong")
        event = self._pong_waiters[payload] = trio.Event()
        start = trio.current_time()
        try:
            await self._outbox.send(self._ws.send(Ping(payload=payload)))
            if trio.lowlevel.current_task() is self._reader:
                await self._read_until(event)  # inside a callback: nobody else reads
            else:
                await event.wait()
        finally:
            unanswered = self._pong_waiters.pop(payload, None) is not None
        if unanswered:
            raise self.closed_error()
        self.latency = trio.current_time() - start
        return self.latency

    async def _read_until(self, event: trio.Event) -> None:
        """Read frames until ``event`` is set, keeping other events for the receive loop."""
        ws = self._ws
        receiver = self._receiver
        end = receiver.pending_end()  # came before the ping: answer it now, read no more
        if end is not None:
            await (self._fail_too_big() if end is TOO_BIG else self._closed_by_peer(end))
            return  # the receive loop meets it too, and ends the connection
        while not event.is_set():
            try:
                received = await self._conn.transport.receive_some()
            except ClientDisconnected:
                received = b""
            if not received:
                if self.close_code is None:
                    self.close_code, self.close_reason = 1006, "connection lost"
                return
            self._heard = True
            start = len(receiver.backlog)
            receiver.feed(received)
            backlog = receiver.backlog  # its own deque now, if it had none
            new = [backlog.pop() for _ in range(len(backlog) - start)]
            closing = False
            while new:
                ev = new.pop()
                if closing:
                    backlog.append(ev)
                elif isinstance(ev, Pong):
                    self._handle_pong(ev)
                elif isinstance(ev, Ping):
                    if ws.state is _OPEN:
                        await self._outbox.send(ws.send(ev.response()))
                elif ev is TOO_BIG or isinstance(ev, CloseConnection):
                    # Answered here (ping() raises; its callback may not return), and
                    # left for the receive loop, which then ends the connection.
                    await (self._fail_too_big() if ev is TOO_BIG else self._closed_by_peer(ev))
                    backlog.append(ev)
                    closing = True
                else:
                    backlog.append(ev)
            if closing:
                return

    async def _fail_too_big(self) -> None:
        """A message went over the limit (counted from the frame headers, fragments included).

        The rest of it is not read: fail the connection (RFC 6455 §7.1.7)
        after the close frame, lingering so that the peer can read it.
        """
        self._conn.linger = True
        await self.close(1009, f"message over {self._max_size} bytes")

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
        if self._ws.state not in (_OPEN, ConnectionState.REMOTE_CLOSING):
            return
        data = self._ws.send(CloseConnection(code=code, reason=reason))
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._close_deadline = trio.current_time() + self._conn.server.config.ws_close_timeout
        try:
            await self._outbox.send(data)
        except ConnectionClosed:
            pass

    # -- driven by the connection ------------------------------------------------

    async def run(self, handler: Any) -> None:
        """Run the socket's life: on_open, messages, on_close exactly once.

        Called by the connection after ``upgrade()``; not for handlers.
        """
        server = self._conn.server
        spec = server.spec
        server.websockets.add(self)
        self.request.headers.compact()  # read by upgrade(); split again only if used
        try:
            try:
                # The reader, and what came with the upgrade in the backlog, before any
                # callback runs: ping() in a callback (on_open too) reads on in order.
                self._reader = trio.lowlevel.current_task()
                initial, self._initial = self._initial, b""
                if initial:
                    self._receiver.feed(initial)
                if self.hooks is not None or spec.has_on_open:  # hooks: all three
                    await handler.on_open(self)
                await self._receive_loop(handler, wait_first=not initial)
            except ConnectionClosed:
                pass
            except Exception:
                error_log.exception("%s: a WebSocket callback raised", spec.name)
                with trio.move_on_after(server.config.ws_close_timeout):
                    await self.close(1011, "internal error")
            finally:
                if (
                    self._conn.timeout_reason == "ws-ping"
                    and self._ws.state is _OPEN  # no close() raced it
                ):
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        data = self._ws.send(CloseConnection(code=1011, reason="ping timeout"))
                        try:
                            await self._outbox.send(data)
                        except ConnectionClosed:
                            pass
                if self.close_code is None:
                    self.close_code, self.close_reason = 1006, "connection lost"
                self._release_waiters()
        finally:
            self._ended = True
            self._receiver.end()  # a message cut short by the end is not kept
            server.websockets.discard(self)
            self._stats.ws_closes[self.close_code or 1006] += 1
            if self._hubs:
                for hub in self._hubs:
                    hub.unsubscribe(self)
            if self.hooks is not None or spec.has_on_close:
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

    async def _receive_loop(self, handler: WebSocketHandler, wait_first: bool) -> None:
        ws = self._ws
        transport = self._conn.transport
        on_message = handler.on_message
        receiver = self._receiver
        arm_receive = transport.arm_receive
        wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
        while True:
            backlog = receiver.backlog  # the same deque until it is empty and let go
            if not backlog:
                if ws.state is _CLOSED:
                    return
                if backlog is not NO_BACKLOG:
                    receiver.wait()  # an idle socket keeps no deque
                try:  # all read is handled: wait before recv(), with no coroutine if possible
                    abort = arm_receive() if wait_first else None
                    if abort is not None:
                        await wait_task_rescheduled(abort)
                        received = transport.receive_now()
                        if received is None:  # woken for nothing (EAGAIN): wait again
                            received = await transport.receive_some(True)
                    else:
                        received = await transport.receive_some(wait_first)
                except ClientDisconnected:  # (the wait itself raises only Cancelled)
                    return
                wait_first = True
                if not received:
                    return
                self._heard = True
                messages = receiver.take(received)
                if messages is not None:  # whole simple frames: no deque made for them
                    for message in messages:
                        if self.close_code is None:
                            self._stats.ws_received += 1
                            await on_message(self, message)
                continue
            while backlog:
                event = backlog.popleft()
                if type(event) is str or type(event) is bytes:  # from the fast path
                    if self.close_code is None:
                        self._stats.ws_received += 1
                        await on_message(self, event)
                    continue
                self._heard = True
                if event is TOO_BIG:
                    await self._fail_too_big()
                    return
                if isinstance(event, (TextMessage, BytesMessage)):
                    whole = receiver.assemble(event, closing=self.close_code is not None)
                    if whole is TOO_BIG:  # once inflated
                        await self.close(1009, f"message over {self._max_size} bytes")
                    elif whole is not None:
                        self._stats.ws_received += 1
                        await on_message(self, whole)
                elif isinstance(event, Ping):
                    if ws.state is _OPEN:
                        await self._outbox.send(ws.send(event.response()))
                elif isinstance(event, Pong):
                    self._handle_pong(event)
                elif isinstance(event, CloseConnection):
                    await self._closed_by_peer(event)
                    return

    async def _closed_by_peer(self, event: CloseConnection) -> None:
        """A close frame read: answer the peer's; for invalid frames (a close with
        1002/1007 from wsproto, state still OPEN) send ours and the caller drops TCP
        ("fail the connection", RFC 6455 §7.1.7); else our own close was answered."""
        ws = self._ws
        if ws.state is ConnectionState.REMOTE_CLOSING:  # the peer started it: answer
            if self.close_code is None:
                self.close_code, self.close_reason = int(event.code), event.reason or ""
            try:
                await self._outbox.send(ws.send(event.response()))
            except ConnectionClosed:
                pass
        elif ws.state is _OPEN:
            await self.close(int(event.code), event.reason or "")

    # -- the reaper's view --------------------------------------------------------

    def check_timeout(self, now: float) -> bool:
        """Heartbeat, identity expiry and close timeout (called by the server's reaper).

        A socket idle for its share of ``Config.ws_ping_interval`` (see
        ``HEARTBEAT_JITTER``) gets a ping, queued without a task (the flush writes it).

        Returns:
            True when it cancelled the connection (a timeout), else False.
        """
        if self._heard:  # to the tick: cheaper than reading the clock per message
            self._heard = False
            self.last_seen = now
        config = self._conn.server.config
        deadline = self._close_deadline
        if deadline is not None:
            if now > deadline:
                self._conn.timeout_reason = "ws-close"
                self._conn.scope.cancel()
                return True
            return False
        expires = self._expires
        if expires is not None and now >= expires and self._ws.state is _OPEN:
            # Like close(), without a task: the flush sends the frame.
            self._expires = None
            self.close_code, self.close_reason = CLOSE_EXPIRED, "identity expired"
            self._close_deadline = now + config.ws_close_timeout
            self._outbox.post(
                self._ws.send(CloseConnection(code=CLOSE_EXPIRED, reason="identity expired"))
            )
            return False
        sent = self._ping_sent_at
        if sent is not None:
            if now - sent > config.ws_ping_timeout:
                if self.close_code is None:  # a broken stream's 1006 stays
                    self.close_code, self.close_reason = 1011, "ping timeout"
                self._conn.timeout_reason = "ws-ping"
                self._conn.scope.cancel()
                return True
            return False
        interval = config.ws_ping_interval
        if (
            interval is not None
            and now - self.last_seen >= interval * self._ping_share
            and self._ws.state is _OPEN
        ):
            self._ping_sent_at = now
            self._outbox.post(self._ws.send(Ping(payload=b"peregrine-hb")))
        return False

    def __repr__(self) -> str:
        status = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<WebSocket {self.request.path} {status}>"
