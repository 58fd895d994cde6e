"""Waiting for many sockets to be readable with one epoll of the server's own.

``trio.lowlevel.wait_readable`` arms the socket in trio's epoll for one event
(``EPOLLONESHOT``) and so costs an ``epoll_ctl`` system call, and trio's
bookkeeping for it, each time a connection waits for its next request or
message.  A server whose connections wait, are woken, answer and wait again
thousands of times a second pays that on every message.

:class:`ReadPoller` keeps each socket registered once, edge-triggered, in an
epoll of its own, whose file descriptor is itself watched by trio.  After
trio's own wait for events (the ``after_io_wait`` instrument hook), one
``epoll_wait`` that does not block collects the sockets that became readable,
and the tasks waiting on them run in that same pass of the scheduler.

Edge-triggered: an event comes when something arrives, not while it is
there.  So the caller reads until a ``recv`` comes back short (the transport
reads again after one that filled its buffer) before it waits, and here:

* a socket that became readable while its task was busy is remembered
  (``ready``): its next wait returns at once, and the ``recv`` tells whether
  bytes are really there (a spurious wake-up costs one ``recv``);
* an end of stream, a reset or an error (``EPOLLRDHUP``, ``EPOLLHUP``,
  ``EPOLLERR``) that came with bytes is kept for good (``ended``): once the
  bytes are read, every wait returns at once and the ``recv`` meets the end;
* urgent data (``EPOLLPRI``) stops a ``recv`` short at its mark, and the
  bytes past it bring no event of their own: the socket is also remembered
  as ready after its task was woken, for the rest; if it came while nobody
  waited, for two waits (the read to the mark, the read past it).

A wait ends at once, too, for a socket :meth:`ReadPoller.forget` dropped
(it is being closed: the ``recv`` fails) and for every waiter when the
poller stops (the next waits are trio's own).

Linux only (epoll); elsewhere :func:`make_poller` gives None and the
transports use ``trio.lowlevel.wait_readable``.
"""

from __future__ import annotations

import select
import socket
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import outcome
import trio

__all__ = ["WOKEN", "ReadPoller", "installed", "make_poller"]

_IN = getattr(select, "EPOLLIN", 0)
_PRI = getattr(select, "EPOLLPRI", 0)
_ENDED = (
    getattr(select, "EPOLLRDHUP", 0)
    | getattr(select, "EPOLLHUP", 0)
    | getattr(select, "EPOLLERR", 0)
)
ResultT = TypeVar("ResultT")
_current_task = trio.lowlevel.current_task
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_Pop = Callable[[int, None], object]

_FLAGS = _IN | _PRI | getattr(select, "EPOLLRDHUP", 0) | getattr(select, "EPOLLET", 0)


class _Woken(outcome.Outcome[None]):
    """What a waiter woken for bytes gets: nothing, as ``outcome.Value(None)``, but made once.

    ``trio.lowlevel.reschedule`` hands the woken task an outcome, and its
    ``wait_task_rescheduled`` returns ``outcome.unwrap()``.  trio's default,
    ``Value(None)``, is made per wake-up and checks that it is unwrapped only
    once; at one wake-up per message, a shared one costs an allocation and
    three Python calls less each time (measured: 46 of the ~685 bytecode
    instructions an echo executed).
    """

    __slots__ = ()

    def unwrap(self) -> None:
        return None

    def send(self, gen: Generator[ResultT, None, object]) -> ResultT:
        return gen.send(None)

    async def asend(self, agen: AsyncGenerator[ResultT, None]) -> ResultT:
        return await agen.asend(None)


WOKEN = _Woken()
"""The outcome the poller wakes its waiters with (any number of times)."""


class Installed(Protocol):
    open: bool


@contextmanager
def installed(instrument: Installed) -> Iterator[None]:
    """Add a trio instrument with an ``open`` flag for the block: set while it is in."""
    trio.lowlevel.add_instrument(instrument)  # type: ignore[arg-type]
    instrument.open = True
    try:
        yield
    finally:
        instrument.open = False
        try:
            trio.lowlevel.remove_instrument(instrument)  # type: ignore[arg-type]
        except KeyError:
            pass


