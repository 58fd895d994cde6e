"""The chat's limits (issue #21 item 7, on Channels): rates, refusals, rooms, bad frames.

Before: one ``hello`` naming 100 rooms created 96 of them (the server's room
cap filled, and rooms were never removed); unknown message types, ``say``
before ``hello`` and ``typing`` skipped the rate limit (20,000 of each were
accepted).  On Channels every event of a connection takes a token of its
bucket (5 a second, bursts of 10: the library's ``rate_limited``), a
connection is in 20 rooms at most and the server lists 100, library errors
past 20 and the chat's own refusals (10 within 10 s) close with 1008, frames
that are not JSON close with 1007, binary ones with 1003, and a room nobody
is in drops from the list after ``Chat.room_idle`` seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from examples.chat import app as chat_app
from examples.chat.app import Chat
from peregrine_rt import ConnectionClosed
from peregrine_rt.client import JoinRefused, PushError
from tests.examples.test_chat_example import (
    PATIENT,
    SECRET,
    open_chat,
    open_raw,
)

RATE, BURST = 5, 10  # what the chat's join reply announces


@pytest.fixture(autouse=True)
def chat_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SECRET", SECRET)


async def test_the_limits_are_the_ones_announced(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada") as ada:
        assert ada.reply["limits"] == {"text": 2000, "rate": RATE, "burst": BURST}
        assert (chat_app.RATE, chat_app.BURST) == (RATE, BURST)


async def test_every_event_counts_toward_the_rate(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_chat(tmp_path) as chat, chat.person("ada", timeout=PATIENT) as ada:
        lobby = ada.room("lobby")
        await lobby.join()
        for _ in range(BURST):  # typing is not stored, not relayed here: only the rate
            await lobby.push("typing", {})
        for event, payload in [("typing", {}), ("history", {"before": 1}), ("new_msg", {})]:
            with pytest.raises(PushError) as limited:
                await lobby.push(event, payload)
            assert limited.value.response["reason"] == "rate_limited"
        await trio.sleep(1)  # RATE tokens more
        for _ in range(RATE):  # (not history: SQLite's thread would let the clock jump)
            await lobby.push("typing", {})
        with pytest.raises(PushError) as again:
            await lobby.push("typing", {})
        assert again.value.response["reason"] == "rate_limited"


FLOODS = [
    pytest.param("room:lobby", "dance", {}, id="unknown-event"),
    pytest.param("room:dev", "new_msg", {"text": "hi"}, id="not-joined"),
    pytest.param("room:lobby", "typing", {}, id="typing"),
    pytest.param("room:lobby", "history", {"before": 1}, id="history"),
    pytest.param("room:lobby", "new_msg", [1, 2], id="not-an-object"),
    pytest.param("room:lobby", "new_msg", {"text": ""}, id="empty"),
    pytest.param("room:no spaces", "phx_join", {}, id="bad-room"),
    pytest.param("chat", "phx_join", {"nick": " "}, id="bad-nick"),
    pytest.param("nowhere", "phx_join", {}, id="unmatched-topic"),
]


@pytest.mark.parametrize(("topic", "event", "payload"), FLOODS)
async def test_a_flood_of_anything_closes_1008(
    tmp_path: Path, topic: str, event: str, payload: Any
) -> None:
    async with open_chat(tmp_path) as chat, open_raw(chat) as raw:
        await raw.join("chat", {"nick": "ada"})
        join_ref = await raw.join("room:lobby")
        with trio.fail_after(10):
            for _ in range(1000):  # was: 20,000 accepted
                frame = [join_ref if topic == "room:lobby" else "99", "1", topic, event, payload]
                try:
                    await raw.ws.send(json.dumps(frame))
                except ConnectionClosed:
                    break
            code, reason = await raw.closed()
        assert code == 1008 and reason.startswith("too many"), (code, reason)


async def test_library_errors_past_20_close_1008(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, open_raw(chat) as raw:
        for _ in range(20):
            assert await raw.call("room:nowhere", "new_msg", {"text": "x"}) == (
                "error",
                {"reason": "unmatched topic"},
            )
        assert await raw.call("phoenix", "heartbeat") == ("ok", {})  # still open
        await raw.send("room:nowhere", "new_msg", {"text": "x"})
        code, reason = await raw.closed()
        assert code == 1008 and "too many" in reason


async def test_refusals_close_1008_even_when_slow(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_chat(tmp_path) as chat, open_raw(chat, timeout=PATIENT) as raw:
        await raw.join("chat", {"nick": "ada"})
        for _ in range(chat_app.MAX_REFUSED - 1):
            await trio.sleep(0.5)  # a token each time: never rate-limited
            status, response = await raw.call("room:no spaces", "phx_join", {})
            assert (status, response["reason"]) == ("error", "bad_room")
        assert await raw.call("phoenix", "heartbeat") == ("ok", {})  # still open
        await trio.sleep(0.5)
        await raw.send("chat", "phx_join", {"nick": "<b>"}, join_ref="x")
        assert await raw.closed() == (1008, "too many refused requests")


async def test_a_few_refusals_spread_out_are_fine(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_chat(tmp_path) as chat, open_raw(chat, timeout=PATIENT) as raw:
        await raw.join("chat", {"nick": "ada"})
        for _ in range(3 * chat_app.MAX_REFUSED):
            await trio.sleep(chat_app.REFUSED_WINDOW / (chat_app.MAX_REFUSED - 2))
            status, response = await raw.call("room:no spaces", "phx_join", {})
            assert (status, response["reason"]) == ("error", "bad_room")


async def test_a_connection_is_in_20_rooms_at_most(tmp_path: Path, autojump_clock: Any) -> None:
    async with (
        open_chat(tmp_path) as chat,
        chat.person("ada", timeout=PATIENT, heartbeat=None) as ada,
    ):
        rooms = [ada.room(f"r{i}") for i in range(chat_app.MAX_JOINED)]
        for room in rooms:
            await trio.sleep(0.2)  # within the join rate
            await room.join()
        with pytest.raises(JoinRefused) as refused:
            await ada.room("one-more").join()
        # The chat leaves this cap to the library (Limits.max_joins: ``chat`` + 20 rooms).
        assert refused.value.reason in ("too_many_rooms", "too_many_joins"), refused.value.response
        await rooms[0].leave()
        await ada.room("one-more").join()  # room for one again
        async with chat.person("bob", timeout=PATIENT, heartbeat=None) as bob:
            assert len(bob.reply["rooms"]) == chat_app.MAX_JOINED + 2  # lobby, r0 left idle


async def test_the_server_lists_100_rooms_at_most(tmp_path: Path, autojump_clock: Any) -> None:
    names = iter(f"r{i}" for i in range(chat_app.MAX_ROOMS - 1))  # the lobby is the 100th
    async with open_chat(tmp_path) as chat:

        async def fill(nick: str) -> None:
            async with chat.person(nick, timeout=PATIENT, heartbeat=None) as person:
                for count, name in enumerate(names, 1):  # all stay in: no room goes idle
                    await trio.sleep(0.2)
                    await person.room(name).join()
                    if count == chat_app.MAX_JOINED:
                        break
                filled.append(nick)
                if len(filled) == 6:
                    all_filled.set()
                await done.wait()

        filled: list[str] = []
        all_filled, done = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(fill, f"filler{i}")
            async with chat.person("ada", timeout=PATIENT, heartbeat=None) as ada:
                await all_filled.wait()
                assert len(chat.app.rooms) == chat_app.MAX_ROOMS
                with pytest.raises(JoinRefused) as refused:
                    await ada.room("one-more").join()
                assert refused.value.reason == "too_many_rooms" and refused.value.response["text"]
                assert (await ada.room("r7").join())["room"] == "r7"  # a listed room: fine
            async with chat.person("bob", timeout=PATIENT, heartbeat=None) as bob:
                assert len(bob.reply["rooms"]) == chat_app.MAX_ROOMS
            done.set()


async def test_idle_rooms_drop_from_the_list(tmp_path: Path, autojump_clock: Any) -> None:
    async with (
        open_chat(tmp_path) as chat,
        chat.person("ada", timeout=PATIENT, heartbeat=None) as ada,
        chat.person("bob", timeout=PATIENT, heartbeat=None) as bob,
    ):
        joined = {name: ada.room(name) for name in ("dev", "ops", "kept")}
        for room in joined.values():  # every join (SQLite) before the clock matters
            await room.join()
        await bob.room("kept").join()
        async with bob.chat.messages("rooms") as lists:
            for room in joined.values():
                await room.leave()
            await trio.sleep(Chat.room_idle / 2)
            async with chat.person("cy", timeout=PATIENT, heartbeat=None) as cy:
                assert sorted(cy.reply["rooms"]) == ["dev", "kept", "lobby", "ops"]
            await trio.sleep(Chat.room_idle)
            rooms = (await lists.receive()).payload["rooms"]
            assert sorted(rooms) == ["kept", "lobby"]  # bob is in "kept"; lobby stays
            assert trio.current_time() >= Chat.room_idle  # (not before its time)
        async with chat.person("cy", timeout=PATIENT, heartbeat=None) as cy:
            assert sorted(cy.reply["rooms"]) == ["kept", "lobby"]
        async with bob.chat.messages("rooms") as lists:
            await ada.room("dev").join()  # a dropped room can be created again
            assert sorted((await lists.receive()).payload["rooms"]) == ["dev", "kept", "lobby"]


async def test_the_lobby_stays_listed_when_empty(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_chat(tmp_path) as chat:
        async with chat.person("ada", timeout=PATIENT, heartbeat=None) as ada:
            await ada.room("lobby").join()
        await trio.sleep(2 * Chat.room_idle)
        async with chat.person("bob", timeout=PATIENT, heartbeat=None) as bob:
            assert bob.reply["rooms"] == ["lobby"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", 1007),
        ("[null, null, 'lobby', 'x', {}]", 1007),
        ("[" * 100_000 + "]" * 100_000, 1007),  # deep JSON: not a RecursionError (1011)
        (b"\x00binary", 1003),
    ],
    ids=["not-json", "single-quotes", "deep", "binary"],
)
async def test_bad_frames_close(tmp_path: Path, message: str | bytes, code: int) -> None:
    async with open_chat(tmp_path) as chat:
        async with open_raw(chat) as raw:
            await raw.join("chat", {"nick": "ada"})
            await raw.ws.send(message)
            assert (await raw.closed())[0] == code
        async with chat.person("bob") as bob:  # the server goes on
            assert bob.reply["nick"] == "bob"


async def test_a_deeply_nested_payload_closes_1007(tmp_path: Path) -> None:
    deep: Any = {}
    for _ in range(200):
        deep = {"x": deep}
    async with open_chat(tmp_path) as chat, open_raw(chat) as raw:
        await raw.join("chat", {"nick": "ada"})
        join_ref = await raw.join("room:lobby")
        await raw.send("room:lobby", "new_msg", {"text": "hi", "ref": deep}, join_ref=join_ref)
        assert (await raw.closed())[0] == 1007


async def test_a_huge_frame_is_refused_without_closing(tmp_path: Path) -> None:
    async with open_chat(tmp_path) as chat, open_raw(chat) as raw:
        await raw.join("chat", {"nick": "ada"})
        join_ref = await raw.join("room:lobby")
        status, response = await raw.call(
            "room:lobby", "new_msg", {"text": "x" * 20_000}, join_ref=join_ref
        )
        assert (status, response["reason"]) == ("error", "too_large")
        status, response = await raw.call(
            "room:lobby", "new_msg", {"text": "x" * 2001}, join_ref=join_ref
        )
        assert (status, response["reason"]) == ("error", "too_long")
        assert (await raw.call("room:lobby", "new_msg", {"text": "ok"}, join_ref=join_ref))[
            0
        ] == "ok"


async def test_join_and_leave_churn_is_limited(tmp_path: Path) -> None:
    """Every frame of a connection costs: joining and leaving the lobby 1000 times
    (a presence diff to everyone in it each time) is not free either."""
    async with open_chat(tmp_path) as chat, open_raw(chat) as raw, chat.person("bob") as bob:
        lobby = bob.room("lobby")
        await lobby.join()
        await raw.join("chat", {"nick": "ada"})
        with trio.fail_after(30):
            for _ in range(500):
                ref = await raw.send("room:lobby", "phx_join", {}, join_ref=str(raw.refs + 1))
                status, _ = await raw.reply_to(ref)
                if status != "ok":
                    break
                await raw.send("room:lobby", "phx_leave", {}, join_ref=ref)
            else:
                raise AssertionError("500 joins and leaves of the lobby in a row were all accepted")
