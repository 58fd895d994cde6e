"""ReadPoller: the server's own epoll for connections waiting to read."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Generator

import outcome
import pytest
import trio
import trio.testing

from peregrine_rt._poller import WOKEN, ReadPoller, make_poller
from peregrine_rt._transport import RECEIVE_SIZE, SocketTransport
from peregrine_rt.exceptions import ClientDisconnected

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


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        b = socket.create_connection(listener.getsockname())
        a, _ = listener.accept()
    a.setblocking(False)
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


async def test_forget_ends_the_wait_and_the_read_then_fails(poller: ReadPoller) -> None:
    a, b = pair()
    with b:
        transport = SocketTransport(a, None, None, poller)
        failed: list[BaseException] = []

        async def reader() -> None:
            try:
                await transport.receive_some(wait_first=True)
            except ClientDisconnected as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await transport.abort()  # another task closes it: forget(), then close()
        assert len(failed) == 1
        with pytest.raises(trio.ClosedResourceError):
            await poller.wait_readable(a)


@pytest.mark.parametrize("end", ["fin", "reset"])
async def test_an_end_that_came_with_bytes_is_not_lost(poller: ReadPoller, end: str) -> None:
    """Bytes and the end of the stream (or a reset) in one event: after the bytes, the end."""
    a, b = tcp_pair() if end == "reset" else pair()  # a reset needs TCP
    transport = SocketTransport(a, None, None, poller)
    with a, b:
        b.send(b"one")
        assert await transport.receive_some(wait_first=True) == b"one"  # a is registered now
        woke = trio.Event()

        async def reader() -> None:
            await poller.wait_readable(a)
            woke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"two")
            if end == "fin":
                b.shutdown(socket.SHUT_WR)
            else:
                b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                b.close()
        assert woke.is_set()
        assert a.recv(10) == b"two"  # the event's bytes; the end is still to come
        with trio.fail_after(5):
            if end == "fin":
                assert await transport.receive_some(wait_first=True) == b""
            else:
                with pytest.raises(ClientDisconnected):
                    await transport.receive_some(wait_first=True)


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


async def test_a_stopped_poller_lets_its_waiters_go_and_hands_new_waits_to_trio() -> None:
    made = make_poller()
    assert made is not None
    a, b = pair()
    with a, b:
        transport = SocketTransport(a, None, None, made)
        received: list[bytes] = []

        async def reader() -> None:
            received.append(await transport.receive_some(wait_first=True))

        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as nursery:
                await nursery.start(made.run)
                outer.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            # The reader's recv() found nothing: it waits with trio now.
            await trio.testing.wait_all_tasks_blocked()
            assert not made.open and received == []
            b.send(b"x")
        assert received == [b"x"]


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


async def test_arm_waits_only_where_wait_readable_would_and_else_says_no(
    poller: ReadPoller,
) -> None:
    a, b = pair()
    with a, b:
        assert poller.arm(a) is None  # not watched yet: wait_readable() registers it
        b.send(b"1")
        with trio.fail_after(5):
            await poller.wait_readable(a)
        assert a.recv(10) == b"1"
        b.send(b"2")  # comes while nobody waits: remembered
        await trio.testing.wait_all_tasks_blocked()
        assert poller.arm(a) is None  # an event is remembered: wait_readable() returns at once
        with trio.fail_after(5):
            await poller.wait_readable(a)
        assert a.recv(10) == b"2"
        woke = trio.Event()

        async def reader() -> None:
            abort = poller.arm(a)
            assert abort is not None
            assert poller.arm(a) is None  # this task waits now: a second one may not
            await trio.lowlevel.wait_task_rescheduled(abort)
            woke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert not woke.is_set()
            b.send(b"3")
        assert a.recv(10) == b"3"
        with trio.move_on_after(0.01):  # a cancelled armed wait lets go
            await trio.lowlevel.wait_task_rescheduled(poller.arm(a))  # type: ignore[arg-type]
        for _ in range(2):  # its abort (as trio calls it on a cancel) lets the next arm work
            abort = poller.arm(a)
            assert abort is not None
            abort(None)


async def test_a_transport_arms_a_wait_without_a_coroutine_then_reads_now(
    poller: ReadPoller,
) -> None:
    """arm_receive() + receive_now(): the WebSocket receive loop's read, step by step."""
    a, b = pair()
    with a, b:
        transport = SocketTransport(a, None, None, poller)
        assert transport.arm_receive() is None  # not watched yet: receive_some() registers it
        b.send(b"1")
        with trio.fail_after(5):
            assert await transport.receive_some(wait_first=True) == b"1"
        assert transport.receive_now() is None  # nothing there: no wait, no error
        for n in range(3):  # the shared wake-up value serves every wait

            async def send_later(n: int = n) -> None:
                await trio.testing.wait_all_tasks_blocked()
                b.send(b"x%d" % n)

            abort = transport.arm_receive()
            assert abort is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_later)
                with trio.fail_after(5):
                    assert await trio.lowlevel.wait_task_rescheduled(abort) is None
            assert transport.receive_now() == b"x%d" % n
        b.shutdown(socket.SHUT_WR)
        await trio.testing.wait_all_tasks_blocked()
        assert transport.receive_now() == b""  # the end of the stream