class ReadPoller(trio.abc.Instrument):
    """One epoll for the server's connections: see the module's docstring."""

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None  # one per run()
        # fd -> the socket registered under it: a closed socket's number,
        # reused by a new one, is registered anew (the kernel dropped it).
        self._registered: dict[int, socket.socket] = {}
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        self._ready: set[int] = set()  # readable while nobody waited
        self._ended: set[int] = set()  # end of stream, reset or error seen
        # Urgent data came while nobody waited: ready for two reads (to the mark, past it).
        self._urgent: set[int] = set()
        self.open = False
        """Between run()'s start and end; else waits are trio's own."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch a new epoll until cancelled (a task of the server's)."""
        epoll = self._epoll = select.epoll()
        fd = epoll.fileno()
        try:
            with installed(self):
                task_status.started()
                while True:
                    # Only to end trio's wait for events when a socket is ready:
                    # after_io_wait, in the same pass, reads which.
                    await trio.lowlevel.wait_readable(fd)
        finally:
            # Whoever still waits reads, and then waits with trio.
            waiting, self._waiting = self._waiting, {}
            for task in waiting.values():
                trio.lowlevel.reschedule(task, WOKEN)
            trio.lowlevel.notify_closing(fd)
            epoll.close()
            self._epoll = None
            self._registered.clear()  # the next run() starts from nothing
            self._ready.clear()
            self._ended.clear()
            self._urgent.clear()

    def after_io_wait(self, timeout: float) -> None:
        epoll = self._epoll
        if epoll is None:  # pragma: no cover - removed before it is closed
            return
        waiting = self._waiting
        reschedule = trio.lowlevel.reschedule
        for fd, flags in epoll.poll(0):
            task = waiting.pop(fd, None)
            if task is None:
                self._ready.add(fd)
                if flags & _PRI:
                    self._urgent.add(fd)
            else:
                reschedule(task, WOKEN)
                if flags & _PRI:
                    self._ready.add(fd)  # the recv stops at the urgent mark
            if flags & _ENDED:
                self._ended.add(fd)

    async def wait_readable(self, sock: socket.socket) -> None:
        """Return once ``sock`` may be readable (trio's ``wait_readable``, cheaper).

        It may also return for nothing (see the module's docstring): the
        caller's ``recv`` tells.  Returning at once for a remembered event,
        it is a schedule point shielded from cancellation, so the event is
        not lost.

        Raises:
            trio.BusyResourceError: another task waits for ``sock``.
            trio.ClosedResourceError: ``sock`` is closed.
        """
        if not self.open:  # the server is stopping
            await trio.lowlevel.wait_readable(sock)
            return
        fd = sock.fileno()
        if self._registered.get(fd) is not sock:
            if fd < 0:
                raise trio.ClosedResourceError("the socket is closed")
            if not self._register(fd, sock):  # no room: trio's epoll may have some
                await trio.lowlevel.wait_readable(sock)
                return
        abort = self.arm(sock)
        if abort is not None:
            await trio.lowlevel.wait_task_rescheduled(abort)
            return
        ready = self._ready  # arm() declined: an event is remembered, or a task waits
        if fd in ready or fd in self._ended:
            if fd in self._urgent:
                self._urgent.discard(fd)  # ready still: the bytes past the mark follow
            else:
                ready.discard(fd)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        raise trio.BusyResourceError("another task is already reading this socket")

    def arm(self, sock: socket.socket) -> Callable[[object], trio.lowlevel.Abort] | None:
        """:meth:`wait_readable`'s common case, no coroutine of its own.

        Returns:
            The abort function to pass to ``trio.lowlevel.wait_task_rescheduled``,
            the current task now waiting for ``sock``; or None where it must not
            wait that way (not watched yet, an event remembered, another waiter,
            the poller stopping): call :meth:`wait_readable` instead.
        """
        fd = sock.fileno()
        waiting = self._waiting
        if (
            fd in waiting
            or fd in self._ready
            or fd in self._ended
            or self._registered.get(fd) is not sock
            or not self.open
        ):
            return None
        waiting[fd] = _current_task()

        # Its defaults, not a closure: two allocations per wait instead of four.
        def abort(_: object, fd: int = fd, pop: _Pop = waiting.pop) -> trio.lowlevel.Abort:
            pop(fd, None)
            return _SUCCEEDED

        return abort

    def _register(self, fd: int, sock: socket.socket) -> bool:
        """Watch ``sock``; False if the system refused (the caller uses trio's wait)."""
        epoll = self._epoll
        assert epoll is not None  # only while open
        try:
            try:
                epoll.register(fd, _FLAGS)  # bytes already there make an event at once
            except FileExistsError:
                epoll.modify(fd, _FLAGS)
        except OSError:  # ENOSPC (max_user_watches), ENOMEM
            return False
        self._registered[fd] = sock
        self._ready.discard(fd)  # a closed socket's, of the same number
        self._ended.discard(fd)
        self._urgent.discard(fd)
        return True

    def forget(self, sock: socket.socket) -> None:
        """``sock`` is about to be closed: drop it; a task waiting on it reads (and fails)."""
        fd = sock.fileno()
        if self._registered.get(fd) is sock:
            del self._registered[fd]
            self._ready.discard(fd)
            self._ended.discard(fd)
            self._urgent.discard(fd)
            if self._epoll is not None:
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass
        task = self._waiting.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task, WOKEN)


def make_poller() -> ReadPoller | None:
    """A poller where the system has epoll, else None."""
    if not hasattr(select, "epoll"):  # pragma: no cover - not Linux
        return None
    return ReadPoller()
