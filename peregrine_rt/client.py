"""A Channels client on trio: what phoenix.js does, in Python, for bots, services and tests.

::

    from peregrine_rt.client import open_socket

    async with open_socket("ws://localhost:8000/socket", params={"token": t}) as socket:
        lobby = socket.channel("room:lobby", params={"nick": "bot"})
        async with lobby.messages("new_msg") as messages:
            await lobby.join()
            await lobby.push("new_msg", {"body": "hello"})
            async for message in messages:
                print(message.payload)

It speaks the Phoenix Channels V2 JSON protocol (docs/channels/protocol.rst)
over one WebSocket, so it talks to a :class:`~peregrine_rt.Channels` server
or to Phoenix itself.

Structure: ``open_socket`` runs one nursery for the block.  In it, one task
keeps the connection: it connects, and whenever the connection drops (closed
by the server, broken, or a heartbeat unanswered when the next one is due),
waits a :class:`Backoff` delay with full jitter and connects again.  Each
connection has its own nursery: a reader task that dispatches every frame (a
reply to the task awaiting it, anything else to its channel), a heartbeat
task, and the automatic rejoins.  Nothing outlives the block.

Recovery: the client keeps, per channel, the last publication offset it
delivered (the ``"p:<offset>"`` refs) and the epoch of the join reply.  A
rejoin sends ``{"since": {"offset": n, "epoch": e}}`` with the join params;
the reply says whether every missed message follows (``recovered``).  A
publication whose offset is not above the last one delivered is dropped, so
the app never sees an offset twice.

Delivery and backpressure: ``channel.messages()`` subscriptions are bounded
memory channels.  The reader waits for room in them, so a subscriber that
falls ``buffer`` messages behind holds up the whole socket (replies and
heartbeats included), and if it stays behind past a heartbeat interval the
socket reconnects and recovers from the last offset delivered: no message is
lost, but a subscriber should keep up.  Events nobody subscribed to are
dropped, as phoenix.js drops events with no ``on`` handler.
"""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import trio

from ._channels._phoenix import (
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_REPLY,
    Frame,
    ProtocolViolation,
    decode,
    encode,
)
from ._client_channel import Channel, Params
from ._client_presence import Presence, PresenceEntry, PresenceState, sync_diff, sync_state
from ._client_transport import Connect, Endpoint, Link, open_link
from ._client_types import (
    Backoff,
    ChannelClosed,
    ChannelState,
    ClientError,
    Disconnected,
    JoinRefused,
    JoinReply,
    JoinTimeout,
    Message,
    PushError,
    PushTimeout,
    ReplyTimeout,
    SocketState,
    StateChange,
    subscription,
)
from ._http import parse_cookie_header
from .exceptions import ConnectionClosed, HandshakeError

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_TIMEOUT",
    "Backoff",
    "Channel",
    "ChannelClosed",
    "ChannelState",
    "ClientError",
    "Disconnected",
    "JoinRefused",
    "JoinReply",
    "JoinTimeout",
    "Message",
    "Params",
    "Presence",
    "PresenceEntry",
    "PresenceState",
    "PushError",
    "PushTimeout",
    "ReplyTimeout",
    "Socket",
    "SocketState",
    "StateChange",
    "open_socket",
    "sync_diff",
    "sync_state",
]

