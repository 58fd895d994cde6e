"""What keeps the chat's Redis store right when Redis fails (see ``store.py``).

* :class:`Unconfirmed`: a node's acknowledged posts it has not yet seen back
  from Redis, re-appended if Redis restarts before they come back;
* :func:`closing`: coredis connections that release their buffers however
  they end.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

log = logging.getLogger("examples.chat")

MAX_UNCONFIRMED = 1000
"""Acknowledged messages kept per room until seen back from Redis (the oldest go first)."""

HEAD = '{"type":"message","id":'


def message_id(message: str | bytes) -> int:
    """The id of a message as the store publishes it (read without parsing the JSON)."""
    if isinstance(message, str) and message.startswith(HEAD):
        return int(message[len(HEAD) : message.index(",", len(HEAD))])
    return int(json.loads(message)["id"])


def closing(base: type[Any]) -> type[Any]:
    """``base`` (a coredis connection class) closing its buffers when it ends.

    coredis 6.9 closes them only for a connection that got connected; the
    attempts that fail while Redis is down would otherwise warn
    (``ResourceWarning``) when collected.
    """
    from anyio.streams.memory import (  # noqa: PLC0415 - with coredis
        MemoryObjectReceiveStream,
        MemoryObjectSendStream,
    )

    class Closing(base):  # type: ignore[misc]
        async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await super().run(task_status=task_status)
            finally:
                for value in vars(self).values():
                    if isinstance(value, (MemoryObjectSendStream, MemoryObjectReceiveStream)):
                        value.close()

    return Closing


class Unconfirmed:
    """This node's acknowledged posts to one room that it has not yet seen back from Redis.

    A hub subscriber of the room's topic: the messages come back in id order,
    so ``seen`` (the last id received) confirms every id up to it.
    """

    def __init__(self, room: str) -> None:
        self.room = room
        self.seen = 0
        self.messages: dict[int, str] = {}

    def add(self, mid: int, message: str) -> None:
        if mid <= self.seen:
            return  # it came back before its script's answer did
        self.messages[mid] = message
        if len(self.messages) > MAX_UNCONFIRMED:
            del self.messages[min(self.messages)]
            log.warning("room %r: more than %d messages unconfirmed", self.room, MAX_UNCONFIRMED)

    def deliver(self, message: str | bytes) -> bool:
        self.seen = max(self.seen, message_id(message))
        for mid in [m for m in self.messages if m <= self.seen]:
            del self.messages[mid]
        return True
