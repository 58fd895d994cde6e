"""peregrine_rt Channels apps for ``bench/channels.py``: one topic, every publish to everyone.

Run: ``peregrine-rt bench.servers.channels_peregrine:Memory --port N --log-level warning``
(``:SQLite`` with ``BENCH_CHANNELS_DIR=<data dir>``; ``:Redis`` with
``BENCH_REDIS_URL=<url>`` and ``--redis-url <url>``, on every node).

Every client joins the topic ``bench`` and pushes ``pub`` events (ref null: no
reply); each is broadcast as ``msg`` to every member, the sender included.
Every topic keeps history, so every broadcast is appended first and carries
its offset (``"p:<n>"``): the "recovery on" configuration of the issue.  The
limits are raised so that the offered load, not the per-connection and
per-topic rate limits, is what is measured.
"""

from __future__ import annotations

import os
from typing import Any

from peregrine_rt._channels import Channels, Limits, Socket, topic
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt._channels._redis_history import RedisHistory
from peregrine_rt._channels._sqlite import SQLiteHistory

LIMITS = Limits(
    publish_rate=10_000.0,
    publish_burst=10_000,
    topic_publish_rate=1_000_000.0,
    topic_publish_burst=1_000_000,
)


@topic("bench")
class Bench:
    """The topic ``bench``: ``pub`` is broadcast to every member as ``msg``."""

    async def on_pub(self, socket: Socket, payload: Any) -> None:
        await socket.broadcast("msg", payload)


class Memory(Channels):
    history = MemoryHistory(max_count=1000)
    limits = LIMITS
    Bench = Bench


class SQLite(Channels):
    history = (
        SQLiteHistory(os.environ["BENCH_CHANNELS_DIR"], max_count=1000)
        if "BENCH_CHANNELS_DIR" in os.environ
        else None
    )
    limits = LIMITS
    Bench = Bench


class Redis(Channels):
    history = (
        RedisHistory(os.environ["BENCH_REDIS_URL"], max_count=1000)
        if "BENCH_REDIS_URL" in os.environ
        else None
    )
    limits = LIMITS
    Bench = Bench
