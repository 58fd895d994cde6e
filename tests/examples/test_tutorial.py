"""The tutorial's steps (docs/tutorial.rst), each file run as the page shows it.

``examples/tutorial/step1.py`` ... ``step6.py`` are the files the reader
types; step 7 is the real chat (``examples/chat/app.py``).  Each step's
tests drive its server over memory streams with the Python client
(``peregrine_rt.client``), as ``examples/tutorial/say.py`` and the page do.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from examples.chat.app import Chat as RealChat
from examples.tutorial import step1, step2, step3, step4, step5, step6
from examples.tutorial.nicks import Nicks
from examples.tutorial.say import say
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
    WebSocketClosed,
    open_channels_connector,
    open_client,
    wait_until,
)
from peregrine_rt.testing._channels import TEST_URL

ROOT = Path(__file__).resolve().parents[2]
SECRET = "the-tutorial-test-secret-0123456789"
FAST = Backoff(initial=0.01, maximum=0.1)
STEPS = [step1, step2, step3, step4, step5, step6]


@pytest.fixture(autouse=True)
def chat_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SECRET", SECRET)


@asynccontextmanager
async def serve(app: Any, config: pr.Config | None = None) -> AsyncIterator[ChannelsConnector]:
    """``app`` served in memory for the block; its connector for the clients."""
    async with open_channels_connector(app, config=config) as connector:
        assert connector is not None
        yield connector


def connect(
    connector: ChannelsConnector, sid: str | None = None, **options: Any
) -> AbstractAsyncContextManager[Socket]:
    """A client; with ``sid``, one of that person (the session cookie a browser would send)."""
    headers = {}
    if sid is not None:
        cookie = connector.server.handler_instance.sessions.encode({"sid": sid})
        headers["cookie"] = f"chat_session={cookie}"
    return open_socket(
        TEST_URL + "/socket", connect=connector, backoff=FAST, headers=headers, **options
    )


@asynccontextmanager
async def person(connector: ChannelsConnector, sid: str, nick: str) -> AsyncIterator[Socket]:
    """A socket of ``sid`` that joined ``chat`` as ``nick``."""
    async with connect(connector, sid) as socket:
        await socket.channel("chat", {"nick": nick}).join()
        yield socket


async def next_of(messages: trio.MemoryReceiveChannel[Message], event: str) -> Message:
    async for message in messages:
        if message.event == event:
            return message
    raise AssertionError(f"no {event}")


async def said(room: Channel, text: str) -> int:
    return int((await room.push("new_msg", {"text": text}))["id"])


# -- step 1: one topic, one event ----------------------------------------------------


async def test_step1_say_py_and_every_client_of_the_lobby_get_each_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed = []

    def printed_text() -> str:
        printed.append(capsys.readouterr().out)
        return "".join(printed)

    async with serve(step1.Chat) as connector, connect(connector) as bob:
        lobby = bob.channel("room:lobby")
        async with lobby.messages("new_msg") as messages, trio.open_nursery() as nursery:
            await lobby.join()
            nursery.start_soon(partial(say, "hello", url=TEST_URL + "/socket", connect=connector))
            message = await messages.receive()
            assert (message.payload, message.offset) == ({"text": "hello"}, None)  # no history
            await wait_until(lambda: "None {'text': 'hello'}\n" in printed_text())
            nursery.cancel_scope.cancel()
    assert printed_text().startswith("joined: {}\nack: {}\n")
    with pytest.raises(JoinRefused) as other:  # one topic only
        async with serve(step1.Chat) as connector, connect(connector) as bob:
            await bob.channel("room:games").join()
    assert other.value.reason == "unmatched topic"


# -- step 2: rooms, history, recovery ------------------------------------------------


async def test_step2_rooms_number_and_keep_their_own_messages(tmp_path: Path) -> None:
    async with serve(step2.Chat(data_dir=tmp_path)) as connector, connect(connector) as ann:
        lobby, games = ann.channel("room:lobby"), ann.channel("room:games")
        async with lobby.messages("new_msg") as seen:
            assert (await lobby.join())["room"] == "lobby"
            await games.join()
            assert [await said(lobby, text) for text in "abc"] == [1, 2, 3]
            assert await said(games, "x") == 1  # offsets are per room
            got = [await seen.receive() for _ in range(3)]
            assert [(m.offset, m.payload["text"]) for m in got] == [(1, "a"), (2, "b"), (3, "c")]
        page = await lobby.push("history", {"before": 3, "limit": 2})
        assert [(m["id"], m["text"]) for m in page["messages"]] == [(1, "a"), (2, "b")]
        with pytest.raises(PushError) as empty:
            await lobby.push("new_msg", {"text": "  "})
        assert empty.value.reason == "empty"


async def test_step2_a_client_that_was_away_recovers_what_it_missed(tmp_path: Path) -> None:
    async with (
        serve(step2.Chat(data_dir=tmp_path)) as bobs,
        serve(bobs.server) as anns,  # the same server: ann's connections can be cut alone
        connect(bobs) as bob,
        connect(anns) as ann,
    ):
        room, bobs_room = ann.channel("room:lobby"), bob.channel("room:lobby")
        async with room.messages("new_msg") as messages, room.joins() as joins:
            await room.join()
            assert (await joins.receive()).recovered is None  # a first join
            await bobs_room.join()
            await said(bobs_room, "before")
            assert (await messages.receive()).offset == 1
            anns.refuse = True
            await anns.drop_all()  # ann's network is down
            await said(bobs_room, "while ann was away")
            await said(bobs_room, "and this")
            anns.refuse = False
            rejoined = await joins.receive()
            assert (rejoined.rejoin, rejoined.recovered) == (True, True)
            missed = [await messages.receive() for _ in range(2)]
            assert [(m.offset, m.payload["text"]) for m in missed] == [
                (2, "while ann was away"),
                (3, "and this"),
            ]


async def test_step2_history_survives_a_restart(tmp_path: Path) -> None:
    async with serve(step2.Chat(data_dir=tmp_path)) as connector, connect(connector) as ann:
        lobby = ann.channel("room:lobby")
        await lobby.join()
        await said(lobby, "kept")
    async with serve(step2.Chat(data_dir=tmp_path)) as connector, connect(connector) as ann:
        lobby = ann.channel("room:lobby")
        reply = await lobby.join()
        assert reply["offset"] == 1
        page = await lobby.push("history", {"before": reply["offset"] + 1})
        assert [m["text"] for m in page["messages"]] == ["kept"]


# -- step 3: identity and nicks ------------------------------------------------------


async def test_step3_the_handshake_makes_a_person_once(tmp_path: Path) -> None:
    async with open_client(step3.Chat(data_dir=tmp_path)) as http:
        async with http.websocket("/socket/websocket", params={"vsn": "2.0.0"}) as first:
            name, _, rest = first.response.headers["set-cookie"].partition("=")
        assert name == "chat_session"
        cookie = rest.split(";", 1)[0]
        assert isinstance(http.app.sessions.decode(cookie)["sid"], str)
        again = {"chat_session": cookie}
        async with http.websocket("/socket/websocket", cookies=again) as second:
            assert "set-cookie" not in second.response.headers  # the same person


async def test_step3_a_nick_is_one_persons_in_any_number_of_tabs(tmp_path: Path) -> None:
    async with (
        serve(step3.Chat(data_dir=tmp_path)) as connector,
        person(connector, "p-ada", "ada") as ada,
        person(connector, "p-ada", "ada") as ada_again,  # a second tab: the same person
        connect(connector, "p-eve") as eve,
    ):
        with pytest.raises(JoinRefused) as taken:
            await eve.channel("chat", {"nick": "ada"}).join()
        assert taken.value.reason == "nick_taken"
        with pytest.raises(JoinRefused) as first:
            await eve.channel("room:lobby").join()
        assert first.value.reason == "hello_first"
        with pytest.raises(JoinRefused) as bad:
            await eve.channel("chat", {"nick": "a  b"}).join()
        assert bad.value.reason == "bad_nick"
        lobby = ada.channel("room:lobby")
        async with lobby.messages("new_msg") as messages:
            await lobby.join()
            other_tab = ada_again.channel("room:lobby")
            await other_tab.join()
            await said(other_tab, "from the other tab")
            assert (await messages.receive()).payload["nick"] == "ada"


async def test_step3_nicks_are_held_for_a_while_after_the_last_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    nicks = Nicks(hold=30.0)
    assert await nicks.claim("ada", "p-ada")
    assert await nicks.claim("ada", "p-ada")  # two sockets
    assert not await nicks.claim("ada", "p-eve")
    await nicks.release("ada", "p-ada")
    await nicks.release("ada", "p-ada")
    await nicks.release("ada", "p-eve")  # not hers: changes nothing
    await trio.sleep(29)
    assert not await nicks.claim("ada", "p-eve")  # held
    assert await nicks.claim("ada", "p-ada")  # hers again: a reconnect
    await nicks.release("ada", "p-ada")
    await trio.sleep(31)
    assert await nicks.claim("ada", "p-eve")  # lapsed: anyone's


# -- step 4: presence, typing, the rooms ---------------------------------------------


async def test_step4_presence_lists_nicks_and_typing_skips_the_typist(tmp_path: Path) -> None:
    async with (
        serve(step4.Chat(data_dir=tmp_path)) as connector,
        person(connector, "p-ada", "ada") as ada,
        person(connector, "p-ada", "ada") as ada_tab,
        person(connector, "p-bob", "bob") as bob,
    ):
        mine, bobs = ada.channel("room:lobby"), bob.channel("room:lobby")
        async with (
            mine.messages("typing", "new_msg") as ada_sees,
            bobs.messages("typing", "new_msg") as bob_sees,
        ):
            for room in (mine, ada_tab.channel("room:lobby"), bobs):
                await room.join()
            await wait_until(
                lambda: (
                    sorted((k, len(m)) for k, m in bobs.presence.list()) == [("ada", 2), ("bob", 1)]
                )
            )
            await mine.push("typing")
            await mine.push("typing")  # within a second: not relayed again
            assert await said(mine, "hi") == 1  # typing took no offset
            typing = await bob_sees.receive()
            assert (typing.event, typing.payload, typing.offset) == (
                "typing",
                {"nick": "ada"},
                None,
            )
            assert (await bob_sees.receive()).event == "new_msg"
            assert (await ada_sees.receive()).event == "new_msg"  # never her own typing


async def test_step4_rooms_are_listed_while_used_and_a_while_after(tmp_path: Path) -> None:
    class Quick(step4.Chat):
        room_idle = 0.2

    async with (
        serve(Quick(data_dir=tmp_path)) as connector,
        connect(connector, "p-ada") as ada,
        person(connector, "p-bob", "bob") as bob,
    ):
        chat = ada.channel("chat", {"nick": "ada"})
        async with chat.messages("rooms") as pushes:
            assert (await chat.join())["rooms"] == ["lobby"]
            games = bob.channel("room:games")
            await games.join()
            assert (await pushes.receive()).payload == {"rooms": ["games", "lobby"]}
            await games.leave()
            assert (await pushes.receive()).payload == {"rooms": ["lobby"]}  # idle: dropped


# -- step 5: limits and refusals -----------------------------------------------------


async def test_step5_requests_are_checked(tmp_path: Path) -> None:
    async with serve(step5.Chat(data_dir=tmp_path)) as connector, connect(connector, "p") as ada:
        reply = await ada.channel("chat", {"nick": "ada"}).join()
        assert reply["limits"] == {"text": 2000, "rate": 5, "burst": 10}
        with pytest.raises(JoinRefused) as bad_room:
            await ada.channel("room:no/slash").join()
        assert bad_room.value.reason == "bad_room" and bad_room.value.response["text"]
        lobby = ada.channel("room:lobby")
        await lobby.join()
        with pytest.raises(PushError) as too_long:
            await lobby.push("new_msg", {"text": "x" * 2001})
        assert too_long.value.reason == "too_long"
        ack = await lobby.push("new_msg", {"text": "x" * 2000, "ref": "c1"})
        page = await lobby.push("history", {"before": ack["id"] + 1})
        assert page["messages"][0]["ref"] == "c1"


async def test_step5_a_client_is_held_to_its_rate(tmp_path: Path) -> None:
    outcomes: list[str] = []
    async with serve(step5.Chat(data_dir=tmp_path)) as connector, person(connector, "p", "a") as a:
        lobby = a.channel("room:lobby")
        await lobby.join()

        async def typing() -> None:
            try:
                await lobby.push("typing")
                outcomes.append("ok")
            except PushError as error:
                outcomes.append(str(error.reason))

        async with trio.open_nursery() as nursery:
            for _ in range(25):  # at once: the burst is 10, then 5 a second
                nursery.start_soon(typing)
    assert set(outcomes) == {"ok", "rate_limited"}
    assert 10 <= outcomes.count("ok") < 25


async def test_step5_ten_refusals_close_the_connection(tmp_path: Path) -> None:
    async with (
        open_client(step5.Chat(data_dir=tmp_path)) as http,
        http.websocket("/socket/websocket", params={"vsn": "2.0.0"}) as ws,
    ):
        replies = []
        with pytest.raises(WebSocketClosed) as closed:
            for ref in range(1, 12):
                await ws.send(json.dumps([str(ref), str(ref), "chat", "phx_join", {"nick": ""}]))
                replies.append(json.loads(await ws.receive())[4]["response"]["reason"])
        assert replies == ["bad_nick"] * 9
        assert closed.value.code == 1008


# -- step 6: the page ------------------------------------------------------------------


async def test_step6_serves_the_page_its_script_and_peregrine_js(tmp_path: Path) -> None:
    async with open_client(step6.Chat(data_dir=tmp_path)) as http:
        page = await http.get("/")
        assert page.status == 200 and '<script type="module" src="chat.js">' in page.text
        script = await http.get("/chat.js")
        assert 'from "/_peregrine/peregrine.js"' in script.text
        assert "no-cache" in script.headers["cache-control"]
        library = await http.get("/_peregrine/peregrine.js")
        assert "export class Socket" in library.text
        assert (await http.get("/../step6.py")).status == 404
    async with serve(step6.Chat(data_dir=tmp_path)) as connector, person(connector, "p", "a") as a:
        lobby = a.channel("room:lobby")
        assert (await lobby.join())["offset"] == 0
        assert await said(lobby, "the chat of step 5, with a page") == 1


def test_step6_the_page_uses_the_events_the_server_has() -> None:
    script = (ROOT / "examples/tutorial/static/chat.js").read_text()
    pushed = set(re.findall(r'\.push\("(\w+)"', script))
    assert pushed == {"new_msg", "typing", "history"}
    assert all(f"async def on_{event}" in Path(step6.__file__).read_text() for event in pushed)
    assert "innerHTML" not in script  # text is set with textContent only


# -- step 7: several nodes -----------------------------------------------------------


async def test_step7_two_nodes_share_messages_and_nicks(tmp_path: Path, redis_url: str) -> None:
    config = pr.Config(redis_url=redis_url)
    async with (
        serve(RealChat(data_dir=tmp_path / "one"), config) as one,
        serve(RealChat(data_dir=tmp_path / "two"), config) as two,
        person(one, "p-ada", "ada") as ada,
        person(two, "p-bob", "bob") as bob,
        connect(two, "p-eve") as eve,
    ):
        with pytest.raises(JoinRefused) as taken:
            await eve.channel("chat", {"nick": "ada"}).join()  # held on the other node
        assert taken.value.reason == "nick_taken"
        bobs = bob.channel("room:lobby")
        async with bobs.messages("new_msg") as messages:
            await bobs.join()
            mine = ada.channel("room:lobby")
            await mine.join()
            await wait_until(lambda: {k for k, _ in bobs.presence.list()} == {"ada", "bob"})
            assert await said(mine, "from node one") == 1
            message = await next_of(messages, "new_msg")
            assert (message.offset, message.payload["nick"]) == (1, "ada")


# -- the page shows these files ------------------------------------------------------


def test_the_tutorial_shows_every_step_and_how_to_run_it() -> None:
    page = (ROOT / "docs/tutorial.rst").read_text()
    includes = re.findall(r"\.\. literalinclude:: (\S+)\n((?:   :.*\n)*)", page)
    shown = {Path(path).name: options for path, options in includes if "tutorial/" in path}
    for number in (1, 2, 3):  # whole
        assert shown[f"step{number}.py"].strip() == ":language: python"
    for number in (4, 5, 6):  # what changed since the step before, in full
        assert f":diff: ../examples/tutorial/step{number - 1}.py" in shown[f"step{number}.py"]
    assert any(
        path.endswith("examples/chat/app.py") and ":diff: ../examples/tutorial/step6.py" in opts
        for path, opts in includes
    )
    commands = (ROOT / "docs/snippets/tutorial.sh").read_text()
    for step in STEPS:
        assert f"peregrine-rt {step.__name__}:Chat" in commands
