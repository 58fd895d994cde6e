"""A node for ``test_presence_nodes.py``: a RedisHub and a Presence in a process of its own.

Run as ``python -m tests.channels.presence_node REDIS_URL TOPIC KEY CONN NODE_TTL HEARTBEAT``
(from the repository's root).  It connects the hub, runs the Presence, tracks
``KEY`` for connection ``CONN`` on ``TOPIC`` (meta ``{"conn": CONN}``), then
prints one JSON line per event on stdout, flushed at once:

* ``{"ready": NODE_ID, "state": STATE}`` once tracked;
* ``{"diff": DIFF, "state": STATE}`` after each change it reports on ``TOPIC``.

It runs until killed: the test ends it with SIGKILL (no ``bye``, nothing
more), which is the point.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from peregrine_rt._channels._presence import Presence
from peregrine_rt._redis_hub import RedisHub


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def main(url: str, topic: str, key: str, conn: str, ttl: float, beat: float) -> None:
    hub = RedisHub(url)
    presence = Presence(hub, node_ttl=ttl, heartbeat=beat)
    presence.on_diff(
        lambda t, diff: say(diff=diff, state=presence.state(topic)) if t == topic else None
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve)
        await nursery.start(presence.run)
        await presence.track(topic, key, conn, {"conn": conn})
        say(ready=presence.node_id, state=presence.state(topic))


if __name__ == "__main__":
    url, topic, key, conn, ttl, beat = sys.argv[1:]
    trio.run(main, url, topic, key, conn, float(ttl), float(beat))
