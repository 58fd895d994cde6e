"""The old chat for ``bench/channels.py``, its rate limit raised.

Run: ``peregrine-rt bench.servers.channels_chat:Chat --port N --log-level warning``

The old chat is the frozen copy in ``bench/servers/old_chat`` (the chat as
``make run`` served it on commit 9afa2d8, before it moved to Channels: its own
JSON protocol, ids, in-memory history, per-room feed, presence), except that
its per-connection message rate (5/s, a burst of 10) is raised: at K=100 the
benchmark offers more than that per client, and the point is to measure
delivery, not the limiter.
"""

from __future__ import annotations

import bench.servers.old_chat.app as chat

chat.RATE = 10_000.0  # read when a connection's token bucket is made
chat.BURST = 10_000

Chat = chat.Chat
