"""ReadPoller: the server's own epoll for connections waiting to read."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from peregrine_rt._poller import ReadPoller, make_poller
from peregrine_rt._transport import RECEIVE_SIZE, SocketTransport

pytestmark = pytest.mark.skipif(make_poller() is None, reason="epoll is Linux's")


@pytest.fixture
async def poller() -> AsyncIterator[ReadPoller]:
    made = make_poller()
    assert made is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(made.run)
        yield made
        nursery.cancel_scope.cancel()


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def test_a_wait_ends_when_bytes_come_and_again_for_the_next(poller: ReadPoller) -> None:
    a, b = pair()
    with a, b:
        for n in range(3):
            woke = trio.Event()

            async def reader(woke: trio.Event) -> None:
                await poller.wait_readable(a)
                woke.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader, woke)
                await trio.testing.wait_all_tasks_blocked()
                assert not woke.is_set()  # nothing to read: it waits
                b.send(b"x%d" % n)
            assert a.recv(10) == b"x%d" % n


async def test_bytes_that_came_while_nobody_waited_end_the_next_wait_at_once(
    poller: ReadPoller,
) -> None:
    a, b = pair()
    with a, b:
        b.send(b"first")
        with trio.fail_after(5):
            await poller.wait_readable(a)  # registered now: the kernel reports it at once
        assert a.recv(10) == b"first"
        b.send(b"second")  # edge-triggered: comes while the reader is busy
        await trio.testing.wait_all_tasks_blocked()  # a pass of the scheduler sees it
        with trio.fail_after(5):
            await poller.wait_readable(a)
        assert a.recv(10) == b"second"


async def test_a_cancelled_wait_leaves_nothing_behind(
    poller: ReadPoller, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = pair()
    with a, b:
        with trio.move_on_after(0.01):
            await poller.wait_readable(a)
        # Not "busy": the cancelled wait let go, and a new one works.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.wait_readable, a)
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"x")


async def test_two_readers_of_one_socket_is_an_error(poller: ReadPoller) -> None:
    a, b = pair()
    with a, b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.wait_readable, a)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await poller.wait_readable(a)
            b.send(b"x")


async def test_forget_fails_the_task_waiting_on_the_socket(poller: ReadPoller) -> None:
    a, b = pair()
    with b:
        failed: list[BaseException] = []

        async def reader() -> None:
            try:
                await poller.wait_readable(a)
            except trio.ClosedResourceError as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            poller.forget(a)
            a.close()
        assert len(failed) == 1


async def test_a_new_socket_with_a_closed_ones_number_is_watched(poller: ReadPoller) -> None:
    a, b = pair()
    with b:
        b.send(b"x")
        await poller.wait_readable(a)
        number = a.fileno()
        a.close()  # closed without forget(): the kernel drops it from the epoll
    for _ in range(50):  # the lowest free number comes back
        c, d = pair()
        if number in (c.fileno(), d.fileno()):
            break
        c.close()
        d.close()
    else:  # pragma: no cover - another thread took the number
        pytest.skip("the file descriptor number was not reused")
    reader, writer = (c, d) if c.fileno() == number else (d, c)
    with c, d:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.wait_readable, reader)
            await trio.testing.wait_all_tasks_blocked()
            writer.send(b"y")
        assert reader.recv(10) == b"y"


async def test_a_stopped_poller_fails_its_waiters_and_hands_new_waits_to_trio() -> None:
    made = make_poller()
    assert made is not None
    a, b = pair()
    with a, b:
        failed: list[BaseException] = []

        async def reader() -> None:
            try:
                await made.wait_readable(a)
            except trio.ClosedResourceError as exc:
                failed.append(exc)

        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as nursery:
                await nursery.start(made.run)
                outer.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert len(failed) == 1
        assert not made.open
        b.send(b"x")
        with trio.fail_after(5):
            await made.wait_readable(a)  # trio's own wait now


async def test_a_transport_reads_on_after_a_full_buffer_before_it_waits(
    poller: ReadPoller,
) -> None:
    """Edge-triggered: bytes left behind a full recv() bring no new event.

    The sender has stopped (it sent everything at once), so a transport that
    waited before reading again would wait forever.
    """
    a, b = pair()
    with a, b:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        payload = bytes(range(256)) * (3 * RECEIVE_SIZE // 256 + 7)
        sent = 0
        while sent < len(payload):
            try:
                sent += b.send(payload[sent:])
            except BlockingIOError:
                break
        assert sent > RECEIVE_SIZE  # more than one recv() holds
        transport = SocketTransport(a, None, None, poller)
        received = bytearray()
        with trio.fail_after(5):
            while len(received) < sent:
                received += await transport.receive_some(wait_first=True)
        assert bytes(received) == payload[:sent]
