"""Transports: how a connection reads and writes bytes.

Two implementations of the small :class:`Transport` interface serve every
connection:

* :class:`SocketTransport`, the fast path: a raw non-blocking stdlib socket,
  ``recv``/``send`` straight on it and ``trio.lowlevel.wait_readable`` /
  ``wait_writable`` only when they would block.  Files go out with
  ``os.sendfile`` (their bytes never enter Python).
* :class:`StreamTransport`: any trio ``Stream`` (TLS, memory streams in tests).
  Files go out as pieces read with ``os.pread``, each sent before the next is
  read, so a slow reader costs at most one piece of memory.

Besides the awaitable calls, a transport offers :meth:`Transport.try_send`, a
send that never waits: the WebSocket send path (``_outbox``) uses it to write a
burst of hub deliveries in one system call from the server's flush task.  A
transport that cannot send without waiting (a stream) returns ``None`` and the
send path starts a writer task instead.

Every failure of the peer's side is :class:`~peregrine_rt.ClientDisconnected`.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Protocol

import trio

from ._files import CHUNK_SIZE, FILE_STATS
from .exceptions import ClientDisconnected

__all__ = [
    "RECEIVE_SIZE",
    "STREAM_PIECE",
    "SocketTransport",
    "StreamTransport",
    "Transport",
    "send_file_by_reads",
]

RECEIVE_SIZE = 65536
STREAM_PIECE = 4096  # bytes a StreamTransport send credits at a time (min_rate 500 B/s: 8 s)
LINGER_SECONDS = 1.0  # how long a closing connection keeps reading what the peer still sends
LINGER_BYTES = 1 << 20
SENDFILE_MAX = 1 << 20  # bytes asked of one sendfile() call, so that one call stays short
USE_SENDFILE = hasattr(os, "sendfile")  # tests and bench/static.py turn it off to compare
_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # this file cannot be sendfile'd


async def send_file_by_reads(
    transport: Transport, fd: int, offset: int, count: int, head: bytes = b""
) -> int:
    """Send ``head``, then ``count`` bytes of ``fd`` from ``offset`` in CHUNK_SIZE pieces.

    Each piece is read only once the previous one is accepted (``send_all``
    returns), so memory in use is one piece whatever the client's speed.
    Returns the file bytes sent: fewer than ``count`` if the file is shorter.
    (``os.pread`` of a file in the page cache is a memory copy; a cold read
    from a slow disk blocks the loop for that piece, as ``sendfile`` would.)
    """
    stats = FILE_STATS
    sent = 0
    while sent < count:
        data = os.pread(fd, min(CHUNK_SIZE, count - sent), offset + sent)
        if not data:
            break
        size = len(data)
        stats.read += size
        stats.in_flight += size
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            await transport.send_all(head + data if head else data)
        finally:
            stats.in_flight -= size
        head = b""
        del data
        stats.sent += size
        sent += size
        await trio.lowlevel.checkpoint()  # a fast client must not starve the others
    if head:
        await transport.send_all(head)
    return sent


class Transport(Protocol):
    """What a connection (and a WebSocket's send path) needs of its byte stream.

    Attributes:
        client: the peer's ``(host, port)``, or None (Unix sockets, memory streams).
        scheme: ``"http"`` or ``"https"``.
        stalled: when a send began waiting for the peer to read (None: not
            waiting); the reaper drops a connection whose send waited past
            ``Config.send_timeout``.
        send_waited: seconds sends have waited for the peer in all (the
            current wait not included), and
        bytes_sent: bytes whose send completed: together, the rate at which
            the peer reads (``Config.min_rate``).
    """

    client: tuple[str, int] | None
    scheme: str
    stalled: float | None
    send_waited: float
    bytes_sent: int

    async def receive_some(self, wait_first: bool = False) -> bytes: ...
    async def send_all(self, data: bytes) -> None: ...
    def try_send(self, data: bytes) -> int | None:
        """Send what fits now without waiting: the count of bytes taken.

        None: this transport cannot send without waiting (use ``send_all``
        from a task).  Raises ClientDisconnected when the peer is gone.
        """

    async def send_file(self, fd: int, offset: int, count: int, head: bytes = b"") -> int: ...
    async def aclose(self, linger: bool = False) -> None: ...
    async def abort(self) -> None: ...


class SocketTransport:
    """A connected non-blocking stdlib socket, driven with trio.lowlevel."""

    __slots__ = ("bytes_sent", "client", "scheme", "send_waited", "sock", "stalled")

    def __init__(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        self.sock = sock
        self.client = client
        self.scheme = "http"
        self.stalled: float | None = None
        self.send_waited = 0.0
        self.bytes_sent = 0

    async def _wait_writable(self) -> None:
        """Wait for room in the send buffer; ``stalled`` says since when, meanwhile."""
        began = self.stalled = trio.current_time()
        try:
            await trio.lowlevel.wait_writable(self.sock)
        except trio.ClosedResourceError as exc:
            raise ClientDisconnected(str(exc)) from exc
        finally:
            self.stalled = None
            self.send_waited += trio.current_time() - began

    async def receive_some(self, wait_first: bool = False) -> bytes:
        """Receive up to RECEIVE_SIZE bytes (b"" at EOF).

        ``wait_first`` skips the first ``recv`` attempt: right after a response,
        the next request cannot be there yet on a ping-pong keep-alive
        connection, and a ``recv`` failing with EAGAIN is a wasted syscall.
        """
        sock = self.sock
        if wait_first:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError as exc:  # aborted by another task
                raise ClientDisconnected(str(exc)) from exc
        while True:
            try:
                return sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError as exc:
                    raise ClientDisconnected(str(exc)) from exc
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc

    def try_send(self, data: bytes) -> int:
        """One non-blocking ``send``: the bytes the kernel took (0 when its buffer is full)."""
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        self.bytes_sent += sent
        return sent

    async def send_all(self, data: bytes) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        if sent == len(data):
            self.bytes_sent += sent
            return
        self.bytes_sent += sent
        view = memoryview(data)[sent:]
        while view:
            await self._wait_writable()
            try:
                sent = sock.send(view)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            self.bytes_sent += sent
            view = view[sent:]

    async def send_file(self, fd: int, offset: int, count: int, head: bytes = b"") -> int:
        """Send ``head`` and ``count`` bytes of ``fd`` with ``os.sendfile``; the file bytes sent.

        The head goes with ``MSG_MORE`` so that the kernel packs it with the
        file's first bytes.  Files ``sendfile`` cannot read fall back to reads.
        """
        if not USE_SENDFILE or count == 0:
            return await send_file_by_reads(self, fd, offset, count, head)
        sock = self.sock
        if head:
            try:
                done = sock.send(head, socket.MSG_MORE)
            except BlockingIOError:
                done = 0
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            if done < len(head):
                await self.send_all(head[done:])
        stats = FILE_STATS
        out = sock.fileno()
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, min(count - sent, SENDFILE_MAX))
            except BlockingIOError:
                await self._wait_writable()
                continue
            except OSError as exc:
                if exc.errno in _NO_SENDFILE and sent == 0:
                    return await send_file_by_reads(self, fd, offset, count)
                raise ClientDisconnected(str(exc)) from exc
            if n == 0:
                break  # the end of the file came early: it shrank
            sent += n
            self.bytes_sent += n
            stats.sent += n
            await trio.lowlevel.checkpoint()  # a fast client must not starve the others
        return sent

    async def aclose(self, linger: bool = False) -> None:
        """Close; with ``linger``, first half-close and read what the peer still sends.

        Closing a socket with unread input makes the kernel send a reset, and
        the peer may then lose the response it has not read yet (a 413 to a
        client still uploading, say).  Lingering avoids that, bounded by
        LINGER_SECONDS and LINGER_BYTES.
        """
        sock = self.sock
        if sock.fileno() < 0:
            return
        if linger:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                with trio.move_on_after(LINGER_SECONDS):
                    received = 0
                    while received < LINGER_BYTES:
                        try:
                            data = sock.recv(RECEIVE_SIZE)
                        except BlockingIOError:
                            await trio.lowlevel.wait_readable(sock)
                            continue
                        except OSError:
                            break
                        if not data:
                            break
                        received += len(data)
        trio.lowlevel.notify_closing(sock)
        sock.close()

    async def abort(self) -> None:
        """Close at once (a task blocked on the socket gets ClientDisconnected)."""
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class StreamTransport:
    """Any trio ``Stream``: TLS over TCP, or a memory stream in tests."""

    __slots__ = ("bytes_sent", "client", "scheme", "send_waited", "stalled", "stream")

    def __init__(
        self, stream: trio.abc.Stream, client: tuple[str, int] | None, scheme: str = "http"
    ) -> None:
        self.stream = stream
        self.client = client
        self.scheme = scheme
        self.stalled: float | None = None
        self.send_waited = 0.0
        self.bytes_sent = 0

    async def receive_some(self, wait_first: bool = False) -> bytes:
        try:
            return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientDisconnected(str(exc)) from exc

    def try_send(self, data: bytes) -> None:
        """A stream cannot send without waiting (TLS records, memory streams): always None."""
        return None

    async def send_all(self, data: bytes) -> None:
        # A stream hides its partial progress: each call counts as waiting
        # until it returns.  So a large send goes in STREAM_PIECE pieces, each
        # credited as it completes: a client reading steadily is seen to (for
        # send_timeout and Config.min_rate), however large the response.
        view = memoryview(data)
        for start in range(0, len(data), STREAM_PIECE):
            piece = view[start : start + STREAM_PIECE]
            began = self.stalled = trio.current_time()
            try:
                await self.stream.send_all(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ClientDisconnected(str(exc)) from exc
            finally:
                self.stalled = None
                self.send_waited += trio.current_time() - began
            self.bytes_sent += len(piece)

    async def send_file(self, fd: int, offset: int, count: int, head: bytes = b"") -> int:
        """Send ``head`` and ``count`` bytes of ``fd`` in pieces (TLS and memory streams)."""
        return await send_file_by_reads(self, fd, offset, count, head)

    async def aclose(self, linger: bool = False) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(self.stream)

    async def abort(self) -> None:
        await trio.aclose_forcefully(self.stream)
