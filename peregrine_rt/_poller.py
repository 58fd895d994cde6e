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

Edge-triggered: an event comes when bytes arrive, not while they are there.
A socket that became readable while its task was busy is remembered
(``ready``), and its next wait returns at once; the caller's ``recv`` tells
whether bytes are really there (a spurious wake-up costs one ``recv``).

Linux only (epoll); elsewhere :func:`make_poller` gives None and the
transports use ``trio.lowlevel.wait_readable``.
"""

from __future__ import annotations

import select
import socket

import outcome
import trio

__all__ = ["ReadPoller", "make_poller"]

_FLAGS = (
    getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0) | getattr(select, "EPOLLET", 0)
)


def _closed() -> trio.ClosedResourceError:
    return trio.ClosedResourceError("another task closed this socket")


class ReadPoller(trio.abc.Instrument):
    """One epoll for the server's connections: see the module's docstring."""

    def __init__(self) -> None:
        self._epoll = select.epoll()  # made anew by each run()
        self._epoll.close()
        # fd -> the socket registered under it: a closed socket's number,
        # reused by a new one, is registered anew (the kernel dropped it).
        self._registered: dict[int, socket.socket] = {}
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        self._ready: set[int] = set()  # readable while nobody waited
        self.open = False
        """Between run()'s start and end; else waits are trio's own."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch a new epoll until cancelled (a task of the server's)."""
        self._epoll = select.epoll()
        self._registered.clear()
        self._ready.clear()
        fd = self._epoll.fileno()
        trio.lowlevel.add_instrument(self)
        self.open = True
        try:
            task_status.started()
            while True:
                # Only to end trio's wait for events when a socket is ready:
                # after_io_wait, in the same pass, reads which.
                await trio.lowlevel.wait_readable(fd)
        finally:
            self.open = False
            try:
                trio.lowlevel.remove_instrument(self)
            except KeyError:
                pass
            waiting, self._waiting = self._waiting, {}
            for task in waiting.values():
                trio.lowlevel.reschedule(task, outcome.Error(_closed()))
            trio.lowlevel.notify_closing(fd)
            self._epoll.close()

    def after_io_wait(self, timeout: float) -> None:
        try:
            events = self._epoll.poll(0)
        except OSError:  # pragma: no cover - closed under us
            return
        waiting = self._waiting
        for fd, _ in events:
            task = waiting.pop(fd, None)
            if task is None:
                self._ready.add(fd)
            else:
                trio.lowlevel.reschedule(task)

    async def wait_readable(self, sock: socket.socket) -> None:
        """Return once ``sock`` may be readable (trio's ``wait_readable``, cheaper).

        Raises:
            trio.ClosedResourceError: :meth:`forget` was called for it meanwhile.
        """
        if not self.open:  # the server is stopping
            await trio.lowlevel.wait_readable(sock)
            return
        fd = sock.fileno()
        if self._registered.get(fd) is not sock:
            if fd < 0:
                raise _closed()
            self._register(fd, sock)
        ready = self._ready
        if fd in ready:
            ready.discard(fd)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if fd in self._waiting:
            raise trio.BusyResourceError("another task is already reading this socket")
        waiting = self._waiting
        waiting[fd] = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            waiting.pop(fd, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _register(self, fd: int, sock: socket.socket) -> None:
        try:
            self._epoll.register(fd, _FLAGS)
        except FileExistsError:
            self._epoll.modify(fd, _FLAGS)
        self._registered[fd] = sock  # bytes already there make an event at once

    def forget(self, sock: socket.socket) -> None:
        """``sock`` is about to be closed: drop it, and fail a task waiting on it."""
        fd = sock.fileno()
        if self._registered.get(fd) is sock:
            del self._registered[fd]
            self._ready.discard(fd)
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        task = self._waiting.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task, outcome.Error(_closed()))


def make_poller() -> ReadPoller | None:
    """A poller where the system has epoll, else None."""
    if not hasattr(select, "epoll"):  # pragma: no cover - not Linux
        return None
    return ReadPoller()
