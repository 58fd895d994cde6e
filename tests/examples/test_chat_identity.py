"""The chat binds a nick to a person: a signed session cookie, not a connection.

The handshake sets the cookie ``chat_session`` (a random ``sid``, signed with
the keys of ``CHAT_SECRET``) when the request has no valid one; a nick is held
by one sid at a time, in any number of its sockets, and for ``Chat.nick_hold``
seconds after the last one stopped using it.  Another sid asking for it gets
``nick_taken``.  With Redis the claims are shared by every node.  The
WebSocket refuses pages of other origins.

Every check here is made from outside, as a browser sees it: the cookie a 101
sets, and whether two connections sending it are one person (they may share
a nick) or two (the second gets ``nick_taken``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from examples.chat.app import Chat
from peregrine_rt import Config
from peregrine_rt.client import JoinRefused, PushError
from peregrine_rt.exceptions import HandshakeError

from .test_chat_example import (
    COOKIE,
    PATIENT,
    SECRET,
    ChatServer,
    history,
    open_chat,
    post,
    presence_is,
    session_cookie,
)

OLD_SECRET = "the-secret-before-the-rotation-42"


@pytest.fixture(autouse=True)
def chat_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SECRET", SECRET)


async def nick_of(chat: ChatServer, cookie: str | None, nick: str) -> str:
    """Ask for ``nick`` on a new connection sending ``cookie``: ``"ok"`` or the refusal's reason."""
    async with chat.connect(cookie, timeout=PATIENT, heartbeat=None) as socket:
        try:
            await socket.channel("chat", {"nick": nick}).join()
        except JoinRefused as refused:
            return refused.reason
        return "ok"


