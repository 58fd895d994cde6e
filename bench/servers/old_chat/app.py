"""The OLD chat server (frozen at 9afa2d8, a benchmark peer: see ``__init__.py``).

Run it: ``peregrine-rt bench.servers.old_chat.app:Chat --port 8000``, or
on several processes or machines sharing a Redis:
``peregrine-rt bench.servers.old_chat.app:Chat --redis redis://127.0.0.1:6379``.
``/ws`` is the WebSocket (``static/`` holds only a placeholder page).

Who is who: the handshake of ``/ws`` gives the browser a signed session
cookie (``chat_session``) holding a random id, the *person* (``ws.user``).
A nick belongs to one person at a time: it is theirs while one of their
sockets uses it, in any number of tabs, and for ``NICK_HOLD`` seconds more
(``nicks.py``).  The cookie is signed with the keys in ``CHAT_SECRET``
(comma-separated, newest first); without it, with a random key of the
process, so several workers or nodes need the same ``CHAT_SECRET``.  The
WebSocket accepts only pages of its own origin (the server's default).

The protocol: JSON text messages, each an object with a ``type``.

Client to server:

* ``{"type": "hello", "nick": "ada", "rooms": ["lobby"], "since": {"lobby": 41}}``
  first, and once (again after ``nick_taken``): the nick, the rooms to be in
  (default ``["lobby"]``; created if need be) and, when resuming, the last
  message id seen per room.
* ``{"type": "join", "room": "dev", "since": 12}`` (``since`` optional),
  ``{"type": "leave", "room": "dev"}``, ``{"type": "create", "room": "dev"}``
  (creates the room and joins it), ``{"type": "rooms"}``.
* ``{"type": "say", "room": "dev", "text": "hi", "ref": "c1"}`` (``ref``
  optional, echoed in the answer), ``{"type": "typing", "room": "dev"}``.

Server to client:

* ``welcome`` (``nick``, ``rooms``: every room, ``limits``), then for each
  room joined ``history`` (``room``, ``messages``: the last 100, or every one
  after ``since``; ``resumed``: whether ``since`` was used).
* ``message``: ``id``, ``room``, ``nick``, ``text``, ``ts`` (ms since the epoch),
  and the ``ref`` of its ``say`` if it had one: so a client that lost the
  connection before the ``sent`` came finds its message in the history.
* ``sent`` (``room``, ``id``, ``ref``): the message of that ``say`` is stored:
  it reaches everyone in the room, or a reconnecting client's history.
* ``presence``: ``room``, ``event`` (``join``/``leave``/``sync``), ``nick``,
  ``online`` (the nicks in the room, sorted).
* ``typing`` (``room``, ``nick``), ``rooms`` (``rooms``), ``left`` (``room``).
* ``resync`` (``room``, ``since``): this node may have missed messages of
  the room (its link to Redis dropped): send ``join`` with that ``since``.
* ``error``: ``code`` and ``text``, for a request refused (the connection
  stays open): ``bad_message``, ``unknown_type``, ``hello_first``,
  ``bad_nick``, ``nick_taken`` (someone else holds it), ``bad_room``,
  ``no_such_room``, ``not_in_room``,
  ``too_many_rooms``, ``empty``, ``too_long``, ``rate_limited``,
  ``unavailable`` (the store cannot be reached: the message was not sent).
  An error that answers a ``say`` carries its ``room`` and ``ref``.

Text that is not JSON closes the connection with 1007, binary with 1003
(JSONMixin).  Every message counts toward the rate limit, whatever its type;
a client that keeps going over it, or keeps sending refused requests, gets 1008.

Nothing lost, nothing twice: a room's messages reach each node in id order
(``store.py`` says why); :class:`RoomFeed` delivers them to the node's
sockets in the room.  A socket joining (or resuming) is *pending* while its
history is read: what arrives meanwhile is buffered, then sent after the
history, minus what the history had already.  When the hub's link to Redis
comes back, each feed buffers what arrives, reads the history after the last
id it delivered, and delivers that, then the buffer (after a Redis restart,
the store first re-seeds it: ``store.py``).  Ids are dense, so a node that
still sees one skipped tells its sockets to ``resync``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import trio

import peregrine_rt as pr
from peregrine_rt.mixins import JSONMixin, RoomsMixin, StaticMixin

from .nicks import NICK_HOLD
from .resilience import message_id
from .store import (
    MSG_TOPIC,
    ROOMS_TOPIC,
    MemoryStore,
    RedisStore,
    dumps,
    make_store,
    redis_error,
)

log = logging.getLogger("examples.chat")

# start limits
DEFAULT_ROOM = "lobby"
MAX_TEXT = 2000  # characters in a message
MAX_ROOMS = 100  # rooms on the server
MAX_HELLO_ROOMS = 10  # rooms named in one hello
MAX_JOINED = 20  # rooms one connection is in
ROOM_IDLE = 300.0  # seconds: a room nobody is in is removed after this long
RATE = 5.0  # messages per second per connection (any type), on average...
BURST = 10  # ...with bursts of up to this many
STRIKES = 3  # refusals for going too fast, within...
STRIKE_WINDOW = 10.0  # ...this many seconds: then close 1008
MAX_REFUSED = 10  # refused requests within STRIKE_WINDOW: then close 1008
TYPING_EVERY = 1.0  # a connection's typing events are relayed at most this often
NICK = re.compile(r"[\w-](?:[\w -]{0,22}[\w-])?")  # 1-24 characters, spaces inside
ROOM = re.compile(r"[\w-]{1,32}")
# end limits


def valid_nick(nick: Any) -> bool:
    """1-24 letters, digits, ``_``, ``-``, and spaces inside."""
    return isinstance(nick, str) and NICK.fullmatch(nick) is not None and "  " not in nick


def valid_room(room: Any) -> bool:
    return isinstance(room, str) and ROOM.fullmatch(room) is not None


# start bucket
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a message takes one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = trio.current_time()

    def take(self) -> bool:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# end bucket


@dataclass
class Session:
    """What the server knows about one connection (``ws.state["chat"]``)."""

    conn: str
    nick: str = ""
    rooms: set[str] = field(default_factory=set)
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(RATE, BURST))
    strikes: deque[float] = field(default_factory=deque)
    refused: deque[float] = field(default_factory=deque)
    typed_at: dict[str, float] = field(default_factory=dict)


class ChatError(Exception):
    """A request refused: sent to the client as ``{"type": "error", ...}``."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


