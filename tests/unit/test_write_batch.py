"""WriteBatch and SocketTransport.send_batched: small responses written once per scheduler pass.

Real sockets (socket pairs), a real trio scheduler: a test looks at what the
peer can read before and after the pass that queued a response ends.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from peregrine_rt._batch import WriteBatch
from peregrine_rt._transport import BATCH_MAX, LINGER_SECONDS, SocketTransport
from peregrine_rt.exceptions import ClientDisconnected

OPENED: list[socket.socket] = []


@pytest.fixture(autouse=True)
def close_sockets() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    OPENED.extend((a, b))
    return a, b


def slow_pair() -> tuple[socket.socket, socket.socket]:
    """A socket pair with 4 KiB buffers: a flush of tens of KiB cannot go out whole."""
    a, b = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def readable(sock: socket.socket) -> bytes:
    """What ``sock`` can read now, without waiting (b"" when nothing)."""
    out = b""
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    out = b""
    with trio.fail_after(10):
        while len(out) < size:
            await trio.lowlevel.wait_readable(sock)
            data = sock.recv(4096)
            if not data:
                break
            out += data
    return out


class Recording:
    """A socket that records each ``send`` call (the writes the kernel is asked for)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends: list[bytes] = []

    def send(self, data: bytes, *flags: int) -> int:
        self.sends.append(bytes(data))
        return self.sock.send(data, *flags)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def recorded(batch: WriteBatch) -> tuple[Recording, SocketTransport, socket.socket]:
    """A transport of ``batch`` over a recording socket, and the peer's socket."""
    a, b = pair()
    sock = Recording(a)
    return sock, SocketTransport(sock, None, batch), b  # type: ignore[arg-type]


@asynccontextmanager
async def running_batch() -> AsyncIterator[WriteBatch]:
    batch = WriteBatch()
    async with trio.open_nursery() as nursery:
        await nursery.start(batch.run, nursery)
        yield batch
        nursery.cancel_scope.cancel()


async def test_the_responses_of_one_pass_are_written_when_the_pass_ends() -> None:
    async with running_batch() as batch:
        batch.eager = False  # as after a busy pass
        socks = [pair() for _ in range(3)]
        transports = [SocketTransport(a, None, batch) for a, _ in socks]
        for i, transport in enumerate(transports):
            await transport.send_batched(b"response %d" % i)
        # Still in the pass that queued them: nothing written yet.
        assert [readable(b) for _, b in socks] == [b"", b"", b""]
        assert batch.queued == transports
        await trio.testing.wait_all_tasks_blocked()
        assert [readable(b) for _, b in socks] == [b"response 0", b"response 1", b"response 2"]
        assert batch.queued == []
        assert [t.bytes_sent for t in transports] == [10, 10, 10]


async def test_after_a_quiet_pass_the_first_response_is_written_at_once() -> None:
    async with running_batch() as batch:
        (a1, b1), (a2, b2) = pair(), pair()
        t1, t2 = SocketTransport(a1, None, batch), SocketTransport(a2, None, batch)
        await trio.testing.wait_all_tasks_blocked()  # passes that sent nothing
        assert batch.eager
        await t1.send_batched(b"one")
        assert readable(b1) == b"one"  # at once: one client at a time gains nothing
        await t2.send_batched(b"two")  # the second of the pass: queued
        assert readable(b2) == b""
        await trio.lowlevel.checkpoint()  # the pass ends: it sent two
        assert readable(b2) == b"two"
        assert not batch.eager
        await t1.send_batched(b"three")
        assert readable(b1) == b""  # after a busy pass, even the first is queued
        await trio.lowlevel.checkpoint()
        assert readable(b1) == b"three"


async def test_pipelined_responses_of_one_connection_are_one_write() -> None:
    async with running_batch() as batch:
        batch.eager = False
        sock, transport, b = recorded(batch)
        for i in range(3):
            await transport.send_batched(b"<%d>" % i)
        await trio.testing.wait_all_tasks_blocked()
        assert sock.sends == [b"<0><1><2>"]
        assert readable(b) == b"<0><1><2>"


async def test_a_response_larger_than_the_batch_limit_is_written_at_once() -> None:
    async with running_batch() as batch:
        batch.eager = False
        sock, transport, b = recorded(batch)
        await transport.send_batched(b"small")
        big = b"x" * (BATCH_MAX - 2)  # with "small": over the limit
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.send_batched, big)
            got = await read_exactly(b, 5 + len(big))
        assert got == b"small" + big
        assert sock.sends[0].startswith(b"small")  # the queued bytes first, in the same write
        await trio.testing.wait_all_tasks_blocked()
        assert readable(b) == b""  # the flush found nothing left: no second copy


async def test_queued_bytes_go_before_any_later_send() -> None:
    async with running_batch() as batch:
        batch.eager = False
        a, b = pair()
        transport = SocketTransport(a, None, batch)
        await transport.send_batched(b"first;")
        assert transport.try_send(b"not now") == 0  # a writer task will call send_all
        await transport.send_all(b"second;")
        await trio.testing.wait_all_tasks_blocked()
        assert readable(b) == b"first;second;"  # once each, in order