async def test_arm_receive_declines_after_a_full_buffer_and_without_a_poller(
    poller: ReadPoller,
) -> None:
    a, b = pair()
    with a, b:
        transport = SocketTransport(a, None, None, poller)
        b.send(b"1")
        with trio.fail_after(5):
            await transport.receive_some(wait_first=True)  # registers the socket
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        b.send(b"y" * (RECEIVE_SIZE + 10))
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            assert await transport.receive_some(wait_first=True) == b"y" * RECEIVE_SIZE
        assert transport.arm_receive() is None  # more may be there, with no new event
        assert transport.receive_now() == b"y" * 10
        assert SocketTransport(a, None, None, None).arm_receive() is None


async def test_receive_now_reports_a_reset_as_a_disconnect(poller: ReadPoller) -> None:
    a, b = tcp_pair()
    with a, b:
        transport = SocketTransport(a, None, None, poller)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert transport.receive_now() is None  # nothing yet
        b.close()  # a reset
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(a)
        with pytest.raises(ClientDisconnected):
            transport.receive_now()


def test_the_shared_wake_up_value_is_none_every_time() -> None:
    def gen() -> Generator[int, None, None]:
        got = yield 1
        assert got is None
        yield 2

    g = gen()
    next(g)
    woken: outcome.Outcome[None] = WOKEN  # as trio holds it
    for _ in range(3):
        assert woken.unwrap() is None  # a Value(None) would raise AlreadyUsedError here
    assert WOKEN.send(g) == 2

    async def agen() -> AsyncGenerator[int, None]:
        got = yield 1
        assert got is None
        yield 2

    async def drive() -> int:
        ag = agen()
        await ag.__anext__()
        try:
            return await WOKEN.asend(ag)
        finally:
            await ag.aclose()

    assert trio.run(drive) == 2


async def read_as_the_websocket_loop_does(transport: SocketTransport) -> bytes:
    """One read of WebSocket._receive_loop: arm and wait, then recv; else receive_some."""
    abort = transport.arm_receive()
    if abort is None:
        return await transport.receive_some(wait_first=True)
    await trio.lowlevel.wait_task_rescheduled(abort)
    received = transport.receive_now()
    return await transport.receive_some(True) if received is None else received


@pytest.mark.parametrize("waiting", [True, False], ids=["reader-waiting", "reader-busy"])
async def test_urgent_data_stops_a_read_at_its_mark_and_the_rest_follows(
    poller: ReadPoller, waiting: bool
) -> None:
    """TCP urgent data (``MSG_OOB``, ``EPOLLPRI``): a ``recv`` stops at the mark.

    The bytes after it bring no new edge of their own, so the socket is
    remembered as ready: the next read must not wait for an event that came
    already.  The urgent byte itself leaves the stream (no ``SO_OOBINLINE``).
    """
    a, b = tcp_pair()
    with a, b:
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = SocketTransport(a, None, None, poller)
        b.send(b"0")
        with trio.fail_after(5):
            assert await transport.receive_some(wait_first=True) == b"0"  # registered
        received = bytearray()

        async def send_all() -> None:
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"head")
            b.send(b"!", socket.MSG_OOB)
            b.send(b"tail")

        async with trio.open_nursery() as nursery:
            if waiting:
                nursery.start_soon(send_all)
            else:
                await send_all()  # all of it is there (loopback) before the first read
                await trio.testing.wait_all_tasks_blocked()  # and the poller has seen it
            with trio.fail_after(5):
                while len(received) < 8:
                    received += await read_as_the_websocket_loop_does(transport)
        assert bytes(received) == b"headtail"
