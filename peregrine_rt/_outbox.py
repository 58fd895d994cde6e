"""The WebSocket send path: a bounded outbox per socket, corked writes, one flush task.

Everything a socket sends goes through its :class:`Outbox`, in order, with one
writer at a time:

* ``await outbox.send(frame)`` (``ws.send``, pings, close frames) waits for its
  turn and until the frame is written: the caller feels the peer's speed
  (backpressure).  With nothing queued before it, the frame is batched
  (``Transport.queue``): under load, it goes out at the end of the event loop's
  pass with the other sockets' frames (``Config.batch_writes``).  Cancelled while waiting
  for its turn, the frame still goes out in its turn, since the frames after
  it (compressed ones included) were encoded after it.
* ``outbox.deliver(frame)`` (hub publishes, ``broadcast()``) never waits: the
  frame joins the queue, counted against ``Config.ws_outbox_size``.  On a
  transport that can send without waiting (a plain socket), the socket is
  *corked*: the :class:`SendScheduler`'s flush task writes everything queued
  for it when the publishing task yields, in one ``send`` — a burst of
  publishes costs one system call per subscriber, not one per message.  A
  burst past the cork limit is written as it grows.  What the kernel does not
  take goes to a writer task.
* When a delivery would pass the bound, the slow-consumer policy applies
  (``Config.ws_slow_policy``): ``drop-oldest`` drops whole queued deliveries
  (never a frame already begun, never one a ``send`` caller waits on, never on
  a compressed socket, whose peer's inflater would lose its place); ``close``
  drops what it may, queues a 1008 close frame from the owner and reports it.

The socket that owns an outbox implements :class:`OutboxOwner` (three calls);
the server owns one :class:`SendScheduler`, which it runs for its life.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from .exceptions import ClientDisconnected, ConnectionClosed

if TYPE_CHECKING:
    from ._metrics import Stats
    from ._transport import Transport

__all__ = ["Outbox", "OutboxItem", "OutboxOwner", "SendScheduler"]

error_log = logging.getLogger("peregrine_rt.error")

CORK_LIMIT = 65_536  # bytes a corked socket gathers before the burst is written at once
# The flush writes for this long before it lets other tasks run: one send()
# on loopback costs 10-40 us (the receiver's side runs in it), so a fixed
# batch of 256 sockets took 3-20 ms, and with 20,000 sockets to write it was
# a large part of every scheduling round a fresh request waits through.
FLUSH_SLICE = 0.002  # seconds
FLUSH_CHECK = 32  # sockets written between two looks at the clock
_clock = time.perf_counter  # what the slices are measured with (a test may replace it)


@dataclass(slots=True)
class OutboxItem:
    """One frame (or the rest of one) waiting to be written.

    Attributes:
        data: the bytes to write.
        done: set once written (or once the stream failed) for a ``send``
            caller waiting on it; None for a delivery nobody waits on.
        droppable: a whole frame nobody waits on: the slow-consumer policy may
            drop it.  False for the rest of a frame begun, and for waited-on ones.
        key: for a conflated delivery still queued, its key: a newer delivery
            with the same key replaces its data in place.
    """

    data: bytes
    done: trio.Event | None = None
    droppable: bool = True
    key: object = None  # a conflated delivery's key while queued (Outbox.deliver_keyed)


# The queue of an outbox that never queued anything: a deque costs 760 bytes
# even empty, and most sockets' sends never wait.  Shared, and it takes nothing
# (maxlen 0): every place that queues makes the outbox its own deque first.
_NONE_QUEUED: deque[bytes | OutboxItem] = deque(maxlen=0)


def _data(item: bytes | OutboxItem) -> bytes:
    return item if isinstance(item, bytes) else item.data


def _droppable(item: bytes | OutboxItem) -> bool:
    return isinstance(item, bytes) or item.droppable


def _waiter(item: bytes | OutboxItem) -> trio.Event | None:
    return None if isinstance(item, bytes) else item.done


class OutboxOwner(Protocol):
    """What an :class:`Outbox` asks of the socket that owns it."""

    def send_failed(self, code: int, reason: str) -> None:
        """The byte stream is unusable (peer gone, or a write interrupted mid-frame)."""

    def closed_error(self) -> ConnectionClosed:
        """The exception a sender gets once the socket is closed or broken."""

    def slow_consumer(self) -> bytes | None:
        """The outbox overflowed under the ``close`` policy: the close frame to queue, if any."""


class SendScheduler:
    """The server's side of the send path: the flush task and the writer tasks.

    Resource handling:
        :meth:`run` holds a nursery for the server's life (the server starts it
        with ``nursery.start``); writer tasks run in it, and end with it.
    """

    __slots__ = ("_corked", "_flush_wanted", "_nursery", "cork_limit")

    def __init__(self, cork_limit: int = CORK_LIMIT) -> None:
        self.cork_limit = cork_limit
        self._corked: list[Outbox] = []
        self._flush_wanted = trio.Event()
        self._nursery: trio.Nursery | None = None

    def cork(self, outbox: Outbox) -> None:
        """``outbox`` has deliveries waiting: write them when the running task yields."""
        if not self._corked:
            self._flush_wanted.set()
        self._corked.append(outbox)

    def spawn(self, writer: Callable[[], Awaitable[None]]) -> bool:
        """Start a writer task; False when the scheduler is not running (the server is gone)."""
        nursery = self._nursery
        if nursery is None:
            return False
        nursery.start_soon(writer)
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush corked outboxes until cancelled (one ``send`` per socket per burst)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    await self._flush_wanted.wait()
                    self._flush_wanted = trio.Event()
                    corked, self._corked = self._corked, []
                    began = _clock()
                    for done, outbox in enumerate(corked):
                        if done and not done % FLUSH_CHECK and _clock() - began >= FLUSH_SLICE:
                            # 20,000 sockets to write: let other tasks run between slices.
                            await trio.lowlevel.checkpoint()
                            began = _clock()
                        outbox.uncork()
        finally:
            self._nursery = None


class Outbox:
    """One socket's send path (see the module docstring).

    Args:
        owner: the socket (:class:`OutboxOwner`).
        transport: where the bytes go.
        scheduler: the server's :class:`SendScheduler`.
        limit: ``Config.ws_outbox_size``, the bytes of deliveries that may wait.
        policy: ``Config.ws_slow_policy`` (``"close"`` or ``"drop-oldest"``).
        droppable: whether queued deliveries may be dropped at all (False for
            a compressed socket).
    """

    __slots__ = (
        "_broken",
        "_bytes",
        "_corked",
        "_dropping",
        "_items",
        "_keyed",
        "_writing",
        "can_drop",
        "limit",
        "owner",
        "policy",
        "scheduler",
        "stats",
        "transport",
    )

    def __init__(
        self,
        owner: OutboxOwner,
        transport: Transport,
        scheduler: SendScheduler,
        *,
        limit: int,
        policy: str = "close",
        droppable: bool = True,
        stats: Stats | None = None,
    ) -> None:
        self.owner = owner
        self.stats = stats  # counts messages dropped by drop-oldest
        self.transport = transport
        self.scheduler = scheduler
        self.limit = limit
        self.policy = policy
        self.can_drop = droppable
        # A plain ``bytes`` is a whole delivery nobody waits on (droppable):
        # the common case, kept unwrapped because a publish to a room makes
        # one per member; everything else is an OutboxItem.
        self._items = _NONE_QUEUED  # its own deque from the first item queued (_queue)
        self._keyed: dict[object, OutboxItem] = {}  # conflated deliveries queued, by key
        self._bytes = 0  # bytes of queued deliveries (not of send() frames)
        self._writing = False  # a writer is at work: whatever comes waits in _items
        self._corked = False  # deliveries wait for the scheduler's flush
        self._broken = False  # a write failed: nothing more can be framed
        self._dropping = False  # drop-oldest is dropping (logged once per episode)

    # -- what the socket reads ------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes of deliveries queued and not written yet."""
        return self._bytes

    @property
    def broken(self) -> bool:
        """Whether a write failed, so that the byte stream cannot carry more frames."""
        return self._broken

    def __len__(self) -> int:
        return len(self._items)

    def _queue(self) -> deque[bytes | OutboxItem]:
        """The queue to append to: this outbox's own deque, made on first use."""
        items = self._items
        if items is _NONE_QUEUED:
            items = self._items = deque()
        return items

    # -- sending ----------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write ``data`` after everything queued before it; return once it is written.

        Raises:
            ConnectionClosed: the stream is broken (before or while writing).
        """
        if not self.queue(data):
            await self.send_unqueued(data)

    def queue(self, data: bytes) -> bool:
        """:meth:`send`'s first step, no coroutine (most sends under load): True if
        ``data`` joined the pass's batched write (nothing ahead of it); False,
        :meth:`send_unqueued` it."""
        return (
            not self._broken
            and not self._writing
            and not self._items
            and self.transport.queue(data)
        )

    async def send_unqueued(self, data: bytes) -> None:
        """:meth:`send`'s second step: ``data`` that :meth:`queue` did not take."""
        if self._broken:
            raise self.owner.closed_error()
        if self._writing or self._items:
            done = trio.Event()
            self._queue().append(OutboxItem(data, done, droppable=False))
            self._start_writer()
            await done.wait()
            if self._broken:
                raise self.owner.closed_error()
            return
        self._writing = True
        try:
            await self._write(data, batched=True)
        finally:
            self._writing = False
            # What was queued meanwhile goes to a writer task: the caller
            # returns once its own frame is written, not when the queue is.
            if self._items:
                self._start_writer()

    def deliver(self, frame: bytes) -> bool:
        """Queue ``frame`` without waiting; False when the policy refused it (or closed).

        The caller (the socket) has checked that it is open.
        """
        if self._broken:
            return False
        size = len(frame)
        if self._corked and self._bytes + size > self.scheduler.cork_limit:
            self.uncork()  # a big burst: write what it gathered so far now
        items = self._items
        if items and self._bytes + size > self.limit and not self._overflow(size):
            return False
        if items is _NONE_QUEUED:  # inline: a publish to a room runs this per member
            items = self._items = deque()
        items.append(frame)
        self._bytes += size
        if self._writing or self._corked:
            return True  # the writer, or the coming flush, takes it
        self._corked = True
        self.scheduler.cork(self)
        return True

    def deliver_keyed(self, frame: bytes, key: object) -> bool:
        """:meth:`deliver` with a conflation key: only the latest value per key matters.

        A delivery of the same key still queued and not begun has its frame
        replaced in place by this one: a slow reader gets the newest value of
        each key, in the place of the first one queued, instead of a backlog.
        Not on a socket that cannot drop (compression: its peer's inflater
        must see every frame), where this is :meth:`deliver`.  Kept apart from
        :meth:`deliver`, the broadcast path, which pays nothing for it.
        """
        if self._broken:
            return False
        if not self.can_drop:
            return self.deliver(frame)
        queued = self._keyed.get(key)
        if queued is not None:
            self._bytes += len(frame) - len(queued.data)
            queued.data = frame
            return True
        size = len(frame)
        if self._corked and self._bytes + size > self.scheduler.cork_limit:
            self.uncork()
        if self._items and self._bytes + size > self.limit and not self._overflow(size):
            return False
        item = OutboxItem(frame, None, droppable=True, key=key)
        self._queue().append(item)
        self._keyed[key] = item
        self._bytes += size
        if self._writing or self._corked:
            return True
        self._corked = True
        self.scheduler.cork(self)
        return True

    def post(self, data: bytes) -> None:
        """Queue a control frame (a heartbeat ping, the slow consumer's close) without waiting.

        Never dropped.

        Written by the coming flush with the socket's other deliveries, so a
        heartbeat costs no task and, on a busy socket, no system call of its own.
        """
        if self._broken:
            return
        self._queue().append(OutboxItem(data, None, droppable=False))
        self._bytes += len(data)
        if self._writing or self._corked:
            return
        self._corked = True
        self.scheduler.cork(self)

    def uncork(self) -> None:
        """Write what deliveries queued since the last flush: one ``try_send`` if it fits."""
        self._corked = False
        items = self._items
        if self._writing or not items or self._broken:
            return
        frames = []
        for item in items:
            if isinstance(item, bytes):
                frames.append(item)
            elif item.done is not None:
                break  # a send() waits after these: the writer task keeps the order
            else:
                frames.append(item.data)
        if len(frames) < len(items):
            self._start_writer()
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            sent = self.transport.try_send(data)
        except ClientDisconnected:
            self._start_writer()  # the writer meets the error and ends the socket
            return
        if sent is None:
            self._start_writer()  # a stream: only a task can write
            return
        if sent == len(data):
            self._items = _NONE_QUEUED  # no writer holds it: an idle socket keeps no deque
            if self._keyed:  # conflated deliveries were among them
                self._keyed.clear()
            self._bytes = 0
            self._dropping = False  # caught up
            return
        if sent:
            self._requeue(sent)
        self._start_writer()

    def _requeue(self, sent: int) -> None:
        """Drop the first ``sent`` bytes of the queue (all deliveries).

        A frame partly written stays as its rest, which cannot be dropped any
        more; the whole frames after it still can.
        """
        items = self._items
        kept: deque[bytes | OutboxItem] = deque()
        for item in items:
            data = _data(item)
            if sent >= len(data):
                sent -= len(data)
            elif sent:
                kept.append(OutboxItem(data[sent:], None, droppable=False))
                sent = 0
            else:
                kept.append(item)
        items.clear()  # in place: a writer may hold a reference
        items.extend(kept)
        self._rekey()
        self._bytes = sum(len(_data(item)) for item in items)

    def _rekey(self) -> None:
        """Rebuild the conflation index after the queue was rebuilt (nothing to do without one)."""
        if not self._keyed:
            return
        self._keyed = {
            item.key: item
            for item in self._items
            if isinstance(item, OutboxItem) and item.key is not None
        }

    def fail(self) -> None:
        """The stream is unusable: release every waiting sender, drop the queue."""
        self._broken = True
        for item in self._items:
            if not isinstance(item, bytes) and item.done is not None:
                item.done.set()
        self._items.clear()  # in place: a writer holding it stops
        self._items = _NONE_QUEUED
        self._keyed.clear()
        self._bytes = 0

    # -- the writer ---------------------------------------------------------------------

    async def _write(self, data: bytes, batched: bool = False) -> None:
        try:
            if batched:  # what Transport.queue() (send()) did not take for the pass's end
                await self.transport.send_unqueued(data)
            else:
                await self.transport.send_all(data)
        except ClientDisconnected:
            self.fail()
            self.owner.send_failed(1006, "connection lost")
            raise self.owner.closed_error() from None
        except BaseException:
            # Interrupted (cancelled) part-way through a frame: whatever
            # follows would be read as the rest of it.  The stream cannot be
            # framed any more, so the connection is dropped (1006).
            self.fail()
            self.owner.send_failed(1006, "a send was interrupted")
            with trio.CancelScope(shield=True):
                await self.transport.abort()
            raise

    def _start_writer(self) -> None:
        """Make sure a writer will empty the queue."""
        if self._writing:
            return  # the current writer flushes before it stops
        if not self.scheduler.spawn(self._drain):  # pragma: no cover - the server is gone
            self.fail()
            self.owner.send_failed(1006, "server stopped")
            return
        self._writing = True

    async def _drain(self) -> None:
        """The writer task: write the queue in order."""
        items = self._items
        try:
            while items:
                item = items.popleft()
                if isinstance(item, bytes):
                    data, done = item, None
                else:
                    data, done = item.data, item.done
                    if item.key is not None:  # begun: a newer value queues anew
                        self._keyed.pop(item.key, None)
                        item.key = None
                if done is None:
                    self._bytes -= len(data)
                try:
                    await self._write(data)
                except ConnectionClosed:
                    return  # broken: fail() released the senders still queued
                finally:
                    # Its sender learns the outcome either way (``broken`` on failure).
                    if done is not None:
                        done.set()
            self._dropping = False  # caught up: the next overflow is a new episode
        finally:
            self._writing = False
            if not items and self._items is items:
                self._items = _NONE_QUEUED  # emptied: an idle socket keeps no deque

    # -- the slow-consumer policy ---------------------------------------------------------

    def _overflow(self, incoming: int) -> bool:
        """The queue is full: apply the policy.  True: queue the incoming frame."""
        items = self._items
        if self.policy == "drop-oldest" and self.can_drop:
            kept: deque[bytes | OutboxItem] = deque()
            dropped = 0
            limit = self.limit - incoming
            while items and self._bytes > limit:
                item = items.popleft()
                if _droppable(item):
                    self._bytes -= len(_data(item))
                    dropped += 1
                else:
                    kept.append(item)
            items.extendleft(reversed(kept))  # in place: a writer may hold a reference
            if dropped:
                self._rekey()
                if self.stats is not None:
                    self.stats.slow_dropped += dropped
            if dropped and not self._dropping:  # one line per episode, not per message
                self._dropping = True
                error_log.warning(
                    "%r: slow consumer, dropping the oldest queued messages", self.owner
                )
            return True
        error_log.warning(
            "%r: slow consumer, %d bytes queued; closing it with 1008", self.owner, self._bytes
        )
        # Keep what cannot be dropped (a frame begun, frames a sender waits
        # on), drop the rest, and queue the close frame behind them.  With
        # compression a frame may refer back to the ones before it: drop
        # nothing before a frame that is kept.
        if self.can_drop:
            keep = [item for item in items if not _droppable(item)]
        else:
            last = max((i for i, item in enumerate(items) if not _droppable(item)), default=-1)
            keep = list(items)[: last + 1]
        items.clear()  # in place: a writer may hold a reference
        items.extend(keep)
        self._rekey()
        self._bytes = sum(len(_data(item)) for item in keep if _waiter(item) is None)
        close_frame = self.owner.slow_consumer()
        if close_frame is not None:
            self.post(close_frame)  # behind what is kept, never dropped
        return False
