"""Who gets a connection: the limits, refusals at them, and accept() trouble.

One :class:`Admission` per server keeps:

* the open connections per client address, for ``Config.max_connections_per_ip``;
* refusals at the limits: a 503 built by the server's
  :class:`~._answers.ResponseHeads`, counted (``refused``), logged at most once
  per ``REFUSAL_LOG_INTERVAL`` with the count, and followed by an orderly
  close (half-close, then read and drop what the client still sends, briefly),
  so that the 503 is not destroyed by a reset;
* ``accept()`` failing for want of descriptors: one log line per episode, a
  pause that doubles up to ``ACCEPT_BACKOFF_MAX`` and ends early when a
  connection closes, and one line when accepting works again.
"""

from __future__ import annotations

import logging
import math
import socket
from typing import TYPE_CHECKING

import trio

from ._transport import SocketTransport

if TYPE_CHECKING:
    from ._answers import ResponseHeads
    from ._config import Config
    from ._metrics import Stats

__all__ = ["Admission"]

REFUSAL_LOG_INTERVAL = 10.0  # seconds between two log lines about refusals at the limit
MAX_LINGERING_REFUSALS = 64  # refused sockets closed in order at once; past that, at once
ACCEPT_BACKOFF_MIN = 0.01  # first pause after accept() fails with EMFILE and the like
ACCEPT_BACKOFF_MAX = 1.0  # longest pause (a closing connection ends it early)

error_log = logging.getLogger("peregrine_rt.error")
access_log = logging.getLogger("peregrine_rt.access")


class Admission:
    """The server's admission control (see the module docstring).

    Attributes:
        refused: connections refused with 503 since the start.
        failures: failed ``accept()`` calls in the current episode (0: none).
    """

    def __init__(self, config: Config, heads: ResponseHeads) -> None:
        self.config = config
        self.heads = heads
        self.refused = 0
        self.stats: Stats | None = None  # the server's figures: a refusal is a 503 answered
        self.failures = 0
        self._logged = 0  # refusals counted at the last log line
        self._logged_at = -math.inf
        self._lingering = 0  # refused sockets being closed in order
        self._ips: dict[str, int] = {}  # open connections per client address
        self._trouble_since = 0.0
        self._freed = trio.Event()  # a connection closed (ends an accept pause)

    # -- the limits ---------------------------------------------------------------

    def full(self, open_connections: int, client: tuple[str, int] | None) -> bool:
        """Whether a new connection from ``client`` is over a limit."""
        config = self.config
        if open_connections >= config.max_connections:
            return True
        per_ip = config.max_connections_per_ip
        return per_ip is not None and client is not None and self._ips.get(client[0], 0) >= per_ip

    def opened(self, client: tuple[str, int] | None) -> None:
        """A connection from ``client`` was admitted."""
        if client is not None:
            self._ips[client[0]] = self._ips.get(client[0], 0) + 1

    def closed(self, client: tuple[str, int] | None) -> None:
        """A connection admitted with :meth:`opened` has ended (its descriptor is free)."""
        self._freed.set()
        if client is not None and client[0] in self._ips:
            left = self._ips[client[0]] - 1
            if left:
                self._ips[client[0]] = left
            else:
                del self._ips[client[0]]

    # -- refusals -----------------------------------------------------------------

    def busy(self) -> bytes:
        """The 503 for a connection over a limit."""
        return self.heads.error(
            503, "the server is at its connection limit", extra=[(b"retry-after", b"1")]
        )

    def note_refusal(self, client: object = None) -> None:
        """Count a refusal; log at most one line per interval (and one access-log line)."""
        self.refused += 1
        if self.stats is not None:
            self.stats.request_done("-", 503, 0.0)
        if self.config.access_log:  # every answer is in the access log, this 503 too
            where = f"{client[0]}:{client[1]}" if isinstance(client, tuple) else "-"
            access_log.info('%s - "-" 503 0', where)
        now = trio.current_time()
        if now - self._logged_at >= REFUSAL_LOG_INTERVAL:
            error_log.warning(
                "at the connection limit (max_connections=%d): %d connection(s) refused "
                "with 503 since the last report (%d in all)",
                self.config.max_connections,
                self.refused - self._logged,
                self.refused,
            )
            self._logged_at = now
            self._logged = self.refused

    def refuse(self, sock: socket.socket, nursery: trio.Nursery, client: object = None) -> None:
        """Answer 503 on an accepted socket over a limit, then close it in order.

        Closing a socket with unread input (the request) makes the kernel send
        a reset, which can destroy the 503 before the client reads it.  So the
        socket is half-closed after the write, and what the client still sends
        is read and dropped (briefly, boundedly) before the close — by at most
        MAX_LINGERING_REFUSALS tasks at once; past that, closed at once.
        """
        self.note_refusal(client)
        try:
            sock.send(self.busy())
        except OSError:
            sock.close()
            return
        if self._lingering >= MAX_LINGERING_REFUSALS:
            sock.close()
            return
        self._lingering += 1
        nursery.start_soon(self._linger_and_close, sock)

    async def refuse_stream(self, stream: trio.abc.Stream) -> None:
        """Answer 503 on a trio stream over the limit, then close it."""
        self.note_refusal()
        try:
            with trio.move_on_after(1):
                await stream.send_all(self.busy())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(stream)

    async def _linger_and_close(self, sock: socket.socket) -> None:
        try:
            with trio.CancelScope(shield=True):  # bounded by LINGER_SECONDS: never leak the fd
                await SocketTransport(sock, None).aclose(linger=True)
        finally:
            self._lingering -= 1

    # -- accept() trouble ---------------------------------------------------------

    async def backoff(self, exc: OSError, open_connections: int) -> None:
        """accept() failed for want of descriptors (or memory): wait, and say so once.

        One log line per episode, not one per failed call: the pause doubles
        from ACCEPT_BACKOFF_MIN up to ACCEPT_BACKOFF_MAX, and ends early when
        a connection closes.  Connections wait in the kernel's backlog meanwhile.
        """
        if not self.failures:
            self._trouble_since = trio.current_time()
            error_log.error(
                "accept() failed: %s (%d connections open); pausing accepts until "
                "descriptors free up",
                exc,
                open_connections,
            )
        self.failures += 1
        delay = min(ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN * 2 ** (self.failures - 1))
        self._freed = trio.Event()
        with trio.move_on_after(delay):
            await self._freed.wait()

    def recovered(self) -> None:
        """accept() works again: end the episode with one line."""
        error_log.warning(
            "accepting again, after %d failed accept() calls over %.1f s",
            self.failures,
            trio.current_time() - self._trouble_since,
        )
        self.failures = 0
