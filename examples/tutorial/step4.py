"""Step 4: presence, typing, the list of rooms.  ``peregrine-rt examples.tutorial.step4:Chat``."""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, cast

import trio

import peregrine_rt as pr

from .nicks import Nicks

log = logging.getLogger("examples.tutorial")

LOBBY = "lobby"  # always listed
ROOM_IDLE = 300.0  # seconds a room nobody is in stays listed
TYPING_EVERY = 1.0  # seconds between typing events relayed, per connection and room
PAGE = 100  # messages in a history page
NICK_HOLD = 30.0  # seconds a nick stays its person's after their last socket
NICK = re.compile(r"[\w-](?:[\w -]{0,22}[\w-])?")  # 1-24 characters, spaces inside


class Chat(pr.Channels):
    """Who is in each room; who is typing; the rooms listed on ``chat``."""

    room_idle = ROOM_IDLE
    nick_hold = NICK_HOLD

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir or os.environ.get("CHAT_DATA", "data/tutorial"))
        keys = [key for key in os.environ.get("CHAT_SECRET", "").split(",") if key.strip()]
        if not keys:
            log.warning("CHAT_SECRET is not set: sessions are signed with a random key")
        self.sessions = pr.Sessions(keys or [secrets.token_urlsafe(32)], cookie="chat_session")
        self.nicks = Nicks(self.nick_hold)
        self.rooms: dict[str, float] = {LOBBY: math.inf}  # the list: since when empty
        self.listed, self.changed = [LOBBY], trio.Event()  # the list last pushed

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None:
            session = self.sessions.load(request)  # {} without a valid cookie
            if not isinstance(session.get("sid"), str):
                session["sid"] = secrets.token_urlsafe(16)  # a new person
                self.sessions.save(response, session)  # the 101 sets the cookie
        await super().handle(request, response)  # upgrade() asks authenticate()

    async def authenticate(self, request: pr.Request) -> str | None:
        return self.sessions.load(request).get("sid")  # socket.user

    def make_history(self, hub: pr.Hub) -> pr.History:
        return pr.SQLiteHistory(self.data_dir)

    def make_presence(self, hub: pr.Hub) -> Any:
        self.presence = super().make_presence(hub)
        self.presence.on_diff(lambda topic, diff: self.changed.set())
        return self.presence

    async def background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().background)
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
                raise pr.Refuse("bad_nick", text="1-24 letters, digits, _ or -, spaces inside")
            if not await app.nicks.claim(nick, socket.user):
                raise pr.Refuse("nick_taken", text=f"{nick} is someone else's: pick another")
            socket.ws.state["nick"] = nick  # the connection's nick, for every room
            return {"nick": nick, "rooms": sorted(app.rooms)}

        async def leave(self, socket: pr.Socket) -> None:
            if (nick := socket.ws.state.pop("nick", None)) is not None:
                await cast(Chat, socket.channels).nicks.release(nick, socket.user)

    @pr.topic("room:{name}", presence=True)
    class Room:
        async def join(self, socket: pr.Socket, params: dict[str, Any]) -> dict[str, Any]:
            room, app = socket.params["name"], cast(Chat, socket.channels)
            if "nick" not in socket.ws.state:
                raise pr.Refuse("hello_first", text='join "chat" with a nick first')
            if room not in app.rooms:
                app.rooms[room] = trio.current_time()  # listed now, present soon
                app.changed.set()
            socket.assigns["nick"] = socket.ws.state["nick"]
            return {"room": room}

        async def presence_key(self, socket: pr.Socket) -> str:
            return str(socket.assigns["nick"])  # one entry per nick, a meta per connection

        async def on_new_msg(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            text = payload.get("text") if isinstance(payload, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise pr.Refuse("empty", text="a message has some text")
            message = {"nick": socket.assigns["nick"], "text": text, "ts": int(time.time() * 1000)}
            return {"id": await socket.broadcast("new_msg", message)}

        async def on_typing(self, socket: pr.Socket, payload: Any) -> None:
            now, nick = trio.current_time(), socket.assigns["nick"]
            if now - socket.assigns.get("typed", -math.inf) >= TYPING_EVERY:
                socket.assigns["typed"] = now
                await socket.broadcast_from("typing", {"nick": nick}, history=False)

        async def on_history(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            """The newest ``limit`` messages before ``before`` (offsets are dense)."""
            ask = payload if isinstance(payload, dict) else {}
            before, limit = ask.get("before"), ask.get("limit", PAGE)
            if type(before) is not int or type(limit) is not int or before < 1 or limit < 1:
                raise pr.Refuse("bad_message", text="history takes before and limit (integers)")
            since = max(0, before - 1 - min(limit, PAGE))
            kept = await cast(Chat, socket.channels).history_of(socket.topic, since=since)
            return {"messages": [{"id": p.offset, **p.payload} for p in kept if p.offset < before]}
