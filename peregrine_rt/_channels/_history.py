"""History and recovery: what a topic published, by offset, within an epoch.

Every publication to a topic with history gets the next **offset** of that
topic: 1, 2, 3..., dense, never reused.  The offsets are only meaningful
within an **epoch**, an opaque random string that changes when the backend's
state for the topic is lost (a new process for :class:`MemoryHistory`, a
recreated database file for ``SQLiteHistory``, a Redis that came back empty
for ``RedisHistory``).  A client that saw ``(offset, epoch)`` and reconnects
asks :meth:`History.recover` for what it missed; the answer is either exactly
the publications after ``offset``, in order, or ``recovered=False`` with the
reason, so the client refetches instead of living with a silent gap:

``too_old``
    retention (``max_count``, ``max_age``) already dropped a publication the
    client missed;
``epoch_changed``
    the client's epoch is not the topic's (the backend was reset), or its
    offset is ahead of the topic's last one (it comes from another lineage
    of the topic, e.g. a database restored from an older backup);
``no_history``
    the topic keeps no history at all (the Channels layer answers this for
    topics without a backend; a backend never does).

Retention is per topic, by count (``max_count``, the newest N are kept) and by
age (``max_age`` seconds), enforced when appending; age is also applied when
reading, so an expired publication is never returned even before the next
append prunes it.  Pruning never resets offsets: the next publication after a
topic expired entirely still gets the next offset.

Three backends share the :class:`History` protocol (and one contract test
module): :class:`MemoryHistory` here, ``SQLiteHistory`` (``_sqlite.py``) and
``RedisHistory`` (``_redis_history.py``).  :func:`recovery` holds the decision
they all take, so the three answer the same questions the same way.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import trio

__all__ = [
    "DEFAULT_MAX_COUNT",
    "EPOCH_CHANGED",
    "HUB_TOPIC_PREFIX",
    "NO_HISTORY",
    "TOO_OLD",
    "History",
    "MemoryHistory",
    "Position",
    "Publication",
    "Recovery",
    "hub_topic",
    "new_epoch",
    "recovery",
]

TOO_OLD: Final = "too_old"
"""Reason of a failed recovery: retention dropped a publication the client missed."""
EPOCH_CHANGED: Final = "epoch_changed"
"""Reason of a failed recovery: the topic's history was reset, or the client is ahead of it."""
NO_HISTORY: Final = "no_history"
"""Reason of a failed recovery: the topic keeps no history."""

DEFAULT_MAX_COUNT: Final = 1000
"""Publications kept per topic when a backend is given no ``max_count``."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One message of a topic's history.

    Attributes:
        offset: Its place in the topic: 1, 2, 3..., never reused within an epoch.
        event: The event name (``"new_msg"``).
        payload: The JSON-able payload, as given to :meth:`History.append`.
        time: When it was appended, UNIX seconds.
    """

    offset: int
    event: str
    payload: Any
    time: float


@dataclass(frozen=True, slots=True)
class Position:
    """Where a topic is: its last offset (0 when nothing was ever published) and epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to :meth:`History.recover`.

    Attributes:
        recovered: True when ``publications`` is exactly what the client missed.
        publications: The missed publications, oldest first (empty unless recovered).
        position: The topic's position now: what the client holds after replaying.
        reason: None when recovered, else ``"too_old"``, ``"epoch_changed"``
            or ``"no_history"``.
    """

    recovered: bool
    publications: list[Publication]
    position: Position
    reason: str | None


class History(Protocol):
    """What the Channels layer needs from a history backend.

    ``delivers`` tells whether :meth:`append` also delivers the publication,
    encoded as the Phoenix frame ``[null,"p:<offset>",topic,event,payload]``,
    to the hub topic ``hub_topic(topic)`` (``RedisHistory``: one
    atomic script assigns the offset, stores and publishes).  When False the
    caller publishes it after ``append`` returns.

    :meth:`run` holds the backend's resources (a Redis connection pool, a
    database connection) until cancelled, and releases them then; start it in
    the server's nursery with ``await nursery.start(history.run)`` before the
    first call.  :class:`MemoryHistory` and ``SQLiteHistory`` also work
    without it (SQLite opens its file on first use; :meth:`aclose` closes it).
    """

    delivers: bool

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the backend's resources until cancelled (started once ready)."""
        ...

    async def append(
        self, topic: str, event: str, payload: Any, *, sender: str | None = None
    ) -> Publication:
        """Store a publication with the topic's next offset, and return it.

        ``sender`` matters only to a backend that ``delivers``: its hub
        message is then ``!<sender>\\n<frame>``, the Channels layer's form of
        a broadcast that skips the sender's connection.
        """
        ...

    async def history(
        self, topic: str, *, since: int | None = None, limit: int | None = None
    ) -> list[Publication]:
        """The retained publications with an offset above ``since``, oldest first.

        ``limit`` keeps the newest ``limit`` of those (still oldest first).
        """
        ...

    async def recover(self, topic: str, offset: int, epoch: str) -> Recovery:
        """What a client that last saw ``offset`` in ``epoch`` missed (see :class:`Recovery`)."""
        ...

    async def position(self, topic: str) -> Position:
        """The topic's last offset and epoch."""
        ...

    async def aclose(self) -> None:
        """Release the backend's resources; calling it twice is harmless."""
        ...


HUB_TOPIC_PREFIX: Final = "channels:"
"""The hub topics of Channels: topic ``room:lobby`` is hub topic ``channels:room:lobby``."""


