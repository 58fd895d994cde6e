"""A frozen Redis (SIGSTOP): every call fails fast, and nothing stays stuck after it thaws.

A Redis that stops answering keeps its TCP connections open, so only a
deadline notices.  The hub bounds every call by its ``timeout``
(``RedisHub(url, timeout=...)``, ``--redis-timeout``, 1 s by default), and
the Channels history on Redis uses the same deadline.  The chat once answered
nothing for the whole freeze (its store had no timeout); now a ``new_msg`` is
refused ``unavailable`` ("your message was not sent") within the timeout, a
``history`` request is answered (not left hanging) as fast, and once Redis
thaws the connection pool works again (a timed-out command does not leave a
connection owing a reply): the next ``new_msg`` is stored and delivered.

The chat runs as a real process (``python -m peregrine_rt
examples.chat.app:Chat --redis URL --redis-timeout 0.5``, ``chat_nodes.py``),
its client is :mod:`peregrine_rt.client`.

Needs ``redis-server``: skipped without it, unless ``CI`` is set (then it fails).
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from peregrine_rt import HubUnavailable, RedisHub
from peregrine_rt.client import PushError
from peregrine_rt.testing import RedisServer, start_redis_server, wait_until
from tests.integration.chat_nodes import ChatNode, open_peer

TIMEOUT = 0.5  # the hub's: every call to Redis
FAST = 3 * TIMEOUT  # "fails fast": well within the freeze, a few timeouts at most


@pytest.fixture
def own_redis(redis_server: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (``redis_server`` skips or fails without one)."""
    with start_redis_server(tmp_path / "redis") as server:
        yield server


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """SIGSTOP for the block; SIGCONT whatever happens."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_the_default_timeout_is_one_second() -> None:
    assert RedisHub("redis://127.0.0.1:6379").timeout == 1.0


async def test_publish_fails_fast_and_the_hub_recovers(own_redis: RedisServer) -> None:
    hub = RedisHub(own_redis.url, timeout=TIMEOUT)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve)
        with frozen(own_redis):
            for _ in range(3):  # the first waits for the deadline, the others fail at once
                with trio.fail_after(FAST), pytest.raises(HubUnavailable):
                    await hub.publish("t", "frozen")
        await wait_until(lambda: hub.connected, timeout=10)
        with trio.fail_after(FAST):
            await hub.publish("t", "thawed")
        assert hub.lost == 3
        nursery.cancel_scope.cancel()


@pytest.fixture
async def node(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[ChatNode]:
    """One chat node on ``own_redis``, every Redis call bounded by :data:`TIMEOUT`."""
    node = ChatNode(tmp_path / "node.log", own_redis.url, "--redis-timeout", str(TIMEOUT))
    try:
        await node.start()
        yield node
    finally:
        node.stop()


async def test_the_chat_says_not_sent_and_recovers(own_redis: RedisServer, node: ChatNode) -> None:
    async with open_peer(node.url, "ada") as ada, open_peer(node.url, "bob") as bob:
        assert await ada.post("before") == "ok"
        await wait_until(lambda: "before" in bob.shown, timeout=10)
        with frozen(own_redis):
            for text in ("x1", "x2"):  # the second too: no connection is stuck on the first
                with trio.fail_after(FAST):
                    assert await ada.post(text) == "unavailable"
            with trio.fail_after(FAST), pytest.raises(PushError):
                await ada.lobby.push("history", {"before": 10**9, "limit": 10})

        # Thawed: the pool's connections were dropped, new ones answer.
        await wait_until(lambda: bob.socket.connected and ada.socket.connected, timeout=10)
        with trio.fail_after(10):
            assert await ada.post("back") == "ok"
        await wait_until(lambda: "back" in bob.shown, timeout=10)
        answer = await bob.lobby.push("history", {"before": ada.acked["back"] + 1})
        texts = [m["text"] for m in answer["messages"]]
        assert ada.refused == {"x1": "unavailable", "x2": "unavailable"}
        # "Not sent" means not sent: neither stored nor shown to anyone once Redis thaws.
        stored = {"x1", "x2"} & set(texts)
        shown = {p.nick: sorted({"x1", "x2"} & p.shown) for p in (ada, bob)}
        assert not stored and not any(shown.values()), (
            f"refused 'unavailable' (not sent), yet stored: {sorted(stored)}, shown: {shown}"
        )
        assert texts == ["before", "back"]
