"""A small app on the web basics: login, a session cookie, typed routes, uploads, a WebSocket, CORS.

Run it: ``peregrine-rt examples.board:Board --max-body-size 2097152`` (the
upload route takes files up to 1 MiB, and a multipart body is a little larger
than its file).  Set ``BOARD_KEYS`` (session keys, newest first, separated by
spaces) for anything but a demo.  ``tests/examples/test_board.py`` drives it
end to end; docs/web/index.rst shows it.
"""

from __future__ import annotations

import json
import os

import peregrine_rt as pr
from peregrine_rt.exceptions import HTTPError

# [board]
KEYS = os.environ.get("BOARD_KEYS", "board-demo-key-change-me-please").split()
sessions = pr.Sessions(KEYS)
signed_in = pr.session_auth(sessions)  # the session's "user" as an Identity, or None
MAX_UPLOAD = 1 << 20  # bytes


class Socket:
    """``/ws``: a logged-in user's socket (401 without a session, 403 from another origin)."""

    async def authenticate(self, request: pr.Request) -> pr.Identity | None:
        return await signed_in(request)  # None: 401, and no upgrade

    async def on_open(self, ws: pr.WebSocket) -> None:
        await ws.send(json.dumps({"type": "welcome", "user": ws.user.name}))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(json.dumps({"type": "echo", "user": ws.user.name, "text": str(message)}))


class Routes(pr.Router):
    def __init__(self) -> None:
        super().__init__()
        self.websocket("/ws", Socket)

    @pr.post("/login")
    async def login(self, request: pr.Request, response: pr.Response) -> None:
        form = await request.form()
        user, password = form.get("user"), form.get("password")
        if not isinstance(user, str) or not user or password != "secret":
            raise HTTPError(401, "wrong user or password")
        sessions.save(response, {"user": user})
        response.redirect("/me", 303)

    @pr.get("/me")
    async def me(self, request: pr.Request, response: pr.Response) -> None:
        identity = await signed_in(request)
        if identity is None:
            raise HTTPError(401, "log in first")
        response.json({"user": identity.name})

    @pr.get("/items/{id:int}")
    async def item(self, request: pr.Request, response: pr.Response) -> None:
        response.json({"id": request.path_params["id"]})

    @pr.post("/upload")
    async def upload(self, request: pr.Request, response: pr.Response) -> None:
        form = await request.form(max_part_size=MAX_UPLOAD)  # 413 beyond
        file = form.get("file")
        if not isinstance(file, pr.UploadFile):
            raise HTTPError(400, "send the file as the multipart field 'file'")
        response.json({"name": file.filename, "size": file.size})


class Board(pr.CORS):
    """The routes, with CORS for a front-end dev server on port 5173."""

    wraps = Routes  # so that Server(Board) sees the routes' WebSocket hooks

    def __init__(self) -> None:
        super().__init__(
            Routes,
            allow_origins=["http://localhost:5173"],
            allow_methods=["GET", "POST"],
            allow_credentials=True,
        )


# [/board]
