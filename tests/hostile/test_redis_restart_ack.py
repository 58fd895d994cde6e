"""Redis restarts empty under two chat nodes: every acknowledged message still reaches everyone.

Issue #21 item 6, moved with the chat onto Channels: "acknowledged" means
delivered or recoverable.  A message whose sender got the ok reply of its
``new_msg`` (``{"id": offset}``) must be shown to every connected client,
live or, after the client's recovery, from history; and joining works
again once Redis is back (the default room is there).

Before Channels, in 4 runs of 5, two to four acknowledged messages never
reached the client on the other node (that node's hub had not resubscribed
yet when they were published), and the resync ``join`` of ``lobby`` failed
with ``no_such_room``.

Here: two real chat nodes (``python -m peregrine_rt examples.chat.app:Chat
--redis URL``), a real redis-server stopped and started again, empty, on its
port, five times.  The clients are :mod:`peregrine_rt.client` sockets that do
what the browser client does (``chat_nodes.ChatPeer``): keep every
``new_msg``, and when a rejoin says ``recovered: false`` ask ``history``
again.  Ada (node one) posts, each post once the previous one was answered
(the chat's rate limit lifted: ``fast_chat.py``); Bob (node two) watches.
After each restart the test waits for every acknowledged message to be
shown to both; what is still missing then is recorded (with whether a fresh
client's history has it), and the test fails at the end naming, per restart,
what each client lacks.

Needs ``redis-server``: skipped without it, unless ``CI`` is set (then it fails).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from peregrine_rt.testing import RedisServer, start_redis_server, wait_until
from tests.integration.chat_nodes import (
    ChatNode,
    ChatPeer,
    acknowledged,
    missing,
    open_peer,
)

RESTARTS = 5
CATCH_UP = 15.0
"""Seconds every client gets to be shown every acknowledged message after a restart."""


@pytest.fixture
def own_redis(redis_server: str, tmp_path: Path) -> Iterator[list[RedisServer]]:
    """A redis-server of this test's own, restartable on its port (the list holds the live one)."""
    servers = [start_redis_server(tmp_path / "redis")]
    try:
        yield servers
    finally:
        servers[-1].stop()


@pytest.fixture
async def nodes(own_redis: list[RedisServer], tmp_path: Path) -> AsyncIterator[list[ChatNode]]:
    started = [ChatNode(tmp_path / f"node{i}.log", own_redis[0].url) for i in (1, 2)]
    try:
        for node in started:
            await node.start()
        yield started
    finally:
        for node in started:
            node.stop()


async def fresh_history(node: ChatNode, nick: str) -> tuple[list[str], set[str]]:
    """A new client joins ``chat`` and ``room:lobby``: the rooms listed, the texts in history."""
    async with open_peer(node.url, nick) as fresh:
        rooms = fresh.chat.join_reply
        assert rooms is not None
        reply = fresh.lobby.join_reply
        assert reply is not None
        answer = await fresh.lobby.push("history", {"before": reply.response["offset"] + 1})
        return list(rooms.response["rooms"]), {m["text"] for m in answer["messages"]}


async def test_acknowledged_messages_survive_redis_restarts(
    own_redis: list[RedisServer], nodes: list[ChatNode]
) -> None:
    one, two = nodes
    n = 0
    async with open_peer(one.url, "ada") as ada, open_peer(two.url, "bob") as bob:
        peers: list[ChatPeer] = [ada, bob]

        async def say(count: int) -> None:
            nonlocal n
            for _ in range(count):
                n += 1
                await ada.post(f"m{n}")  # once the previous one was answered

        await say(2)
        await wait_until(lambda: not missing(peers, acknowledged(peers)), timeout=CATCH_UP)
        lost: dict[int, dict[str, list[str]]] = {}
        in_history: dict[int, set[str]] = {}
        for restart in range(RESTARTS):
            await say(2)
            own_redis[-1].stop()
            await say(2)  # refused: "unavailable"
            own_redis.append(start_redis_server(own_redis[-1].directory, port=own_redis[-1].port))
            await say(3)
            acked = acknowledged(peers)
            assert acked, f"restart {restart}: nothing acknowledged"
            try:
                await wait_until(lambda acked=acked: not missing(peers, acked), timeout=CATCH_UP)  # type: ignore[misc]
            except AssertionError:  # still missing: recorded, the test fails at the end
                lost[restart] = missing(peers, acked)
            # Rejoin works, and the default room is there again.
            rooms, history = await fresh_history(two, f"fresh{restart}")
            assert "lobby" in rooms
            in_history[restart] = {t for m in lost.get(restart, {}).values() for t in m} & history

        assert set(ada.acked) & set(ada.refused) == set()
        assert len(ada.acked) >= RESTARTS * 5  # most were acknowledged
        repeats = {p.nick: [t for t, c in p.live.items() if c > 1] for p in peers}
        assert not any(repeats.values()), f"delivered live twice: {repeats}"
        assert not lost, (
            f"acknowledged but never shown, per restart and client: {lost}; of these, in a "
            f"fresh client's history: {in_history}; {len(ada.acked)} acknowledged in all, "
            f"refused: {len(ada.refused)}; bob's rejoins: {bob.rejoins}"
        )
