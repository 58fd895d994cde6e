"""The app of docs/http.rst: routes by path, query, JSON, cookies, streaming, limits.

The page shows the parts between the ``# [name]`` markers; the tests below
run the whole app through peregrine_rt.testing.
"""

from __future__ import annotations

import json

import trio

import peregrine_rt as pr
from peregrine_rt.testing import open_client


# [app]
class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/notes" and request.method == "GET":
            limit = int(request.query.get("limit", "10"))
            response.json(self.notes[-limit:])
        elif request.path == "/notes" and request.method == "POST":
            note = await request.json()  # the body, read on demand
            self.notes.append(note["text"])
            response.json({"id": len(self.notes)}, status=201)
        elif request.path == "/login":
            response.set_cookie("user", request.query.get("name", "guest"), max_age=3600)
            response.redirect("/me", status=303)
        elif request.path == "/me":
            response.text(f"hello {request.cookies.get('user', 'stranger')}\n")
        elif request.path == "/countdown":
            async with response.stream(content_type="text/plain") as send:
                for n in (3, 2, 1):
                    await send(f"{n}\n")  # one chunk each, sent at once
                    await trio.sleep(1)
                await send("liftoff\n")
        else:
            response.text("not found\n", status=404)


# [/app]


# [tests]
async def test_notes() -> None:
    async with open_client(Notes) as client:
        created = await client.post("/notes", json={"text": "buy milk"})
        assert (created.status, created.json()) == (201, {"id": 1})
        listed = await client.get("/notes", params={"limit": 5})
        assert listed.json() == ["buy milk"]
        assert listed.headers["content-type"] == "application/json"


async def test_cookies_and_redirects() -> None:
    async with open_client(Notes) as client:
        login = await client.get("/login", params={"name": "ada"})
        assert (login.status, login.headers["location"]) == (303, "/me")
        assert login.headers["set-cookie"].startswith("user=ada; Max-Age=3600; Path=/")
        me = await client.get("/me", headers={"Cookie": "user=ada"})
        assert me.text == "hello ada\n"


async def test_streamed_response(autojump_clock: trio.abc.Clock) -> None:
    async with open_client(Notes) as client:
        response = await client.get("/countdown")
        assert response.chunks == [b"3\n", b"2\n", b"1\n", b"liftoff\n"]


async def test_limits_and_unknown_paths() -> None:
    async with open_client(Notes, max_body_size=64) as client:
        too_big = await client.post("/notes", content=json.dumps({"text": "x" * 100}))
        assert too_big.status == 413  # refused while the body streams in
        assert (await client.get("/nowhere")).status == 404


# [/tests]
