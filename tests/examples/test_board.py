"""examples/board.py end to end (issue 15, item 7), through the in-process server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import peregrine_rt as pr
from examples.board import MAX_UPLOAD, Board, sessions
from peregrine_rt.testing import Client, WebSocketRejected, open_client

PAGE = "http://localhost:5173"


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with open_client(Board, max_body_size=2 << 20) as client:
        yield client


async def login(client: Client, user: str = "ada") -> dict[str, str]:
    """The session cookie a successful login sets."""
    response = await client.post("/login", data={"user": user, "password": "secret"})
    assert response.status == 303
    assert response.headers["location"] == "/me"
    cookie = response.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == "session"
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    return {name: rest.partition(";")[0]}


def test_board_builds_as_a_server() -> None:
    pr.Server(Board)  # every route's handler is checked here


async def test_login_and_me(client: Client) -> None:
    wrong = await client.post("/login", data={"user": "ada", "password": "hunter2"})
    assert wrong.status == 401
    assert "set-cookie" not in wrong.headers
    assert (await client.get("/me")).status == 401
    cookies = await login(client, "ada")
    me = await client.get("/me", cookies=cookies)
    assert me.status == 200
    assert me.headers["content-type"].startswith("application/json")
    assert me.json() == {"user": "ada"}
    tampered = {
        "session": cookies["session"][:-2]
        + ("A" if cookies["session"][-2] != "A" else "B")
        + cookies["session"][-1]
    }
    assert (await client.get("/me", cookies=tampered)).status == 401
    other = await login(client, "bob")
    assert (await client.get("/me", cookies=other)).json() == {"user": "bob"}


async def test_items_are_typed(client: Client) -> None:
    assert (await client.get("/items/42")).json() == {"id": 42}
    assert (await client.get("/items/abc")).status == 404
    deleted = await client.delete("/items/42")
    assert deleted.status == 405
    assert {m.strip() for m in deleted.headers["allow"].split(",")} == {"GET", "HEAD"}
    head = await client.head("/items/7")
    assert head.status == 200 and head.content == b""


async def test_upload(client: Client) -> None:
    done = await client.post("/upload", files={"file": ("../../etc/notes.txt", b"hello")})
    assert done.status == 200
    assert done.json() == {"name": "notes.txt", "size": 5}
    exact = await client.post("/upload", files={"file": ("a.bin", b"x" * MAX_UPLOAD)})
    assert exact.json() == {"name": "a.bin", "size": MAX_UPLOAD}
    over = await client.post("/upload", files={"file": ("b.bin", b"x" * (MAX_UPLOAD + 1))})
    assert over.status == 413
    assert (await client.post("/upload", data={"file": "not a file"})).status == 400
    assert (await client.post("/upload", content=b"junk")).status in (400, 415)


async def test_the_websocket(client: Client) -> None:
    with pytest.raises(WebSocketRejected) as refused:
        async with client.websocket("/ws"):
            pass
    assert refused.value.response.status == 401
    cookies = await login(client, "ada")
    with pytest.raises(WebSocketRejected) as refused:
        async with client.websocket("/ws", cookies=cookies, headers={"Origin": PAGE}):
            pass
    assert refused.value.response.status == 403  # CORS is for fetch(), not for sockets
    async with client.websocket("/ws", cookies=cookies) as ws:
        assert await ws.receive_json() == {"type": "welcome", "user": "ada"}
        await ws.send("hi")
        assert await ws.receive_json() == {"type": "echo", "user": "ada", "text": "hi"}
        await ws.close()


async def test_cors_for_the_dev_server(client: Client) -> None:
    preflight = await client.options(
        "/me",
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "GET",
        },
    )
    assert preflight.status in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == PAGE
    assert preflight.headers["access-control-allow-credentials"] == "true"
    cookies = await login(client, "ada")
    me = await client.get("/me", cookies=cookies, headers={"Origin": PAGE})
    assert me.headers["access-control-allow-origin"] == PAGE
    assert me.json() == {"user": "ada"}
    stranger = await client.get("/me", cookies=cookies, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers
    refused = await client.get("/me", headers={"Origin": PAGE})  # 401 readable by the page
    assert refused.status == 401
    assert refused.headers["access-control-allow-origin"] == PAGE


async def test_a_cookie_from_other_keys_is_no_session() -> None:
    forged = pr.Sessions(["someone-elses-key-of-enough-length"])
    assert forged is not sessions
    async with open_client(Board) as client:
        response = pr.Response()
        forged.save(response, {"user": "mallory"})
        value = response.headers["set-cookie"].partition("=")[2].partition(";")[0]
        assert (await client.get("/me", cookies={"session": value})).status == 401
