"""Transports: how a connection reads and writes bytes.

Two implementations of the small :class:`Transport` interface serve every
connection:

* :class:`SocketTransport`, the fast path: a raw non-blocking stdlib socket,
  ``recv``/``send`` straight on it; when they would block, it waits with the
  server's :class:`~peregrine_rt._poller.ReadPoller` (reads) or
  ``trio.lowlevel.wait_writable``.  Files go out with ``os.sendfile``
  (their bytes never enter Python).
* :class:`StreamTransport`: any trio ``Stream`` (TLS, memory streams in tests).
  Files go out as pieces read with ``os.pread``, each sent before the next is
  read, so a slow reader costs at most one piece of memory.

Besides the awaitable calls, a transport offers :meth:`Transport.try_send`, a
send that never waits: the WebSocket send path (``_outbox``) uses it to write a
burst of hub deliveries in one system call from the server's flush task.  A
transport that cannot send without waiting (a stream) returns ``None`` and the
send path starts a writer task instead.

A whole small response goes out with :meth:`Transport.send_batched`: a
:class:`SocketTransport` of a server that batches writes (``Config.batch_writes``)
queues it, and :class:`~peregrine_rt._batch.WriteBatch` writes every queued
response when trio's scheduler has run all the tasks that were ready, just
before it waits for I/O again.  See ``_batch.py`` for why.

Every failure of the peer's side is :class:`~peregrine_rt.ClientDisconnected`.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from ._files import FILE_STATS, send_file_by_reads
from ._poller import ReadPoller
from .exceptions import ClientDisconnected

if TYPE_CHECKING:
    from ._batch import WriteBatch

__all__ = [
    "RECEIVE_SIZE",
    "STREAM_PIECE",
    "SocketTransport",
    "StreamTransport",
    "Transport",
]


RECEIVE_SIZE = 65536
STREAM_PIECE = 4096  # bytes a StreamTransport send credits at a time (min_rate 500 B/s: 8 s)
LINGER_SECONDS = 1.0  # how long a closing connection keeps reading what the peer still sends
LINGER_BYTES = 1 << 20
BATCH_MAX = 1 << 16  # bytes one connection may have queued for the end of the pass
SENDFILE_MAX = 1 << 20  # bytes asked of one sendfile() call, so that one call stays short
USE_SENDFILE = hasattr(os, "sendfile")  # tests and bench/static.py turn it off to compare
_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # this file cannot be sendfile'd


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
    def arm_receive(self) -> Callable[[object], trio.lowlevel.Abort] | None:
        """:meth:`receive_some` ``(wait_first=True)`` without a coroutine, where the
        transport can: the current task now waits for bytes; pass this abort
        function to ``trio.lowlevel.wait_task_rescheduled``, then call
        :meth:`receive_now`.  None: call :meth:`receive_some` instead."""

    def receive_now(self) -> bytes | None:
        """The bytes there now (b"" at EOF), or None if none: :meth:`receive_some`."""

    async def send_all(self, data: bytes) -> None: ...
    async def send_batched(self, data: bytes, more: bool = False) -> None:
        """Send ``data``, a whole response, now or at the end of the scheduler's pass.

        ``more``: the next request is already received (pipelining): its
        response will join this one in the same write.

        Bytes sent afterwards by any other call follow it.  An error of a
        batched write surfaces at the next send (the connection reads next,
        and meets the closed socket there anyway).
        """

    def queue(self, data: bytes, more: bool = False) -> bool:
        """:meth:`send_batched`'s first step, no coroutine (most responses under load):
        True if ``data`` was queued for the pass's end; False, :meth:`send_unqueued`."""

    async def send_unqueued(self, data: bytes) -> None:
        """:meth:`send_batched`'s second step: ``data`` that :meth:`queue` did not take."""

    def try_send(self, data: bytes) -> int | None:
        """Send what fits now without waiting: the count of bytes taken.

        None: this transport cannot send without waiting (use ``send_all``
        from a task).  Raises ClientDisconnected when the peer is gone.
        """

    async def send_file(self, fd: int, offset: int, count: int, head: bytes = b"") -> int: ...
    @property
    def sending(self) -> bool:
        """A batched response is not written yet (queued, or its rest being drained)."""

    async def flush(self) -> None:
        """Wait until a batched response is written (or the peer is gone)."""

    async def aclose(self, linger: bool = False) -> None: ...
    async def abort(self) -> None: ...


