"""The :class:`Channels` handler: Phoenix Channels topics over one WebSocket per client.

One ``Channels`` instance serves every connection of the process.  Each
connection has a :class:`Conn` (its joins and its limits); each join a
:class:`Socket` (what the topic's callbacks receive).  Messages of one
connection are handled one after the other, in order (the WebSocket's
receive loop calls :meth:`Channels.on_message`).

Delivery.  A broadcast to topic ``t`` is published once, as the encoded
Phoenix frame, on the hub topic ``channels:t`` (so a
:class:`~peregrine_rt.RedisHub` carries it to every node).  On each node one
:class:`_Fan` per topic with local members is the hub's subscriber: it hands
the frame to :func:`~peregrine_rt.broadcast`, which encodes the WebSocket
frame once for all members.  A hub message is either the frame text itself
(``[...]``: what the emitter and the Redis history script publish too) or
``!<connection id>\\n<frame>`` for :meth:`Channels.broadcast_from`, which
skips the sender's connection.

Recovery.  A join with history first subscribes its member in *buffering*
mode (live frames are kept, not sent), then reads the history, sends the
reply and the missed publications, and finally sends the buffered frames
whose offset is past the last one sent: no loss, no duplicate, in order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import trio

from .._browser import serve_browser_client
from .._upgrade import upgrade
from ..exceptions import ConnectionClosed, HTTPError
from ._emit import PublishEndpoint
from ._fan import Fan, offset_of
from ._history import NO_HISTORY, History, hub_topic
from ._limits import Limits, TokenBucket
from ._phoenix import (
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_JOIN,
    PHX_LEAVE,
    PRESENCE_DIFF,
    PRESENCE_STATE,
    RESERVED_EVENTS,
    Frame,
    ProtocolViolation,
    close_frame,
    decode,
    encode,
    error_frame,
    publication_frame,
    publication_ref,
    reply,
)
from ._relink import Relink
from ._socket import Conn, Socket
from ._topics import Refuse, TopicSpec, check_patterns, check_topic_class, topic_options

if TYPE_CHECKING:
    from .._hub import Hub
    from .._request import Request
    from .._response import Response
    from ..websocket import WebSocket
    from ._history import Publication

__all__ = ["Channels", "PresenceTracker", "Socket"]

log = logging.getLogger("peregrine_rt.channels")

SUBPROTOCOL = "phoenix"


class PresenceTracker(Protocol):
    """What Channels needs of a presence tracker (``_presence.Presence``)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    async def track(
        self, topic: str, key: str, conn: str, meta: Mapping[str, Any] | None = None
    ) -> object: ...
    async def untrack(self, topic: str, key: str, conn: str) -> None: ...
    def state(self, topic: str) -> dict[str, Any]: ...
    def topics(self) -> list[str]: ...
    def on_diff(self, callback: Callable[[str, dict[str, Any]], None]) -> None: ...


def _default_presence(hub: Hub) -> PresenceTracker:
    from ._presence import Presence  # noqa: PLC0415 - the presence module is optional until used

    tracker: PresenceTracker = Presence(hub)
    return tracker


