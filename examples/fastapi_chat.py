"""A FastAPI app and the chat on one port: ``peregrine-rt examples.fastapi_chat:App``.

``/api/...`` is an ordinary FastAPI app (JSON endpoints, its docs at
``/api/docs``), served through :class:`peregrine_rt.asgi.ASGI`; everything
else is the chat of ``examples/chat`` (its page, files and Channels WebSocket
at ``/socket``), unchanged.  One process, one port, one hub: ``POST
/api/announce`` with ``{"text": ...}`` and the announce token reaches every
chat client, through the chat's own :meth:`~peregrine_rt.Channels.broadcast`,
so the announcement is kept in the rooms' history like any message.
docs/fastapi.rst is the guide built on this file.

Environment: ``CHAT_SECRET`` and ``CHAT_DATA`` as for the chat;
``CHAT_ANNOUNCE_TOKEN``, the bearer token of ``POST /api/announce`` (unset:
announcements are refused).
"""

from __future__ import annotations

import os
import pathlib
import secrets
import time
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

import peregrine_rt as pr
from examples.chat.app import MAX_TEXT, ROOM, Chat
from peregrine_rt.asgi import ASGI

# Who announcements come from: not a nick a person can take (a nick is letters,
# digits, _ and -, spaces inside), so the chat's page shows it and nobody can fake it.
ANNOUNCER = "📣 announcements"
ROOM_NAME = f"^{ROOM.pattern}$"  # the chat's room names, anchored (pydantic searches)
MAX_MESSAGES = 100  # GET /api/rooms/{room}/messages: the newest this many at most


class Announcement(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    room: str | None = Field(default=None, pattern=ROOM_NAME)  # None: every room


class Message(BaseModel):
    id: int
    nick: str
    text: str
    ts: int


def chat_of(request: Request) -> Chat:
    """The chat this API serves with (a FastAPI dependency)."""
    chat: Chat = request.app.state.chat
    return chat


ChatDep = Annotated[Chat, Depends(chat_of)]
bearer = HTTPBearer(auto_error=False)


def announcer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Only the holder of ``CHAT_ANNOUNCE_TOKEN`` announces (a FastAPI dependency)."""
    token: str | None = request.app.state.announce_token
    if token is None:
        raise HTTPException(403, "announcements are off: set CHAT_ANNOUNCE_TOKEN")
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "a bearer token is needed", {"WWW-Authenticate": "Bearer"})


def create_api(chat: Chat, announce_token: str | None = None) -> FastAPI:
    """The FastAPI app, as an existing project would have it, given the chat to talk to."""
    api = FastAPI(title="Chat API", version="1.0")
    api.state.chat = chat
    api.state.announce_token = announce_token

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/rooms")
    async def rooms(chat: ChatDep) -> dict[str, list[str]]:
        return {"rooms": sorted(chat.rooms)}

    @api.get("/rooms/{room}/messages")
    async def messages(
        chat: ChatDep,
        room: Annotated[str, Path(pattern=ROOM_NAME)],
        limit: Annotated[int, Query(ge=1, le=MAX_MESSAGES)] = 20,
    ) -> list[Message]:
        kept = await chat.history_of(f"room:{room}", limit=limit)
        return [Message(id=p.offset, **p.payload) for p in kept]

    # [announce]
    @api.post("/announce", dependencies=[Depends(announcer)])
    async def announce(body: Announcement, chat: ChatDep) -> dict[str, dict[str, int | None]]:
        """Post ``text`` to one room, or to every room the chat lists."""
        message = {"nick": ANNOUNCER, "text": body.text, "ts": int(time.time() * 1000)}
        sent = {}
        for room in [body.room] if body.room else sorted(chat.rooms):
            try:  # kept in the room's history: a client that reconnects gets it too
                sent[room] = await chat.broadcast(f"room:{room}", "new_msg", message)
            except pr.HubUnavailable:
                raise HTTPException(503, "the chat cannot reach its store") from None
        return {"sent": sent}  # room -> the message's id there

    # [/announce]
    return api


# [app]
class App(pr.Router):
    """The chat at ``/`` and the API at ``/api``: ``peregrine-rt examples.fastapi_chat:App``."""

    def __init__(self, data_dir: str | pathlib.Path | None = None) -> None:
        super().__init__()
        self.chat = Chat(data_dir)
        self.api = create_api(self.chat, os.environ.get("CHAT_ANNOUNCE_TOKEN") or None)
        self.mount("/api", ASGI(self.api))  # FastAPI sees root_path "/api"
        self.mount("/", self.chat)  # the page, its files and the WebSocket: the rest


# [/app]
