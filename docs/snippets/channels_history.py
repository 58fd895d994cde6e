"""History on one node: SQLite, durable across a restart (docs/channels/history.rst).

The page shows the parts between the ``# [...]`` markers; the tests below
serve the app, restart it on the same data directory, and rejoin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peregrine_rt._channels import Channels, Socket, topic
from peregrine_rt._channels._history import EPOCH_CHANGED, TOO_OLD, History, MemoryHistory
from peregrine_rt._channels._sqlite import SQLiteHistory
from peregrine_rt.testing import ClientWebSocket, open_client


# [app]
class Chat(Channels):
    # One file in data/ (created on first use); the newest 1,000 messages of
    # each room, none older than a week.
    history = SQLiteHistory("data/", max_count=1000, max_age=7 * 24 * 3600)

    @topic("room:{name}")
    class Room:
        async def on_new_msg(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast("new_msg", payload)  # offset assigned, then delivered


# [/app]


# [api]
async def catch_up(history: History, topic: str, offset: int, epoch: str) -> list[Any]:
    """What a client at (offset, epoch) should show: the missed messages, or a fresh page."""
    result = await history.recover(topic, offset, epoch)
    if result.recovered:
        return [pub.payload for pub in result.publications]  # exactly the gap, in order
    # too_old or epoch_changed: the gap cannot be filled; start again from the latest
    latest = await history.history(topic, limit=50)
    return [pub.payload for pub in latest]


# [/api]


def chat_in(directory: Path) -> Chat:
    """A Chat whose history lives in ``directory`` (a new one = a restarted server)."""

    class Here(Chat):
        history = SQLiteHistory(directory)

    return Here()


async def join(ws: ClientWebSocket, topic: str, params: dict[str, Any]) -> dict[str, Any]:
    await ws.send_json(["1", "1", topic, "phx_join", params])
    frame = await ws.receive_json()
    assert frame[:4] == ["1", "1", topic, "phx_reply"]
    assert frame[4]["status"] == "ok"
    response: dict[str, Any] = frame[4]["response"]
    return response


async def test_messages_survive_a_restart(tmp_path: Path) -> None:
    async with open_client(chat_in(tmp_path)) as client, client.websocket("/") as ws:
        joined = await join(ws, "room:lobby", {})
        assert joined["offset"] == 0
        for text in ("one", "two", "three"):
            await ws.send_json(["1", None, "room:lobby", "new_msg", {"text": text}])
        frames = [await ws.receive_json() for _ in range(3)]
        assert [f[1] for f in frames] == ["p:1", "p:2", "p:3"]
        epoch = joined["epoch"]

    # The server restarts: a new process, the same data directory.
    async with open_client(chat_in(tmp_path)) as client, client.websocket("/") as ws:
        joined = await join(ws, "room:lobby", {"since": {"offset": 1, "epoch": epoch}})
        assert joined == {"recovered": True, "epoch": epoch, "offset": 3}
        replayed = [await ws.receive_json() for _ in range(2)]
        assert replayed == [
            [None, "p:2", "room:lobby", "new_msg", {"text": "two"}],
            [None, "p:3", "room:lobby", "new_msg", {"text": "three"}],
        ]


async def test_catch_up(tmp_path: Path) -> None:
    history = SQLiteHistory(tmp_path, max_count=3)
    for n in range(1, 6):
        await history.append("room:lobby", "new_msg", n)
    epoch = (await history.position("room:lobby")).epoch
    assert await catch_up(history, "room:lobby", 3, epoch) == [4, 5]
    assert (await history.recover("room:lobby", 1, epoch)).reason == TOO_OLD
    assert await catch_up(history, "room:lobby", 1, epoch) == [3, 4, 5]  # a fresh page
    await history.aclose()

    other = MemoryHistory()  # another backend, another epoch
    assert (await other.recover("room:lobby", 5, epoch)).reason == EPOCH_CHANGED
    assert await catch_up(other, "room:lobby", 5, epoch) == []
