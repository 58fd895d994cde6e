"""The hub: publish/subscribe between connections, by topic.

A topic is a string (``"room.lobby"``); a subscriber is a
:class:`~peregrine_rt.WebSocket`, a Server-Sent Events stream
(:class:`~peregrine_rt.EventStream`) or any :class:`Subscriber`.
:meth:`Hub.publish` delivers a message to every subscriber of the topic
without waiting for any of them: each socket has a bounded outbox
(``Config.ws_outbox_size``) and a slow one gets the slow-consumer policy
(``Config.ws_slow_policy``) instead of holding up the others.  Uncompressed
WebSocket frames from a server are the same bytes for every client, so a
message is encoded once per publish, not once per subscriber.

Every server has one hub, ``server.hub`` (``ws.hub`` and ``request.hub`` from a
handler): this in-memory :class:`Hub` unless ``Config.redis_url`` is set, in
which case it is a :class:`~peregrine_rt.RedisHub` and topics cross processes
and machines.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterable
from typing import Protocol

import trio

from ._frames import encode_frame
from ._metrics import Stats
from .websocket import WebSocket

__all__ = ["Hub", "Subscriber", "broadcast"]

PUBLISH_BURST = 16  # publishes between two schedule points of Hub.publish
# The time one publish may deliver before it lets other tasks run.  A fresh
# HTTP request needs two or three scheduling rounds (accept, then
# read-handle-write), each behind everything runnable in a round: with 20,000
# subscribers, fixed batches of 4,096 deliveries were 6-13 ms of CPU each (more
# on a loaded machine), part of the 129 ms p99 of a probe during broadcasts
# (bench/scale.py).  A room of 1,000 (about 1 ms) is still delivered in one
# step.  Only within one publish: a burst of publishes still yields every
# PUBLISH_BURST calls, as each yield lets the server's flush write what was
# delivered so far, one send() per socket (a time slice per burst cost 33%
# more CPU per delivery at 1,000 members in bench/fanout.py).
FANOUT_SLICE = 0.002  # seconds
FANOUT_CHECK = 256  # deliveries between two looks at the clock (0.2-1 ms of them)
_clock = time.perf_counter  # what the slices are measured with (a test may replace it)


class Subscriber(Protocol):
    """Anything the hub can deliver to: a WebSocket, an SSE stream, or your own class.

    ``deliver`` is called synchronously during :meth:`Hub.publish` and must not
    block: queue the message (boundedly) and return.  It returns whether the
    message was taken (False: closed, or refused by a slow-consumer policy).
    A subscriber other than a WebSocket unsubscribes itself when it is done.
    """

    def deliver(self, message: str | bytes) -> bool: ...


def broadcast(websockets: Iterable[WebSocket], message: str | bytes) -> int:
    """Send ``message`` to every socket of ``websockets`` without waiting.

    The frame is encoded once for all uncompressed sockets.  Sockets that are
    closed or closing are skipped; a slow one gets the slow-consumer policy
    (``Config.ws_slow_policy``), never holding up the others.  This is the
    websockets library's ``broadcast()``, and what :meth:`Hub.publish` uses.

    Returns:
        How many sockets took the message (written or queued).
    """
    return _fanout(websockets, message)[0]


def _fanout(
    subscribers: Iterable[WebSocket | Subscriber], message: str | bytes, frame: bytes | None = None
) -> tuple[int, bytes | None]:
    """Deliver to each of ``subscribers``: how many took it, and the frame (once encoded)."""
    if not isinstance(message, (str, bytes)):
        raise TypeError(f"messages are str or bytes, not {type(message).__name__}")
    delivered = 0
    for sub in subscribers:
        if type(sub) is WebSocket and sub.shares_frames:
            if frame is None:  # encoded once for every uncompressed socket
                frame = encode_frame(message)
            if sub.deliver_frame(frame):
                delivered += 1
        elif sub.deliver(message):
            delivered += 1
    return delivered, frame


class Hub:
    """In-memory publish/subscribe for one process (the default hub).

    Topics are created by subscribing and vanish with their last subscriber.
    A topic containing ``*`` subscribes to a pattern: ``"room.*"`` receives
    what is published to ``"room.lobby"`` and ``"room.42"`` (``*`` matches any
    characters, ``.`` included).

    Publishing delivers in call order: two messages published one after the
    other reach each subscriber in that order.
    """

    def __init__(self) -> None:
        self._topics: dict[str, dict[WebSocket | Subscriber, None]] = {}
        self._patterns: dict[str, tuple[re.Pattern[str], dict[WebSocket | Subscriber, None]]] = {}
        self._by_subscriber: dict[WebSocket | Subscriber, set[str]] = {}
        # What a publish iterates: a tuple per topic, made on the first publish
        # after a change.  Iterating a snapshot lets a subscriber unsubscribe
        # (itself or others) from inside deliver().
        self._snapshots: dict[str, tuple[WebSocket | Subscriber, ...]] = {}
        self._burst = 0  # publishes since this hub last yielded
        self.stats = Stats()
        """The process's figures (``peregrine_rt._metrics.Stats``); a server shares its own."""

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, subscriber: WebSocket | Subscriber, topic: str) -> None:
        """Deliver what is published to ``topic`` (or a ``*`` pattern) to ``subscriber``.

        Subscribing twice is the same as once.  A WebSocket is unsubscribed
        from everything when it closes.
        """
        if not isinstance(topic, str):
            raise TypeError(f"topics are str, not {type(topic).__name__}")
        if type(subscriber) is WebSocket:
            subscriber.track_hub(self)  # it leaves its hubs when it closes; raises if it ended
        if "*" in topic:
            entry = self._patterns.get(topic)
            if entry is None:
                regex = re.compile(fnmatch.translate(topic))
                entry = self._patterns[topic] = (regex, {})
            members = entry[1]
        else:
            members = self._topics.setdefault(topic, {})
        if subscriber in members:
            return
        members[subscriber] = None
        self._changed(topic)
        topics = self._by_subscriber.get(subscriber)
        if topics is None:
            topics = self._by_subscriber[subscriber] = set()
        topics.add(topic)

    def unsubscribe(self, subscriber: WebSocket | Subscriber, topic: str | None = None) -> None:
        """Stop delivering ``topic`` (every topic, if None) to ``subscriber``."""
        topics = self._by_subscriber.get(subscriber)
        if not topics:
            return
        for name in [topic] if topic is not None else list(topics):
            if name not in topics:
                continue
            topics.discard(name)
            self._changed(name)
            if "*" in name:
                members = self._patterns[name][1]
                members.pop(subscriber, None)
                if not members:
                    del self._patterns[name]
            else:
                members = self._topics[name]
                members.pop(subscriber, None)
                if not members:
                    del self._topics[name]
        if not topics:
            del self._by_subscriber[subscriber]

    def subscribers(self, topic: str) -> list[WebSocket | Subscriber]:
        """The local subscribers of ``topic`` (pattern subscribers included)."""
        found = dict(self._topics.get(topic, {}))
        for regex, members in self._patterns.values():
            if regex.match(topic):
                found.update(members)
        return list(found)

    def count(self, topic: str) -> int:
        """How many local subscribers ``topic`` has."""
        return len(self.subscribers(topic))

    def topics(self, subscriber: WebSocket | Subscriber | None = None) -> list[str]:
        """The topics (and patterns) with local subscribers, or those of ``subscriber``."""
        if subscriber is not None:
            return sorted(self._by_subscriber.get(subscriber, ()))
        return sorted([*self._topics, *self._patterns])

    # -- publishing ---------------------------------------------------------------

    async def publish(self, topic: str, message: str | bytes) -> int:
        """Deliver ``message`` to every subscriber of ``topic``; never waits on one.

        The frames are written when this task next yields, together with the
        rest of a burst (one ``send`` per subscriber for the burst).  It is a
        cancellation point on every call and yields every ``PUBLISH_BURST``
        calls.

        Returns:
            How many local subscribers took it.
        """
        self.stats.hub_publishes += 1
        delivered = await self.fan_out(topic, message)
        # Deliveries are written when this task yields (the server's flush),
        # so that a burst of publishes costs one send() per subscriber.  Yield
        # every PUBLISH_BURST calls, and check for cancellation every call.
        self._burst += 1
        if self._burst >= PUBLISH_BURST:
            self._burst = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        return delivered

    def publish_local(self, topic: str, message: str | bytes) -> int:
        """Deliver to this process's subscribers only, synchronously (in one go)."""
        delivered = _fanout(self._snapshot(topic), message)[0]
        self.stats.hub_deliveries += delivered
        return delivered

    async def fan_out(self, topic: str, message: str | bytes) -> int:
        """Deliver to this process's subscribers, yielding every ``FANOUT_SLICE`` seconds.

        What :meth:`publish` does locally: a topic with many subscribers does
        not stall the other tasks for the whole delivery (the frame is still
        encoded once).  The clock is read every ``FANOUT_CHECK`` deliveries.
        The pauses are shielded: a publish is never cut short by a
        cancellation half-way (every subscriber gets it, or none).  The
        subscribers are those of the topic when it starts: one that joins
        meanwhile does not get the message, one that leaves (but is still
        open) does.  Returns how many took it.
        """
        snapshot = self._snapshot(topic)
        if len(snapshot) <= FANOUT_CHECK:
            delivered = _fanout(snapshot, message)[0]
            self.stats.hub_deliveries += delivered
            return delivered
        delivered = 0
        frame: bytes | None = None
        began = _clock()
        for start in range(0, len(snapshot), FANOUT_CHECK):
            if start and _clock() - began >= FANOUT_SLICE:
                await trio.lowlevel.cancel_shielded_checkpoint()
                began = _clock()
            count, frame = _fanout(snapshot[start : start + FANOUT_CHECK], message, frame)
            delivered += count
            self.stats.hub_deliveries += count
        return delivered

    def _snapshot(self, topic: str) -> tuple[WebSocket | Subscriber, ...]:
        snapshot = self._snapshots.get(topic)
        if snapshot is None:
            if topic not in self._topics:  # no snapshot kept: topics come and go
                return tuple(self.subscribers(topic)) if self._patterns else ()
            snapshot = self._snapshots[topic] = tuple(self.subscribers(topic))
        return snapshot

    def _changed(self, topic: str) -> None:
        if "*" in topic:
            self._snapshots.clear()  # a pattern may match any topic
        else:
            self._snapshots.pop(topic, None)

    # -- for subclasses (RedisHub) and the server ----------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run what the hub needs in the background (nothing, in memory).

        The server starts it before accepting connections and cancels it last.
        """
        task_status.started()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self._topics) + len(self._patterns)} topics>"
