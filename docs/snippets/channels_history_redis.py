"""History across nodes: Redis Streams (docs/channels/history.rst).

The page shows the part between the ``# [app]`` markers; the test serves two
nodes on one real redis-server, then empties Redis as a restart without
persistence would: the nodes that knew the topic keep its epoch; a node that
did not starts a new one.
"""

from __future__ import annotations

import os
from typing import Any

import coredis

from peregrine_rt import RedisHub
from peregrine_rt._channels import Channels, Socket, topic
from peregrine_rt._channels._redis_history import RedisHistory
from peregrine_rt.testing import ClientWebSocket, LiveServer, open_client, open_server, wait_until

# [app]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class Chat(Channels):
    # Serve every node with Config(redis_url=REDIS_URL): the hub and the
    # history share the Redis and the default "peregrine:" prefix.
    history = RedisHistory(REDIS_URL, max_count=1000, max_age=24 * 3600)

    @topic("room:{name}")
    class Room:
        async def on_new_msg(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast("new_msg", payload)


# [/app]


def chat_on(url: str) -> Chat:
    class Here(Chat):
        history = RedisHistory(url)

    return Here()


def linked(node: LiveServer) -> bool:
    hub = node.server.hub
    return isinstance(hub, RedisHub) and hub.connected


async def join(ws: ClientWebSocket, params: dict[str, Any]) -> dict[str, Any]:
    await ws.send_json(["1", "1", "room:lobby", "phx_join", params])
    frame = await ws.receive_json()
    assert frame[3:] == ["phx_reply", {"status": "ok", "response": frame[4]["response"]}]
    response: dict[str, Any] = frame[4]["response"]
    return response


async def test_two_nodes_then_redis_comes_back_empty(redis_url: str) -> None:
    async with (
        open_server(chat_on(redis_url), redis_url=redis_url) as node_a,  # two nodes
        open_server(chat_on(redis_url), redis_url=redis_url) as node_b,
        open_client(node_a.url) as on_a,
        open_client(node_b.url) as on_b,
        on_a.websocket("/") as alice,
        on_b.websocket("/") as bob,
    ):
        await wait_until(lambda: linked(node_a) and linked(node_b))
        epoch = (await join(alice, {}))["epoch"]
        await join(bob, {})
        await bob.send_json(["1", None, "room:lobby", "new_msg", {"text": "hi"}])
        expected = [None, "p:1", "room:lobby", "new_msg", {"text": "hi"}]
        assert await alice.receive_json() == expected  # across nodes, with its offset
        assert await bob.receive_json() == expected

        async with coredis.Redis.from_url(redis_url) as redis:
            await redis.flushall()  # Redis restarted without persistence

        await alice.send_json(["1", "2", "room:lobby", "phx_leave", {}])
        assert (await alice.receive_json())[3] == "phx_reply"
        assert (await alice.receive_json())[3] == "phx_close"
        rejoined = await join(alice, {"since": {"offset": 1, "epoch": epoch}})
        # Node A knew the topic: it goes on in its epoch, and alice, who had
        # seen offset 1, missed nothing.
        assert (rejoined["recovered"], rejoined["epoch"], rejoined["offset"]) == (True, epoch, 1)
        await bob.send_json(["1", None, "room:lobby", "new_msg", {"text": "again"}])
        assert (await alice.receive_json())[1] == "p:2"  # offsets go on, never reused

        async with coredis.Redis.from_url(redis_url) as redis:
            await redis.flushall()
        async with open_server(chat_on(redis_url), redis_url=redis_url) as node_c:
            await wait_until(lambda: linked(node_c))
            async with open_client(node_c.url) as on_c, on_c.websocket("/") as carol:
                # A node that never knew the topic: a new epoch, offsets from 1.
                fresh = await join(carol, {"since": {"offset": 2, "epoch": epoch}})
                assert (fresh["recovered"], fresh["reason"]) == (False, "epoch_changed")
                assert fresh["epoch"] != epoch and fresh["offset"] == 0
