"""A frozen Redis (SIGSTOP): every call fails fast, and nothing stays stuck after it thaws.

A Redis that stops answering keeps its TCP connections open, so only a
deadline notices.  The hub bounds every call by its ``timeout``
(``RedisHub(url, timeout=...)``, 1 s by default); the chat's store uses the
same deadline.  The chat answered nothing for the whole freeze (its store had
no timeout); now a ``say`` is answered "not sent" within the timeout, history
reads raise :class:`~peregrine_rt.HubUnavailable`, and once Redis thaws the
connection pool works again (a timed-out command does not leave a connection
owing a reply).

Needs ``redis-server``: skipped without it, unless ``CI`` is set (then it fails).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from examples.chat.app import Chat
from peregrine_rt import HubUnavailable, RedisHub
from peregrine_rt.testing import ClientWebSocket, open_client, wait_until
from peregrine_rt.testing._redis import RedisServer, start_redis_server

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


async def next_of(ws: ClientWebSocket, kind: str) -> dict[str, Any]:
    while True:
        data = await ws.receive_json()
        if data["type"] == kind:
            return data  # type: ignore[no-any-return]


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


async def test_the_chat_says_not_sent_and_history_fails_fast(own_redis: RedisServer) -> None:
    async with open_client(Chat, redis_url=own_redis.url) as client:
        store = client.app.store
        store.timeout = TIMEOUT  # the server built its hub with the default (1 s)
        async with client.websocket("/ws") as ada:
            await ada.send_json({"type": "hello", "nick": "ada"})
            await next_of(ada, "presence")  # hello is done
            with frozen(own_redis):
                with trio.fail_after(FAST):
                    await ada.send_json({"type": "say", "room": "lobby", "text": "x", "ref": 7})
                    error = await next_of(ada, "error")
                assert (error["code"], error["room"], error["ref"]) == ("unavailable", "lobby", 7)
                assert "not sent" in error["text"]
                with trio.fail_after(FAST), pytest.raises(HubUnavailable, match="history"):
                    await store.history("lobby", None)
                with trio.fail_after(FAST), pytest.raises(HubUnavailable):
                    await store.rooms()

            # Thawed: the pool's connections were dropped, new ones answer.
            async def sent() -> dict[str, Any]:
                await ada.send_json({"type": "say", "room": "lobby", "text": "back", "ref": 8})
                return await next_of(ada, "sent")

            with trio.fail_after(10):
                ack = await sent()
            assert ack["ref"] == 8
            history = await store.history("lobby", None)
            assert [m["text"] for m in history] == ["back"]  # "x" was never stored
