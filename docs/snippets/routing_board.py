"""A Router subclass of docs/web/routing.rst: routes as methods, a mount, a WebSocket route."""

from __future__ import annotations

import pytest

import peregrine_rt as pr
from peregrine_rt.testing import WebSocketRejected, open_client


# [api]
class Api(pr.Router):
    def __init__(self) -> None:
        super().__init__()
        self.likes: dict[int, int] = {}

    @pr.get("/posts/{id:int}")
    async def show(self, request: pr.Request, response: pr.Response) -> None:
        post_id = request.path_params["id"]
        response.json({"id": post_id, "likes": self.likes.get(post_id, 0)})

    @pr.post("/posts/{id:int}/like")
    async def like(self, request: pr.Request, response: pr.Response) -> None:
        post_id = request.path_params["id"]
        self.likes[post_id] = self.likes.get(post_id, 0) + 1
        response.redirect(request.root_path + self.url_for("show", id=post_id), 303)


# [/api]


# [chat]
class Room:
    """A WebSocket route's handler: on_message (on_open, on_close), no handle()."""

    def __init__(self) -> None:
        self.present: set[str] = set()

    async def authenticate(self, request: pr.Request) -> str | None:
        return request.query.get("name") or None  # None: 401, no upgrade

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.present.add(ws.user)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        room = ws.request.path_params["room"]
        await ws.send(f"[{room}] {ws.user}: {message!s}")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.present.discard(ws.user)


# [/chat]


# [board]
class Board(pr.Router):
    def __init__(self) -> None:
        super().__init__()
        self.mount("/api", Api, name="api")  # Api sees /posts/1 for /api/posts/1
        self.websocket("/rooms/{room}", Room, name="room")

    @pr.get("/")
    async def home(self, request: pr.Request, response: pr.Response) -> None:
        response.json(
            {
                "post": self.url_for("api:show", id=1),  # "/api/posts/1"
                "chat": self.url_for("room", room="tea time"),  # "/rooms/tea%20time"
            }
        )


# pr.run(Board, port=3000)
# [/board]


# [tests]
async def test_board() -> None:
    async with open_client(Board) as client:
        assert (await client.get("/")).json() == {
            "post": "/api/posts/1",
            "chat": "/rooms/tea%20time",
        }
        liked = await client.post("/api/posts/1/like")
        assert (liked.status, liked.headers["location"]) == (303, "/api/posts/1")
        assert (await client.get("/api/posts/1")).json() == {"id": 1, "likes": 1}


async def test_chat_route() -> None:
    async with open_client(Board) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/rooms/lobby"):
                pass
        assert refused.value.response.status == 401
        async with client.websocket("/rooms/lobby?name=ada") as ws:
            await ws.send("hello")
            assert await ws.receive() == "[lobby] ada: hello"


# [/tests]
