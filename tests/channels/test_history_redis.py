"""RedisHistory beyond the shared contract, against a real redis-server.

The append script's PUBLISH must be exactly what a RedisHub delivers to the
sockets of hub topic ``channels:<topic>``: the Phoenix frame the codec makes.
The redis-server is the test session's (``redis_url``, emptied before each
test); without redis-server these tests are skipped unless ``CI`` is set,
where they fail.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import pytest
import trio

import peregrine_rt as pr
from peregrine_rt import HubUnavailable, RedisHub
from peregrine_rt._channels._history import EPOCH_CHANGED, TOO_OLD, hub_topic
from peregrine_rt._channels._phoenix import Frame, encode
from peregrine_rt._channels._redis_history import RedisHistory
from peregrine_rt.testing import ClientWebSocket, LiveServer, open_client, open_server, wait_until

TOPIC = "room:lobby"


class Collector:
    """A hub subscriber that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    def deliver(self, message: str | bytes) -> bool:
        self.messages.append(message)
        return True


class Lobby:
    """Every WebSocket is subscribed to the hub topic of ``room:lobby``."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_open(self, ws: pr.WebSocket) -> None:
        ws.hub.subscribe(ws, hub_topic(TOPIC))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass


@asynccontextmanager
async def running(*services: Any) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        for service in services:
            await nursery.start(service.serve if isinstance(service, RedisHub) else service.run)
        yield
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def redis(url: str) -> AsyncIterator[coredis.Redis[str]]:
    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        yield client


@asynccontextmanager
async def lobby_socket(live: LiveServer) -> AsyncIterator[ClientWebSocket]:
    """A WebSocket to ``live``, once its hub is linked and the socket subscribed."""
    hub = live.server.hub
    assert isinstance(hub, RedisHub)
    async with open_client(live.url) as client, client.websocket("/") as ws:
        await wait_until(lambda: hub.connected and hub.count(hub_topic(TOPIC)) == 1)
        yield ws


async def test_the_append_reaches_sockets_of_every_node_as_the_phoenix_frame(
    redis_url: str,
) -> None:
    other_node = RedisHub(redis_url)
    elsewhere = Collector()
    other_node.subscribe(elsewhere, hub_topic(TOPIC))
    with trio.fail_after(20):
        async with open_server(Lobby, redis_url=redis_url) as live:
            hub = live.server.hub
            assert isinstance(hub, RedisHub)
            history = RedisHistory(hub)
            assert history.delivers
            async with running(other_node, history), lobby_socket(live) as ws:
                payload = {"body": 'héllo <b>"there"</b> \\ 🦅', "n": [1, 2.5, None]}
                first = await history.append(TOPIC, "new_msg", payload)
                second = await history.append(TOPIC, "new_msg", {"body": "again"})
                expected = [
                    encode(Frame(None, f"p:{pub.offset}", TOPIC, pub.event, pub.payload))
                    for pub in (first, second)
                ]
                # Once each, in offset order, on this node (whose hub did not
                # publish it) and on the other.
                assert [await ws.receive(), await ws.receive()] == expected
                await wait_until(lambda: len(elsewhere.messages) == 2)
                assert elsewhere.messages == expected
                # Nothing more: a message published after both arrives next.
                await other_node.publish(hub_topic(TOPIC), "marker")
                assert await ws.receive() == "marker"


async def test_keys_and_channel_follow_the_hub_prefix(redis_url: str) -> None:
    hub = RedisHub(redis_url, prefix="app1:")
    history = RedisHistory(hub)
    assert history.channel(TOPIC) == "app1:channels:room:lobby"
    async with running(history), redis(redis_url) as client:
        await history.append(TOPIC, "e", 1)
        keys = sorted(await client.keys("*"))
        assert keys == ["app1:history:{room:lobby}:m", "app1:history:{room:lobby}:s"]
        meta = await client.hgetall("app1:history:{room:lobby}:m")
        assert meta["last"] == "1"
        assert meta["epoch"] == (await history.position(TOPIC)).epoch


async def test_the_stream_is_trimmed_in_redis(redis_url: str) -> None:
    now = [1000.0]
    history = RedisHistory(redis_url, max_count=100, max_age=60, clock=lambda: now[0])
    stream = "peregrine:history:{t}:s"
    async with running(history), redis(redis_url) as client:
        for _ in range(1000):
            await history.append("t", "e", None)
        # MAXLEN ~ trims whole nodes of the stream: about max_count are left.
        assert 100 <= await client.xlen(stream) < 300
        assert [p.offset for p in await history.history("t")] == list(range(901, 1001))
        now[0] += 61
        await history.append("t", "e", None)  # the append drops what expired
        assert await client.xlen(stream) == 1


async def test_lost_entries_are_a_gap_never_silent(redis_url: str) -> None:
    history = RedisHistory(redis_url)
    async with running(history), redis(redis_url) as client:
        for n in range(1, 4):
            await history.append(TOPIC, "e", n)
        epoch = (await history.position(TOPIC)).epoch
        # The stream alone is gone (evicted under maxmemory, say): the offset is not.
        await client.delete(["peregrine:history:{room:lobby}:s"])
        result = await history.recover(TOPIC, 1, epoch)
        assert (result.recovered, result.reason) == (False, TOO_OLD)
        assert (await history.append(TOPIC, "e", 4)).offset == 4


async def test_a_lost_offset_is_a_new_epoch_without_stale_entries(redis_url: str) -> None:
    history = RedisHistory(redis_url)
    stranger = RedisHistory(redis_url)  # a node that never touched the topic
    async with running(history, stranger), redis(redis_url) as client:
        for n in range(1, 4):
            await history.append(TOPIC, "e", n)
        old = await history.position(TOPIC)
        await client.delete(["peregrine:history:{room:lobby}:m"])  # the stream survives
        assert (await stranger.append(TOPIC, "e", "new")).offset == 1
        assert [p.payload for p in await stranger.history(TOPIC)] == ["new"]
        result = await history.recover(TOPIC, 3, old.epoch)
        assert (result.recovered, result.reason) == (False, EPOCH_CHANGED)
        assert (await history.append(TOPIC, "e", "next")).offset == 2  # it follows Redis now


async def test_a_node_that_knew_the_topic_keeps_its_epoch_when_redis_comes_back_empty(
    redis_url: str,
) -> None:
    history = RedisHistory(redis_url)
    async with running(history), redis(redis_url) as client:
        for n in range(1, 4):
            await history.append(TOPIC, "e", n)
        old = await history.position(TOPIC)
        await client.flushall()  # a restart without persistence
        caught_up = await history.recover(TOPIC, 3, old.epoch)
        assert (caught_up.recovered, caught_up.position) == (True, old)  # it missed nothing
        behind = await history.recover(TOPIC, 1, old.epoch)
        assert (behind.recovered, behind.reason) == (False, TOO_OLD)  # 2 and 3 are gone
        assert (await history.append(TOPIC, "e", 4)).offset == 4  # never 1 again


async def test_its_own_recent_appends_are_put_back_after_a_restart(redis_url: str) -> None:
    history = RedisHistory(redis_url)
    other, stranger = RedisHistory(redis_url), RedisHistory(redis_url)
    async with running(history, other, stranger), redis(redis_url) as client:
        for n in range(1, 4):
            await history.append(TOPIC, "e", n)
        old = await history.position(TOPIC)
        await client.flushall()
        assert (await other.append(TOPIC, "e", "meanwhile")).offset == 1  # a stranger: epoch 2
        await client.flushall()
        await history.append("room:other", "e", "first after")  # the meta comes back alone
        assert await history.reseed() == 3
        again = await history.recover(TOPIC, 0, old.epoch)
        assert again.recovered
        assert [(p.offset, p.payload) for p in again.publications] == [(1, 1), (2, 2), (3, 3)]
        assert await history.reseed() == 0  # nothing lacks any more: nothing twice
        assert [p.offset for p in await history.history(TOPIC)] == [1, 2, 3]
        await client.flushall()
        assert (await stranger.append(TOPIC, "e", "first")).offset == 1  # a new epoch won
        assert await history.reseed() == 1  # room:other's, flushed too; TOPIC's: not mixed in
        assert [p.payload for p in await stranger.history(TOPIC)] == ["first"]


async def test_a_new_run_id_puts_the_data_back_before_the_members_catch_up(
    redis_url: str,
) -> None:
    history = RedisHistory(redis_url)
    async with running(history), redis(redis_url) as client:
        history.relinked("first-run")
        await history.append(TOPIC, "e", 1)
        old = await history.position(TOPIC)
        await client.flushall()
        history.relinked("first-run")  # the same server: nothing was lost
        with trio.fail_after(5):
            await history.settled()
        assert await history.history(TOPIC) == []
        history.relinked("second-run")  # a restarted server
        with trio.fail_after(5):
            await history.settled()
        assert [p.payload for p in (await history.recover(TOPIC, 0, old.epoch)).publications] == [1]


async def test_not_running_and_unreachable(redis_url: str) -> None:
    history = RedisHistory(redis_url)
    with pytest.raises(trio.ClosedResourceError, match="run"):
        await history.append(TOPIC, "e", 1)

    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = RedisHistory(f"redis://127.0.0.1:{port}", timeout=2)
    async with running(down):
        with pytest.raises(HubUnavailable, match="append 'room:lobby'") as info:
            await down.append(TOPIC, "e", 1)
        assert (info.value.topic, info.value.delivered) == (TOPIC, 0)
        with pytest.raises(HubUnavailable):
            await down.recover(TOPIC, 0, "e")


async def test_a_sender_is_named_in_the_hub_message(redis_url: str) -> None:
    node = RedisHub(redis_url)
    seen = Collector()
    node.subscribe(seen, hub_topic(TOPIC))
    history = RedisHistory(node)
    async with running(node, history):
        await wait_until(lambda: node.connected)
        pub = await history.append(TOPIC, "new_msg", {"x": 1}, sender="c42")
        await wait_until(lambda: len(seen.messages) == 1)
        frame = encode(Frame(None, "p:1", TOPIC, "new_msg", {"x": 1}))
        assert pub.offset == 1
        assert seen.messages == [f"!c42\n{frame}"]  # broadcast_from's hub message


async def test_overlapping_runs_share_the_backend(redis_url: str) -> None:
    history = RedisHistory(redis_url)
    async with trio.open_nursery() as outer:
        await outer.start(history.run)
        async with running(history):  # a second server of the process runs it too
            assert (await history.append(TOPIC, "e", 1)).offset == 1
        assert (await history.append(TOPIC, "e", 2)).offset == 2  # the first run still serves
        outer.cancel_scope.cancel()
    with pytest.raises(trio.ClosedResourceError):
        await history.position(TOPIC)


async def test_an_append_that_timed_out_is_not_stored_when_redis_thaws(tmp_path: Any) -> None:
    # A frozen Redis keeps the script in its socket buffer and runs it when it
    # thaws: without a deadline, an append reported as failed would be stored.
    from peregrine_rt.testing._redis import start_redis_server

    with start_redis_server(tmp_path / "redis") as server:
        history = RedisHistory(server.url, timeout=0.3)
        async with running(history):
            await wait_until(lambda: history.clock_known)  # the deadline needs Redis's clock
            await history.append(TOPIC, "e", "before")
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with pytest.raises(HubUnavailable):
                    await history.append(TOPIC, "e", "frozen")
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await wait_until(server.ping)
            stored = await history.history(TOPIC)
            assert [p.payload for p in stored] == ["before"]
            assert (await history.append(TOPIC, "e", "after")).offset == 2  # no hole either
