"""The chat on Channels: ``peregrine-rt examples.chat.app:Chat`` (``make run``).

History in SQLite in ``CHAT_DATA`` (default ``data/chat``), or in Redis with
``--redis URL`` on several nodes.  A plain GET gets the browser client
(``static/``); a WebSocket, the topics ``chat`` and ``room:<name>`` (docs/tutorial.rst).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from collections import deque
from pathlib import Path
from typing import Any, NoReturn, cast

import trio

import peregrine_rt as pr

from .nicks import Nicks

log = logging.getLogger("examples.chat")

# start limits
LOBBY = "lobby"  # always listed
MAX_TEXT = 2000  # characters in a message
MAX_ROOMS = 100  # rooms listed on the server
MAX_JOINED = 20  # rooms one connection is in
ROOM_IDLE = 300.0  # seconds a room nobody is in stays listed
NICK_HOLD = 30.0  # seconds a nick stays its person's after their last socket
RATE, BURST = 5.0, 10  # events a second per connection (any event), and the burst
MAX_REFUSED, REFUSED_WINDOW = 10, 10.0  # refusals within the window: close 1008
TYPING_EVERY = 1.0  # seconds between typing events relayed, per connection and room
PAGE = 100  # messages in a history page
UNAVAILABLE = "the server cannot reach its store"
NICK = re.compile(r"[\w-](?:[\w -]{0,22}[\w-])?")  # 1-24 characters, spaces inside
ROOM = re.compile(r"[\w-]{1,32}")
# end limits


async def refuse(socket: pr.Socket, reason: str, text: str) -> NoReturn:
    """Refuse a request; too many refusals close the connection with 1008."""
    times: deque[float] = socket.ws.state.setdefault("refused", deque())
    times.append(now := trio.current_time())
    while times[0] < now - REFUSED_WINDOW:
        times.popleft()
    if len(times) >= MAX_REFUSED:
        await socket.ws.close(1008, "too many refused requests")
    raise pr.Refuse(reason, text=text)


class Chat(pr.Channels):
    """The chat: ``peregrine-rt examples.chat.app:Chat``."""

    limits = pr.Limits(max_joins=MAX_JOINED + 1, publish_rate=RATE, publish_burst=BURST,
                       max_message_size=4 * MAX_TEXT + 1024, max_violations=20)  # fmt: skip
    static = pr.DirServer(Path(__file__).parent / "static", cache_control={"*": "no-cache"})
    room_idle, nick_hold = ROOM_IDLE, NICK_HOLD

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir or os.environ.get("CHAT_DATA", "data/chat"))
        keys = [key for key in os.environ.get("CHAT_SECRET", "").split(",") if key.strip()]
        if not keys:
            log.warning("CHAT_SECRET is not set: sessions are signed with a random key")
        self.sessions = pr.Sessions(keys or [secrets.token_urlsafe(32)], cookie="chat_session")
        self.rooms: dict[str, float] = {LOBBY: math.inf}  # the list: since when empty
        self.listed, self.changed = [LOBBY], trio.Event()  # the list last pushed

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is None and not request.path.startswith("/_peregrine/"):
            return await self.static.serve(request, response)  # the page and its files
        if request.upgrade is not None:
            session = self.sessions.load(request)  # {} without a valid cookie
            if not isinstance(session.get("sid"), str):
                session["sid"] = secrets.token_urlsafe(16)  # a new person
                self.sessions.save(response, session)  # the 101 sets the cookie
        await super().handle(request, response)  # upgrade() asks authenticate()

    async def authenticate(self, request: pr.Request) -> str | None:
        return self.sessions.load(request).get("sid")

    def make_history(self, hub: pr.Hub) -> pr.History:
        redis = hub if isinstance(hub, pr.RedisHub) else None  # several nodes: all in Redis
        self.nicks = Nicks(self.nick_hold, redis)
        return pr.RedisHistory(redis) if redis else pr.SQLiteHistory(self.data_dir)

    def make_presence(self, hub: pr.Hub) -> Any:
        self.presence = super().make_presence(hub)
        self.presence.on_diff(lambda topic, diff: self.changed.set())
        return self.presence

    async def background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().background)
            await nursery.start(self.nicks.run)
            nursery.start_soon(self.list_rooms)
            task_status.started()

    async def list_rooms(self) -> None:
        """Keep :attr:`rooms` from everyone's presence; push the list when it changes."""
        while True:
            with trio.move_on_at(min(t + self.room_idle for t in self.rooms.values())):
                await self.changed.wait()
            self.changed, now = trio.Event(), trio.current_time()
            present = {t[5:] for t in self.presence.topics() if t.startswith("room:")}
            rooms = {LOBBY: math.inf, **dict.fromkeys(present, math.inf)}
            for room, empty in self.rooms.items():  # just gone empty, or idle a while
                if room not in rooms and now < min(empty, now) + self.room_idle:
                    rooms[room] = min(empty, now)
            self.rooms, listed = rooms, sorted(rooms)
            if listed != self.listed:  # (a join lists its new room at once)
                self.listed = listed
                for socket in self.members("chat"):
                    await socket.push("rooms", {"rooms": listed})

    @pr.topic("chat", history=False)
    class Hello:
        async def join(self, socket: pr.Socket, params: dict[str, Any]) -> dict[str, Any]:
            nick, app = params.get("nick"), cast(Chat, socket.channels)
            if not isinstance(nick, str) or not NICK.fullmatch(nick) or "  " in nick:
                await refuse(socket, "bad_nick", "1-24 letters, digits, _ or -, spaces inside")
            try:
                if not await app.nicks.claim(nick, socket.user):
                    await refuse(socket, "nick_taken", f"{nick} is someone else's: pick another")
            except pr.HubUnavailable:
                raise pr.Refuse("unavailable", text=UNAVAILABLE) from None
            socket.ws.state["nick"] = nick
            limits = {"text": MAX_TEXT, "rate": RATE, "burst": BURST}
            return {"nick": nick, "rooms": sorted(app.rooms), "limits": limits}

        async def leave(self, socket: pr.Socket) -> None:
            if (nick := socket.ws.state.pop("nick", None)) is not None:
                try:
                    await cast(Chat, socket.channels).nicks.release(nick, socket.user)
                except pr.HubUnavailable as exc:
                    log.warning("releasing %s failed (it lapses by itself): %s", nick, exc)

    @pr.topic("room:{name}", presence=True)
    class Room:
        async def join(self, socket: pr.Socket, params: dict[str, Any]) -> dict[str, Any]:
            room, app = socket.params["name"], cast(Chat, socket.channels)
            if "nick" not in socket.ws.state:
                await refuse(socket, "hello_first", 'join "chat" with a nick first')
            if not ROOM.fullmatch(room):
                await refuse(socket, "bad_room", "a room name is 1-32 letters, digits, _ or -")
            if room not in app.rooms:
                if len(app.rooms) >= MAX_ROOMS:
                    await refuse(socket, "too_many_rooms", f"there are {MAX_ROOMS} rooms already")
                app.rooms[room] = trio.current_time()  # listed now, present soon
                app.changed.set()
            socket.assigns["nick"] = socket.ws.state["nick"]
            return {"room": room}

        async def presence_key(self, socket: pr.Socket) -> str:
            return str(socket.assigns["nick"])  # one entry per nick, a meta per connection

        async def on_new_msg(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            text = payload.get("text") if isinstance(payload, dict) else None
            if not isinstance(text, str) or not text.strip():
                await refuse(socket, "empty", "a message has some text")
            if len(text) > MAX_TEXT:
                await refuse(socket, "too_long", f"a message has at most {MAX_TEXT} characters")
            if (nick := socket.ws.state.get("nick")) is None:  # it left "chat": not its nick now
                await refuse(socket, "hello_first", 'join "chat" with a nick first')
            message = {"nick": nick, "text": text, "ts": int(time.time() * 1000)}
            ref = payload.get("ref")
            if isinstance(ref, (str, int)) and not isinstance(ref, bool) and len(str(ref)) <= 64:
                message["ref"] = ref  # a client that lost the ack finds its message by it
            try:
                return {"id": await socket.broadcast("new_msg", message)}  # its offset
            except pr.HubUnavailable:
                raise pr.Refuse("unavailable", text=f"{UNAVAILABLE}: not sent") from None

        async def on_typing(self, socket: pr.Socket, payload: Any) -> None:
            now, nick = trio.current_time(), socket.ws.state.get("nick")
            if nick and now - socket.assigns.get("typed", -math.inf) >= TYPING_EVERY:
                socket.assigns["typed"] = now
                await socket.broadcast_from("typing", {"nick": nick}, history=False)

        async def on_history(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            """The newest ``limit`` messages before ``before`` (offsets are dense)."""
            ask = payload if isinstance(payload, dict) else {}
            before, limit = ask.get("before"), ask.get("limit", PAGE)
            if type(before) is not int or type(limit) is not int or before < 1 or limit < 1:
                await refuse(socket, "bad_message", "history takes before and limit (integers)")
            since = max(0, before - 1 - min(limit, PAGE))
            try:
                kept = await cast(Chat, socket.channels).history_of(socket.topic, since=since)
            except pr.HubUnavailable:
                raise pr.Refuse("unavailable", text=UNAVAILABLE) from None
            return {"messages": [{"id": p.offset, **p.payload} for p in kept if p.offset < before]}