async def test_the_handshake_sets_a_signed_session_cookie_once(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        async with chat.http.websocket("/socket/websocket", params={"vsn": "2.0.0"}) as first:
            header = first.response.headers["set-cookie"]
            assert header.startswith(f"{COOKIE}=")
            attributes = {a.strip().lower() for a in header.split(";")[1:]}
            assert {"httponly", "samesite=lax", "path=/"} <= attributes
            assert "secure" not in attributes  # plain HTTP here: Secure only over HTTPS
            person = session_cookie(first.response)
        async with chat.http.websocket(
            "/socket/websocket", params={"vsn": "2.0.0"}, cookies={COOKIE: person or ""}
        ) as again:
            assert session_cookie(again.response) is None  # the same person: nothing new
        assert (await chat.http.get("/")).headers.get("set-cookie") is None  # the page: none


async def test_another_person_cannot_take_a_held_nick(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        mallory = await chat.new_person()
        async with chat.connect(mallory) as socket:
            with pytest.raises(JoinRefused) as refused:
                await socket.channel("chat", {"nick": "ada"}).join()
            assert refused.value.reason == "nick_taken" and "ada" in refused.value.response["text"]
            with pytest.raises(JoinRefused) as no_nick:  # no nick: no room, no message
                await socket.channel("room:lobby").join()
            assert no_nick.value.reason == "hello_first"
            await socket.channel("chat", {"nick": "mallory"}).join()  # another nick is fine
            lobby = socket.channel("room:lobby")
            await lobby.join()
            ada_lobby = ada.room("lobby")
            await ada_lobby.join()
            await presence_is(ada_lobby, [("ada", 1), ("mallory", 1)])
            async with ada_lobby.messages("new_msg") as seen:
                await post(lobby, "hi")
                assert (await seen.receive()).payload["nick"] == "mallory"


async def test_the_same_person_in_two_tabs_is_one_presence_entry(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as tab1:
        lobby1 = tab1.room("lobby")
        await lobby1.join()
        async with chat.person("ada", tab1.cookie) as tab2, chat.person("bob") as bob:
            assert tab2.reply["nick"] == "ada"  # hers: shared by her tabs
            lobby2, bob_lobby = tab2.room("lobby"), bob.room("lobby")
            await lobby2.join()
            await bob_lobby.join()
            for room in (lobby1, lobby2, bob_lobby):
                await presence_is(room, [("ada", 2), ("bob", 1)])
            async with lobby1.messages("new_msg") as seen1, lobby2.messages("new_msg") as seen2:
                await post(bob_lobby, "hi ada")
                await post(lobby1, "from tab 1")
                for seen in (seen1, seen2):
                    texts = [(await seen.receive()).payload["text"] for _ in range(2)]
                    assert texts == ["hi ada", "from tab 1"]
        # One tab left: ada is still there with one connection; bob is gone.
        await presence_is(lobby1, [("ada", 1)])
        assert await nick_of(chat, await chat.new_person(), "ada") == "nick_taken"


async def test_a_nick_is_held_a_while_then_free(tmp_path: Path, autojump_clock: Any) -> None:
    hold = Chat.nick_hold
    async with open_chat(tmp_path) as chat:
        ada, bob = await chat.new_person(), await chat.new_person()
        assert await nick_of(chat, ada, "ada") == "ok"  # then her socket closes
        await trio.sleep(hold - 1)  # gone, but held: her tab may be reconnecting
        assert await nick_of(chat, bob, "ada") == "nick_taken"
        assert await nick_of(chat, ada, "ada") == "ok"  # hers: she came back
        await trio.sleep(hold - 1)
        assert await nick_of(chat, bob, "ada") == "nick_taken"  # the hold started again
        await trio.sleep(2)
        assert await nick_of(chat, bob, "ada") == "ok"
        assert await nick_of(chat, ada, "ada") == "nick_taken"  # bob's now


async def test_leaving_chat_starts_the_hold(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada", timeout=PATIENT) as ada:
        bob = await chat.new_person()
        await ada.chat.leave()  # the socket stays open
        assert await nick_of(chat, bob, "ada") == "nick_taken"
        await trio.sleep(Chat.nick_hold + 1)
        assert await nick_of(chat, bob, "ada") == "ok"
        again = ada.socket.channel("chat", {"nick": "ada"})
        with pytest.raises(JoinRefused) as refused:
            await again.join()
        assert refused.value.reason == "nick_taken"


async def test_after_leaving_chat_a_connection_cannot_post_as_its_old_nick(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with (
        open_chat(tmp_path) as chat,
        chat.person("ada", timeout=PATIENT, heartbeat=None) as ada,
        chat.person("bob", timeout=PATIENT, heartbeat=None) as bob,
    ):
        lobby, bob_lobby = ada.room("lobby"), bob.room("lobby")
        await lobby.join()
        await bob_lobby.join()
        await ada.chat.leave()  # ada's nick is released; her lobby join stays
        await trio.sleep(Chat.nick_hold + 1)
        async with chat.person("ada", timeout=PATIENT, heartbeat=None) as other:
            assert other.reply["nick"] == "ada"  # another person holds "ada" now
            with pytest.raises(PushError) as refused:
                await post(lobby, "I am ada")
            assert refused.value.reason == "hello_first"  # no nick on this connection now
            assert await history(bob_lobby, before=10) == []  # nothing was posted


async def test_forged_cookies_are_new_persons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_SECRET", "the-key-of-another-deployment-0123")
    async with open_chat(tmp_path / "elsewhere") as elsewhere:
        foreign = await elsewhere.new_person()  # valid, but signed with another key
    monkeypatch.setenv("CHAT_SECRET", SECRET)
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        value = ada.cookie
        flip = {"A": "B"}
        forged = [
            # another signature: a character inside it (the last one may carry
            # base64 padding bits that decode to the same bytes)
            value[: value.rindex(".") + 3]
            + flip.get(value[value.rindex(".") + 3], "A")
            + value[value.rindex(".") + 4 :],
            flip.get(value[0], "A") + value[1:],  # another sid under her signature
            foreign,
            "garbage",
        ]
        for cookie in forged:
            async with chat.http.websocket(
                "/socket/websocket", params={"vsn": "2.0.0"}, cookies={COOKIE: cookie}
            ) as ws:
                new = session_cookie(ws.response)
                assert new is not None and new not in (cookie, value)  # a new session
            assert await nick_of(chat, cookie, "ada") == "nick_taken"
        assert await nick_of(chat, value, "ada") == "ok"  # the real one is still hers


async def test_foreign_origins_are_refused(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        with pytest.raises(HandshakeError) as refused:
            async with chat.connect(None, headers={"origin": "http://evil.example"}):
                pass
        assert refused.value.status == 403
        async with chat.connect(None, headers={"origin": "http://testserver"}) as page:
            assert (await page.channel("chat", {"nick": "ada"}).join())["nick"] == "ada"


async def test_keys_come_from_chat_secret_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_SECRET", OLD_SECRET)
    async with open_chat(tmp_path) as before:
        person = await before.new_person()  # a cookie signed before the rotation
    monkeypatch.setenv("CHAT_SECRET", f"{SECRET},{OLD_SECRET}")
    async with open_chat(tmp_path) as chat:
        assert await chat.handshake(person) is None  # still valid: the old key is listed
        async with chat.person("ada", person):
            assert await nick_of(chat, person, "ada") == "ok"  # one person, two sockets
            assert await nick_of(chat, await chat.new_person(), "ada") == "nick_taken"
    monkeypatch.setenv("CHAT_SECRET", SECRET)  # the old key dropped: a new person
    async with open_chat(tmp_path) as chat:
        assert await chat.handshake(person) is not None


async def test_without_chat_secret_one_warning_and_a_key_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CHAT_SECRET")
    with caplog.at_level(logging.WARNING):
        async with open_chat(tmp_path) as one:
            person = await one.new_person()
            async with one.person("ada", person):
                assert await nick_of(one, person, "ada") == "ok"
    warnings = [r.getMessage() for r in caplog.records if "CHAT_SECRET" in r.getMessage()]
    assert len(warnings) == 1, warnings
    async with open_chat(tmp_path) as two:  # another process, another key: not her any more
        assert await two.handshake(person) is not None


async def test_a_reconnecting_tab_keeps_its_nick(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        async with ada.chat.joins() as joins:
            await chat.connector.drop_all()  # her connection drops; the client reconnects
            rejoined = await joins.receive()
            assert rejoined.rejoin and rejoined.response["nick"] == "ada"
        assert await nick_of(chat, await chat.new_person(), "ada") == "nick_taken"


# -- with Redis ---------------------------------------------------------------------


class QuickChat(Chat):
    nick_hold = 0.5


async def test_redis_nodes_share_the_claims(tmp_path: Path, redis_url: str) -> None:
    async with (
        open_chat(tmp_path / "one", Config(redis_url=redis_url)) as one,
        open_chat(tmp_path / "two", Config(redis_url=redis_url)) as two,
        one.person("ada") as ada,
    ):
        mallory = await two.new_person()
        assert await nick_of(two, mallory, "ada") == "nick_taken"  # held on node one
        async with two.person("ada", ada.cookie) as tab2:  # her, on node two
            assert await nick_of(one, mallory, "ada") == "nick_taken"
            lobby1, lobby2 = ada.room("lobby"), tab2.room("lobby")
            await lobby1.join()
            await lobby2.join()
            for room in (lobby1, lobby2):  # ada once, with a connection on each node
                await presence_is(room, [("ada", 2)])
    # ada left both nodes (they are gone too): the hold is in Redis, for a new node too.
    async with open_chat(tmp_path / "three", Config(redis_url=redis_url)) as three:
        assert await nick_of(three, mallory, "ada") == "nick_taken"


async def test_redis_claims_lapse_after_the_hold(tmp_path: Path, redis_url: str) -> None:
    async with open_chat(tmp_path, Config(redis_url=redis_url), app=QuickChat) as chat:
        ada, bob = await chat.new_person(), await chat.new_person()
        assert await nick_of(chat, ada, "ada") == "ok"
        assert await nick_of(chat, bob, "ada") == "nick_taken"
        with trio.fail_after(10):  # without the release, the claim would live 15 s (3 beats)
            while await nick_of(chat, bob, "ada") != "ok":
                await trio.sleep(QuickChat.nick_hold / 4)