async def test_queued_bytes_go_before_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"file body")
    async with running_batch() as batch:
        batch.eager = False
        a, b = pair()
        transport = SocketTransport(a, None, batch)
        await transport.send_batched(b"response 1;")
        fd = os.open(path, os.O_RDONLY)
        try:
            assert await transport.send_file(fd, 0, 9, b"head 2;") == 9
        finally:
            os.close(fd)
        await trio.testing.wait_all_tasks_blocked()
        assert readable(b) == b"response 1;head 2;file body"


async def test_what_a_flush_cannot_write_is_drained_in_order_before_later_sends() -> None:
    async with running_batch() as batch:
        batch.eager = False
        a, b = slow_pair()
        transport = SocketTransport(a, None, batch)
        payload = bytes(range(256)) * 240  # 61,440 bytes: more than the buffers hold
        assert len(payload) <= BATCH_MAX
        with trio.fail_after(5):  # queued: it does not wait for the peer
            await transport.send_batched(payload)
            await trio.testing.wait_all_tasks_blocked()
        assert transport.stalled is not None  # a drain task waits for the peer
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.send_all, b"after")  # waits for the drain
            got = await read_exactly(b, len(payload) + 5)
        assert got == payload + b"after"
        assert transport.stalled is None
        assert transport.bytes_sent == len(payload) + 5


async def test_a_failed_flush_surfaces_at_the_next_send() -> None:
    async with running_batch() as batch:
        batch.eager = False
        a, b = pair()
        transport = SocketTransport(a, None, batch)
        b.close()  # the peer is gone
        await transport.send_batched(b"lost")
        await trio.testing.wait_all_tasks_blocked()
        assert a.fileno() == -1  # closed: a connection waiting to read meets it at once
        with pytest.raises(ClientDisconnected):
            await transport.send_all(b"more")
        assert transport.try_send(b"more") == 0


class Faulty(SocketTransport):
    """A transport whose batched write fails in a way nobody foresaw."""

    def flush_queued(self) -> bool:
        raise RuntimeError("unforeseen")


async def test_an_unforeseen_failure_of_one_write_is_logged_and_the_batch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_batch() as batch:
        batch.eager = False
        (a1, _), (a2, b2) = pair(), pair()
        faulty, sound = Faulty(a1, None, batch), SocketTransport(a2, None, batch)
        await faulty.send_batched(b"doomed")
        await sound.send_batched(b"fine")
        await trio.testing.wait_all_tasks_blocked()
        assert "a batched write failed" in caplog.text
        assert a1.fileno() == -1  # its connection ends
        assert readable(b2) == b"fine"  # the others' responses go out
        batch.eager = False
        await sound.send_batched(b" still")
        await trio.testing.wait_all_tasks_blocked()
        assert readable(b2) == b" still"  # and later passes are still flushed


async def test_closing_sends_the_queued_response_first_and_aborting_drops_it() -> None:
    async with running_batch() as batch:
        batch.eager = False
        (a1, b1), (a2, b2) = pair(), pair()
        closing, aborting = SocketTransport(a1, None, batch), SocketTransport(a2, None, batch)
        await closing.send_batched(b"goodbye")
        await aborting.send_batched(b"never")
        await closing.aclose()
        await aborting.abort()
        assert a1.fileno() == -1 and a2.fileno() == -1
        await trio.testing.wait_all_tasks_blocked()
        assert readable(b1) == b"goodbye"
        assert readable(b2) == b""


async def test_the_end_of_the_batch_writes_what_is_queued() -> None:
    a, b = pair()
    async with running_batch() as batch:
        batch.eager = False
        transport = SocketTransport(a, None, batch)
        await transport.send_batched(b"last")
        assert readable(b) == b""
    # run() ended (cancelled) and flushed; later sends are not batched
    assert readable(b) == b"last"
    assert not batch.open
    await transport.send_batched(b"after")
    assert readable(b) == b"after"


async def test_without_a_batch_send_batched_writes_at_once() -> None:
    a, b = pair()
    transport = SocketTransport(a, None)
    await transport.send_batched(b"now")
    assert readable(b) == b"now"


async def test_closing_gives_up_on_a_peer_that_does_not_read(autojump_clock: object) -> None:
    async with running_batch() as batch:
        batch.eager = False
        a, _ = slow_pair()
        transport = SocketTransport(a, None, batch)
        await transport.send_batched(b"x" * 60_000)
        await trio.testing.wait_all_tasks_blocked()
        assert transport.stalled is not None  # drained, slowly: the peer does not read
        began = trio.current_time()
        with trio.fail_after(30), trio.CancelScope(shield=True):  # as the connection calls it
            await transport.aclose()
        assert trio.current_time() - began == pytest.approx(LINGER_SECONDS)
        assert a.fileno() == -1
        await trio.testing.wait_all_tasks_blocked()
        assert transport.stalled is None  # the drain ended with the socket


async def test_a_response_whose_next_request_is_in_is_queued_even_after_a_quiet_pass() -> None:
    async with running_batch() as batch:
        sock, transport, b = recorded(batch)
        await trio.testing.wait_all_tasks_blocked()
        assert batch.eager
        for i in range(3):  # pipelined: each response but the last has a request after it
            await transport.send_batched(b"<%d>" % i, more=i < 2)
        assert sock.sends == []
        await trio.testing.wait_all_tasks_blocked()
        assert sock.sends == [b"<0><1><2>"]
        assert readable(b) == b"<0><1><2>"
