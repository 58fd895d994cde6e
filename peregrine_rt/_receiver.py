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
"""

from __future__ import annotations

from collections import deque
from typing import Any

from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from ._frames import (
    FragmentedMessage,
    Fragments,
    FrameTracker,
    parse_simple_frames,
    read_fragments,
)
from ._wsconn import LazyConnection

__all__ = ["TOO_BIG", "Receiver"]


class _TooBig:
    """Marks, in the backlog, where a message went over the size limit."""

    def __repr__(self) -> str:
        return "TOO_BIG"


TOO_BIG = _TooBig()
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
        "backlog",
        "fast",
        "fragments",
        "max_size",
        "pending",
        "pending_size",
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

    def wait(self) -> None:
        """The socket is about to wait for bytes: let an empty backlog's deque go."""
        if not self.backlog:
            self.backlog = NO_BACKLOG

    def feed(self, data: bytes) -> None:
        """Parse received bytes into the backlog, in order.

        While wsproto is idle (the tracker says so) and the socket is open and
        uncompressed, the fast path reads the common frames itself, and the
        data frames of a fragmented message too (into one buffer); everything
        else goes to wsproto, through the tracker.  A message over the size
        limit leaves a ``TOO_BIG`` mark in the backlog where it stopped.
        """
        ws = self.ws
        backlog = self.backlog
        if backlog is NO_BACKLOG:
            backlog = self.backlog = deque()
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
        pos = 0
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
