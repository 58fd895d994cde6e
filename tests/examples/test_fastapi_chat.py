"""examples/fastapi_chat.py end to end: FastAPI at /api and the chat at / on one TCP port.

The app runs in this test's trio run as a real :class:`~peregrine_rt.Server`
on a loopback port; the chat clients are the Python Channels client over TCP
(as the browser's peregrine.js: the ``chat_session`` cookie of the first 101,
``chat`` joined with a nick, then ``room:lobby``), and HTTP goes through the
standard library's ``urllib`` in a thread, a client that knows nothing of
peregrine_rt.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from examples.fastapi_chat import ANNOUNCER, App
from peregrine_rt.client import Backoff, Channel, Message, open_socket

SECRET = "a-test-secret-of-the-chat-0123456789"
TOKEN = "a-test-announce-token"
TIMEOUT = 20.0  # seconds a whole test may take (SQLite works in threads)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def chat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SECRET", SECRET)
    monkeypatch.setenv("CHAT_ANNOUNCE_TOKEN", TOKEN)


@asynccontextmanager
async def serve(directory: Path) -> AsyncIterator[pr.Server]:
    """``App(directory)`` served on a loopback port for the block."""
    server = pr.Server(App(directory), pr.Config(host="127.0.0.1", port=0))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            try:
                yield server
            finally:
                await server.aclose()


async def http(
    server: pr.Server, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request made with urllib (in a thread)."""
    headers = {"content-type": "application/json"} if body is not None else {}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    url = f"http://127.0.0.1:{server.port}{path}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)

    def call() -> tuple[int, dict[str, str], bytes]:
        try:
            with NO_PROXY.open(request, timeout=TIMEOUT) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, dict(error.headers), error.read()

    return await trio.to_thread.run_sync(call)


@asynccontextmanager
async def person(server: pr.Server, nick: str) -> AsyncIterator[Channel]:
    """A chat client that joined ``chat`` as ``nick`` and ``room:lobby`` (the lobby channel)."""
    url = f"ws://127.0.0.1:{server.port}/socket"
    async with open_socket(url, heartbeat=None, backoff=Backoff(0.01, 0.1)) as socket:
        # The first 101 sets the chat_session cookie; the client sends it from then on.
        assert "chat_session" in socket.cookies
        await socket.channel("chat", {"nick": nick}).join()
        lobby = socket.channel("room:lobby")
        await lobby.join()
        yield lobby


async def next_message(messages: trio.MemoryReceiveChannel[Message]) -> Message:
    async for message in messages:
        return message
    raise AssertionError("the channel closed")


async def test_an_announcement_reaches_every_chat_client(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, AsyncExitStack() as stack:
        inboxes = []
        for nick in ("ada", "bob"):
            lobby = await stack.enter_async_context(person(server, nick))
            inboxes.append(await stack.enter_async_context(lobby.messages("new_msg")))

        status, _, body = await http(
            server, "POST", "/api/announce", {"text": "maintenance at 6"}, token=TOKEN
        )
        assert status == 200, body
        offset = json.loads(body)["sent"]["lobby"]
        assert isinstance(offset, int)

        for inbox in inboxes:
            message = await next_message(inbox)
            assert message.payload["nick"] == ANNOUNCER
            assert message.payload["text"] == "maintenance at 6"
            assert message.offset == offset  # in the history, as any message

        # ... so the API (and a client that recovers) finds it in the room's history
        status, _, body = await http(server, "GET", "/api/rooms/lobby/messages?limit=5")
        assert status == 200
        assert [(m["id"], m["nick"], m["text"]) for m in json.loads(body)] == [
            (offset, ANNOUNCER, "maintenance at 6")
        ]


async def test_an_announcement_to_one_room_reaches_that_room_only(tmp_path: Path) -> None:
    async with (
        serve(tmp_path) as server,
        person(server, "ada") as lobby,
        lobby.messages("new_msg") as inbox,
    ):
        answer = {"text": "only in tea", "room": "tea"}
        status, _, body = await http(server, "POST", "/api/announce", answer, token=TOKEN)
        assert status == 200 and set(json.loads(body)["sent"]) == {"tea"}
        await lobby.push("new_msg", {"text": "hello"})  # ada's own message comes next
        message = await next_message(inbox)
        assert (message.payload["nick"], message.payload["text"]) == ("ada", "hello")


@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), ("wrong", 401)], ids=["no token", "wrong token"]
)
async def test_announcing_needs_the_token(tmp_path: Path, token: str | None, status: int) -> None:
    async with serve(tmp_path) as server:
        answer = await http(server, "POST", "/api/announce", {"text": "hi"}, token=token)
        assert answer[0] == status
        assert answer[1]["www-authenticate"] == "Bearer"


async def test_announcements_are_off_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHAT_ANNOUNCE_TOKEN")
    async with serve(tmp_path) as server:
        status, _, body = await http(server, "POST", "/api/announce", {"text": "x"}, token="")
        assert status == 403 and b"CHAT_ANNOUNCE_TOKEN" in body


@pytest.mark.parametrize(
    "body",
    [{"text": ""}, {"text": "x" * 2001}, {"text": "x", "room": "no spaces"}, {"room": "lobby"}],
    ids=["empty", "too long", "bad room", "no text"],
)
async def test_fastapi_validates_the_announcement(tmp_path: Path, body: Any) -> None:
    async with serve(tmp_path) as server:
        status, _, answer = await http(server, "POST", "/api/announce", body, token=TOKEN)
        assert status == 422, answer


async def test_fastapi_endpoints_and_docs_work_under_the_mount(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        assert (await http(server, "GET", "/api/health"))[2] == b'{"status":"ok"}'
        status, _, body = await http(server, "GET", "/api/rooms")
        assert status == 200 and json.loads(body) == {"rooms": ["lobby"]}
        status, _, body = await http(server, "GET", "/api/rooms/lobby/messages?limit=0")
        assert status == 422
        # OpenAPI: the schema knows its root path, and the docs page loads it from there
        status, _, body = await http(server, "GET", "/api/openapi.json")
        schema = json.loads(body)
        assert status == 200 and schema["servers"] == [{"url": "/api"}]
        assert {"/health", "/rooms", "/rooms/{room}/messages", "/announce"} <= set(schema["paths"])
        status, _, body = await http(server, "GET", "/api/docs")
        assert status == 200 and b"url: '/api/openapi.json'" in body
        # and the rest is still the chat: its page, and a 404 of its own
        status, headers, _ = await http(server, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert (await http(server, "GET", "/api/nothing"))[0] == 404
