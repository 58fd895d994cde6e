"""Protocol tests of examples/chat on Channels (no browser): rooms, messages, history, recovery.

The chat speaks Phoenix Channels V2 (docs/channels/protocol.rst): a client
joins ``chat`` with its nick, then ``room:<name>`` topics, and pushes
``new_msg``, ``typing`` and ``history`` there (the spec is the module docs of
``examples/chat/app.py``).  These tests drive the app's real server over
memory streams with the Python client (``peregrine_rt.client``), as the
browser's peregrine.js would: a person is the ``chat_session`` cookie the
first handshake sets, sent again on every connection of that person.

The helpers here (:func:`open_chat`, :class:`ChatServer`, :class:`Raw`) are
shared with ``test_chat_identity.py`` and ``tests/hostile/test_chat_limits.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from examples.chat.app import Chat
from peregrine_rt import Config
from peregrine_rt.client import (
    Backoff,
    Channel,
    JoinRefused,
    Message,
    PushError,
    Socket,
    open_socket,
)
from peregrine_rt.testing import (
    ChannelsConnector,
    Client,
    ClientResponse,
    ClientWebSocket,
    WebSocketClosed,
    open_channels_connector,
    open_client,
    wait_until,
)
from peregrine_rt.testing._channels import TEST_URL

SECRET = "a-test-secret-of-the-chat-0123456789"
FAST = Backoff(initial=0.01, maximum=0.1)
PATIENT = 1e6  # a reply timeout the autojump clock never reaches while SQLite works in a thread
COOKIE = "chat_session"


@pytest.fixture(autouse=True)
def chat_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same keys for every server of a test (a restart keeps the people)."""
    monkeypatch.setenv("CHAT_SECRET", SECRET)


# -- helpers (shared with the other chat test modules) ------------------------------------


