"""Protocol tests of examples/chat (no browser): history, resume, limits, bad input, Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from examples.chat import app as chat_app
from examples.chat import store as chat_store
from examples.chat.app import Chat, valid_nick
from peregrine_rt import ConnectionClosed
from peregrine_rt.testing import Client, ClientWebSocket, WebSocketClosed, open_client


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with open_client(Chat) as client:
        yield client


async def hello(ws: ClientWebSocket, nick: str, **fields: Any) -> dict[str, Any]:
    """Say hello; the welcome (the histories and presence events follow)."""
    await ws.send_json({"type": "hello", "nick": nick, **fields})
    welcome = await ws.receive_json()
    assert welcome["type"] == "welcome", welcome
    return welcome  # type: ignore[no-any-return]


async def receive(ws: ClientWebSocket, kind: str) -> dict[str, Any]:
    """The next message of type ``kind``, skipping the others."""
    while True:
        data = await ws.receive_json()
        if data["type"] == kind:
            return data  # type: ignore[no-any-return]


def cookies_of(ws: ClientWebSocket) -> dict[str, str]:
    """The session cookie the handshake of ``ws`` set: a socket sending it is the same person."""
    name, _, rest = ws.response.headers["set-cookie"].partition("=")
    return {name: rest.split(";", 1)[0]}


async def say(ws: ClientWebSocket, text: str, room: str = "lobby") -> dict[str, Any]:
    await ws.send_json({"type": "say", "room": room, "text": text})
    return await receive(ws, "message")


async def test_the_page_is_served(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert "<title>peregrine chat</title>" in page.text
    script = await client.get("/app.js")
    assert "text/javascript" in script.headers["content-type"]


async def test_hello_history_and_messages(client: Client) -> None:
    async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
        welcome = await hello(ada, "ada")
        assert welcome["rooms"] == ["lobby"] and welcome["limits"]["text"] == 2000
        assert await ada.receive_json() == {
            "type": "history",
            "room": "lobby",
            "messages": [],
            "resumed": False,
        }
        first = await say(ada, "hi <img src=x onerror=alert(1)>")
        assert first["text"] == "hi <img src=x onerror=alert(1)>"  # as sent: the client shows text
        assert first["nick"] == "ada" and isinstance(first["ts"], int)
        second = await say(ada, "again")
        assert second["id"] == first["id"] + 1
        await hello(bob, "bob")
        history = await receive(bob, "history")
        assert [m["id"] for m in history["messages"]] == [first["id"], second["id"]]
        while (presence := await receive(ada, "presence"))["nick"] != "bob":
            pass
        assert presence["online"] == ["ada", "bob"]


async def test_history_is_the_last_100(client: Client) -> None:
    async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
        await hello(ada, "ada")
        ada_store = client.app.store
        for i in range(130):
            await ada_store.post("lobby", "ada", f"m{i}")
        await hello(bob, "bob")
        history = await receive(bob, "history")
        assert [m["text"] for m in history["messages"]] == [f"m{i}" for i in range(30, 130)]


async def test_resume_by_last_id_gets_exactly_what_was_missed(client: Client) -> None:
    async with client.websocket("/ws") as ada:
        await hello(ada, "ada")
        seen = [await say(ada, f"m{i}") for i in range(3)]
        ada_cookies = cookies_of(ada)
    async with client.websocket("/ws") as bob:
        await hello(bob, "bob")
        for i in range(3, 6):
            await say(bob, f"m{i}")
    async with client.websocket("/ws", cookies=ada_cookies) as ada:  # ada again
        await hello(ada, "ada", rooms=["lobby"], since={"lobby": seen[-1]["id"]})
        history = await receive(ada, "history")
        assert history["resumed"] is True
        assert [m["text"] for m in history["messages"]] == ["m3", "m4", "m5"]
        # and live from there, nothing twice
        assert (await say(ada, "m6"))["id"] == history["messages"][-1]["id"] + 1


async def test_messages_during_a_join_come_once_in_order(client: Client) -> None:
    async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
        await hello(ada, "ada")
        await receive(ada, "history")

        async def chatter() -> None:
            for i in range(40):
                await client.app.store.post("lobby", "ada", f"c{i}")
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(chatter)
            await hello(bob, "bob")
        got: list[int] = [m["id"] for m in (await receive(bob, "history"))["messages"]]
        while len(got) < 40:
            got.append((await receive(bob, "message"))["id"])
        assert got == list(range(got[0], got[0] + 40))
        await bob.assert_no_message()


async def test_rooms_create_join_leave_and_list(client: Client) -> None:
    async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
        await hello(ada, "ada")
        await hello(bob, "bob")
        await ada.send_json({"type": "create", "room": "dev"})
        assert (await receive(bob, "rooms"))["rooms"] == ["dev", "lobby"]
        assert (await receive(ada, "history"))["room"] in ("lobby", "dev")
        await bob.send_json({"type": "join", "room": "nope"})
        assert (await receive(bob, "error"))["code"] == "no_such_room"
        await bob.send_json({"type": "join", "room": "dev"})
        while (history := await receive(bob, "history"))["room"] != "dev":
            pass
        await say(ada, "dev talk", room="dev")
        message = await receive(bob, "message")
        assert (message["room"], message["text"]) == ("dev", "dev talk")
        await bob.send_json({"type": "leave", "room": "dev"})
        assert await receive(bob, "left") == {"type": "left", "room": "dev"}
        await bob.send_json({"type": "say", "room": "dev", "text": "x"})
        assert (await receive(bob, "error"))["code"] == "not_in_room"
        await bob.send_json({"type": "rooms"})
        assert (await receive(bob, "rooms"))["rooms"] == ["dev", "lobby"]
        assert history["messages"] == []


async def test_typing_goes_to_the_room(client: Client) -> None:
    async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
        await hello(ada, "ada")
        await hello(bob, "bob")
        await bob.send_json({"type": "typing", "room": "lobby"})
        while (event := await ada.receive_json())["type"] != "typing":
            pass
        assert event == {"type": "typing", "room": "lobby", "nick": "bob"}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ([1, 2], "bad_message"),
        ({"no": "type"}, "bad_message"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "say", "room": "lobby", "text": "x" * 2001}, "too_long"),
        ({"type": "say", "room": "lobby", "text": "   "}, "empty"),
        ({"type": "join", "room": "no spaces"}, "bad_room"),
        ({"type": "join", "room": "lobby", "since": "yesterday"}, "bad_message"),
        ({"type": "hello", "nick": "again"}, "bad_message"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_stays(
    client: Client, message: Any, code: str
) -> None:
    async with client.websocket("/ws") as ada:
        await hello(ada, "ada")
        await ada.send_json(message)
        error = await receive(ada, "error")
        assert error["code"] == code and error["text"]
        assert (await say(ada, "still here"))["text"] == "still here"


async def test_hello_comes_first(client: Client) -> None:
    async with client.websocket("/ws") as ada:
        await ada.send_json({"type": "say", "room": "lobby", "text": "hi"})
        assert (await ada.receive_json())["code"] == "hello_first"


@pytest.mark.parametrize("nick", ["", " ada", "ada ", "a" * 25, "a  b", "<b>", 42, None])
async def test_bad_nicks_are_refused(client: Client, nick: Any) -> None:
    assert not valid_nick(nick)
    async with client.websocket("/ws") as ws:
        await ws.send_json({"type": "hello", "nick": nick})
        assert (await ws.receive_json())["code"] == "bad_nick"


@pytest.mark.parametrize("nick", ["a", "ada lovelace", "x-y_z", "Zoë", "a" * 24])
def test_good_nicks(nick: str) -> None:
    assert valid_nick(nick)


async def test_not_json_closes_1007(client: Client) -> None:
    async with client.websocket("/ws") as ws:
        await ws.send("{not json")
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive()
        assert closed.value.code == 1007


async def test_rate_limit_error_then_close_1008(client: Client, autojump_clock: Any) -> None:
    async with client.websocket("/ws") as ada:
        await hello(ada, "ada")
        for i in range(chat_app.BURST - 1):  # hello took one token
            await ada.send_json({"type": "say", "room": "lobby", "text": f"m{i}"})
        await ada.send_json({"type": "say", "room": "lobby", "text": "too fast"})
        error = await receive(ada, "error")
        assert error["code"] == "rate_limited" and "at most 5 a second" in error["text"]
        await trio.sleep(1)  # five more tokens: back within the limit
        assert (await say(ada, "calm"))["text"] == "calm"
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(30):
                await ada.send_json({"type": "say", "room": "lobby", "text": "spam"})
                await trio.sleep(0.01)
        assert (closed.value.code, closed.value.reason) == (1008, "too many messages")


async def test_presence_leave_on_close(client: Client) -> None:
    async with client.websocket("/ws") as ada:
        await hello(ada, "ada")
        async with client.websocket("/ws") as bob:
            await hello(bob, "bob")
            while (await receive(ada, "presence"))["online"] != ["ada", "bob"]:
                pass
        leave = await receive(ada, "presence")
        assert (leave["event"], leave["nick"], leave["online"]) == ("leave", "bob", ["ada"])


def test_ids_keep_growing_across_a_restart() -> None:
    async def first_id() -> int:
        async with open_client(Chat) as client, client.websocket("/ws") as ws:
            await hello(ws, "ada")
            return int((await say(ws, "x"))["id"])

    before = trio.run(first_id)
    assert trio.run(first_id) > before


# -- with Redis ---------------------------------------------------------------------


async def test_redis_store_two_nodes_agree(redis_url: str) -> None:
    async with (
        open_client(Chat, redis_url=redis_url) as one,
        open_client(Chat, redis_url=redis_url) as two,
    ):
        assert isinstance(one.app.store, chat_store.RedisStore)
        async with one.websocket("/ws") as ada, two.websocket("/ws") as bob:
            await hello(ada, "ada")
            await hello(bob, "bob")
            while (await receive(ada, "presence"))["online"] != ["ada", "bob"]:
                pass
            sent = [await say(ada, f"a{i}") for i in range(5)]
            got = [await receive(bob, "message") for _ in range(5)]
            assert got == sent
            assert [m["id"] for m in sent] == list(range(sent[0]["id"], sent[0]["id"] + 5))
            reply = await say(bob, "from two")
            assert await receive(ada, "message") == reply
        for app in (one.app, two.app):
            history = await app.store.history("lobby", None)
            assert [m["text"] for m in history] == ["a0", "a1", "a2", "a3", "a4", "from two"]
            since = await app.store.history("lobby", sent[2]["id"])
            assert [m["text"] for m in since] == ["a3", "a4", "from two"]


async def test_redis_presence_of_a_dead_node_expires(redis_url: str) -> None:
    async with open_client(Chat, redis_url=redis_url) as one:
        store = one.app.store
        # A node that vanished without a goodbye: its entry, no liveness key.
        await store._client.hset(store._key("p:", "lobby"), {"deadbeef:1": "ghost"})
        assert await store.online("lobby") == []
        async with one.websocket("/ws") as ada:
            await hello(ada, "ada")
            assert (await receive(ada, "presence"))["online"] == ["ada"]


async def test_redis_history_trims_and_resumes_newest(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_store, "MAX_RESUME", 3)
    async with open_client(Chat, redis_url=redis_url) as one:
        store = one.app.store
        ids = [await store.post("lobby", "ada", f"m{i}") for i in range(6)]
        resumed = await store.history("lobby", ids[0])
        assert [m["text"] for m in resumed] == ["m3", "m4", "m5"]


async def test_a_gap_in_ids_asks_for_a_resync(client: Client) -> None:
    # What a node sees when its link to Redis dropped for a while.
    async with client.websocket("/ws") as ada:
        await hello(ada, "ada")
        last = (await say(ada, "before"))["id"]
        assert await receive(ada, "sent") == {
            "type": "sent",
            "room": "lobby",
            "id": last,
            "ref": None,
        }
        skipped = {"type": "message", "id": last + 2, "room": "lobby", "nick": "x", "text": "y"}
        client.app.hub.publish_local("chat.msg:lobby", chat_store.dumps(skipped))
        assert await ada.receive_json() == {"type": "resync", "room": "lobby", "since": last}
        assert (await ada.receive_json())["id"] == last + 2
        await ada.send_json({"type": "join", "room": "lobby", "since": last})
        history = await receive(ada, "history")
        assert history["resumed"] and history["messages"] == []  # the store never had it


# -- the tutorial's first steps -------------------------------------------------------


async def test_step_bare_chat() -> None:
    from examples.chat.steps import BareChat

    async with open_client(BareChat) as client:
        assert (await client.get("/")).status == 404
        async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
            await ada.send("hi")
            assert await bob.receive() == "hi"
            assert await ada.receive() == "hi"


async def test_step_room_chat() -> None:
    from examples.chat.steps import RoomChat

    async with open_client(RoomChat) as client:
        assert (await client.get("/")).status == 200
        async with client.websocket("/ws") as ada, client.websocket("/ws") as bob:
            await ada.send_json({"type": "hello", "nick": "ada"})
            await bob.send_json({"type": "hello", "nick": "bob"})
            await ada.send_json({"type": "say", "text": "hi"})
            expected = {"type": "message", "nick": "ada", "text": "hi"}
            assert await bob.receive_json() == expected
