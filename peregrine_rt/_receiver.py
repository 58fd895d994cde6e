"""A WebSocket's receive path: bytes in, messages and wsproto events out, in order.

:class:`Receiver` decides, frame by frame, who reads what arrives:

* while wsproto holds nothing (a :class:`~._frames.FrameTracker` follows every
  frame header handed to it, so the receiver knows without looking inside
  wsproto) and the socket is open and uncompressed, the fast path reads the
  common frames itself (:func:`~._frames.parse_simple_frames`), and the data
  frames of a fragmented message too (:func:`~._frames.read_fragments`, into one
  buffer, with wsproto's checks);
* everything else — control frames, compressed messages, anything unusual —
  goes to wsproto.

Every data frame counts toward the message size limit (fragments after the
first with a fixed overhead): a message over it leaves :data:`TOO_BIG` in the
backlog, and the socket fails the connection with 1009.

The receive loop calls :meth:`Receiver.take`: when a read holds only whole
simple frames and nothing waits in the backlog (nearly every read of a busy
socket), it gets the messages as the frame reader's list, and no backlog deque
is made.  :meth:`Receiver.assemble` joins what wsproto reads into messages.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Final, Literal

from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from ._frames import (
    FragmentedMessage,
    Fragments,
    FrameTracker,
    parse_simple_frames,
    read_fragments,
)
from ._wsconn import LazyConnection

__all__ = ["NO_BACKLOG", "TOO_BIG", "Mark", "Receiver"]


class Mark(enum.Enum):
    """Marks, in the backlog, where a message went over the size limit."""

    TOO_BIG = "TOO_BIG"

    def __repr__(self) -> str:
        return self.value


TOO_BIG: Final = Mark.TOO_BIG
_OPEN = ConnectionState.OPEN  # read per frame

# The backlog of every socket that holds nothing (an empty deque is 760 bytes).
# Nothing is ever added to it: feed() makes a deque first.
NO_BACKLOG: deque[Any] = deque(maxlen=0)


class Receiver:
    """One socket's receive path (see the module docstring).

    Args:
        ws: the socket's wsproto connection (made while wsproto reads a frame,
            released once it is idle again).
        fast: the socket has no extension (the fast path may read frames).
        max_size: ``ws_max_message_size`` (None: no limit).
        compressed: payloads are deflated: the limit on their wire size gets
            some slack (their inflated size is checked by the socket).
    """

    __slots__ = (
        "assembled",
        "assembled_size",
        "backlog",
        "fast",
        "fragments",
        "max_size",
        "pending",
        "pending_size",
        "simple",
        "tracker",
        "ws",
    )

    def __init__(
        self,
        ws: LazyConnection,
        *,
        fast: bool,
        max_size: int | None,
        compressed: bool = False,
    ) -> None:
        self.ws = ws
        self.backlog = NO_BACKLOG
        """Messages (``str``/``bytes``), wsproto events and :data:`TOO_BIG`, in the order
        they arrived, for the socket to handle; a deque of its own only while it
        holds something (see :meth:`wait`)."""
        self.fast = fast
        self.max_size = max_size
        slack = 0 if max_size is None or not compressed else max_size // 1024 + 1024
        # None once a message went over the limit: wsproto then reads on alone.
        self.tracker: FrameTracker | None = FrameTracker(
            None if max_size is None else max_size + slack
        )
        self.fragments: FragmentedMessage | None = None  # read by the fast path
        self.pending: list[bytes] = []  # an incomplete frame of it, as received
        self.pending_size = 0
        self.assembled: bytearray | None = None  # a message wsproto reads, so far
        self.assembled_size = 0
        # take() may read the next bytes itself: fast, wsproto idle, nothing
        # pending (kept up to date by feed(); the socket's state is read apart).
        self.simple = fast

    def wait(self) -> None:
        """The socket is about to wait for bytes: let an empty backlog's deque go."""
        if not self.backlog:
            self.backlog = NO_BACKLOG

    def end(self) -> None:
        """The socket's life is over: let go of what a message under way left here."""
        self.assembled = None
        self.fragments = None
        self.pending.clear()
        self.backlog = NO_BACKLOG

    def pending_end(self) -> CloseConnection | Literal[Mark.TOO_BIG] | None:
        """The peer's close (a protocol error's too) or a :data:`TOO_BIG` mark waiting
        in the backlog, else None: ``ping()`` inside a callback must not read on
        past it (no pong comes after either, and the stream may be in doubt)."""
        for event in self.backlog:
            if event is TOO_BIG or type(event) is CloseConnection:
                return event
        return None

    def take(self, data: bytes) -> list[str | bytes] | None:
        """:meth:`feed`, for the receive loop: the messages themselves when ``data``
        is whole simple frames and nothing waits in the backlog (the common case:
        no deque is made); else None, everything in the backlog.

        Messages the loop then holds come before whatever a callback of theirs
        feeds into the backlog meanwhile (``ping()`` reading on), as they arrived.
        """
        if self.simple and self.backlog is NO_BACKLOG and self.ws.state is _OPEN:
            messages, pos = parse_simple_frames(data, self.max_size, 0)
            if pos >= len(data):
                return messages
            backlog = self.backlog = deque(messages)
            self._feed(data, pos, backlog)
        else:
            self.feed(data)
        return None

    def assemble(
        self, event: TextMessage | BytesMessage, *, closing: bool
    ) -> str | bytes | Literal[Mark.TOO_BIG] | None:
        """Join the messages wsproto reads (compressed, or off the fast path).

        Returns:
            The message once its last fragment came; None before that, or
            while ``closing`` (dropped); :data:`TOO_BIG` when it went over
            ``max_size`` (counted in bytes, inflated), and what came is dropped.
        """
        data = event.data
        # Bytes, not characters (isascii() is O(1) on str).
        size = self.assembled_size + (
            len(data.encode()) if type(data) is str and not data.isascii() else len(data)
        )
        self.assembled_size = size
        if self.max_size is not None and size > self.max_size:
            self.assembled = None
            self.assembled_size = 0
            return TOO_BIG
        if closing:
            return None
        parts = self.assembled
        if parts is None and event.message_finished:
            self.assembled_size = 0
            return bytes(data) if isinstance(data, bytearray) else data
        # Fragments go into one growing buffer (UTF-8 for text, which wsproto
        # has validated): memory stays about the message's size however finely
        # it is cut.
        if parts is None:
            parts = self.assembled = bytearray()
        parts += data.encode() if isinstance(data, str) else data
        if not event.message_finished:
            return None
        self.assembled = None
        self.assembled_size = 0
        return parts.decode() if type(event) is TextMessage else bytes(parts)

    def feed(self, data: bytes) -> None:
        """Parse received bytes into the backlog, in order.

        While wsproto is idle (the tracker says so) and the socket is open and
        uncompressed, the fast path reads the common frames itself, and the
        data frames of a fragmented message too (into one buffer); everything
        else goes to wsproto, through the tracker.  A message over the size
        limit leaves a ``TOO_BIG`` mark in the backlog where it stopped.
        """
        backlog = self.backlog
        if backlog is NO_BACKLOG:
            backlog = self.backlog = deque()
        self._feed(data, 0, backlog)

    def _feed(self, data: bytes, pos: int, backlog: deque[Any]) -> None:
        """:meth:`feed` from ``pos``; then :attr:`simple` says again whether take() may read."""
        try:
            self._parse(data, pos, backlog)
        finally:
            tracker = self.tracker
            self.simple = (
                self.fast
                and tracker is not None
                and tracker.idle
                and self.fragments is None
                and not self.pending
            )

    def _parse(self, data: bytes, pos: int, backlog: deque[Any]) -> None:
        ws = self.ws
        tracker = self.tracker
        if tracker is None:  # a message went over the limit: wsproto reads on alone
            ws.receive_data(data)
            backlog.extend(ws.events())
            return
        pending = self.pending
        if pending:  # the start of a fragment the fast path reads whole
            pending.append(data)
            self.pending_size += len(data)
            waiting = self.fragments
            assert waiting is not None  # only a fragmented message leaves bytes pending
            if self.pending_size < waiting.need:
                return  # still short of the whole frame: join once, not per read
            data = b"".join(pending)
            pending.clear()
        fast = self.fast
        limit = tracker.limit
        n = len(data)
        while pos < n:
            if fast and tracker.idle and ws.state is _OPEN:
                fragments = self.fragments
                if fragments is None:
                    messages, pos = parse_simple_frames(data, self.max_size, pos)
                    if messages:
                        backlog.extend(messages)
                    if pos >= n:
                        return
                    if data[pos] in (0x01, 0x02):  # a fragmented message begins
                        fragments = self.fragments = FragmentedMessage(data[pos] == 0x01)
                if fragments is not None:
                    pos, why = read_fragments(data, pos, fragments, limit)
                    if why is Fragments.DONE:
                        backlog.append(fragments.message())
                        self.fragments = None
                        continue
                    if why is Fragments.MORE:
                        rest = data[pos:]  # under the limit: its header was checked
                        self.pending.append(rest)
                        self.pending_size = len(rest)
                        return
                    if why is Fragments.OVER:
                        self.tracker = None
                        backlog.append(TOO_BIG)
                        return
                    if why is Fragments.ERROR:
                        self.tracker = None
                        code, reason = fragments.error
                        backlog.append(CloseConnection(code=code, reason=reason))
                        return
                    # Fragments.CONTROL: a ping, pong or close between fragments.
            end, over = tracker.advance(data, pos, fast)
            ws.receive_data(data if pos == 0 and end == n else data[pos:end])
            backlog.extend(ws.events())
            pos = end
            if tracker.idle:
                ws.release()  # wsproto holds nothing now (after a close or an error: kept)
            if over:
                self.tracker = None
                backlog.append(TOO_BIG)
                if pos < n:
                    ws.receive_data(data[pos:])
                    backlog.extend(ws.events())
                return