DEFAULT_TIMEOUT = 10.0
"""Seconds a join or a push waits for its reply unless told otherwise (10, as in phoenix.js)."""
DEFAULT_HEARTBEAT = 30.0
"""Seconds between heartbeats (30, as in phoenix.js); one unanswered when the next is due drops."""
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""The largest message accepted from the server (bytes of text); larger closes with 1009."""

VSN = "2.0.0"
"""The serializer version in the URL: Phoenix V2 JSON."""


class Waiter:
    """A reply awaited by a task: resolved by the reader, or failed when the link drops."""

    __slots__ = ("_error", "_event", "_on_reply", "_reply")

    def __init__(self, on_reply: Callable[[str, Any], None] | None = None) -> None:
        self._event = trio.Event()
        self._reply: tuple[str, Any] = ("", None)
        self._error: ClientError | None = None
        self._on_reply = on_reply

    def resolve(self, status: str, response: Any) -> None:
        """The reply came; ``on_reply`` runs now, in the reader, before any later frame."""
        if self._event.is_set():
            return
        if self._on_reply is not None:
            self._on_reply(status, response)
        self._reply = (status, response)
        self._event.set()

    def fail(self, error: ClientError) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def wait(self) -> tuple[str, Any]:
        """``(status, response)`` of the reply, or the error it failed with."""
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._reply


class Socket:
    """One connection to a Channels endpoint, kept open; made by :func:`open_socket`.

    Attributes:
        url: the endpoint URL as given.
        connections: how many connections were opened so far (1 after the first).
        cookies: the cookies sent with every handshake: those of the ``cookie``
            header given, updated with what each 101 sets (``Set-Cookie``), so
            that a session the server started (the chat's) keeps this client
            the same person across reconnects. Names and values only: no
            domain, path or expiry is kept (one endpoint, one process).
    """

    def __init__(
        self,
        url: str,
        *,
        params: Params | None,
        headers: Mapping[str, str] | None,
        token: str | None,
        heartbeat: float | None,
        timeout: float,
        backoff: Backoff,
        connect: Connect | None,
        ssl_context: ssl.SSLContext | None,
        max_message_size: int,
        rng: random.Random | None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.backoff = backoff
        self.connections = 0
        self._endpoint = Endpoint.parse(url)
        path, _, query = self._endpoint.target.partition("?")
        if not path.rstrip("/").endswith("/websocket"):
            path = path.rstrip("/") + "/websocket"
        self._path, self._query = path, query
        self._params = params
        self._headers = {k: v for k, v in (headers or {}).items() if k.lower() != "cookie"}
        self.cookies: dict[str, str] = {}
        for name, value in (headers or {}).items():
            if name.lower() == "cookie":
                parse_cookie_header(value, self.cookies)
        self._subprotocols: list[str] = []
        if token is not None:
            encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
            self._subprotocols = ["phoenix", f"base64url.bearer.phx.{encoded}"]
        self._heartbeat = heartbeat
        self._connect = connect
        self._ssl_context = ssl_context
        self._max_message_size = max_message_size
        self._rng = rng or random.Random()
        self._state = SocketState.CONNECTING
        self._state_subs: list[trio.MemorySendChannel[StateChange]] = []
        self._channels: dict[str, Channel] = {}
        self._pending: dict[str, Waiter] = {}
        self._ref = 0
        self._link: Link | None = None
        self._link_nursery: trio.Nursery | None = None
        self._opened = trio.Event()
        self._heartbeat_ref: str | None = None
        self._drop_reason: str | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Socket {self.url} {self._state.value}>"

    # -- the app's side ---------------------------------------------------------

    @property
    def state(self) -> SocketState:
        """The connection's state now."""
        return self._state

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose on the current connection (``None`` if none)."""
        return None if self._link is None else self._link.subprotocol

    def channel(
        self, topic: str, params: Params | None = None, *, timeout: float | None = None
    ) -> Channel:
        """A :class:`Channel` for ``topic`` (not joined yet: call ``join()``).

        Args:
            topic: the topic, e.g. ``"room:lobby"``.
            params: the join params: a mapping, or a function called for each
                join and rejoin (so a rejoin can send a fresh token).
            timeout: this channel's default reply timeout (the socket's otherwise).

        Raises:
            ValueError: this socket has an open channel for ``topic`` already
                (leave it first: the server would close the older join).
        """
        old = self._channels.get(topic)
        if old is not None and old.state is not ChannelState.CLOSED:
            raise ValueError(f"this socket has an open channel for {topic!r} already")
        channel = Channel(self, topic, params, timeout if timeout is not None else self.timeout)
        self._channels[topic] = channel
        return channel

    @asynccontextmanager
    async def state_changes(self) -> AsyncIterator[trio.MemoryReceiveChannel[StateChange]]:
        """``async with socket.state_changes() as changes``: every :class:`StateChange` from now on.

        ``async for change in changes`` ends once the socket is closed.
        """
        async with subscription(self._state_subs) as receive:
            yield receive

    async def wait_open(self) -> None:
        """Wait until the socket is connected.

        Raises:
            trio.ClosedResourceError: the socket is closed.
        """
        while self._link is None:
            if self._closed:
                raise trio.ClosedResourceError("the socket is closed")
            await self._opened.wait()

    # -- the channels' side (Channel calls these) ---------------------------------

    def make_ref(self) -> str:
        """A fresh ref: ``"1"``, ``"2"``... as phoenix.js makes them."""
        self._ref += 1
        return str(self._ref)

    def expect(self, ref: str, on_reply: Callable[[str, Any], None] | None = None) -> Waiter:
        """Register a task's wait for the reply to ``ref``; ``forget()`` it when done."""
        waiter = self._pending[ref] = Waiter(on_reply)
        return waiter

    def forget(self, ref: str) -> None:
        self._pending.pop(ref, None)

    async def send(self, frame: Frame) -> None:
        """Send ``frame`` on the current connection.

        Raises:
            Disconnected: no connection now, or it broke while sending.
        """
        link = self._link
        if link is None:
            raise Disconnected("the socket is not connected")
        try:
            await link.send(encode(frame))
        except ConnectionClosed as exc:
            raise Disconnected(f"the connection dropped: {exc}") from None

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def closed(self) -> bool:
        """Whether the ``open_socket`` block is over."""
        return self._closed

    def start_soon(self, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` in the current connection's nursery (cancelled if it drops)."""
        if self._link_nursery is None:
            return False
        self._link_nursery.start_soon(fn)
        return True

    def adopt(self, channel: Channel) -> None:
        """Route ``channel.topic``'s frames to ``channel`` (it is joining).

        Raises:
            ValueError: another open channel has the topic.
        """
        old = self._channels.get(channel.topic)
        if old is not None and old is not channel and old.state is not ChannelState.CLOSED:
            raise ValueError(f"this socket has an open channel for {channel.topic!r} already")
        self._channels[channel.topic] = channel

    def forget_channel(self, channel: Channel) -> None:
        if self._channels.get(channel.topic) is channel:
            del self._channels[channel.topic]

    # -- the connection ---------------------------------------------------------

    def _set_state(
        self,
        state: SocketState,
        attempt: int = 0,
        delay: float | None = None,
        reason: str | None = None,
    ) -> None:
        self._state = state
        change = StateChange(state, attempt, delay, reason)
        for send in list(self._state_subs):
            try:
                send.send_nowait(change)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._state_subs.remove(send)

    def _target(self) -> str:
        params = self._params() if callable(self._params) else (self._params or {})
        query = urlencode([("vsn", VSN), *((k, str(v)) for k, v in params.items())])
        return f"{self._path}?{self._query + '&' if self._query else ''}{query}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve the connection, and reconnect after every drop, forever."""
        attempt = 0
        first = True
        while True:
            self._set_state(SocketState.CONNECTING, attempt)
            try:
                link = await open_link(
                    self._endpoint,
                    self._target(),
                    headers=self._handshake_headers(),
                    subprotocols=self._subprotocols,
                    connect=self._connect,
                    ssl_context=self._ssl_context,
                    max_message_size=self._max_message_size,
                )
            except (OSError, HandshakeError, trio.BrokenResourceError) as exc:
                if first:
                    raise
                reason = f"could not connect: {exc or type(exc).__name__}"
            else:
                attempt = 0
                self.connections += 1
                self._keep_cookies(link.headers)
                self._link = link
                self._drop_reason = None
                self._set_state(SocketState.OPEN)
                self._opened.set()
                if first:
                    first = False
                    task_status.started()
                reason = await self._serve(link)
                self._set_state(SocketState.CLOSED, reason=reason)
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            self._set_state(SocketState.RECONNECTING, attempt, delay, reason)
            await trio.sleep(delay)

    def _handshake_headers(self) -> dict[str, str]:
        if not self.cookies:
            return self._headers
        jar = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return {**self._headers, "cookie": jar}

    def _keep_cookies(self, headers: list[tuple[str, str]]) -> None:
        """Take what the 101 set (``Set-Cookie``): a value, or a removal (``Max-Age=0``)."""
        for name, value in headers:
            if name != "set-cookie":
                continue
            pair, _, attributes = value.partition(";")
            key, eq, val = pair.strip().partition("=")
            if not eq or not key:
                continue
            expired = any(
                a.strip().lower().replace(" ", "") in ("max-age=0", "max-age=-1")
                for a in attributes.split(";")
            )
            if expired:
                self.cookies.pop(key, None)
            else:
                self.cookies[key] = val.strip()

    async def _serve(self, link: Link) -> str:
        """Read, heartbeat and rejoin on ``link`` until it ends; return why it ended."""
        try:
            async with trio.open_nursery() as nursery:
                self._link_nursery = nursery
                self._heartbeat_ref = None
                if self._heartbeat is not None:
                    nursery.start_soon(self._beat, link, self._heartbeat)
                previous: trio.Event | None = None  # rejoins go out in join order
                for channel in list(self._channels.values()):
                    previous = channel.connected(previous)
                reason = await self._read(link)
                nursery.cancel_scope.cancel()
            return reason
        finally:
            self._link = None
            self._link_nursery = None
            self._opened = trio.Event()
            pending, self._pending = self._pending, {}
            for waiter in pending.values():
                waiter.fail(Disconnected("the connection dropped before the reply came"))
            for channel in list(self._channels.values()):
                channel.disconnected()
            with trio.CancelScope(shield=True):
                await link.aclose()

    async def _beat(self, link: Link, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            if self._heartbeat_ref is not None:
                self._drop_reason = f"no reply to the heartbeat within {interval!r} s"
                await link.aclose()
                return
            self._heartbeat_ref = ref = self.make_ref()
            try:
                await link.send(encode(Frame(None, ref, PHOENIX_TOPIC, HEARTBEAT, {})))
            except ConnectionClosed:
                return

    async def _read(self, link: Link) -> str:
        while True:
            text = await link.receive()
            if text is None:
                if self._drop_reason is not None:
                    return self._drop_reason
                return f"closed by the server ({link.close_code} {link.close_reason})".replace(
                    " )", ")"
                )
            try:
                frame = decode(text)
            except ProtocolViolation:
                continue  # not a Phoenix frame: nothing to dispatch it to
            await self._dispatch(frame)

    async def _dispatch(self, frame: Frame) -> None:
        if frame.event == PHX_REPLY and frame.ref is not None:
            if frame.topic == PHOENIX_TOPIC and frame.ref == self._heartbeat_ref:
                self._heartbeat_ref = None
                return
            waiter = self._pending.pop(frame.ref, None)
            if waiter is not None:
                payload = frame.payload if isinstance(frame.payload, dict) else {}
                waiter.resolve(str(payload.get("status", "")), payload.get("response"))
            return
        channel = self._channels.get(frame.topic)
        if channel is not None:
            await channel.receive(frame)

    async def aclose(self) -> None:
        """Close the connection for good (what leaving the ``open_socket`` block does)."""
        if self._closed:
            return
        self._closed = True
        self._opened.set()  # wake wait_open(), which now raises
        for channel in list(self._channels.values()):
            channel.close_locally()
        link = self._link
        if link is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await link.close(1000)
        self._set_state(SocketState.CLOSED, reason="closed by the client")
        for send in self._state_subs:
            send.close()
        self._state_subs.clear()


@asynccontextmanager
async def open_socket(
    url: str,
    *,
    params: Params | None = None,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
    timeout: float = DEFAULT_TIMEOUT,
    backoff: Backoff | None = None,
    connect: Connect | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    rng: random.Random | None = None,
) -> AsyncIterator[Socket]:
    """Connect to a Channels endpoint and keep connected for the block.

    Args:
        url: the endpoint, ``ws://host:port/socket`` (``wss://`` for TLS);
            ``/websocket`` is appended to the path unless it ends with it,
            and ``vsn=2.0.0`` plus ``params`` to the query, as phoenix.js does.
        params: connection params for the query string: a mapping, or a
            function called at each (re)connect.
        headers: extra headers of the handshake request (a ``cookie`` header goes
            into :attr:`Socket.cookies`, which the 101's ``Set-Cookie`` updates).
        token: a bearer token sent as phoenix.js's ``authToken`` is: the
            subprotocols ``phoenix`` and ``base64url.bearer.phx.<token>``.
        heartbeat: seconds between heartbeats; a heartbeat still unanswered
            when the next is due drops the connection (then reconnect).
            ``None`` sends none.
        timeout: default seconds a join or push waits for its reply.
        backoff: reconnect delays (default :class:`Backoff()`).
        connect: an async function returning the stream to use instead of
            TCP (the testing helpers pass memory streams to an app).
        ssl_context: for ``wss://`` (default: ``ssl.create_default_context()``).
        max_message_size: the largest server message accepted.
        rng: the random source of the jitter (seed one for repeatable delays).

    Resource handling:
        The connection, the reader, heartbeat and rejoin tasks all run in a
        nursery of the block.  Leaving it closes every channel (their
        ``messages()`` iterators end), sends a close frame (1000) and drops
        the connection; nothing outlives the block.

    Error handling:
        Entering the block connects once and raises what stops that first
        connection: :class:`OSError` (refused, unreachable, TLS) or
        :class:`~peregrine_rt.HandshakeError` (refused upgrade, ``.status``).
        After that, drops are not errors: the socket reconnects with
        backoff until the block ends.  An exception raised in the block
        comes out as itself, not in an ``ExceptionGroup``.
    """
    socket = Socket(
        url,
        params=params,
        headers=headers,
        token=token,
        heartbeat=heartbeat,
        timeout=timeout,
        backoff=backoff or Backoff(),
        connect=connect,
        ssl_context=ssl_context,
        max_message_size=max_message_size,
        rng=rng,
    )
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                try:
                    await nursery.start(socket.run)
                except BaseExceptionGroup as group:
                    raise _lone(group) from None
                yield socket
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                await socket.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if body_error is None or group.exceptions != (body_error,):
            raise
        raise body_error from None


def _lone(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception in (nested) ``group``, or the group itself."""
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return group
