"""The chat example with its per-connection rate lifted, served by the Redis tests' nodes.

``python -m peregrine_rt tests.integration.fast_chat:FastChat --redis URL``:
:class:`examples.chat.app.Chat` unchanged but for ``limits.publish_rate`` and
``publish_burst`` (5 a second, bursts of 10, in the chat).  The Redis tests
post each message as soon as the previous one was answered, as the tests of
the old chat did with its ``RATE`` and ``BURST`` raised: what they measure is
delivery across nodes, not the limiter (``tests/hostile/test_chat_limits.py``
tests that).  Kept apart from ``chat_nodes.py`` so that the test process
itself never imports the app.
"""

from __future__ import annotations

import dataclasses

from examples.chat.app import Chat


class FastChat(Chat):
    """The chat, 1000 events a second per connection."""

    limits = dataclasses.replace(Chat.limits, publish_rate=1000.0, publish_burst=1000)