class Channels:
    """A handler serving Phoenix Channels topics (see docs/channels/server.rst).

    Subclass it and declare topic classes with :func:`~peregrine_rt.topic`
    as class attributes.  Serve it alone (``pr.Server(Chat)``: any path
    upgrades; phoenix.js connects to ``<endpoint>/websocket``), mounted
    (``router.mount("/socket", Chat)``), or as a router WebSocket route
    (``router.websocket("/socket/websocket", Chat, subprotocols=Channels.SUBPROTOCOLS)``).

    Class attributes (override them in the subclass): ``history``, the default
    history backend of topics (None: no history; ``Channels(history=...)``
    overrides it for one instance), and ``limits``, the :class:`Limits` of the
    layer (None: from the server's ``Config``, its ``channels_*`` fields).

    A subclass that defines ``on_open``, ``on_close``, ``attach_hub`` or
    ``background`` calls the base class's method too (``await super().on_open(ws)``).
    """

    SUBPROTOCOLS: ClassVar[tuple[str, ...]] = (SUBPROTOCOL,)
    history: ClassVar[History | None] = None
    limits: ClassVar[Limits | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the topic classes as the subclass is defined (HandlerError)."""
        super().__init_subclass__(**kwargs)
        _topic_specs(cls, instantiate=False)

    def __init__(self, *, history: History | None = None) -> None:
        """``history`` overrides the class's for this instance (an app served twice, tests)."""
        self._history = self.history if history is None else history
        specs = _topic_specs(type(self), instantiate=True)
        self._literal = {s.pattern.text: s for s in specs if s.pattern.regex is None}
        self._patterns = [s for s in specs if s.pattern.regex is not None]
        self._specs = specs
        self._hub: Hub | None = None
        self._fans: dict[str, Fan] = {}
        self._relink: Relink | None = None
        self._topic_buckets: dict[str, TokenBucket] = {}
        self._presence: PresenceTracker | None = None
        self._errors_logged: set[tuple[str, str]] = set()
        self._limits = self.limits  # None until the first connection reads the Config

    # -- the handler contract ----------------------------------------------------------

    def attach_hub(self, hub: Hub) -> None:
        """Take the server's hub (called by the server before ``startup``)."""
        self._hub = hub
        if self._history is None:
            self._history = self.make_history(hub)
        if any(s.options.presence for s in self._specs):
            self._presence = self.make_presence(hub)
            self._presence.on_diff(self._presence_diff)
        on_link = getattr(hub, "on_link", None)  # RedisHub's: messages may be lost before
        if callable(on_link):
            self._relink = Relink(self._fans, self._history_for, self._fail)
            on_link(self._relink.relinked)

    async def background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the history backends and the presence tracker for the server's life."""
        async with trio.open_nursery() as nursery:
            backends = {
                id(b): b for b in (self._history_of(s) for s in self._specs) if b is not None
            }
            for backend in backends.values():
                await nursery.start(backend.run)
            if self._presence is not None:
                await nursery.start(self._presence.run)
            if self._relink is not None:
                await nursery.start(self._relink.run)
            task_status.started()
            await trio.sleep_forever()

    async def handle(self, request: Request, response: Response) -> None:
        """Upgrade to a Channels WebSocket (400 for a ``vsn`` other than 2.x).

        A plain ``GET /_peregrine/peregrine.js`` gets the browser client.
        """
        if request.upgrade is None and serve_browser_client(request, response):
            return
        vsn = request.query.get("vsn")
        if vsn is not None and not vsn.startswith("2."):
            raise HTTPError(400, f"unsupported protocol version vsn={vsn} (2.x is served)")
        await upgrade(request, response, subprotocols=self.SUBPROTOCOLS)

    async def on_open(self, ws: WebSocket) -> None:
        """Start the connection's Channels state."""
        ws.state["channels"] = Conn(self._limits_for(ws))

    def _limits_for(self, ws: WebSocket) -> Limits:
        limits = self._limits
        if limits is None:
            limits = self._limits = Limits.from_config(ws.request.config)
        return limits

    async def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        """Handle one Phoenix frame from the client."""
        conn: Conn | None = ws.state.get("channels")
        if conn is None:  # on_open overridden without super(): start here
            conn = ws.state["channels"] = Conn(self._limits_for(ws))
        if isinstance(message, bytes):
            await ws.close(1003, "binary messages are not supported")
            return
        try:
            frame = decode(message, max_depth=conn.limits.max_depth)
        except ProtocolViolation as exc:
            await ws.close(exc.code, exc.reason)
            return
        if len(message) > conn.limits.max_message_size:
            await self._error(ws, conn, frame, "too_large")
            return
        event = frame.event
        if event == HEARTBEAT and frame.topic == PHOENIX_TOPIC:
            await ws.send(encode(reply(frame, "ok")))
        elif event in (PHX_JOIN, PHX_LEAVE) and not conn.join_bucket.take(trio.current_time()):
            await self._error(ws, conn, frame, "rate_limited")
        elif event == PHX_JOIN:
            joined = await self._join(ws, conn, frame)
            if self._hub is not None:
                self._hub.stats.channel_joins["ok" if joined else "error"] += 1
        elif event == PHX_LEAVE:
            await self._leave(ws, conn, frame)
        else:
            await self._event(ws, conn, frame)

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        """End every join of the connection (``leave`` callbacks, presence)."""
        conn: Conn | None = ws.state.get("channels")
        if conn is None:
            return
        for socket in list(conn.joins.values()):
            await self._drop(conn, socket, call_leave=True)

    # -- the app's API -----------------------------------------------------------------

    def publish_endpoint(self, secret: bytes, **options: Any) -> Any:
        """A signed ``POST`` endpoint broadcasting to this app's topics (``_emit.PublishEndpoint``).

        Route what it returns: ``router.route("/publish", endpoint, methods=("POST",))``.
        """
        return PublishEndpoint(self.broadcast, secret, **options).handle

    def make_history(self, hub: Hub) -> History | None:
        """The default history backend, chosen once the server's hub is known.

        Called by :meth:`attach_hub` when neither the class nor the
        constructor gave one; override it to pick a backend by deployment
        (``RedisHistory(hub)`` on a ``RedisHub``, ``SQLiteHistory`` on one node).
        """
        return None

    def make_presence(self, hub: Hub) -> PresenceTracker:
        """The presence tracker of this app (override to tune ``node_ttl``, ``heartbeat``)."""
        return _default_presence(hub)

    def spec_of(self, topic: str) -> tuple[TopicSpec, dict[str, str]] | None:
        """The topic class declared for ``topic`` and its parameters, or None."""
        spec = self._literal.get(topic)
        if spec is not None:
            return spec, {}
        for spec in self._patterns:
            params = spec.pattern.match(topic)
            if params is not None:
                return spec, params
        return None

    async def broadcast(
        self, topic: str, event: str, payload: Any, *, history: bool = True
    ) -> int | None:
        """Send ``event`` to every client that joined ``topic``, on every node.

        On a topic with history the publication is appended first and
        carries its offset (``"p:<offset>"`` in the ref slot); the offset is
        returned (None on a topic without history).  ``history=False`` sends
        it without storing it (no offset; a recovering client never sees it
        again): typing indicators, cursors.

        Raises:
            ValueError: ``event`` is a protocol event (``phx_*``, ``presence_*``...).
            HubUnavailable: the message reached this node's clients only.
        """
        return await self._publish(topic, event, payload, None, history)

    async def broadcast_from(
        self, socket: Socket, event: str, payload: Any, *, history: bool = True
    ) -> int | None:
        """:meth:`broadcast`, except to ``socket``'s own connection."""
        return await self._publish(socket.topic, event, payload, socket.conn_id, history)

    async def history_of(
        self, topic: str, *, since: int | None = None, limit: int | None = None
    ) -> list[Publication]:
        """The retained publications of ``topic`` above offset ``since`` (newest ``limit``).

        Raises:
            LookupError: the topic keeps no history.
        """
        backend = self._history_for(topic)
        if backend is None:
            raise LookupError(f"topic {topic!r} keeps no history")
        return await backend.history(topic, since=since, limit=limit)

    def members(self, topic: str) -> list[Socket]:
        """This node's joins of ``topic``."""
        fan = self._fans.get(topic)
        return [] if fan is None else list(fan.members.values())

    # -- joins -----------------------------------------------------------------------

    async def _join(self, ws: WebSocket, conn: Conn, frame: Frame) -> bool:
        """Answer a ``phx_join``: whether it was accepted (the ok reply sent)."""
        topic = frame.topic
        found = self.spec_of(topic) if topic != PHOENIX_TOPIC else None
        if found is None:
            await self._error(ws, conn, frame, "unmatched topic")
            return False
        spec, params = found
        old = conn.joins.get(topic)
        if old is not None:  # a second join of the topic: Phoenix closes the first
            await self._drop(conn, old, call_leave=True)
            await ws.send(encode(close_frame(old.join_ref, topic)))
        elif len(conn.joins) >= conn.limits.max_joins:
            await self._error(ws, conn, frame, "too_many_joins")
            return False
        join_params = frame.payload
        since = join_params.get("since") if isinstance(join_params, dict) else None
        if not isinstance(join_params, dict) or not _valid_since(since):
            await self._error(ws, conn, frame, "bad_message")
            return False
        socket = Socket(self, ws, conn.id, topic, params, frame.join_ref, spec)
        response: dict[str, Any] = {}
        if spec.join is not None:
            try:
                answer = await spec.join(socket, join_params)
            except Refuse as exc:
                await ws.send(encode(reply(frame, "error", {"reason": exc.reason, **exc.details})))
                return False
            except Exception:
                self._log_crash(spec, "join")
                await ws.send(encode(reply(frame, "error", {"reason": "join crashed"})))
                return False
            if isinstance(answer, dict):
                response.update(answer)
        backend = self._history_of(spec)
        socket.buffer = [] if backend is not None else None
        self._subscribe(socket)
        conn.joins[topic] = socket
        missed: list[Publication] = []
        if backend is not None:
            if since is not None:
                recovery = await backend.recover(topic, since["offset"], since["epoch"])
                position, missed = recovery.position, recovery.publications
                response["recovered"] = recovery.recovered
                if not recovery.recovered:
                    response["reason"] = recovery.reason
            else:
                position = await backend.position(topic)
            response["epoch"], response["offset"] = position.epoch, position.offset
            fan = self._fans.get(topic)
            if fan is not None:
                fan.joined(position.offset, position.epoch)
        elif since is not None:
            response.update(recovered=False, reason=NO_HISTORY)
        if since is not None and self._hub is not None:
            outcome = "recovered" if response["recovered"] else str(response["reason"])
            self._hub.stats.channel_recoveries[outcome] += 1
        await ws.send(encode(reply(frame, "ok", response)))
        if backend is not None:
            last = response["offset"]
            for pub in missed:
                await ws.send(encode(publication_frame(topic, pub.offset, pub.event, pub.payload)))
            await self._release(socket, last)
        if spec.options.presence and self._presence is not None:
            await self._track(socket)
        return True

    async def _release(self, socket: Socket, last: int) -> None:
        """Send what arrived while recovering, past offset ``last``, and go live."""
        while socket.buffer:
            pending, socket.buffer = socket.buffer, []
            for text in pending:
                offset = offset_of(text)
                if offset is None or offset > last:
                    await socket.ws.send(text)
                    if offset is not None:
                        last = offset
        socket.buffer = None
        fan = self._fans.get(socket.topic)
        if fan is not None:
            fan.changed()

    async def _track(self, socket: Socket) -> None:
        assert self._presence is not None
        spec = socket.spec
        key = await spec.presence_key(socket) if spec.presence_key else _default_key(socket)
        meta = await spec.presence_meta(socket) if spec.presence_meta else {}
        socket.assigns.setdefault("presence_key", str(key))
        await self._presence.track(socket.topic, str(key), socket.conn_id, dict(meta or {}))
        await socket.push(PRESENCE_STATE, self._presence.state(socket.topic))

    async def _leave(self, ws: WebSocket, conn: Conn, frame: Frame) -> None:
        socket = conn.joins.get(frame.topic)
        await ws.send(encode(reply(frame, "ok")))
        if socket is not None:
            await self._drop(conn, socket, call_leave=True)
            await ws.send(encode(close_frame(socket.join_ref, frame.topic)))

    async def _drop(self, conn: Conn, socket: Socket, *, call_leave: bool) -> None:
        """End a join: unsubscribe, untrack, and (unless it crashed) call ``leave``."""
        if conn.joins.get(socket.topic) is socket:
            del conn.joins[socket.topic]
        fan = self._fans.get(socket.topic)
        if fan is not None and fan.members.get(socket.ws) is socket:
            del fan.members[socket.ws]
            fan.changed()
            if not fan.members:
                del self._fans[socket.topic]
                if self._hub is not None:
                    self._hub.unsubscribe(fan, hub_topic(socket.topic))
                    self._hub.stats.channel_topics -= 1
        key = socket.assigns.get("presence_key")
        if key is not None and self._presence is not None:
            try:
                await self._presence.untrack(socket.topic, key, socket.conn_id)
            except Exception:
                log.exception("presence untrack failed for %s", socket.topic)
        if call_leave and socket.spec.leave is not None:
            try:
                await socket.spec.leave(socket)
            except Exception:
                self._log_crash(socket.spec, "leave")

    async def _fail(self, fan: Fan) -> None:
        """End every member's join of ``fan`` with ``phx_error``: the clients rejoin."""
        for socket in list(fan.members.values()):
            conn: Conn | None = socket.ws.state.get("channels")
            if conn is not None:
                await self._drop(conn, socket, call_leave=True)
            with contextlib.suppress(ConnectionClosed):
                await socket.ws.send(encode(error_frame(socket.join_ref, socket.topic)))

    def _subscribe(self, socket: Socket) -> None:
        fan = self._fans.get(socket.topic)
        if fan is None:
            fan = self._fans[socket.topic] = Fan(socket.topic, socket.spec.options.conflate)
            seen = getattr(self._history_of(socket.spec), "seen", None)
            if callable(seen):
                fan.witness = partial(seen, socket.topic)
            if self._hub is None:
                raise RuntimeError("Channels is not attached to a server's hub")
            self._hub.subscribe(fan, hub_topic(socket.topic))
            self._hub.stats.channel_topics += 1
        fan.members[socket.ws] = socket
        fan.changed()

    # -- events ----------------------------------------------------------------------

    async def _event(self, ws: WebSocket, conn: Conn, frame: Frame) -> None:
        socket = conn.joins.get(frame.topic)
        if socket is None or (socket.join_ref != frame.join_ref and frame.join_ref is not None):
            await self._error(ws, conn, frame, "unmatched topic")
            return
        now = trio.current_time()
        bucket = self._topic_buckets.get(frame.topic)
        if bucket is None:
            bucket = self._topic_buckets[frame.topic] = TokenBucket(
                conn.limits.topic_publish_rate, conn.limits.topic_publish_burst
            )
            if len(self._topic_buckets) > 4 * max(len(self._fans), 256):
                self._topic_buckets = {
                    t: b for t, b in self._topic_buckets.items() if t in self._fans
                }
        if not conn.bucket.take(now) or not bucket.take(now):
            await self._error(ws, conn, frame, "rate_limited")
            return
        spec = socket.spec
        callback = spec.events.get(frame.event)
        try:
            if callback is not None:
                answer = await callback(socket, frame.payload)
            elif spec.handle_in is not None and frame.event not in RESERVED_EVENTS:
                answer = await spec.handle_in(socket, frame.event, frame.payload)
            else:
                await self._error(ws, conn, frame, "unknown event")
                return
        except Refuse as exc:
            await ws.send(encode(reply(frame, "error", {"reason": exc.reason, **exc.details})))
            return
        except Exception:
            self._log_crash(spec, frame.event)
            await self._drop(conn, socket, call_leave=False)
            await ws.send(encode(error_frame(socket.join_ref, socket.topic)))
            return
        if frame.ref is not None:
            await ws.send(encode(reply(frame, "ok", {} if answer is None else answer)))

    async def _error(self, ws: WebSocket, conn: Conn, frame: Frame, reason: str) -> None:
        """Answer ``frame`` with an error reply; too many of them close the socket with 1008."""
        conn.violations += 1
        if conn.violations > conn.limits.max_violations:
            await ws.close(1008, f"too many protocol errors (last: {reason})")
            return
        await ws.send(encode(reply(frame, "error", {"reason": reason})))

    def _log_crash(self, spec: TopicSpec, what: str) -> None:
        key = (spec.name, what)
        if key in self._errors_logged:
            log.warning("%s: %s raised again", spec.name, what, exc_info=True)
            return
        self._errors_logged.add(key)
        log.exception("%s: the %s callback raised", spec.name, what)

    # -- publishing ------------------------------------------------------------------

    def _history_of(self, spec: TopicSpec) -> History | None:
        backend = spec.options.history
        if backend is None or backend is True:
            return self._history
        return None if backend is False else backend

    def _history_for(self, topic: str) -> History | None:
        found = self.spec_of(topic)
        return None if found is None else self._history_of(found[0])

    async def _publish(
        self, topic: str, event: str, payload: Any, sender: str | None, history: bool
    ) -> int | None:
        if event in RESERVED_EVENTS:
            raise ValueError(f"{event!r} is a protocol event: it cannot be broadcast")
        if self._hub is None:
            raise RuntimeError("Channels is not attached to a server's hub")
        backend = self._history_for(topic) if history else None
        ref = offset = None
        if backend is not None:
            pub = await backend.append(topic, event, payload, sender=sender)
            if backend.delivers:
                return pub.offset
            offset = pub.offset
            ref = publication_ref(offset)
        text = encode(Frame(None, ref, topic, event, payload))
        await self._hub.publish(hub_topic(topic), text if sender is None else f"!{sender}\n{text}")
        return offset

    def _presence_diff(self, topic: str, diff: dict[str, Any]) -> None:
        fan = self._fans.get(topic)
        if fan is not None:
            fan.deliver(encode(Frame(None, None, topic, PRESENCE_DIFF, diff)))


def _topic_specs(cls: type, *, instantiate: bool) -> list[TopicSpec]:
    """The checked topic classes of a Channels class (its bases' included)."""
    owner = cls.__qualname__
    specs: list[TopicSpec] = []
    seen: set[str] = set()
    for base in cls.__mro__:
        for attr, value in vars(base).items():
            options = topic_options(value)
            if options is None or attr in seen:
                continue
            seen.add(attr)
            specs.append(check_topic_class(value, options, owner, instantiate=instantiate))
    check_patterns(specs, owner)
    return specs


def _valid_since(since: Any) -> bool:
    if since is None:
        return True
    if not isinstance(since, dict):
        return False
    offset, epoch = since.get("offset"), since.get("epoch")
    return type(offset) is int and offset >= 0 and isinstance(epoch, str)


def _default_key(socket: Socket) -> str:
    """The presence key of a join: the user's id or name (an Identity's), else the connection."""
    user = socket.user
    if user is None:
        return socket.conn_id
    for attr in ("id", "name"):
        value = getattr(user, attr, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return str(user)