def session_cookie(response: ClientResponse) -> str | None:
    """The value of the ``chat_session`` cookie ``response`` sets (None if it sets none)."""
    for header in response.headers.getlist("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == COOKIE:
            return rest.split(";", 1)[0]
    return None


@dataclass
class Person:
    """One connection of a person who joined ``chat`` (``socket``, ``chat``, the join's reply)."""

    socket: Socket
    chat: Channel
    reply: Any
    cookie: str

    def room(self, name: str) -> Channel:
        return self.socket.channel(f"room:{name}")


@dataclass
class ChatServer:
    """A chat served in memory: ``http`` (the raw test client) and ``connector`` (the client's)."""

    http: Client
    connector: ChannelsConnector
    directory: Path

    @property
    def app(self) -> Any:
        return self.http.app

    async def handshake(self, cookie: str | None = None) -> str | None:
        """The ``chat_session`` cookie a handshake sending ``cookie`` sets (None: it sets none)."""
        cookies = {COOKIE: cookie} if cookie is not None else None
        async with self.http.websocket(
            "/socket/websocket", params={"vsn": "2.0.0"}, cookies=cookies
        ) as ws:
            return session_cookie(ws.response)

    async def new_person(self) -> str:
        """A new person: the session cookie a first handshake sets."""
        cookie = await self.handshake()
        assert cookie, "the handshake set no chat_session cookie"
        return cookie

    def connect(
        self,
        cookie: str | None,
        *,
        connect: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[Socket]:
        """A client socket sending ``cookie`` on each of its connections (as a browser does)."""
        headers = dict(options.pop("headers", {}))
        if cookie:
            headers["cookie"] = f"{COOKIE}={cookie}"
        options.setdefault("backoff", FAST)
        return open_socket(
            TEST_URL + "/socket", headers=headers, connect=connect or self.connector, **options
        )

    @asynccontextmanager
    async def person(
        self, nick: str, cookie: str | None = None, **options: Any
    ) -> AsyncIterator[Person]:
        """A socket of ``cookie``'s person (default: a new one) that joined ``chat`` as ``nick``."""
        cookie = cookie or await self.new_person()
        async with self.connect(cookie, **options) as socket:
            chat = socket.channel("chat", {"nick": nick})
            reply = await chat.join()
            yield Person(socket, chat, reply, cookie)


@asynccontextmanager
async def open_chat(
    directory: Path, config: Config | None = None, *, app: type[Chat] = Chat
) -> AsyncIterator[ChatServer]:
    """``app(data_dir=directory)`` (a :class:`Chat`) served in memory for the block.

    The server sends no pings unless ``config`` says otherwise: under the
    autojump clock, virtual time leaps while a handler waits for SQLite's
    thread, the unread pong then looks late, and the server drops the socket.
    """
    config = config or Config(ws_ping_interval=None)
    async with (
        open_client(app(data_dir=directory), config) as http,
        open_channels_connector(http.server) as connector,
    ):
        assert connector is not None
        yield ChatServer(http, connector, directory)


@dataclass
class Raw:
    """Phoenix frames by hand over the test client's WebSocket (for what no client sends)."""

    ws: ClientWebSocket
    refs: int = 0
    others: list[list[Any]] = field(default_factory=list)

    async def send(
        self, topic: str, event: str, payload: Any = None, join_ref: str | None = None
    ) -> str:
        self.refs += 1
        ref = str(self.refs)
        await self.ws.send(
            json.dumps([join_ref, ref, topic, event, {} if payload is None else payload])
        )
        return ref

    async def reply_to(self, ref: str) -> tuple[str, Any]:
        """``(status, response)`` of the reply to ``ref``; other frames go to ``others``."""
        while True:
            frame = await self.ws.receive_json()
            if frame[3] == "phx_reply" and frame[1] == ref:
                return frame[4]["status"], frame[4]["response"]
            self.others.append(frame)

    async def call(
        self, topic: str, event: str, payload: Any = None, join_ref: str | None = None
    ) -> tuple[str, Any]:
        return await self.reply_to(await self.send(topic, event, payload, join_ref))

    async def join(self, topic: str, payload: Any = None) -> str:
        """Join ``topic``; its join_ref."""
        ref = await self.send(topic, "phx_join", payload, join_ref=str(self.refs + 1))
        status, response = await self.reply_to(ref)
        assert status == "ok", response
        return ref

    async def closed(self) -> tuple[int, str]:
        """Read (and keep) frames until the server closes; its close code and reason."""
        while True:
            try:
                self.others.append(json.loads(await self.ws.receive()))
            except WebSocketClosed as closed:
                return closed.code, closed.reason


@asynccontextmanager
async def open_raw(server: ChatServer, **options: Any) -> AsyncIterator[Raw]:
    async with server.http.websocket("/socket/websocket", params={"vsn": "2.0.0"}, **options) as ws:
        yield Raw(ws)


async def receive(messages: trio.MemoryReceiveChannel[Message], event: str) -> Message:
    """The next message of ``event``, skipping others."""
    async for message in messages:
        if message.event == event:
            return message
    raise AssertionError(f"the channel closed before a {event!r}")


async def post(room: Channel, text: str, **fields: Any) -> int:
    """Send a message; its id from the ack."""
    ack = await room.push("new_msg", {"text": text, **fields})
    assert isinstance(ack["id"], int), ack
    return int(ack["id"])


def presence_of(room: Channel) -> list[tuple[str, int]]:
    """``room``'s presence as the client sees it: (nick, connections), by nick."""
    return sorted((entry.key, len(entry.metas)) for entry in room.presence.list())


async def presence_is(room: Channel, expected: list[tuple[str, int]]) -> None:
    await wait_until(lambda: presence_of(room) == expected, message=f"presence {expected}")


async def history(room: Channel, **query: Any) -> list[dict[str, Any]]:
    reply = await room.push("history", query)
    messages: list[dict[str, Any]] = reply["messages"]
    return messages


# -- serving ------------------------------------------------------------------------


async def test_the_page_and_the_clients_are_served(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat:
        page = await chat.http.get("/")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        script = await chat.http.get("/app.js")
        assert script.status == 200 and "javascript" in script.headers["content-type"]
        assert "no-cache" in script.headers["cache-control"]
        library = await chat.http.get("/_peregrine/peregrine.js")
        assert library.status == 200 and "export class Socket" in library.text
        assert (await chat.http.get("/../app.py")).status == 404
        assert (await chat.http.get("/nothing-here.js")).status == 404


# -- chat: the nick ------------------------------------------------------------------


async def test_joining_chat_answers_the_nick_the_rooms_and_the_limits(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        assert ada.reply == {
            "nick": "ada",
            "rooms": ["lobby"],
            "limits": {"text": 2000, "rate": 5, "burst": 10},
        }


BAD_NICKS = ["", " ada", "ada ", "a" * 25, "a  b", "<b>", "a\tb", "a/b", 42, None, ["ada"]]


@pytest.mark.parametrize("nick", BAD_NICKS)
async def test_bad_nicks_are_refused(tmp_path: Path, nick: Any) -> None:
    async with open_chat(tmp_path) as chat, chat.connect(await chat.new_person()) as socket:
        with pytest.raises(JoinRefused) as refused:
            await socket.channel("chat", {"nick": nick}).join()
        assert refused.value.reason == "bad_nick" and refused.value.response["text"]
        with pytest.raises(JoinRefused) as no_nick:
            await socket.channel("chat", {}).join()
        assert no_nick.value.reason == "bad_nick"
        assert (await socket.channel("chat", {"nick": "ada"}).join())["nick"] == "ada"


@pytest.mark.parametrize("nick", ["a", "ada lovelace", "x-y_z", "Zoë", "a" * 24, "007"])
async def test_good_nicks_are_taken(tmp_path: Path, nick: str) -> None:
    async with open_chat(tmp_path) as chat, chat.person(nick) as person:
        assert person.reply["nick"] == nick


# -- rooms -------------------------------------------------------------------------


async def test_a_room_needs_the_chat_joined_first(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.connect(await chat.new_person()) as socket:
        with pytest.raises(JoinRefused) as refused:
            await socket.channel("room:lobby").join()
        assert refused.value.reason == "hello_first" and refused.value.response["text"]
        await socket.channel("chat", {"nick": "ada"}).join()
        assert (await socket.channel("room:lobby").join())["room"] == "lobby"


@pytest.mark.parametrize("name", ["no spaces", "a" * 33, "a/b", "<b>", "dev.ops", "é/../x"])
async def test_bad_room_names_are_refused(tmp_path: Path, name: str) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        with pytest.raises(JoinRefused) as refused:
            await ada.room(name).join()
        assert refused.value.reason == "bad_room"
        assert (await ada.room("a" * 32).join())["room"] == "a" * 32


async def test_joining_a_room_creates_it_and_everyone_gets_the_list(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada, chat.person("bob") as bob:
        async with bob.chat.messages("rooms") as lists:
            joined = await ada.room("dev").join()
            assert joined["room"] == "dev"
            assert isinstance(joined["epoch"], str) and joined["offset"] == 0
            assert sorted((await lists.receive()).payload["rooms"]) == ["dev", "lobby"]
            await bob.room("dev").join()  # it exists now: nothing new to list
            await ada.room("ops").join()
            assert sorted((await lists.receive()).payload["rooms"]) == ["dev", "lobby", "ops"]
        async with chat.person("cy") as cy:  # a newcomer gets the list in its reply
            assert sorted(cy.reply["rooms"]) == ["dev", "lobby", "ops"]


# -- messages ----------------------------------------------------------------------


async def test_messages_are_acked_with_their_id_and_broadcast_verbatim(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada, chat.person("bob") as bob:
        ada_lobby, bob_lobby = ada.room("lobby"), bob.room("lobby")
        async with (
            ada_lobby.messages("new_msg") as ada_sees,
            bob_lobby.messages("new_msg") as bob_sees,
        ):
            await ada_lobby.join()
            await bob_lobby.join()
            attack = "hi <img src=x onerror=alert(1)> & </script>"
            before = int(time.time() * 1000)
            first = await post(ada_lobby, attack, ref="c1")
            second = await post(ada_lobby, "again", ref=7)
            third = await post(bob_lobby, "no ref")
            assert [second, third] == [first + 1, first + 2]
            for sees in (ada_sees, bob_sees):  # the sender included
                got = [await sees.receive() for _ in range(3)]
                assert [m.offset for m in got] == [first, second, third]
                one, two, three = (m.payload for m in got)
                assert (one["nick"], one["text"], one["ref"]) == ("ada", attack, "c1")
                assert before - 60_000 <= one["ts"] <= int(time.time() * 1000) + 60_000
                assert isinstance(one["ts"], int)
                assert (two["text"], two["ref"]) == ("again", 7)
                assert (three["nick"], three["text"]) == ("bob", "no ref")
                assert "ref" not in three
            stored = await history(bob_lobby, before=third + 1)
            assert [(m["id"], m["nick"], m["text"]) for m in stored] == [
                (first, "ada", attack),  # kept as sent: the browser sets it with textContent
                (second, "ada", "again"),
                (third, "bob", "no ref"),
            ]
            assert stored[0]["ref"] == "c1" and stored[0]["ts"] == one["ts"]


async def test_messages_stay_in_their_room(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada, chat.person("bob") as bob:
        ada_dev, bob_lobby, bob_dev = ada.room("dev"), bob.room("lobby"), bob.room("dev")
        async with bob_lobby.messages("new_msg") as lobby, bob_dev.messages("new_msg") as dev:
            await bob_lobby.join()
            await bob_dev.join()
            await ada_dev.join()
            await post(ada_dev, "dev talk")
            assert (await dev.receive()).payload["text"] == "dev talk"
            await bob_dev.leave()
            await post(ada_dev, "after bob left")
            await post(bob_lobby, "lobby talk")
            assert (await lobby.receive()).payload["text"] == "lobby talk"  # nothing of dev


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty"), ("   \n\t ", "empty"), ("x" * 2001, "too_long"), (None, "empty")],
)
async def test_empty_and_too_long_messages_are_refused(
    tmp_path: Path, text: Any, reason: str
) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        lobby = ada.room("lobby")
        async with lobby.messages("new_msg") as sees:
            await lobby.join()
            with pytest.raises(PushError) as refused:
                await lobby.push("new_msg", {"text": text})
            assert refused.value.response["reason"] == reason
            assert refused.value.response["text"]
            ok = await post(lobby, "x" * 2000)  # the longest allowed
            message = await sees.receive()  # the refused one never came
            assert (message.offset, len(message.payload["text"])) == (ok, 2000)


async def test_typing_goes_to_the_others_only_and_is_not_kept(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada, chat.person("bob") as bob:
        ada_lobby, bob_lobby = ada.room("lobby"), bob.room("lobby")
        async with (
            ada_lobby.messages("new_msg", "typing") as ada_sees,
            bob_lobby.messages("new_msg", "typing") as bob_sees,
        ):
            await ada_lobby.join()
            await bob_lobby.join()
            await ada_lobby.push("typing", {})
            sent = await post(ada_lobby, "hi")
            typing, message = await bob_sees.receive(), await bob_sees.receive()
            assert (typing.event, typing.payload, typing.offset) == (
                "typing",
                {"nick": "ada"},
                None,
            )
            assert (message.event, message.offset) == ("new_msg", sent)
            assert (await ada_sees.receive()).event == "new_msg"  # its own typing never came
            assert [m["id"] for m in await history(bob_lobby, before=sent + 1)] == [sent]
            assert sent == 1  # typing took no offset


async def test_typing_is_relayed_once_a_second_per_connection(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with (
        open_chat(tmp_path) as chat,
        chat.person("ada", timeout=PATIENT, heartbeat=None) as ada,
        chat.person("bob", timeout=PATIENT, heartbeat=None) as bob,
    ):
        ada_lobby, bob_lobby = ada.room("lobby"), bob.room("lobby")
        async with bob_lobby.messages("new_msg", "typing") as bob_sees:
            await ada_lobby.join()
            await bob_lobby.join()
            for _ in range(3):
                await ada_lobby.push("typing", {})  # answered, relayed once
            await bob_lobby.push("typing", {})  # another connection: its own allowance
            await trio.sleep(1)
            await ada_lobby.push("typing", {})  # a second later: relayed again
            await trio.sleep(1)
            await ada_lobby.push("new_msg", {"text": "done"})
            got = [await bob_sees.receive() for _ in range(3)]
            assert [(m.event, m.payload.get("nick")) for m in got] == [
                ("typing", "ada"),
                ("typing", "ada"),
                ("new_msg", "ada"),
            ]


# -- history -------------------------------------------------------------------------


async def test_history_first_page_then_older(tmp_path: Path, autojump_clock: Any) -> None:
    async with (
        open_chat(tmp_path) as chat,
        chat.person("ada", timeout=PATIENT, heartbeat=None) as ada,
        chat.person("bob", timeout=PATIENT, heartbeat=None) as bob,
    ):
        lobby = ada.room("lobby")
        await lobby.join()
        ids = []
        for i in range(130):
            await trio.sleep(0.2)  # within the rate limit
            ids.append(await post(lobby, f"m{i}"))
        assert ids == list(range(1, 131))
        page = bob.room("lobby")
        joined = await page.join()
        assert joined["offset"] == 130
        first = await history(page, before=joined["offset"] + 1)  # a new page
        assert [m["text"] for m in first] == [f"m{i}" for i in range(30, 130)]
        assert [m["id"] for m in first] == ids[30:]
        older = await history(page, before=first[0]["id"])  # "load older"
        assert [m["text"] for m in older] == [f"m{i}" for i in range(30)]
        assert await history(page, before=older[0]["id"]) == []
        few = await history(page, before=101, limit=3)
        assert [m["id"] for m in few] == [98, 99, 100]
        assert await history(page, before=1) == []


@pytest.mark.parametrize(
    "query",
    [{"before": "x"}, {"before": 5, "limit": 0}, {"before": 0}, {"limit": -1}, [5]],
)
async def test_bad_history_queries_are_refused(tmp_path: Path, query: dict[str, Any]) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        lobby = ada.room("lobby")
        await lobby.join()
        await post(lobby, "one")
        with pytest.raises(PushError) as refused:
            await lobby.push("history", query)
        assert refused.value.response["reason"]
        assert [m["text"] for m in await history(lobby, before=2)] == ["one"]


async def test_messages_during_a_join_come_once_in_order(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada, chat.person("bob") as bob:
        ada_lobby, bob_lobby = ada.room("lobby"), bob.room("lobby")
        await ada_lobby.join()
        await post(ada_lobby, "before")
        async with bob_lobby.messages("new_msg") as bob_sees:
            async with trio.open_nursery() as nursery:

                async def chatter() -> None:
                    for i in range(9):  # within the burst
                        await post(ada_lobby, f"c{i}")

                nursery.start_soon(chatter)
                joined = await bob_lobby.join()
            got = [m["id"] for m in await history(bob_lobby, before=joined["offset"] + 1)]
            while got[-1] < 10:
                got.append((await bob_sees.receive()).offset)
            assert got == list(range(1, 11))  # each once, in order: history then live
            with trio.move_on_after(0.1):  # nothing more (a duplicate would be here by now)
                extra = await bob_sees.receive()
                raise AssertionError(f"unexpected {extra}")


# -- presence ------------------------------------------------------------------------


async def test_presence_lists_each_nick_with_one_meta_per_connection(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        lobby = ada.room("lobby")
        await lobby.join()
        await presence_is(lobby, [("ada", 1)])
        async with chat.person("bob") as bob:
            bob_lobby = bob.room("lobby")
            await bob_lobby.join()
            await presence_is(lobby, [("ada", 1), ("bob", 1)])
            await presence_is(bob_lobby, [("ada", 1), ("bob", 1)])  # the state on join
        await presence_is(lobby, [("ada", 1)])


# -- recovery ------------------------------------------------------------------------


async def test_a_reconnect_recovers_what_was_missed_exactly_once(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, open_channels_connector(chat.http.server) as line:
        assert line is not None
        ada_line, away = line, False

        async def ada_connect() -> trio.abc.Stream:
            if away:
                raise ConnectionRefusedError("ada's network is down")
            return await ada_line()

        async with (
            chat.person("ada", connect=ada_connect) as ada,
            chat.person("bob") as bob,
        ):
            ada_lobby, bob_lobby = ada.room("lobby"), bob.room("lobby")
            async with ada_lobby.messages("new_msg") as seen, ada_lobby.joins() as joins:
                await ada_lobby.join()
                assert (await joins.receive()).recovered is None
                await bob_lobby.join()
                first = await post(bob_lobby, "m1")
                assert (await seen.receive()).offset == first
                away = True
                await ada_line.drop_all()  # ada's connection drops, bob's stays
                await wait_until(lambda: not ada.socket.connected)
                missed = [await post(bob_lobby, f"m{i}") for i in (2, 3, 4)]
                away = False
                with trio.fail_after(5):
                    rejoined = await joins.receive()
                assert (rejoined.rejoin, rejoined.recovered) == (True, True)
                assert ada.chat.state.value == "joined"  # the same person: her nick still
                after = await post(bob_lobby, "m5")
                got = [await seen.receive() for _ in range(4)]
                assert [(m.offset, m.payload["text"]) for m in got] == [
                    (missed[0], "m2"),
                    (missed[1], "m3"),
                    (missed[2], "m4"),
                    (after, "m5"),
                ]
                assert ada.socket.connections == 2


@asynccontextmanager
async def restartable(
    directory: Path,
) -> AsyncIterator[tuple[Callable[[], Awaitable[trio.abc.Stream]], Callable[..., Any]]]:
    """A chat server that ``restart(directory)`` stops and starts again (on that data dir)."""
    current: list[ChannelsConnector] = []
    scopes: list[trio.CancelScope] = []

    async def serve(where: Path, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            async with open_channels_connector(Chat(data_dir=where)) as connector:
                assert connector is not None
                current.append(connector)
                task_status.started()
                await trio.sleep_forever()

    async def connect() -> trio.abc.Stream:
        return await current[-1]()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, directory)

        async def restart(where: Path = directory) -> None:
            current[-1].refuse = True
            scopes[-1].cancel()  # the server shuts down: every connection drops
            await nursery.start(serve, where)

        yield connect, restart
        nursery.cancel_scope.cancel()


async def test_history_survives_a_restart_and_ids_keep_growing(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        lobby = ada.room("lobby")
        await lobby.join()
        sent = [await post(lobby, t) for t in ("one", "two")]
        dev = ada.room("dev")
        await dev.join()
        await post(dev, "in dev")
    async with open_chat(tmp_path) as chat, chat.person("bob") as bob:  # the same data dir
        lobby = bob.room("lobby")
        joined = await lobby.join()
        assert joined["offset"] == sent[-1]
        assert [
            (m["id"], m["text"]) for m in await history(lobby, before=joined["offset"] + 1)
        ] == [
            (sent[0], "one"),
            (sent[1], "two"),
        ]
        assert await post(lobby, "three") == sent[-1] + 1
        dev = bob.room("dev")
        assert [m["text"] for m in await history(dev, before=(await dev.join())["offset"] + 1)] == [
            "in dev"
        ]


async def test_a_client_recovers_across_a_restart_of_the_server(tmp_path: Path) -> None:
    async with (
        restartable(tmp_path) as (connect, restart),
        open_socket(TEST_URL + "/socket", connect=connect, backoff=FAST) as ada,
        open_socket(TEST_URL + "/socket", connect=connect, backoff=FAST) as bob,
    ):
        for socket, nick in ((ada, "ada"), (bob, "bob")):
            await socket.channel("chat", {"nick": nick}).join()
        lobby, bobs = ada.channel("room:lobby"), bob.channel("room:lobby")
        async with lobby.messages("new_msg") as seen, lobby.joins() as joins:
            await lobby.join()
            await joins.receive()
            await bobs.join()
            first = await post(bobs, "before")
            assert (await seen.receive()).offset == first
            await restart()
            with trio.fail_after(10):
                rejoined = await joins.receive()
            assert (rejoined.rejoin, rejoined.recovered) == (True, True)
            await bobs.wait_joined()
            after = await post(bobs, "after")
            message = await seen.receive()
            assert (message.offset, message.payload["text"]) == (after, "after")
            assert after == first + 1


async def test_a_new_store_is_a_new_epoch_and_the_client_refetches(tmp_path: Path) -> None:
    async with (
        restartable(tmp_path / "one") as (connect, restart),
        open_socket(TEST_URL + "/socket", connect=connect, backoff=FAST) as ada,
    ):
        await ada.channel("chat", {"nick": "ada"}).join()
        lobby = ada.channel("room:lobby")
        async with lobby.joins() as joins:
            first = await lobby.join()
            await joins.receive()
            await post(lobby, "lost with the store")
            await restart(tmp_path / "two")  # the data dir is gone: a new epoch
            with trio.fail_after(10):
                rejoined = await joins.receive()
            assert (rejoined.recovered, rejoined.reason) == (False, "epoch_changed")
            assert rejoined.response["epoch"] != first["epoch"]
            assert await history(lobby, before=rejoined.response["offset"] + 1) == []
            assert await post(lobby, "anew") == 1


# -- several nodes through Redis ---------------------------------------------------------


async def test_two_nodes_through_redis_agree(tmp_path: Path, redis_url: str) -> None:
    config = Config(redis_url=redis_url)
    async with (
        open_chat(tmp_path / "one", config) as one,
        open_chat(tmp_path / "two", Config(redis_url=redis_url)) as two,
        one.person("ada") as ada,
        two.person("bob") as bob,
    ):
        ada_lobby, bob_lobby = ada.room("lobby"), bob.room("lobby")
        async with bob_lobby.messages("new_msg") as bob_sees:
            await ada_lobby.join()
            await bob_lobby.join()
            await presence_is(ada_lobby, [("ada", 1), ("bob", 1)])  # bob on the other node
            sent = [await post(ada_lobby, f"a{i}") for i in range(5)]
            got = [await bob_sees.receive() for _ in range(5)]
            assert [m.offset for m in got] == sent == list(range(sent[0], sent[0] + 5))
            reply = await post(bob_lobby, "from two")
            assert reply == sent[-1] + 1
        for room in (ada_lobby, bob_lobby):  # one history, whichever node asks
            assert [m["text"] for m in await history(room, before=reply + 1)] == [
                "a0",
                "a1",
                "a2",
                "a3",
                "a4",
                "from two",
            ]
        async with bob.chat.messages("rooms") as lists:
            await ada.room("dev").join()  # created on node one, listed on node two
            assert sorted((await lists.receive()).payload["rooms"]) == ["dev", "lobby"]
