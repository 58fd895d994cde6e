"""A client that joins thousands of topics, or publishes where it has not joined.

The server answers within its limits (``too_many_joins``, ``unmatched
topic``), closes the abuser with 1008 once its violations pass
``channels_max_violations``, keeps no state for the topics it refused, and
goes on serving everyone else.
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
    """Send every frame, read the answers: their reasons, and the close code if it closed."""
    reasons: list[str] = []
    try:
        for frame in frames:
            await phx.ws.send_json(frame)
    except pr.ConnectionClosed:
        pass  # closed while we were still sending: read what came before the close
    try:
        while True:
            answer = await phx.receive()
            reasons.append(answer[4]["response"].get("reason", "ok"))
    except WebSocketClosed as closed:
        return reasons, closed.code
    except ReceiveTimeout:
        return reasons, None


async def test_thousands_of_joins_are_refused_then_closed_and_others_go_on() -> None:
    app = Rooms()
    async with (
        open_client(app, channels_max_joins=20, channels_max_violations=50, timeout=2) as client,
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