class SocketTransport:
    """A connected non-blocking stdlib socket, driven with trio.lowlevel.

    With a :class:`WriteBatch`, :meth:`send_batched` queues a small response
    for the batch's flush.  What the flush could not write (the peer's buffer
    was full) is sent by a task of the batch (:meth:`drain_rest`); every
    other send first waits for that, and sends queued bytes ahead of its own.
    """

    __slots__ = (
        "_drained",
        "_error",
        "_full",
        "_queued",
        "_rest",
        "batch",
        "bytes_sent",
        "client",
        "poller",
        "scheme",
        "send_waited",
        "sock",
        "stalled",
    )  # fmt: skip

    def __init__(
        self,
        sock: socket.socket,
        client: tuple[str, int] | None,
        batch: WriteBatch | None = None,
        poller: ReadPoller | None = None,
    ) -> None:
        self.sock = sock
        self.poller = poller
        self.client = client
        self.scheme = "http"
        self.stalled: float | None = None
        self.send_waited = 0.0
        self.bytes_sent = 0
        self.batch = batch
        self._queued: bytes | None = None  # for the batch's next flush
        self._rest: memoryview | None = None  # what a flush left, for drain_rest
        self._drained: trio.Event | None = None  # set when drain_rest is done
        self._error: ClientDisconnected | None = None  # a flush's or drain's failure
        self._full = False  # the last recv() filled its buffer: read again before waiting

    # -- batched writes ---------------------------------------------------------------
    async def send_batched(self, data: bytes, more: bool = False) -> None:
        if not self.queue(data, more):
            await self.send_unqueued(data)

    async def send_unqueued(self, data: bytes) -> None:
        batch = self.batch
        if batch is None:  # nothing is ever queued: straight out
            await self._send(data)
        elif self._queued is None and batch.open and self._drained is None and not self._error:
            batch.sent += 1  # eager, or too big to queue
            await self._send(data)  # nothing is ahead of it: no second look
        else:
            await self.send_all(data)  # what is queued or being drained goes first

    def queue(self, data: bytes, more: bool = False) -> bool:
        batch = self.batch
        if batch is None or not batch.open or self._drained is not None or self._error:
            return False
        queued = self._queued
        if queued is None:
            if (batch.eager and not batch.sent and not more) or len(data) > BATCH_MAX:
                return False  # the pass's first response goes at once (eager): see WriteBatch
            self._queued = data
            batch.queued.append(self)
        elif len(queued) + len(data) <= BATCH_MAX:
            self._queued = queued + data  # pipelined responses: one write
        else:
            return False  # send_all: the queued bytes go first
        return True

    @property
    def draining(self) -> bool:
        """What a flush could not write waits for :meth:`drain_rest`."""
        return self._rest is not None

    @property
    def sending(self) -> bool:
        """Bytes are queued for the batch's flush, or being drained: the response is not out."""
        return self._queued is not None or self._drained is not None

    async def flush(self) -> None:
        """Wait until what is queued or being drained is written (or the peer is gone)."""
        if self.sending:
            try:
                await self.send_all(b"")
            except ClientDisconnected:
                pass

    def flush_queued(self) -> bool:
        """Write the queued bytes (the batch's flush).

        True when the batch must come back to this transport: bytes are left
        for :meth:`drain_rest`, or the write failed (:meth:`abandon` then).
        """
        data = self._queued
        if data is None:
            return False  # a send took them meanwhile
        self._queued = None
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._error = ClientDisconnected(str(exc))
            return True
        self.bytes_sent += sent
        if sent == len(data):
            return False
        self._rest = memoryview(data)[sent:]
        self._drained = trio.Event()
        return True

    async def drain_rest(self) -> None:
        """Send what a flush left, waiting for the peer to read (a task of the batch's)."""
        rest, done = self._rest, False
        try:
            if rest:
                await self._send(rest)
            done = True
        except (ClientDisconnected, OSError) as exc:  # a failure never reaches the nursery
            self._error = ClientDisconnected(str(exc))
        finally:
            if not done and self._error is None:  # cancelled part-way (the server stopping)
                self._error = ClientDisconnected("the response was cut short")
            self._end_drain()

    def _end_drain(self) -> None:
        """No more to drain: release the sends waiting behind the rest."""
        self._rest = None
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.set()

    def abandon(self) -> None:
        """Close the socket: a batched write failed, or nothing can drain its rest.

        The connection, waiting for its next request, meets the closed socket
        at once (ClientDisconnected) and ends.
        """
        if self._error is None:
            self._error = ClientDisconnected("the server stopped before the response was sent")
        self._end_drain()
        if self.sock.fileno() >= 0:
            self._forget()
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    async def _ahead(self, data: bytes) -> bytes:
        """What a send must write: the bytes queued or being drained before ``data``."""
        drained = self._drained
        if drained is not None:
            await drained.wait()
        error = self._error
        if error is not None:
            raise ClientDisconnected(str(error)) from error
        queued = self._queued
        if queued is not None:
            self._queued = None  # the batch's flush skips this transport
            data = queued + data
        return data

    # -- reads and writes -------------------------------------------------------------

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
        Not after a ``recv`` that filled its buffer: more may be there, and
        the poller (edge-triggered) only reports bytes that arrive.
        """
        sock = self.sock
        poller = self.poller
        wait_readable = trio.lowlevel.wait_readable if poller is None else poller.wait_readable
        if wait_first and not self._full:
            abort = None if poller is None else poller.arm(sock)  # one coroutine less
            try:
                if abort is not None:
                    await trio.lowlevel.wait_task_rescheduled(abort)
                else:
                    await wait_readable(sock)
            except trio.ClosedResourceError as exc:  # aborted by another task
                raise ClientDisconnected(str(exc)) from exc
        while True:
            data = self.receive_now()  # None: EAGAIN (and no exception kept while idle)
            if data is not None:
                return data
            try:
                await wait_readable(sock)
            except trio.ClosedResourceError as exc:
                raise ClientDisconnected(str(exc)) from exc

    def arm_receive(self) -> Callable[[object], trio.lowlevel.Abort] | None:
        """:meth:`receive_some` ``(wait_first=True)`` in two steps, no coroutine: the
        current task now waits for bytes, and this is the abort function to pass
        to ``trio.lowlevel.wait_task_rescheduled``; then :meth:`receive_now`.
        None where it cannot wait that way: call :meth:`receive_some`."""
        poller = self.poller
        if poller is None or self._full:
            return None
        return poller.arm(self.sock)

    def receive_now(self) -> bytes | None:
        """One ``recv`` without waiting: up to RECEIVE_SIZE bytes (b"" at EOF), or
        None when none are there (a wake-up for nothing: :meth:`receive_some`)."""
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        self._full = len(data) == RECEIVE_SIZE
        return data

    def try_send(self, data: bytes) -> int:
        """One non-blocking ``send``: the bytes the kernel took (0 when its buffer is full)."""
        if self._queued is not None or self._drained is not None or self._error:
            return 0  # bytes must go first: the caller's writer task calls send_all
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        self.bytes_sent += sent
        return sent

    async def send_all(self, data: bytes) -> None:
        if self._queued is not None or self._drained is not None or self._error:
            data = await self._ahead(data)
        await self._send(data)

    async def _send(self, data: bytes | memoryview) -> None:
        """Write all of ``data``, waiting for the peer as needed (nothing may be ahead of it)."""
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
        if self._queued is not None or self._drained is not None or self._error:
            head = await self._ahead(head)
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
        if self.sending:
            # A response queued in the pass that closes the connection (at
            # shutdown), or one being drained: it goes first, for a bounded time
            # (the caller shields this call, and the reaper may be gone).
            with trio.move_on_after(LINGER_SECONDS):
                await self.flush()
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
        self._forget()
        trio.lowlevel.notify_closing(sock)
        sock.close()

    def _forget(self) -> None:
        if self.poller is not None:
            self.poller.forget(self.sock)

    async def abort(self) -> None:
        """Close at once (a task blocked on the socket gets ClientDisconnected)."""
        self._queued = None
        if self.sock.fileno() >= 0:
            self._forget()
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

    def arm_receive(self) -> None:
        """A stream has no such wait: always None (call :meth:`receive_some`)."""
        return None

    def receive_now(self) -> None:
        """Not without waiting (:meth:`arm_receive` never arms): always None."""
        return None

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

    async def send_batched(self, data: bytes, more: bool = False) -> None:
        """A stream is not batched: ``send_all``."""
        await self.send_all(data)

    def queue(self, data: bytes, more: bool = False) -> bool:
        """A stream is not batched: never queued (False)."""
        return False

    send_unqueued = send_all  # nothing is ever queued

    sending = False  # nothing is ever batched

    async def flush(self) -> None:
        """Nothing to wait for: a stream is not batched."""

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
