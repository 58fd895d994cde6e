"""What keeps the chat's Redis store right when Redis fails (see ``store.py``).

:class:`Unconfirmed` holds a node's acknowledged posts it has not yet seen
back from Redis, and the messages of the room it saw in the last
:data:`RECENT` seconds: both are re-appended when the link comes back to a
different Redis server (a restarted one, or a replica promoted by Sentinel,
which may lack the last writes its old primary acknowledged).
"""

from __future__ import annotations

import json
import logging
from typing import NamedTuple

import trio

log = logging.getLogger("examples.chat")

MAX_UNCONFIRMED = 1000
"""Acknowledged messages kept per room until seen back from Redis (the oldest go first)."""
RECENT = 30.0
"""Seconds a message seen back from Redis is kept for re-appending after a failover.

Redis replicates asynchronously: a write its primary acknowledged may not
have reached the replica Sentinel promotes.  The lag on a healthy link is
milliseconds; a primary cut off from its replicas keeps accepting writes
until it notices (``min-replicas-max-lag``) or is failed over
(``down-after-milliseconds``), so the window is kept well above both."""


class Seen(NamedTuple):
    """A message seen back from Redis, and when (trio time)."""

    at: float
    message: str


HEAD = '{"type":"message","id":'


def message_id(message: str | bytes) -> int:
    """The id of a message as the store publishes it (read without parsing the JSON)."""
    if isinstance(message, str) and message.startswith(HEAD):
        return int(message[len(HEAD) : message.index(",", len(HEAD))])
    return int(json.loads(message)["id"])


class Unconfirmed:
    """This node's acknowledged posts to one room not yet seen back from Redis, and recent ones.

    A hub subscriber of the room's topic: the messages come back in id order,
    so ``seen`` (the last id received) confirms every id up to it.  Confirmed
    messages stay in ``recent`` for :data:`RECENT` seconds (at most
    :data:`MAX_UNCONFIRMED` of them), every node's posts included.
    """

    def __init__(self, room: str) -> None:
        self.room = room
        self.seen = 0
        self.messages: dict[int, str] = {}
        self.recent: dict[int, Seen] = {}  # in id order, as delivered

    def add(self, mid: int, message: str) -> None:
        if mid <= self.seen:
            return  # it came back before its script's answer did
        self.messages[mid] = message
        if len(self.messages) > MAX_UNCONFIRMED:
            del self.messages[min(self.messages)]
            log.warning("room %r: more than %d messages unconfirmed", self.room, MAX_UNCONFIRMED)

    def deliver(self, message: str | bytes) -> bool:
        mid = message_id(message)
        self.seen = max(self.seen, mid)
        for confirmed in [m for m in self.messages if m <= self.seen]:
            del self.messages[confirmed]
        now = trio.current_time()
        text = message if isinstance(message, str) else message.decode()
        self.recent[mid] = Seen(now, text)
        while self.recent:
            oldest = next(iter(self.recent))
            if len(self.recent) <= MAX_UNCONFIRMED and now - self.recent[oldest].at <= RECENT:
                break
            del self.recent[oldest]
        return True

    def kept(self) -> dict[int, str]:
        """What to re-append to a Redis that may lack it: recent messages and unconfirmed ones."""
        now = trio.current_time()
        kept = {mid: seen.message for mid, seen in self.recent.items() if now - seen.at <= RECENT}
        kept.update(self.messages)
        return kept
