"""What ``broadcast`` returns and skips: offsets, ``history=False``, ``make_history``."""

from __future__ import annotations

from typing import Any, ClassVar

import peregrine_rt as pr
from peregrine_rt._channels import Channels, Socket, topic
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt.testing._channels import open_channels_client

CHOSEN = MemoryHistory()


class Feed(Channels):
    history = MemoryHistory()

    @topic("news")
    class News:
        async def on_post(self, socket: Socket, payload: Any) -> dict[str, Any]:
            return {"offset": await socket.broadcast("item", payload)}

        async def on_cursor(self, socket: Socket, payload: Any) -> dict[str, Any]:
            return {"offset": await socket.broadcast("cursor", payload, history=False)}

    @topic("plain", history=False)
    class Plain:
        async def on_post(self, socket: Socket, payload: Any) -> dict[str, Any]:
            return {"offset": await socket.broadcast("item", payload)}


async def test_broadcast_returns_the_offset_and_history_false_stores_nothing() -> None:
    app = Feed()
    async with open_channels_client(app) as client:
        news = client.channel("news")
        async with news.messages("item", "cursor") as seen:
            await news.join()
            assert await news.push("post", {"n": 1}) == {"offset": 1}
            assert await news.push("cursor", {"x": 5}) == {"offset": None}
            assert await news.push("post", {"n": 2}) == {"offset": 2}  # no gap for the cursor
            got = [await seen.receive() for _ in range(3)]
        assert [(m.event, m.offset) for m in got] == [("item", 1), ("cursor", None), ("item", 2)]
        kept = await app.history_of("news")
        assert [(p.event, p.payload) for p in kept] == [("item", {"n": 1}), ("item", {"n": 2})]
        plain = client.channel("plain")
        await plain.join()
        assert await plain.push("post", {}) == {"offset": None}  # a topic without history


class Chooser(Channels):
    """No class history: ``make_history`` picks one once the hub is known."""

    hubs: ClassVar[list[pr.Hub]] = []

    def make_history(self, hub: pr.Hub) -> pr.History:
        self.hubs.append(hub)
        return CHOSEN

    @topic("log")
    class Log:
        async def on_post(self, socket: Socket, payload: Any) -> dict[str, Any]:
            return {"offset": await socket.broadcast("line", payload)}


async def test_make_history_chooses_the_backend_when_none_was_given() -> None:
    app = Chooser()
    async with open_channels_client(app) as client:
        log = client.channel("log")
        reply = await log.join()
        assert reply["offset"] == (await CHOSEN.position("log")).offset
        assert await log.push("post", {"n": 1}) == {"offset": reply["offset"] + 1}
    assert len(Chooser.hubs) == 1 and isinstance(Chooser.hubs[0], pr.Hub)
    given = MemoryHistory()
    explicit = Chooser(history=given)  # a constructor's backend wins: no hook call
    async with open_channels_client(explicit) as client:
        log = client.channel("log")
        await log.join()
        await log.push("post", {"n": 1})
    assert len(Chooser.hubs) == 1
    assert [p.payload for p in await given.history("log")] == [{"n": 1}]
