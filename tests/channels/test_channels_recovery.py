"""History and presence hooked into Channels: offsets on broadcasts, recovery on join, presence."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

import trio

from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt._channels._server import Channels, Socket
from peregrine_rt._channels._topics import topic
from peregrine_rt.testing import open_client

from .conftest import Phx


class Feed(Channels):
    history = MemoryHistory()

    @topic("feed:{id}")
    class FeedTopic:
        async def on_post(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast("post", payload)

    @topic("plain", history=False)
    class Plain:
        pass


def make_feed() -> Feed:
    class Fresh(Feed):
        history = MemoryHistory()

    return Fresh()


async def test_broadcasts_carry_offsets_and_join_reply_the_position() -> None:
    app = make_feed()
    async with open_client(app) as client, client.websocket("/") as ws:
        phx = Phx(ws)
        _, frame = await phx.join("feed:1")
        epoch = frame[4]["response"]["epoch"]
        assert frame[4]["response"] == {"epoch": epoch, "offset": 0}
        for n in range(3):
            await app.broadcast("feed:1", "post", {"n": n})
        assert [await phx.receive() for _ in range(3)] == [
            [None, f"p:{n + 1}", "feed:1", "post", {"n": n}] for n in range(3)
        ]
        pubs = await app.history_of("feed:1", since=1, limit=1)
        assert [(p.offset, p.payload) for p in pubs] == [(3, {"n": 2})]


async def test_rejoin_with_since_replays_exactly_the_missed() -> None:
    app = make_feed()
    async with open_client(app) as client:
        async with client.websocket("/") as ws:
            _, frame = await Phx(ws).join("feed:1")
            epoch = frame[4]["response"]["epoch"]
        for n in range(5):
            await app.broadcast("feed:1", "post", {"n": n})
        async with client.websocket("/") as ws:
            phx = Phx(ws)
            _, frame = await phx.join("feed:1", {"since": {"offset": 2, "epoch": epoch}})
            assert frame[4] == {
                "status": "ok",
                "response": {"recovered": True, "epoch": epoch, "offset": 5},
            }
            assert [await phx.receive() for _ in range(3)] == [
                [None, f"p:{n + 1}", "feed:1", "post", {"n": n}] for n in (2, 3, 4)
            ]
            await app.broadcast("feed:1", "post", {"n": 5})  # live, after the replay
            assert await phx.receive() == [None, "p:6", "feed:1", "post", {"n": 5}]


async def test_live_publications_during_recovery_are_neither_lost_nor_doubled() -> None:
    app = make_feed()
    backend = type(app).history
    assert backend is not None
    original = backend.recover

    async def recover_while_publishing(topic: str, offset: int, epoch: str) -> Any:
        result = await original(topic, offset, epoch)
        # published after the history was read, before the reply: buffered
        await app.broadcast(topic, "post", {"n": "late"})
        return result

    async with open_client(app) as client:
        for n in range(2):
            await app.broadcast("feed:1", "post", {"n": n})
        position = await backend.position("feed:1")
        backend.recover = recover_while_publishing  # type: ignore[method-assign]
        async with client.websocket("/") as ws:
            phx = Phx(ws)
            since = {"offset": 1, "epoch": position.epoch}
            _, frame = await phx.join("feed:1", {"since": since})
            assert frame[4]["response"]["recovered"] is True
            got = [await phx.receive() for _ in range(2)]
            assert got == [
                [None, "p:2", "feed:1", "post", {"n": 1}],
                [None, "p:3", "feed:1", "post", {"n": "late"}],
            ]
            hb = await phx.send(None, "phoenix", "heartbeat", {})
            assert (await phx.receive())[1] == hb  # nothing more: no duplicate


async def test_recovery_refused_with_reason() -> None:
    app = make_feed()
    async with open_client(app) as client, client.websocket("/") as ws:
        phx = Phx(ws)
        _, frame = await phx.join("feed:1", {"since": {"offset": 0, "epoch": "other"}})
        response = frame[4]["response"]
        assert response["recovered"] is False
        assert response["reason"] == "epoch_changed"
        _, frame = await phx.join("plain", {"since": {"offset": 3, "epoch": "e"}})
        assert frame[4]["response"] == {"recovered": False, "reason": "no_history"}
        _, frame = await phx.join("feed:2", {"since": {"offset": -1, "epoch": "e"}})
        assert frame[4]["response"] == {"reason": "bad_message"}


class StubPresence:
    """A one-node tracker with the interface Channels calls (until _presence.py lands)."""

    def __init__(self, hub: Any) -> None:
        self.metas: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self.callbacks: list[Callable[[str, dict[str, Any]], None]] = []
        self.refs = count(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def track(self, topic: str, key: str, conn: str, meta: Any = None) -> str:
        full = {**(meta or {}), "phx_ref": str(next(self.refs))}
        self.metas.setdefault(topic, {}).setdefault(key, {})[conn] = full
        self._diff(topic, {"joins": {key: {"metas": [full]}}, "leaves": {}})
        return str(full["phx_ref"])

    async def untrack(self, topic: str, key: str, conn: str) -> None:
        full = self.metas.get(topic, {}).get(key, {}).pop(conn, None)
        if full is not None:
            self._diff(topic, {"joins": {}, "leaves": {key: {"metas": [full]}}})

    def state(self, topic: str) -> dict[str, Any]:
        return {
            key: {"metas": list(conns.values())}
            for key, conns in self.metas.get(topic, {}).items()
            if conns
        }

    def on_diff(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        self.callbacks.append(callback)

    def _diff(self, topic: str, diff: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback(topic, diff)


class Lobby(Channels):
    def make_presence(self, hub: Any) -> StubPresence:
        return StubPresence(hub)

    @topic("lobby", presence=True)
    class LobbyTopic:
        async def presence_key(self, socket: Socket) -> str:
            return str(socket.ws.request.query.get("nick"))

        async def presence_meta(self, socket: Socket) -> dict[str, Any]:
            return {"tab": socket.ws.request.query.get("tab")}


async def test_presence_state_and_diffs() -> None:
    async with (
        open_client(Lobby) as client,
        client.websocket("/?nick=ann&tab=1") as ws1,
        client.websocket("/?nick=ann&tab=2") as ws2,
    ):
        a, b = Phx(ws1), Phx(ws2)
        _, frame = await a.join("lobby")
        assert frame[4]["status"] == "ok"
        state = (await a.receive_until("presence_state"))[4]
        assert list(state) == ["ann"]
        assert [m["tab"] for m in state["ann"]["metas"]] == ["1"]
        await b.join("lobby")
        state = (await b.receive_until("presence_state"))[4]
        assert sorted(m["tab"] for m in state["ann"]["metas"]) == ["1", "2"]  # one key, two metas
        diff = (await a.receive_until("presence_diff"))[4]
        while [m["tab"] for m in diff["joins"].get("ann", {}).get("metas", [])] != ["2"]:
            diff = (await a.receive_until("presence_diff"))[4]
        await ws2.close()
        diff = (await a.receive_until("presence_diff"))[4]
        assert [m["tab"] for m in diff["leaves"]["ann"]["metas"]] == ["2"]