def hub_topic(topic: str) -> str:
    """The hub topic that carries the deliveries of Channels topic ``topic``."""
    return HUB_TOPIC_PREFIX + topic


def new_epoch() -> str:
    """A fresh random epoch: 16 hex digits."""
    return secrets.token_hex(8)


def check_retention(max_count: int | None, max_age: float | None) -> None:
    """Refuse retention settings that make no sense (ValueError), for every backend."""
    if max_count is not None and max_count < 1:
        raise ValueError(f"max_count must be at least 1 (or None for no limit), not {max_count}")
    if max_age is not None and not max_age > 0:
        raise ValueError(f"max_age must be positive seconds (or None for no limit), not {max_age}")


def check_query(since: int | None, limit: int | None) -> None:
    """Refuse a negative ``since`` or ``limit`` (ValueError)."""
    if since is not None and since < 0:
        raise ValueError(f"since must be an offset >= 0, not {since}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")


def recovery(
    position: Position, retained: Sequence[Publication], offset: int, epoch: str
) -> Recovery:
    """The verdict on a client at ``(offset, epoch)`` for a topic at ``position``.

    ``retained`` is every publication the backend still holds with an offset
    above ``offset`` (unexpired), oldest first.  Recovered only when they are
    exactly ``offset + 1 .. position.offset``: anything less is a gap.

    Raises:
        ValueError: ``offset`` is negative.
    """
    if offset < 0:
        raise ValueError(f"a recovery offset is >= 0, not {offset}")
    if epoch != position.epoch or offset > position.offset:
        return Recovery(False, [], position, EPOCH_CHANGED)
    missed = position.offset - offset
    if len(retained) != missed or (missed and retained[0].offset != offset + 1):
        return Recovery(False, [], position, TOO_OLD)
    return Recovery(True, list(retained), position, None)


class _Topic:
    """One topic of a :class:`MemoryHistory`: its last offset and retained publications."""

    __slots__ = ("last", "publications")

    def __init__(self) -> None:
        self.last = 0
        self.publications: deque[Publication] = deque()


class MemoryHistory:
    """History in this process's memory: fast, and gone when the process ends.

    The epoch is drawn once per instance (so once per process start): a client
    that reconnects to a restarted server gets ``epoch_changed`` rather than a
    history that silently restarted at offset 1.  Payloads are kept as given,
    not copied.

    Args:
        max_count: Publications kept per topic (None: no limit).
        max_age: Seconds a publication is kept (None: no limit).
        clock: The time source (UNIX seconds), for tests.
    """

    delivers = False

    def __init__(
        self,
        *,
        max_count: int | None = DEFAULT_MAX_COUNT,
        max_age: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_retention(max_count, max_age)
        self.max_count = max_count
        self.max_age = max_age
        self.epoch = new_epoch()
        self._clock = clock
        self._topics: dict[str, _Topic] = {}

    def __repr__(self) -> str:
        return f"MemoryHistory(max_count={self.max_count!r}, max_age={self.max_age!r})"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to hold: reports started, then waits until cancelled."""
        task_status.started()
        await trio.sleep_forever()

    def _expire(self, topic: _Topic, now: float) -> None:
        if self.max_age is not None:
            horizon = now - self.max_age
            pubs = topic.publications
            while pubs and pubs[0].time <= horizon:
                pubs.popleft()

    async def append(
        self, topic: str, event: str, payload: Any, *, sender: str | None = None
    ) -> Publication:
        """Store a publication with the topic's next offset, and return it (``sender``: unused)."""
        await trio.lowlevel.checkpoint()
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic()
        now = self._clock()
        state.last += 1
        pub = Publication(state.last, event, payload, now)
        state.publications.append(pub)
        if self.max_count is not None and len(state.publications) > self.max_count:
            state.publications.popleft()
        self._expire(state, now)
        return pub

    def _since(self, topic: str, since: int) -> list[Publication]:
        state = self._topics.get(topic)
        if state is None:
            return []
        self._expire(state, self._clock())
        pubs = state.publications
        if not pubs or since >= state.last:
            return []
        first = pubs[0].offset  # retained offsets are dense: index = offset - first
        return list(pubs)[max(since + 1 - first, 0) :]

    async def history(
        self, topic: str, *, since: int | None = None, limit: int | None = None
    ) -> list[Publication]:
        """The retained publications with an offset above ``since``, oldest first.

        ``limit`` keeps the newest ``limit`` of those (still oldest first).
        """
        check_query(since, limit)
        await trio.lowlevel.checkpoint()
        pubs = self._since(topic, since or 0)
        if limit is not None:
            pubs = pubs[max(len(pubs) - limit, 0) :]
        return pubs

    async def position(self, topic: str) -> Position:
        """The topic's last offset (0 if it never had a publication) and the epoch."""
        await trio.lowlevel.checkpoint()
        state = self._topics.get(topic)
        return Position(state.last if state else 0, self.epoch)

    async def recover(self, topic: str, offset: int, epoch: str) -> Recovery:
        """What a client that last saw ``offset`` in ``epoch`` missed (see :class:`Recovery`)."""
        await trio.lowlevel.checkpoint()
        state = self._topics.get(topic)
        position = Position(state.last if state else 0, self.epoch)
        retained = self._since(topic, offset) if offset >= 0 else []
        return recovery(position, retained, offset, epoch)

    async def aclose(self) -> None:
        """Nothing to release; the history stays readable."""
        await trio.lowlevel.checkpoint()
