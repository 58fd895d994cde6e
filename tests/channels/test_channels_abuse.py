"""A client that joins thousands of topics, or publishes where it has not joined.

The server answers within its limits (``too_many_joins``, ``unmatched
topic``, ``rate_limited`` for joins and leaves too fast), closes the abuser
with 1008 once its violations pass ``channels_max_violations``, keeps no
state for the topics it refused, and goes on serving everyone else.
"""

from __future__ import annotations

from typing import Any

import peregrine_rt as pr
from peregrine_rt.testing import ReceiveTimeout, WebSocketClosed, open_client

from .conftest import Phx


class Rooms(pr.Channels):
    @pr.topic("room:{name}", history=False)
    class Room:
        async def join(self, socket: Any, params: Any) -> None:
            return None

        async def on_say(self, socket: Any, payload: Any) -> None:
            await socket.broadcast("said", payload)


async def _flood(phx: Phx, frames: list[list[Any]]) -> tuple[list[str], int | None]:
    """Send every frame, read the replies: their reasons, and the close code if it closed.

    Other frames (presence, ``phx_close``) are skipped.
    """
    reasons: list[str] = []
    try:
        for frame in frames:
            await phx.ws.send_json(frame)
    except pr.ConnectionClosed:
        pass  # closed while we were still sending: read what came before the close
    try:
        while True:
            answer = await phx.receive()
            if answer[3] == "phx_reply":
                reasons.append(answer[4]["response"].get("reason", "ok"))
    except WebSocketClosed as closed:
        return reasons, closed.code
    except ReceiveTimeout:
        return reasons, None


async def test_thousands_of_joins_are_refused_then_closed_and_others_go_on() -> None:
    app = Rooms()
    async with (
        open_client(
            app,
            channels_max_joins=20,
            channels_max_violations=50,
            channels_join_burst=10_000,  # the join cap, not the join rate, is what this tests
            timeout=2,
        ) as client,
        client.websocket("/socket/websocket") as bystander,
    ):
        calm = Phx(bystander)
        join_ref, reply = await calm.join("room:calm")
        assert reply[4]["status"] == "ok"
        async with client.websocket("/socket/websocket") as ws:
            phx = Phx(ws)
            joins = [[str(i), str(i), f"room:{i}", "phx_join", {}] for i in range(1, 5001)]
            reasons, code = await _flood(phx, joins)
        assert code == 1008
        assert reasons[:20] == ["ok"] * 20
        assert set(reasons[20:]) == {"too_many_joins"}
        assert len(reasons) <= 20 + 50  # it was closed, not fed 5,000 answers
        assert len(app.members("room:4999")) == 0  # nothing kept for a refused topic
        assert len(app.members("room:1")) == 0  # the abuser's joins went with it
        await calm.send(join_ref, "room:calm", "say", {"text": "still here"})
        assert (await calm.receive_until("said"))[4] == {"text": "still here"}


async def test_publishing_where_it_has_not_joined_is_answered_then_closed() -> None:
    async with (
        open_client(Rooms, channels_max_violations=30, timeout=2) as client,
        client.websocket("/socket/websocket") as ws,
    ):
        phx = Phx(ws)
        says = [[None, str(i), f"room:{i}", "say", {"x": i}] for i in range(1, 3001)]
        reasons, code = await _flood(phx, says)
    assert code == 1008
    assert set(reasons) == {"unmatched topic"}
    assert len(reasons) <= 31


class Watched(pr.Channels):
    @pr.topic("room:{name}", history=False, presence=True)
    class Room:
        pass


async def test_a_join_and_leave_flood_is_rate_limited_before_it_reaches_presence() -> None:
    # Each join and leave of a presence topic is a diff to every member: a
    # connection rejoining in a loop would make everyone else pay for it.
    app = Watched()
    async with (
        open_client(
            app,
            channels_join_rate=1.0,
            channels_join_burst=10,
            channels_max_violations=30,
            timeout=1,
        ) as client,
        client.websocket("/socket/websocket") as watcher,
        client.websocket("/socket/websocket") as ws,
    ):
        calm = Phx(watcher)
        _, reply = await calm.join("room:lobby")
        assert reply[4]["status"] == "ok"
        phx = Phx(ws)
        frames = []
        for i in range(1, 2001):
            frames.append([str(i), str(i), "room:lobby", "phx_join", {}])
            frames.append([str(i), f"{i}l", "room:lobby", "phx_leave", {}])
        reasons, code = await _flood(phx, frames)
        assert code == 1008
        assert reasons[:10] == ["ok"] * 10  # the burst: 5 joins and 5 leaves
        assert set(reasons[10:]) == {"rate_limited"}
        assert len(reasons) <= 10 + 30
        diffs = 0
        try:
            while True:  # until a second passes without a frame
                diffs += (await calm.receive())[3] == "presence_diff"
        except ReceiveTimeout:
            pass
        # its own join, the 5 joins and 5 leaves let through, the abuser's close: not 4,000
        assert 10 <= diffs <= 12
