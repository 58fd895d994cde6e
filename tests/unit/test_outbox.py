"""The WebSocket send path (peregrine_rt._outbox) against a fake transport.

The fake decides how many bytes each non-blocking ``try_send`` takes, so the
partial-send requeue, the corked flush and the slow-consumer policy are
exercised exactly, without the kernel's buffer sizes in the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from peregrine_rt._outbox import Outbox, OutboxItem, SendScheduler
from peregrine_rt.exceptions import ClientDisconnected, ConnectionClosed


def _data(item: bytes | OutboxItem) -> bytes:
    return item if isinstance(item, bytes) else item.data


class FakeTransport:
    """Records what is written; ``try_send`` takes at most ``room`` bytes (None: a stream)."""

    def __init__(self, room: int | None = 1 << 30) -> None:
        self.room = room
        self.wire = bytearray()  # everything written, in order
        self.try_sends: list[int] = []  # the size asked of each try_send
        self.gate: trio.Event | None = None  # send_all waits on it when set
        self.fail_with: BaseException | None = None
        self.aborted = False
        self.client = None
        self.scheme = "http"
        self.stalled: float | None = None

    def try_send(self, data: bytes) -> int | None:
        if self.fail_with is not None:
            raise ClientDisconnected("gone")
        if self.room is None:
            return None
        self.try_sends.append(len(data))
        taken = min(self.room, len(data))
        self.wire += data[:taken]
        self.room -= taken
        return taken

    async def send_all(self, data: bytes) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.fail_with is not None:
            raise self.fail_with
        self.wire += data

    async def send_unqueued(self, data: bytes) -> None:
        await self.send_all(data)

    def queue(self, data: bytes, more: bool = False) -> bool:
        """Nothing is batched here: every send is a send_all (so it can be held or fail)."""
        return False

    async def abort(self) -> None:
        self.aborted = True


class FakeOwner:
    def __init__(self) -> None:
        self.failed: tuple[int, str] | None = None
        self.slow_calls = 0

    def send_failed(self, code: int, reason: str) -> None:
        self.failed = (code, reason)

    def closed_error(self) -> ConnectionClosed:
        code, reason = self.failed or (1006, "")
        return ConnectionClosed.for_code(code, reason)

    def slow_consumer(self) -> bytes | None:
        self.slow_calls += 1
        return b"CLOSE"


@pytest.fixture
async def scheduler() -> AsyncIterator[SendScheduler]:
    sched = SendScheduler(cork_limit=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        yield sched
        nursery.cancel_scope.cancel()


def make(
    scheduler: SendScheduler, transport: FakeTransport, *, limit: int = 10_000, **kw: object
) -> tuple[Outbox, FakeOwner]:
    owner = FakeOwner()
    return Outbox(owner, transport, scheduler, limit=limit, **kw), owner  # type: ignore[arg-type]


async def test_a_burst_of_deliveries_is_one_try_send(scheduler: SendScheduler) -> None:
    transport = FakeTransport()
    outbox, _ = make(scheduler, transport)
    for i in range(5):
        assert outbox.deliver(b"frame%d" % i)
    assert transport.try_sends == []  # corked until this task yields
    await trio.testing.wait_all_tasks_blocked()
    assert transport.try_sends == [5 * 6]
    assert bytes(transport.wire) == b"frame0frame1frame2frame3frame4"
    assert outbox.buffered == 0 and len(outbox) == 0


async def test_a_partial_send_requeues_the_rest_of_the_frame_begun(
    scheduler: SendScheduler,
) -> None:
    """The kernel takes 7 of 3x5 bytes: the rest of frame 2 stays (undroppable), frame 3 whole."""
    transport = FakeTransport(room=7)
    transport.gate = trio.Event()  # hold the writer task, to look at the queue first
    outbox, _ = make(scheduler, transport)
    for frame in (b"AAAAA", b"BBBBB", b"CCCCC"):
        outbox.deliver(frame)
    outbox.uncork()  # what the scheduler's flush does
    assert bytes(transport.wire) == b"AAAAABB"
    items = list(outbox._items)
    assert items == [
        OutboxItem(b"BBB", None, droppable=False),
        b"CCCCC",  # a whole delivery: kept as plain bytes (droppable)
    ]
    assert outbox.buffered == 8
    transport.gate.set()  # the writer task writes the rest, in order
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"AAAAABBBBBCCCCC"
    assert outbox.buffered == 0 and len(outbox) == 0


async def test_a_partial_send_at_a_frame_boundary_keeps_whole_frames_droppable(
    scheduler: SendScheduler,
) -> None:
    transport = FakeTransport(room=5)
    transport.gate = trio.Event()
    outbox, _ = make(scheduler, transport)
    outbox.deliver(b"AAAAA")
    outbox.deliver(b"BBBBB")
    outbox.uncork()
    assert list(outbox._items) == [b"BBBBB"]  # whole: still droppable
    transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"AAAAABBBBB"


async def test_nothing_taken_leaves_the_queue_as_it_was(scheduler: SendScheduler) -> None:
    transport = FakeTransport(room=0)
    transport.gate = trio.Event()
    outbox, _ = make(scheduler, transport)
    outbox.deliver(b"AAAAA")
    outbox.uncork()
    assert list(outbox._items) == [b"AAAAA"]
    transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"AAAAA"


async def test_a_stream_transport_gets_a_writer_task(scheduler: SendScheduler) -> None:
    transport = FakeTransport(room=None)
    outbox, _ = make(scheduler, transport)
    outbox.deliver(b"one")
    outbox.deliver(b"two")
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"onetwo"


async def test_a_send_waits_behind_queued_deliveries(scheduler: SendScheduler) -> None:
    transport = FakeTransport(room=0)
    outbox, _ = make(scheduler, transport)
    outbox.deliver(b"first")
    outbox.uncork()  # nothing taken: a writer task owns the queue now
    await outbox.send(b"second")
    assert bytes(transport.wire) == b"firstsecond"


async def test_a_burst_past_the_cork_limit_is_written_at_once(scheduler: SendScheduler) -> None:
    transport = FakeTransport()
    outbox, _ = make(scheduler, transport)  # cork limit 1000
    for _ in range(3):
        outbox.deliver(b"x" * 400)
    assert transport.try_sends == [800]  # the third frame would pass 1000: the first two go
    await trio.testing.wait_all_tasks_blocked()
    assert transport.try_sends == [800, 400]


async def test_drop_oldest_drops_whole_deliveries_only(scheduler: SendScheduler) -> None:
    transport = FakeTransport(room=3)
    transport.gate = trio.Event()
    outbox, owner = make(scheduler, transport, limit=12, policy="drop-oldest")
    outbox.deliver(b"AAAAA")
    outbox.uncork()  # 3 bytes out: "AA" stays, undroppable
    for frame in (b"BBBBB", b"CCCCC", b"DDDDD"):
        assert outbox.deliver(frame)
    assert [_data(item) for item in outbox._items] == [b"AA", b"CCCCC", b"DDDDD"]
    assert owner.slow_calls == 0
    transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"AAAAACCCCCDDDDD"


async def test_the_close_policy_keeps_the_frame_begun_and_queues_the_close(
    scheduler: SendScheduler,
) -> None:
    transport = FakeTransport(room=3)
    transport.gate = trio.Event()
    outbox, owner = make(scheduler, transport, limit=8)
    outbox.deliver(b"AAAAA")
    outbox.uncork()
    assert outbox.deliver(b"BBBBB")
    assert not outbox.deliver(b"CCCCC")  # over the limit: refused, the socket closes
    assert owner.slow_calls == 1
    assert [_data(item) for item in outbox._items] == [b"AA", b"CLOSE"]
    transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"AAAAACLOSE"


async def test_a_compressed_socket_never_drops(scheduler: SendScheduler) -> None:
    transport = FakeTransport(room=0)
    transport.gate = trio.Event()
    outbox, owner = make(scheduler, transport, limit=8, policy="drop-oldest", droppable=False)
    outbox.deliver(b"AAAAA")
    outbox.uncork()
    assert not outbox.deliver(b"BBBBB")  # drop-oldest falls back to close
    assert owner.slow_calls == 1


async def test_a_peer_that_left_breaks_the_stream_and_releases_senders(
    scheduler: SendScheduler,
) -> None:
    transport = FakeTransport(room=0)
    transport.gate = trio.Event()
    outbox, owner = make(scheduler, transport)
    outbox.deliver(b"AAAAA")
    outbox.uncork()
    transport.fail_with = ClientDisconnected("gone")
    results: list[str] = []

    async def sender() -> None:
        try:
            await outbox.send(b"later")
            results.append("sent")
        except ConnectionClosed as exc:
            results.append(f"closed {exc.code}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        transport.gate.set()
    assert results == ["closed 1006"]
    assert owner.failed == (1006, "connection lost")
    assert outbox.broken and not outbox.deliver(b"more")


async def test_a_send_cancelled_mid_write_aborts_the_transport(scheduler: SendScheduler) -> None:
    transport = FakeTransport()
    transport.gate = trio.Event()  # the write never finishes
    outbox, owner = make(scheduler, transport)
    with trio.move_on_after(1) as scope:  # autojump-free: the fake blocks on the gate only
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.send, b"frame")
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    assert transport.aborted
    assert owner.failed == (1006, "a send was interrupted")
    with pytest.raises(ConnectionClosed):
        await outbox.send(b"next")


# -- conflation: the newest value per key ---------------------------------------------


async def test_a_keyed_delivery_replaces_the_queued_one_in_its_place(
    scheduler: SendScheduler,
) -> None:
    transport = FakeTransport(room=0)  # a reader that takes nothing for now
    transport.gate = trio.Event()
    outbox, _ = make(scheduler, transport)
    outbox.deliver_keyed(b"AAPL=1|", "AAPL")
    outbox.deliver(b"note|")
    outbox.deliver_keyed(b"MSFT=5|", "MSFT")
    outbox.deliver_keyed(b"AAPL=2|", "AAPL")  # replaces AAPL=1 where it stood
    outbox.deliver_keyed(b"AAPL=33|", "AAPL")
    assert [_data(i) for i in outbox._items] == [b"AAPL=33|", b"note|", b"MSFT=5|"]
    assert outbox.buffered == len(b"AAPL=33|note|MSFT=5|")
    transport.room = 1 << 20
    transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"AAPL=33|note|MSFT=5|"
    assert outbox.buffered == 0 and len(outbox) == 0
    outbox.deliver_keyed(b"AAPL=4|", "AAPL")  # the earlier one left: queued anew
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire).endswith(b"MSFT=5|AAPL=4|")


async def test_a_keyed_frame_begun_is_never_replaced(scheduler: SendScheduler) -> None:
    transport = FakeTransport(room=3)
    transport.gate = trio.Event()
    outbox, _ = make(scheduler, transport)
    outbox.deliver_keyed(b"K=1111", "K")
    outbox.uncork()  # 3 bytes went: the rest of K=1111 must follow as it is
    outbox.deliver_keyed(b"K=2222", "K")  # a new delivery, after the rest
    assert [_data(i) for i in outbox._items] == [b"111", b"K=2222"]
    transport.room = 1 << 20
    transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"K=1111K=2222"


async def test_a_slow_reader_of_a_conflated_feed_stays_bounded(scheduler: SendScheduler) -> None:
    """10,000 updates of 10 keys to a reader that reads nothing: 10 frames queued, no close."""
    transport = FakeTransport(room=0)
    transport.gate = trio.Event()
    outbox, owner = make(scheduler, transport, limit=200)
    for i in range(10_000):
        assert outbox.deliver_keyed(b"k%d=%05d;" % (i % 10, i), i % 10)
    assert len(outbox) == 10 and owner.slow_calls == 0
    transport.room = 1 << 20
    transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    wire = bytes(transport.wire)
    assert wire == b"".join(b"k%d=%05d;" % (k, 9990 + k) for k in range(10))


async def test_a_compressed_socket_does_not_conflate(scheduler: SendScheduler) -> None:
    transport = FakeTransport()
    outbox, _ = make(scheduler, transport, droppable=False)
    outbox.deliver_keyed(b"K=1;", "K")
    outbox.deliver_keyed(b"K=2;", "K")
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.wire) == b"K=1;K=2;"  # every frame: the inflater needs them all


async def test_outboxes_that_never_queued_share_nothing_that_fills(
    scheduler: SendScheduler,
) -> None:
    # An outbox makes its own queue only when something waits in it (an idle
    # socket keeps no deque); the shared stand-in must never hold a frame.
    quiet_transport, busy_transport = FakeTransport(), FakeTransport()
    busy_transport.room = 0  # the kernel takes nothing: deliveries stay queued
    quiet, _ = make(scheduler, quiet_transport)
    busy, _ = make(scheduler, busy_transport)
    busy_transport.gate = trio.Event()  # its writer task waits
    for i in range(3):
        assert busy.deliver(b"f%d" % i)
    busy.post(b"PING")
    await trio.testing.wait_all_tasks_blocked()
    assert len(quiet) == 0 and quiet.buffered == 0
    assert len(busy) >= 1
    quiet.fail()  # clearing a queue it never had touches no other outbox
    assert len(busy) >= 1
    busy_transport.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(busy_transport.wire) == b"f0f1f2PING"
    assert len(quiet) == 0


async def test_queue_takes_a_frame_only_with_nothing_ahead_of_it(scheduler: SendScheduler) -> None:
    class Batching(FakeTransport):
        def __init__(self) -> None:
            super().__init__(room=0)
            self.batched: list[bytes] = []

        def queue(self, data: bytes, more: bool = False) -> bool:
            self.batched.append(data)
            return True

    transport = Batching()
    outbox, owner = make(scheduler, transport)
    assert outbox.queue(b"one")  # nothing ahead: into the pass's batch
    assert transport.batched == [b"one"]
    outbox.deliver(b"two")  # the kernel takes nothing: it waits in the outbox
    assert not outbox.queue(b"three")  # must not pass "two": send() it instead
    assert transport.batched == [b"one"]
    owner.failed = (1006, "gone")
    outbox.fail()
    assert not outbox.queue(b"four")  # broken: send() raises
    with pytest.raises(ConnectionClosed):
        await outbox.send(b"four")
    assert transport.batched == [b"one"]