# start feed
class RoomFeed:
    """This node's subscriber to a room's messages, delivering them to its sockets there.

    Messages arrive in id order (see ``store.py``).  Each socket is in one
    of three states: *pending* (its history is being read: messages are
    buffered), *ahead* (its history went past what this feed delivered: skip
    up to ``floor``) or *live* (everything is sent, the frame encoded once).
    The feed itself is *paused* while it catches up after the link to Redis
    came back: what arrives is buffered until :meth:`resume`.
    """

    def __init__(self, room: str) -> None:
        self.room = room
        self.last: int | None = None  # the last id delivered
        self.live: dict[pr.WebSocket, None] = {}
        self.ahead: dict[pr.WebSocket, int] = {}
        self.pending: dict[pr.WebSocket, list[tuple[int, str]]] = {}
        self.paused: list[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.live or self.ahead or self.pending)

    def pause(self) -> None:
        """The link came back: buffer what arrives until :meth:`resume`."""
        if self.paused is None:
            self.paused = []

    def since(self) -> int | None:
        """Where the catch-up starts: the last id delivered (or the lowest floor)."""
        if self.last is not None:
            return self.last
        return min(self.ahead.values(), default=None)

    def resume(self, missed: list[str] | None) -> None:
        """Deliver ``missed`` (the history after :meth:`since`), then the buffer.

        ``None``: the history could not be read; a gap then makes the sockets
        ``resync`` themselves.
        """
        buffered, self.paused = self.paused or [], None
        for message in missed or ():
            self._deliver(message, gap=False)  # the history is all there is
        for message in buffered:
            self._deliver(message, gap=missed is None)

    def deliver(self, message: str | bytes) -> bool:
        assert isinstance(message, str)
        if self.paused is not None:
            self.paused.append(message)
            return True
        return self._deliver(message, gap=True)

    def _deliver(self, message: str, *, gap: bool) -> bool:
        mid = message_id(message)
        last = self.last
        if last is not None and mid <= last:
            return False  # delivered already
        if gap and last is not None and mid != last + 1 and self.live:
            # A gap: the link to Redis dropped for a while.  History has it all.
            resync = dumps({"type": "resync", "room": self.room, "since": last})
            pr.broadcast(self.live, resync)
        self.last = mid
        for buffer in self.pending.values():
            buffer.append((mid, message))
        for ws, floor in list(self.ahead.items()):
            if mid > floor:
                del self.ahead[ws]
                self.live[ws] = None
        return pr.broadcast(self.live, message) > 0

    def start(self, ws: pr.WebSocket) -> None:
        """``ws`` is about to read history: buffer what arrives."""
        self.live.pop(ws, None)
        self.ahead.pop(ws, None)
        self.pending[ws] = []

    def finish(self, ws: pr.WebSocket, floor: int) -> None:
        """``ws`` was sent the history up to ``floor``: send the rest, then go live."""
        buffer = self.pending.pop(ws, None)
        if buffer is None:
            return  # it left meanwhile
        for mid, message in buffer:
            if mid > floor:
                pr.broadcast([ws], message)
                floor = mid
        if self.paused is None and self.last is not None and floor >= self.last:
            self.live[ws] = None
        else:
            self.ahead[ws] = floor

    def drop(self, ws: pr.WebSocket) -> None:
        self.live.pop(ws, None)
        self.ahead.pop(ws, None)
        self.pending.pop(ws, None)


