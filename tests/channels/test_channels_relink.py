"""After the hub's link to Redis came back, a node catches its members up.

Redis pub/sub keeps nothing: what was broadcast while a node's link was
down never reaches that node.  A hub with ``on_link`` (RedisHub) tells the
Channels layer when its link is up again; here a hub whose link the test
cuts and restores stands in for it, with a real history backend.  The
members get exactly the publications they missed, in order and once,
without asking; when the history cannot say (a new epoch: Redis came back
empty), they are told to rejoin and learn ``recovered: false``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

import peregrine_rt as pr
from peregrine_rt._channels import Channels, topic
from peregrine_rt._channels._history import MemoryHistory, Position, Publication, Recovery
from peregrine_rt.testing import wait_until
from peregrine_rt.testing._channels import open_channels_client


class FlakyHub(pr.Hub):
    """A hub whose link the test cuts (publishes reach nobody) and restores (``on_link``)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False
        self.callbacks: list[Callable[[str], None]] = []

    def on_link(self, callback: Callable[[str], None]) -> None:
        self.callbacks.append(callback)

    async def publish(self, topic: str, message: str | bytes) -> int:
        if self.cut:
            await trio.lowlevel.checkpoint()
            return 0
        return await super().publish(topic, message)

    def relink(self) -> None:
        self.cut = False
        for callback in self.callbacks:
            callback("another-run-id")


class Resettable:
    """A MemoryHistory that the test can empty, as a Redis restarted without its data."""

    delivers = False

    def __init__(self) -> None:
        self.inner = MemoryHistory()

    def reset(self) -> None:
        self.inner = MemoryHistory()  # a new epoch, offsets from 1 again

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def append(
        self, topic: str, event: str, payload: Any, *, sender: str | None = None
    ) -> Publication:
        return await self.inner.append(topic, event, payload, sender=sender)

    async def history(
        self, topic: str, *, since: int | None = None, limit: int | None = None
    ) -> list[Publication]:
        return await self.inner.history(topic, since=since, limit=limit)

    async def position(self, topic: str) -> Position:
        return await self.inner.position(topic)

    async def recover(self, topic: str, offset: int, epoch: str) -> Recovery:
        return await self.inner.recover(topic, offset, epoch)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Feed(Channels):
    @topic("news")
    class News:
        pass

    @topic("chatter", history=False)
    class Chatter:
        pass


def served(history: Any) -> tuple[pr.Server, FlakyHub, Feed]:
    app = Feed(history=history)
    server = pr.Server(app)
    server.hub = hub = FlakyHub()
    return server, hub, app


async def test_a_member_gets_what_was_missed_while_the_link_was_down_once_and_in_order() -> None:
    server, hub, app = served(MemoryHistory())
    with trio.fail_after(10):  # fail, not hang, when nothing comes
        async with open_channels_client(server) as client:
            news = client.channel("news")
            async with news.messages("item") as seen:
                await news.join()
                await app.broadcast("news", "item", {"n": 1})
                assert (await seen.receive()).payload == {"n": 1}
                hub.cut = True
                for n in (2, 3, 4):
                    await app.broadcast("news", "item", {"n": n})  # stored, delivered to no one
                hub.relink()
                await app.broadcast("news", "item", {"n": 5})  # kept until the catch-up is done
                got = [await seen.receive() for _ in range(4)]
                assert [(m.offset, m.payload["n"]) for m in got] == [(2, 2), (3, 3), (4, 4), (5, 5)]
                await app.broadcast("news", "item", {"n": 6})
                assert (await seen.receive()).offset == 6  # nothing twice before it
            assert news.recovered is None  # the client never had to rejoin


async def test_a_new_epoch_after_the_link_came_back_makes_members_rejoin_and_refetch() -> None:
    history = Resettable()
    server, hub, app = served(history)
    with trio.fail_after(10):  # fail, not hang, when nothing comes
        async with open_channels_client(server) as client:
            news = client.channel("news")
            async with news.joins() as joins, news.messages("item") as seen:
                await news.join()
                await app.broadcast("news", "item", {"n": 1})
                assert (await seen.receive()).offset == 1
                hub.cut = True
                history.reset()  # Redis came back empty
                hub.relink()
                rejoin = await joins.receive()
                while not rejoin.rejoin:
                    rejoin = await joins.receive()
                assert (rejoin.recovered, rejoin.reason) == (False, "epoch_changed")
                await app.broadcast("news", "item", {"n": 2})
                message = await seen.receive()
                assert (message.offset, message.payload) == (1, {"n": 2})  # the new epoch's first


async def test_topics_without_history_are_left_alone() -> None:
    server, hub, app = served(MemoryHistory())
    with trio.fail_after(10):  # fail, not hang, when nothing comes
        async with open_channels_client(server) as client:
            chatter = client.channel("chatter")
            async with chatter.messages("said") as seen:
                await chatter.join()
                hub.cut = True
                await app.broadcast("chatter", "said", {"n": 1})  # lost, as pub/sub loses it
                hub.relink()
                await app.broadcast("chatter", "said", {"n": 2})
                assert (await seen.receive()).payload == {"n": 2}
                await wait_until(lambda: chatter.state.name == "JOINED")
