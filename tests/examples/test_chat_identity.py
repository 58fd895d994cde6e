"""The chat binds a nick to a person: a signed session cookie, not a connection (issue #15).

The handshake of ``/ws`` sets the cookie ``chat_session`` (a random ``sid``,
signed); a nick is held by one sid at a time, in any number of its sockets,
and for ``Chat.nick_hold`` seconds after the last one closed.  Another sid
asking for it gets ``nick_taken``.  With Redis the claims are shared by every
node.  The WebSocket also refuses pages of other origins.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from examples.chat.app import Chat
from examples.chat.nicks import NICK_HOLD
from examples.chat.store import NODE_TTL_MS
from peregrine_rt._sessions import Sessions
from peregrine_rt.testing import Client, ClientWebSocket, WebSocketRejected, open_client

SECRET = "a-test-secret-of-the-chat-0123456789"
OLD_SECRET = "the-secret-before-the-rotation-42"


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with open_client(Chat) as client:
        yield client


def cookies_of(ws: ClientWebSocket) -> dict[str, str]:
    """The session cookie the 101 of ``ws`` set: a socket sending it is the same person."""
    name, _, rest = ws.response.headers["set-cookie"].partition("=")
    return {name: rest.split(";", 1)[0]}


async def next_of(ws: ClientWebSocket, kind: str) -> dict[str, Any]:
    while True:
        data = await ws.receive_json()
        if data["type"] == kind:
            return data  # type: ignore[no-any-return]


async def hello(ws: ClientWebSocket, nick: str) -> dict[str, Any]:
    """Say hello as ``nick``: the ``welcome``, or the ``error`` refusing it."""
    await ws.send_json({"type": "hello", "nick": nick})
    answer = await ws.receive_json()
    assert answer["type"] in ("welcome", "error"), answer
    return answer  # type: ignore[no-any-return]


async def online_is(ws: ClientWebSocket, nicks: list[str]) -> None:
    """Wait for a presence event of the lobby listing exactly ``nicks``."""
    while (await next_of(ws, "presence"))["online"] != nicks:
        pass


async def test_the_handshake_sets_a_signed_session_cookie_once(client: Client) -> None:
    async with client.websocket("/ws") as first:
        cookie = first.response.headers["set-cookie"]
        assert cookie.startswith("chat_session=")
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/"} <= attributes
        assert "secure" not in attributes  # plain HTTP here: Secure only over HTTPS
        person = cookies_of(first)
    async with client.websocket("/ws", cookies=person) as again:
        assert "set-cookie" not in again.response.headers  # the same person: nothing new
    assert client.app.sessions.decode(person["chat_session"])["sid"]


async def test_another_person_cannot_take_or_post_as_a_held_nick(client: Client) -> None:
    async with client.websocket("/ws") as ada, client.websocket("/ws") as mallory:
        assert (await hello(ada, "ada"))["type"] == "welcome"
        refused = await hello(mallory, "ada")
        assert refused["code"] == "nick_taken" and "ada" in refused["text"]
        await mallory.send_json({"type": "say", "room": "lobby", "text": "I am ada"})
        assert (await mallory.receive_json())["code"] == "hello_first"  # no nick: no say
        assert (await hello(mallory, "mallory"))["type"] == "welcome"  # another nick is fine
        await online_is(ada, ["ada", "mallory"])


async def test_the_same_person_in_two_tabs_is_one_presence_entry(client: Client) -> None:
    async with client.websocket("/ws") as tab1:
        assert (await hello(tab1, "ada"))["type"] == "welcome"
        await online_is(tab1, ["ada"])
        async with (
            client.websocket("/ws", cookies=cookies_of(tab1)) as tab2,
            client.websocket("/ws") as bob,
        ):
            assert (await hello(tab2, "ada"))["type"] == "welcome"
            assert (await hello(bob, "bob"))["type"] == "welcome"
            for ws in (tab1, tab2, bob):
                await online_is(ws, ["ada", "bob"])
            await bob.send_json({"type": "say", "room": "lobby", "text": "hi ada"})
            await tab1.send_json({"type": "say", "room": "lobby", "text": "from tab 1"})
            for ws in (tab1, tab2):
                texts = [(await next_of(ws, "message"))["text"] for _ in range(2)]
                assert sorted(texts) == ["from tab 1", "hi ada"]
        # One tab left: ada is still online, bob is not.
        await online_is(tab1, ["ada"])
        assert await client.app.store.online("lobby") == ["ada"]


async def test_a_nick_is_held_a_while_then_free(client: Client, autojump_clock: Any) -> None:
    async with client.websocket("/ws") as ada:
        assert (await hello(ada, "ada"))["type"] == "welcome"
        person = cookies_of(ada)
    # Gone, but held for NICK_HOLD seconds: her tab may be reconnecting.
    await trio.sleep(Chat.nick_hold - 1)
    async with client.websocket("/ws") as bob:
        assert (await hello(bob, "ada"))["code"] == "nick_taken"
    async with client.websocket("/ws", cookies=person) as back:
        assert (await hello(back, "ada"))["type"] == "welcome"  # hers: she came back
    await trio.sleep(Chat.nick_hold - 1)
    async with client.websocket("/ws") as bob:
        assert (await hello(bob, "ada"))["code"] == "nick_taken"  # the hold starts again
    await trio.sleep(2)
    async with client.websocket("/ws") as bob:
        assert (await hello(bob, "ada"))["type"] == "welcome"


async def test_a_tampered_cookie_is_a_new_person(client: Client) -> None:
    async with client.websocket("/ws") as ada:
        assert (await hello(ada, "ada"))["type"] == "welcome"
        value = cookies_of(ada)["chat_session"]
        data, _, signature = value.rpartition(".")
        forged = [  # a changed signature; ada's data signed with another key
            f"{data}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}",
            Sessions("not-the-server-s-key-0123456789").encode(client.app.sessions.decode(value)),
        ]
        for cookie in forged:
            async with client.websocket("/ws", cookies={"chat_session": cookie}) as mallory:
                assert cookies_of(mallory)["chat_session"] != cookie  # a new session, new sid
                assert (await hello(mallory, "ada"))["code"] == "nick_taken"


async def test_foreign_origins_are_refused(client: Client) -> None:
    with pytest.raises(WebSocketRejected) as refused:
        async with client.websocket("/ws", headers={"origin": "http://evil.example"}):
            pass
    assert refused.value.status == 403
    async with client.websocket("/ws", headers={"origin": "http://testserver"}) as page:
        assert (await hello(page, "ada"))["type"] == "welcome"


async def test_keys_come_from_chat_secret_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SECRET", OLD_SECRET)
    old = Chat().sessions.encode({"sid": "ada-person"})  # before the rotation
    monkeypatch.setenv("CHAT_SECRET", f"{SECRET},{OLD_SECRET}")
    async with open_client(Chat) as client:
        assert not client.app.random_key
        async with client.websocket("/ws", cookies={"chat_session": old}) as ws:
            assert "set-cookie" not in ws.response.headers  # still valid: the old key is listed
            assert (await hello(ws, "ada"))["type"] == "welcome"
        assert client.app.sessions.decode(old) == {"sid": "ada-person"}


async def test_without_chat_secret_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CHAT_SECRET", raising=False)
    with caplog.at_level(logging.WARNING, logger="examples.chat"):
        async with open_client(Chat) as client, client.websocket("/ws") as ws:
            assert (await hello(ws, "ada"))["type"] == "welcome"
    warnings = [r.getMessage() for r in caplog.records if "CHAT_SECRET" in r.getMessage()]
    assert len(warnings) == 1 and "several workers or nodes" in warnings[0]
    assert Chat().sessions.decode(cookies_of(ws)["chat_session"]) == {}  # another process's key


# -- with Redis ---------------------------------------------------------------------


class QuickChat(Chat):
    nick_hold = 0.2


async def test_redis_nodes_share_the_claims(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_SECRET", SECRET)  # the same keys on every node
    async with (
        open_client(Chat, redis_url=redis_url) as one,
        open_client(Chat, redis_url=redis_url) as two,
    ):
        async with one.websocket("/ws") as ada, two.websocket("/ws") as mallory:
            assert (await hello(ada, "ada"))["type"] == "welcome"
            assert (await hello(mallory, "ada"))["code"] == "nick_taken"
            async with (
                two.websocket("/ws", cookies=cookies_of(ada)) as tab2,
                one.websocket("/ws", cookies=cookies_of(mallory)) as mallory2,
            ):
                assert (await hello(tab2, "ada"))["type"] == "welcome"  # her, on node two
                assert (await hello(mallory2, "ada"))["code"] == "nick_taken"  # not him
                assert (await hello(mallory, "mallory"))["type"] == "welcome"
                for ws in (ada, tab2):
                    await online_is(ws, ["ada", "mallory"])  # ada once, with two sockets
                await mallory.send_json({"type": "say", "room": "lobby", "text": "hi"})
                for ws in (ada, tab2):
                    assert (await next_of(ws, "message"))["text"] == "hi"
                async with one.app.hub.client(decode_responses=True) as redis:
                    key = "peregrine:chat:nick:ada"
                    sid = one.app.sessions.decode(cookies_of(ada)["chat_session"])["sid"]
                    assert await redis.get(key) == sid
                    # It expires by itself unless refreshed: a killed node's claim goes.
                    assert 0 < await redis.pttl(key) <= max(NICK_HOLD * 1000, NODE_TTL_MS)
        # ada left both nodes: held for NICK_HOLD, so still not mallory's.
        async with two.websocket("/ws", cookies=cookies_of(mallory)) as again:
            assert (await hello(again, "ada"))["code"] == "nick_taken"


async def test_redis_claims_lapse_after_the_hold(redis_url: str) -> None:
    async with open_client(QuickChat, redis_url=redis_url) as one:
        async with one.websocket("/ws") as ada:
            assert (await hello(ada, "ada"))["type"] == "welcome"
        async with one.websocket("/ws") as bob:
            person = cookies_of(bob)
        # Without the release, the key would live NODE_TTL_MS (15 s) more.
        with trio.fail_after(NODE_TTL_MS / 1000 / 3):
            while True:
                async with one.websocket("/ws", cookies=person) as bob:
                    if (await hello(bob, "ada"))["type"] == "welcome":
                        break
                await trio.sleep(QuickChat.nick_hold / 4)


async def test_redis_claims_come_back_with_the_heartbeat(redis_url: str) -> None:
    """A Redis that lost its keys (restarted) gets the nicks in use back at the next beat."""
    async with open_client(Chat, redis_url=redis_url) as one:
        store = one.app.store
        async with one.websocket("/ws") as ada, one.app.hub.client(decode_responses=True) as redis:
            assert (await hello(ada, "ada"))["type"] == "welcome"
            sid = await redis.get("peregrine:chat:nick:ada")
            await redis.delete(["peregrine:chat:nick:ada"])
            await store.nicks.refresh()  # what the heartbeat and the re-seeding call
            assert await redis.get("peregrine:chat:nick:ada") == sid
            async with one.websocket("/ws") as mallory:
                assert (await hello(mallory, "ada"))["code"] == "nick_taken"