# end feed

_connections = count(1)


class Chat(RoomsMixin, JSONMixin, StaticMixin):
    """The chat: ``peregrine-rt examples.chat.app:Chat``."""

    static = pr.DirServer(
        Path(__file__).resolve().parent / "static",
        cache_control={"*": "no-cache"},
    )
    websocket_paths = ("/ws",)
    room_idle = ROOM_IDLE  # a subclass may choose another
    nick_hold = NICK_HOLD

    def __init__(self) -> None:
        self.feeds: dict[str, RoomFeed] = {}
        self.store: MemoryStore | RedisStore
        self._links_in, self._links_out = trio.open_memory_channel[bool](math.inf)
        keys = [key for key in os.environ.get("CHAT_SECRET", "").split(",") if key.strip()]
        self.random_key = not keys
        self.sessions = pr.Sessions(keys or [secrets.token_urlsafe(32)], cookie="chat_session")

    # start identity
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None and request.path in self.websocket_paths:
            session = self.sessions.load(request)  # {} without a valid cookie
            if not isinstance(session.get("sid"), str):
                session["sid"] = secrets.token_urlsafe(16)  # a new person
                self.sessions.save(response, session)  # the 101 sets the cookie
        await super().handle(request, response)

    async def authenticate(self, request: pr.Request) -> str | None:
        """The socket's identity (``ws.user``): the person's session id (``upgrade()`` asks)."""
        return self.sessions.load(request).get("sid")  # None (401): handle() did not run

    # end identity

    # start lifecycle
    async def startup(self) -> None:
        self.store = make_store(self.hub, self.room_idle, self.nick_hold)
        if self.random_key:
            log.warning(
                "CHAT_SECRET is not set: sessions are signed with a random key of this "
                "process; several workers or nodes need the same CHAT_SECRET"
            )

    async def background(self, *, task_status: trio.TaskStatus[None]) -> None:
        # For the server's whole life: the store's connections to Redis and its
        # heartbeat, catching up when the link to Redis comes back, removing
        # idle rooms.  Connections are accepted once the default room exists.
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            await self.store.add_room(DEFAULT_ROOM)
            self.store.on_link(self._linked)
            nursery.start_soon(self._catch_up)
            nursery.start_soon(self._expire_rooms)
            task_status.started()

    # end lifecycle

    def _linked(self, restarted: bool) -> None:
        # Called by the hub before it delivers anything from the new link.
        for feed in self.feeds.values():
            feed.pause()
        self._links_in.send_nowait(restarted)

    async def _catch_up(self) -> None:
        """Each time the link comes back: re-seed a restarted Redis, then resume the feeds."""
        async for first in self._links_out:
            restarted = first
            while True:  # link-ups queued meanwhile: one catch-up covers them
                try:
                    restarted |= self._links_out.receive_nowait()
                except trio.WouldBlock:
                    break
            try:
                if restarted:
                    log.warning("Redis restarted: re-seeding rooms, messages and presence")
                    await self.store.reseed({DEFAULT_ROOM, *self.feeds})
                for room, feed in list(self.feeds.items()):
                    since = feed.since()
                    missed = [] if since is None else await self.store.history(room, since)
                    feed.resume([dumps(m) for m in missed])
            except Exception as exc:
                if not redis_error(exc):
                    raise
                log.warning("catching up after the link to Redis came back failed: %s", exc)
                for feed in self.feeds.values():
                    feed.resume(None)

    async def _expire_rooms(self) -> None:
        """Remove the rooms nobody was in for ``room_idle`` seconds (not the default one)."""
        while True:
            await trio.sleep(max(self.room_idle / 4, 0.05))
            try:
                gone = await self.store.expire_rooms({DEFAULT_ROOM, *self.feeds})
                if gone:
                    rooms = await self.store.rooms()
                    await self.publish_json(ROOMS_TOPIC, {"type": "rooms", "rooms": rooms})
            except Exception as exc:
                if not redis_error(exc):
                    raise
                log.warning("removing idle rooms failed: %s", exc)

    # start on_json
    async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
        session: Session = ws.state.setdefault("chat", Session(str(next(_connections))))
        if not session.bucket.take():  # every message, whatever it is
            await self._strike(ws, session.strikes, STRIKES, "too many messages")
            if not ws.closed:
                text = f"too many messages: at most {RATE:g} a second (bursts of {BURST})"
                await self._refuse(ws, data, "rate_limited", text)
            return
        try:
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                raise ChatError("bad_message", 'a message is an object with a "type"')
            kind = data["type"]
            handler = getattr(self, f"do_{kind}", None)
            if handler is None:
                raise ChatError("unknown_type", f"unknown message type {kind[:40]!r}")
            if kind != "hello" and not session.nick:
                raise ChatError("hello_first", 'say "hello" first')
            await handler(ws, session, data)
        except ChatError as exc:
            await self._refuse(ws, data, exc.code, exc.text)
            await self._strike(ws, session.refused, MAX_REFUSED, "too many refused requests")
        except pr.ConnectionClosed:
            pass
        except Exception as exc:
            if not redis_error(exc):
                raise
            log.warning("chat store unavailable: %s", exc)
            error: dict[str, Any] = {"type": "error", "code": "unavailable"}
            if isinstance(data, dict) and data.get("type") == "say":
                text = "the server cannot reach its store: your message was not sent"
                error.update(room=data.get("room"), ref=_ref(data))
            else:
                text = "the server cannot reach its store: try again"
            await self.send_json(ws, {**error, "text": text})

    async def _strike(self, ws: pr.WebSocket, times: deque[float], limit: int, why: str) -> None:
        """One more strike in ``times``: close 1008 at ``limit`` within STRIKE_WINDOW."""
        now = trio.current_time()
        times.append(now)
        while times and times[0] < now - STRIKE_WINDOW:
            times.popleft()
        if len(times) >= limit:
            await ws.close(1008, why)

    async def _refuse(self, ws: pr.WebSocket, data: Any, code: str, text: str) -> None:
        """An ``error``; answering a ``say`` with a ``ref``, it names them (the client drops it)."""
        await self.send_json(ws, {"type": "error", "code": code, "text": text, **_said(data)})

    # end on_json

    # start hello
    async def do_hello(self, ws: pr.WebSocket, session: Session, data: dict[str, Any]) -> None:
        if session.nick:
            raise ChatError("bad_message", "hello was said already")
        nick = data.get("nick")
        if not valid_nick(nick):
            raise ChatError(
                "bad_nick", "a nick is 1-24 letters, digits, _ or -, with spaces inside"
            )
        rooms = data.get("rooms") or [DEFAULT_ROOM]
        since = data.get("since") or {}
        if not isinstance(rooms, list) or not all(valid_room(r) for r in rooms):
            raise ChatError("bad_room", "rooms is a list of room names")
        if len(rooms) > MAX_HELLO_ROOMS:
            raise ChatError("too_many_rooms", f"at most {MAX_HELLO_ROOMS} rooms in a hello")
        if not isinstance(since, dict):
            raise ChatError("bad_message", "since maps rooms to message ids")
        if not await self.store.nicks.claim(str(nick), ws.user):
            raise ChatError("nick_taken", f"{nick} is someone else's nick: pick another")
        session.nick = str(nick)  # on_close releases it
        ws.hub.subscribe(ws, ROOMS_TOPIC)
        limits = {"text": MAX_TEXT, "rate": RATE, "burst": BURST}
        welcome: dict[str, Any] = {"type": "welcome", "nick": nick, "limits": limits}
        for room in dict.fromkeys(rooms):
            await self._create(room)  # resuming after a restart of an in-memory server
        welcome["rooms"] = await self.store.rooms()
        await self.send_json(ws, welcome)
        for room in dict.fromkeys(rooms):
            await self._join(ws, session, room, _since(since.get(room)))

    # end hello

    # start join
    async def _join(self, ws: pr.WebSocket, session: Session, room: str, since: int | None) -> None:
        if room not in session.rooms and len(session.rooms) >= MAX_JOINED:
            raise ChatError("too_many_rooms", f"a connection is in at most {MAX_JOINED} rooms")
        feed = self.feeds.get(room)
        if feed is None:
            feed = self.feeds[room] = RoomFeed(room)
            ws.hub.subscribe(feed, MSG_TOPIC + room)
        feed.start(ws)  # from now on, what arrives is buffered for ws
        try:
            messages = await self.store.history(room, since)
            floor = messages[-1]["id"] if messages else (since or 0)
            history = {"type": "history", "room": room, "messages": messages}
            await self.send_json(ws, {**history, "resumed": since is not None})
        except BaseException:
            self._drop(ws, room)
            raise
        feed.finish(ws, floor)  # the buffer, minus what history had; then live
        if room not in session.rooms:
            session.rooms.add(room)
            await self.join(ws, room)  # presence and typing events
            await self.store.enter(room, session.conn, session.nick)

    # end join

    def _drop(self, ws: pr.WebSocket, room: str) -> None:
        feed = self.feeds.get(room)
        if feed is not None:
            feed.drop(ws)
            if not feed:
                del self.feeds[room]
                self.hub.unsubscribe(feed, MSG_TOPIC + room)

    async def _create(self, room: str) -> bool:
        rooms = await self.store.rooms()
        if room in rooms:
            return False
        if len(rooms) >= MAX_ROOMS:
            raise ChatError("too_many_rooms", f"this server has {MAX_ROOMS} rooms already")
        if not await self.store.add_room(room):
            return False  # another node was quicker
        await self.publish_json(ROOMS_TOPIC, {"type": "rooms", "rooms": await self.store.rooms()})
        return True

    async def do_join(self, ws: pr.WebSocket, session: Session, data: dict[str, Any]) -> None:
        room = _room(data)
        if room not in await self.store.rooms():
            if room != DEFAULT_ROOM and room not in session.rooms:
                raise ChatError("no_such_room", f"there is no room {room!r}: create it")
            await self._create(room)  # it vanished under us (Redis restarted): back it comes
        await self._join(ws, session, room, _since(data.get("since")))

    async def do_create(self, ws: pr.WebSocket, session: Session, data: dict[str, Any]) -> None:
        room = _room(data)
        await self._create(room)
        await self._join(ws, session, room, None)

    async def do_leave(self, ws: pr.WebSocket, session: Session, data: dict[str, Any]) -> None:
        room = _room(data)
        if room not in session.rooms:
            raise ChatError("not_in_room", f"you are not in {room!r}")
        session.rooms.discard(room)
        self._drop(ws, room)
        await self.leave(ws, room)
        await self.store.exit(room, session.conn)
        await self.send_json(ws, {"type": "left", "room": room})

    async def do_rooms(self, ws: pr.WebSocket, session: Session, data: dict[str, Any]) -> None:
        await self.send_json(ws, {"type": "rooms", "rooms": await self.store.rooms()})

    # start say
    async def do_say(self, ws: pr.WebSocket, session: Session, data: dict[str, Any]) -> None:
        room = _room(data)
        text = data.get("text")
        if room not in session.rooms:
            raise ChatError("not_in_room", f"join {room!r} first")
        if not isinstance(text, str) or not text.strip():
            raise ChatError("empty", "a message has some text")
        if len(text) > MAX_TEXT:
            raise ChatError("too_long", f"a message has at most {MAX_TEXT} characters")
        feed = self.feeds.get(room)
        after = feed.last if feed is not None and feed.last is not None else 0
        ref = _ref(data)
        mid = await self.store.post(room, session.nick, text, after, ref)
        session.typed_at.pop(room, None)  # the next keystroke is news again
        await self.send_json(ws, {"type": "sent", "room": room, "id": mid, "ref": ref})

    async def do_typing(self, ws: pr.WebSocket, session: Session, data: dict[str, Any]) -> None:
        room = _room(data)
        now = trio.current_time()
        if (
            room in session.rooms
            and now - session.typed_at.get(room, -TYPING_EVERY) >= TYPING_EVERY
        ):
            session.typed_at[room] = now
            await self.broadcast_json(room, {"type": "typing", "room": room, "nick": session.nick})

    # end say

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        session: Session | None = ws.state.get("chat")
        if session is None:
            return
        for room in list(session.rooms):
            self._drop(ws, room)
            try:
                await self.store.exit(room, session.conn)
            except Exception as exc:
                if not redis_error(exc):
                    raise
                log.warning("chat store unavailable: %s", exc)  # the entry expires with the node
        try:
            if session.nick:
                await self.store.nicks.release(session.nick, ws.user)
        except Exception as exc:
            if not redis_error(exc):
                raise
            log.warning("chat store unavailable: %s", exc)  # the claim expires by itself


def _room(data: dict[str, Any]) -> str:
    room = data.get("room")
    if not valid_room(room):
        raise ChatError("bad_room", "a room name is 1-32 letters, digits, _ or -")
    return str(room)


def _ref(data: dict[str, Any]) -> str | int | None:
    """The ``ref`` of a ``say``: a string or integer of at most 64 characters, else None."""
    ref = data.get("ref")
    return ref if isinstance(ref, (str, int)) and len(str(ref)) <= 64 else None


def _said(data: Any) -> dict[str, Any]:
    """What an error answering a ``say`` with a ``ref`` adds: its ``room`` and ``ref``."""
    if isinstance(data, dict) and data.get("type") == "say" and _ref(data) is not None:
        return {"room": data.get("room"), "ref": _ref(data)}
    return {}


def _since(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ChatError("bad_message", "since is a message id (an integer)")
    return value
