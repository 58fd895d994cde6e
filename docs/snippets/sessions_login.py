"""Signed cookie sessions, the session section of docs/web/sessions.rst, run as tests.

The page shows the marked parts (keys, login, rotation).
"""

from __future__ import annotations

import os

import pytest

import peregrine_rt as pr
from peregrine_rt import Sessions, session_auth
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.testing import Client, WebSocketRejected, open_client

# [keys]
# Newest key first: new cookies are signed with it, cookies signed with any
# key of the list still verify.  Make a key with
#     python -c "import secrets; print(secrets.token_urlsafe(32))"
# and keep it out of the code (here: SESSION_KEYS="newest older" in the environment).
SESSION_KEYS = os.environ.get("SESSION_KEYS", "dev-only-key-do-not-deploy").split()
sessions = Sessions(SESSION_KEYS, max_age=7 * 24 * 3600)
# [/keys]


# [login]
class Site:
    """``POST /login`` with ``{"user": ..., "password": ...}``; ``/me``; ``/logout``; ``/ws``."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/login" and request.method == "POST":
            body = await request.json()
            if body.get("password") != "secret":  # check it properly in a real app
                raise HTTPError(401, "wrong user or password")
            sessions.save(response, {"user": body["user"]})
            response.json({"user": body["user"]})
        elif request.path == "/logout":
            sessions.clear(response)
            response.text("bye")
        elif request.path == "/me":
            session = sessions.load(request)  # {} for no cookie, a tampered or an expired one
            if "user" not in session:
                raise HTTPError(401, "log in first")
            response.json({"user": session["user"]})
        elif request.path == "/ws":
            # session_auth: Identity(session["user"]), or None, which refuses with 401
            await pr.upgrade(request, response, authenticate=session_auth(sessions))
        else:
            raise HTTPError(404)

    async def on_open(self, ws: pr.WebSocket) -> None:
        await ws.send(f"hello {ws.user.name}")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(f"{ws.user.name}: {message!s}")


# [/login]


async def log_in(client: Client, user: str) -> str:
    answer = await client.post("/login", json={"user": user, "password": "secret"})
    assert answer.status == 200
    return str(answer.headers["set-cookie"]).split(";")[0].partition("=")[2]


async def test_login_me_websocket_logout() -> None:
    async with open_client(Site) as client:
        wrong = await client.post("/login", json={"user": "ada", "password": "guess"})
        assert wrong.status == 401
        assert "set-cookie" not in wrong.headers
        cookie = await log_in(client, "ada")
        assert (await client.get("/me", cookies={"session": cookie})).json() == {"user": "ada"}
        async with client.websocket("/ws", cookies={"session": cookie}) as ws:
            assert await ws.receive() == "hello ada"
            await ws.send("hi")
            assert await ws.receive() == "ada: hi"
        logout = await client.get("/logout")
        assert logout.headers["set-cookie"].startswith("session=; Max-Age=0")


async def test_no_or_a_tampered_cookie_is_no_session() -> None:
    async with open_client(Site) as client:
        cookie = await log_in(client, "ada")
        tampered = cookie.replace(cookie[3], "A" if cookie[3] != "A" else "B", 1)
        for cookies in ({}, {"session": tampered}):
            assert (await client.get("/me", cookies=cookies)).status == 401
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket("/ws", cookies=cookies):
                    pass
            assert refused.value.response.status == 401


# [rotation]
def rotate(old_keys: list[str], new_key: str) -> Sessions:
    """Step 1: sign with the new key, still accept the old one."""
    return Sessions([new_key, *old_keys], max_age=7 * 24 * 3600)


# Step 2, a max_age later (seven days): drop the old key; its cookies have expired.
# [/rotation]


async def test_rotation() -> None:
    global sessions
    old = sessions
    try:
        async with open_client(Site) as client:
            cookie = await log_in(client, "ada")  # signed with the old key
            sessions = rotate(SESSION_KEYS, "a-brand-new-key-0123456789")
            assert (await client.get("/me", cookies={"session": cookie})).status == 200
            new_cookie = await log_in(client, "bob")  # signed with the new key
            sessions = Sessions(["a-brand-new-key-0123456789"])  # step 2
            assert (await client.get("/me", cookies={"session": cookie})).status == 401
            me = await client.get("/me", cookies={"session": new_cookie})
            assert me.json() == {"user": "bob"}
    finally:
        sessions = old
