"""Step 3: who is who, and nicks.  ``peregrine-rt examples.tutorial.step3:Chat``."""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, cast

import peregrine_rt as pr

from .nicks import Nicks

log = logging.getLogger("examples.tutorial")

PAGE = 100  # messages in a history page
NICK_HOLD = 30.0  # seconds a nick stays its person's after their last socket
NICK = re.compile(r"[\w-](?:[\w -]{0,22}[\w-])?")  # 1-24 characters, spaces inside


class Chat(pr.Channels):
    """Join ``chat`` with a nick, then rooms; a person is a signed session cookie."""

    nick_hold = NICK_HOLD

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir or os.environ.get("CHAT_DATA", "data/tutorial"))
        keys = [key for key in os.environ.get("CHAT_SECRET", "").split(",") if key.strip()]
        if not keys:
            log.warning("CHAT_SECRET is not set: sessions are signed with a random key")
        self.sessions = pr.Sessions(keys or [secrets.token_urlsafe(32)], cookie="chat_session")
        self.nicks = Nicks(self.nick_hold)

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

    @pr.topic("chat", history=False)
    class Hello:
        async def join(self, socket: pr.Socket, params: dict[str, Any]) -> dict[str, Any]:
            nick, app = params.get("nick"), cast(Chat, socket.channels)
            if not isinstance(nick, str) or not NICK.fullmatch(nick) or "  " in nick:
                raise pr.Refuse("bad_nick", text="1-24 letters, digits, _ or -, spaces inside")
            if not await app.nicks.claim(nick, socket.user):
                raise pr.Refuse("nick_taken", text=f"{nick} is someone else's: pick another")
            socket.ws.state["nick"] = nick  # the connection's nick, for every room
            return {"nick": nick}

        async def leave(self, socket: pr.Socket) -> None:
            if (nick := socket.ws.state.pop("nick", None)) is not None:
                await cast(Chat, socket.channels).nicks.release(nick, socket.user)

    @pr.topic("room:{name}")
    class Room:
        async def join(self, socket: pr.Socket, params: dict[str, Any]) -> dict[str, Any]:
            if "nick" not in socket.ws.state:
                raise pr.Refuse("hello_first", text='join "chat" with a nick first')
            socket.assigns["nick"] = socket.ws.state["nick"]
            return {"room": socket.params["name"]}

        async def on_new_msg(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            text = payload.get("text") if isinstance(payload, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise pr.Refuse("empty", text="a message has some text")
            message = {"nick": socket.assigns["nick"], "text": text, "ts": int(time.time() * 1000)}
            return {"id": await socket.broadcast("new_msg", message)}

        async def on_history(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            """The newest ``limit`` messages before ``before`` (offsets are dense)."""
            ask = payload if isinstance(payload, dict) else {}
            before, limit = ask.get("before"), ask.get("limit", PAGE)
            if type(before) is not int or type(limit) is not int or before < 1 or limit < 1:
                raise pr.Refuse("bad_message", text="history takes before and limit (integers)")
            since = max(0, before - 1 - min(limit, PAGE))
            kept = await cast(Chat, socket.channels).history_of(socket.topic, since=since)
            return {"messages": [{"id": p.offset, **p.payload} for p in kept if p.offset < before]}
